"""Groups of frames through the recognizer as a pipeline: while the model classifies one group's faces in a worker
thread (the classifier backends release the GIL), the calling thread finds, aligns, preprocesses and measures the
next group's faces and builds the previous group's :class:`~pcnn_fer.faces.recognizer.Prediction` objects.

The overlap pays where the model leaves room beside it: on an accelerator, or on fewer CPU threads than the usable
cores (:func:`model_leaves_cores`, what ``overlap=None`` asks). Where the model's threads already fill the cores,
the preparation only takes cores from the model: on 2 cores with the model on 2 threads the overlap ran no faster
than one group after the other, so there the groups go one after the other.

A group is what :meth:`Recognizer.predict_frames <pcnn_fer.faces.recognizer.Recognizer.predict_frames>` classifies
together (:func:`~pcnn_fer.faces.stream.chunks`); the batches, and so every probability, are the same with and
without the overlap, and the predictions come out in input order. An error keeps its place too: the predictions of
the groups before it come out first, then it is raised, as without the overlap. Speed: docs/performance.md ("Folder
rate against the model's own rate").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .sources import Frame

__all__ = ["Group", "start_group", "finish_group", "predict_groups", "model_leaves_cores"]

#: (probs (N, C), region probs (N, 5, C), occlusion (N, 5)) of a group's faces.
Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]


class _Done:
    """The model's outputs, computed in the calling thread (the interface of a finished future)."""

    def __init__(self, value: Outputs) -> None:
        self.value = value

    def result(self) -> Outputs:
        return self.value


@dataclass
class Group:
    """A group of frames on its way: the faces found in each, the model's outputs (a future while the model runs)
    and the faces' quality."""

    frames: Sequence[Frame]
    located: list[tuple[list, list[str], list]]
    outputs: Future | _Done
    quality: list[dict[str, Any]]


def start_group(recognizer: Any, frames: Sequence[Frame],
                run: Callable[[list[np.ndarray]], Future] | None = None) -> Group:
    """Find and align the faces of ``frames``, preprocess them, hand the batches to the model (``run``: submits them
    to a worker thread; None: the model runs here, now) and measure the faces' quality while it works."""
    located = [recognizer.find_faces(f) for f in frames]
    batches = recognizer.preprocess_batches([a.image for _, _, aligned in located for a in aligned])
    outputs = _Done(recognizer.run_model(batches)) if run is None else run(batches)
    return Group(frames, located, outputs, recognizer.face_quality(frames, located))


def finish_group(recognizer: Any, group: Group) -> list[Any]:
    """The predictions of a started group, in frame order (waits for the model)."""
    probs, region_probs, occlusion = group.outputs.result()
    results, k = [], 0
    for frame, located in zip(group.frames, group.located, strict=True):
        n = len(located[0])
        results.append(recognizer.make_prediction(frame, located, probs[k:k + n], region_probs[k:k + n],
                                                  occlusion[k:k + n], group.quality[k:k + n]))
        k += n
    return results


def model_leaves_cores(backend: Any) -> bool:
    """True when a classifier backend runs on an accelerator or on fewer CPU threads than this process may use
    (onnxruntime's default, 0, is one per physical core: it fills them); False for other backend objects."""
    from ..engine.cores import usable_cpus

    cores = len(usable_cpus())
    session = getattr(backend, "session", None)
    if session is not None and hasattr(session, "get_providers"):
        if session.get_providers()[0] != "CPUExecutionProvider":
            return True
        return 0 < session.get_session_options().intra_op_num_threads < cores
    device = getattr(backend, "device", None)
    if device is None:
        return False
    if getattr(device, "type", str(device)) != "cpu":
        return True
    import torch

    return torch.get_num_threads() < cores


def predict_groups(recognizer: Any, groups: Iterable[Sequence[Frame]], overlap: bool | None = None
                   ) -> Iterator[Any]:
    """The predictions of every frame of ``groups``, in order; with ``overlap`` the model classifies a group while
    the next one is prepared (None: when :func:`model_leaves_cores`; see the module docstring). A webcam's frame is
    never held back for the next one."""
    if overlap is None:
        overlap = model_leaves_cores(recognizer.backend)
    pool = ThreadPoolExecutor(1, thread_name_prefix="pcnn-model") if overlap else None
    run = None if pool is None else (lambda batches: pool.submit(recognizer.run_model, batches))
    pending: Group | None = None  # started, not yet yielded

    def take() -> list[Any]:
        """The pending group's predictions (none left pending)."""
        nonlocal pending
        done, pending = pending, None
        return [] if done is None else finish_group(recognizer, done)

    try:
        for frames in groups:
            started = start_group(recognizer, frames, run)
            yield from take()
            if any(f.source.kind == "webcam" for f in frames):
                yield from finish_group(recognizer, started)
            else:
                pending = started
        yield from take()
    except Exception:
        yield from take()  # an error keeps its place: the groups started before it come out first
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
