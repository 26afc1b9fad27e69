"""``pcnn predict --engine ray``: the prediction pipeline as Ray Data stages, on one machine or a cluster.

Stages (Ray Data streams blocks of inputs through them):

1. **decode** – Ray tasks read and decode the still images (:func:`~pcnn_fer.faces.imageio.load_image`, the same
   rule as the local engine); unusable inputs carry their reason on;
2. **detect → align → classify** – an actor pool, one actor per CPU of the cluster by default (one per GPU with a
   CUDA device), each holding the model once: each actor runs
   :meth:`Recognizer.predict_frames <pcnn_fer.faces.recognizer.Recognizer.predict_frames>` on its batch of decoded
   images, so detection, alignment and the record of every face are the local engine's own code. A video is one
   input and one actor's task: its frames go through
   :meth:`~pcnn_fer.faces.recognizer.Recognizer.track_stream` (face search between detections, people over time and
   their smoothing exactly as locally) and come back as one record per analysed frame, the last one with the
   video's people summary.

The driver receives records in input order (Ray Data's ``preserve_order``) and writes them with the local engine's
writers (:class:`~pcnn_fer.faces.outputs.ResultFiles`), so the outputs, ``--resume`` and the console report are
those of the local engine. Ray retries the tasks of an actor that dies (``kill -9`` of a worker, a lost node); a job
that still fails stops with one line, keeps the complete lines of ``predictions.jsonl`` for ``--resume`` and
publishes no other result file.

Ray is optional (the ``scale`` extra): nothing here imports it before :func:`require_ray`.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PCNNError, UsageError
from .recognizer import Prediction
from .sources import Source
from .spec import RecognizerSpec
from .stream import frames_per_chunk
from .tracking import TrackingConfig
from .workers import BatchRecognizer, decode_row, prediction_of, source_row

#: A model actor that dies is restarted, and its batch retried, this many times before the job fails (a batch that
#: kills its worker every time must not loop forever).
MAX_RESTARTS = 3


class RayJobError(PCNNError, RuntimeError):
    """The Ray job failed (a cluster lost, a stage failing beyond Ray's retries)."""


def require_ray() -> Any:
    """The ``ray`` module (with Ray Data), or a one-line :class:`UsageError` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray Data: pip install 'pcnn-fer[scale]'") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs: ``address`` of a running cluster (None: ``RAY_ADDRESS``, else a
    local Ray started for the job), ``actors`` in the model pool (None: one per CPU, or per GPU on CUDA)."""

    address: str | None = None
    actors: int | None = None


def connect(options: RayOptions) -> bool:
    """Join (or start) Ray; True when this call started it (and the caller shuts it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ core logs warnings to the console
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, include_dashboard=False,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise RayJobError(f"cannot start or join {where}: {str(e).splitlines()[0] if str(e) else e}") from None
    return True


def pool_size(options: RayOptions, spec: RecognizerSpec) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for the model pool on the connected cluster."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if str(spec.device).startswith("cuda") else 0
    if gpus:
        return options.actors or gpus, 0.0, 1.0
    cpus = max(1, int(resources.get("CPU", 1)))
    actors = options.actors or cpus
    if actors < 1:
        raise UsageError(f"--actors must be at least 1, got {actors}")
    return actors, min(1.0, cpus / actors), 0.0


def ray_predict_stream(sources: Sequence[Source], spec: RecognizerSpec, classes: Sequence[str], options: RayOptions,
                       every: int = 1, max_frames: int | None = None,
                       tracking: TrackingConfig | None = None) -> Iterator[tuple[dict[str, Any], Prediction]]:
    """(record, prediction) of every image and analysed video frame of ``sources``, in input order, computed on
    the connected Ray cluster (:func:`connect`)."""
    if not sources:
        return
    ray = require_ray()
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the driver's own bar counts the results as they come
    actors, cpus, gpus = pool_size(options, spec)
    detects = spec.detector != "none"
    per_batch = frames_per_chunk(detects, spec.batch_size)
    dataset = ray.data.from_items([source_row(i, s) for i, s in enumerate(sources)],
                                  override_num_blocks=max(1, math.ceil(len(sources) / per_batch)))
    with warnings.catch_warnings():  # Ray Data's advice on pool sizes and its own deprecations are not the user's
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # Decoding reserves no CPU (the actors hold every CPU and wait on it), at most one decode task per actor.
        dataset = dataset.map(decode_row, fn_kwargs={"max_pixels": spec.max_pixels}, num_cpus=0,
                              compute=ray.data.TaskPoolStrategy(size=actors))
        dataset = dataset.map_batches(BatchRecognizer, fn_constructor_kwargs={"spec": spec, "every": every,
                                                                             "max_frames": max_frames,
                                                                             "tracking": tracking},
                                      batch_size=per_batch, batch_format="numpy",
                                      compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus, num_gpus=gpus,
                                      max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
        try:
            for row in dataset.iter_rows():
                yield prediction_of(row, sources[int(row["index"])], classes)
        except ray.exceptions.RayError as e:
            first = str(e).strip().splitlines()
            raise RayJobError(f"the Ray job failed: {type(e).__name__}: {first[0] if first else ''}"[:400]) from None


__all__ = ["RayJobError", "RayOptions", "connect", "pool_size", "ray_predict_stream", "require_ray"]
