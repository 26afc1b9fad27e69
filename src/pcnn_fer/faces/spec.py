"""What a :class:`~pcnn_fer.faces.recognizer.Recognizer` is built from, as one picklable record: ``pcnn predict``
builds its recognizer from it in the driver (local engine) and ships it to every Ray actor (``--engine ray``), so both
engines run the same model, detector and options."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from ..defaults import MAX_PIXELS
from ..errors import UsageError


@dataclass(frozen=True)
class RecognizerSpec:
    """The recognizer of a ``pcnn predict`` run: model, backend, detector and per-input options."""

    checkpoint: str = "default"
    backend: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    detector: str = "auto"  # a create_detector name, or "none" (already-cropped faces)
    detect_threshold: float | None = None
    color: str = "auto"
    batch_size: int = 32
    max_pixels: int = MAX_PIXELS
    detect_every: int = 10
    min_confidence: float | None = None  # below it a face is labelled "uncertain"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RecognizerSpec:
        """The spec of ``pcnn predict``'s parsed arguments (checks the detector options)."""
        detector = "none" if args.no_detect else args.detector
        if args.detect_threshold is not None and not args.no_detect and \
                args.detector not in ("auto", "yunet", "dlib-auto", "dlib"):
            raise UsageError("--detect-threshold applies to --detector auto, yunet, dlib-auto or dlib")
        return cls(checkpoint=str(args.checkpoint), backend=args.backend, device=args.device, threads=args.threads,
                   detector=detector, detect_threshold=None if args.no_detect else args.detect_threshold,
                   color=args.color, batch_size=args.batch_size, max_pixels=args.max_pixels,
                   detect_every=args.detect_every, min_confidence=args.min_confidence)

    def create_detector(self) -> Any:
        """The face detector this spec names."""
        from .detect import create_detector

        if self.detect_threshold is None:
            return create_detector(self.detector)
        return create_detector(self.detector, threshold=self.detect_threshold)

    def build(self, backend: Any = None, threads: int | None = None) -> Any:
        """The :class:`~pcnn_fer.faces.recognizer.Recognizer` (``backend``: a ready one to reuse; ``threads``: CPU
        threads when the spec names none)."""
        from ..backends.dispatch import create_backend
        from .recognizer import Recognizer

        if backend is None:
            backend = create_backend(self.backend, self.checkpoint, self.device, threads=self.threads or threads)
        return Recognizer(backend=backend, detector=self.create_detector(), batch_size=self.batch_size,
                          color=self.color, max_pixels=self.max_pixels, detect_every=self.detect_every,
                          min_confidence=self.min_confidence)


__all__ = ["RecognizerSpec"]
