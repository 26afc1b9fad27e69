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

import bisect
import importlib.util
import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PCNNError, UsageError
from .sources import Source
from .spec import RecognizerSpec
from .stream import chunk_starts, frames_per_chunk
from .tracking import TrackingConfig
from .two_ended import TwoEnded

if TYPE_CHECKING:
    from .recognizer import Prediction

#: A model actor that dies is restarted, and its batch retried, this many times before the job fails (a batch that
#: kills its worker every time must not loop forever).
MAX_RESTARTS = 3
#: Seconds a Ray Data actor pool takes to give its first record on a freshly started local Ray (Ray Data's own
#: actors, then the model actors' import and model load): 8-15 s measured on 2 busy cores (docs/performance.md).
POOL_START_S = 15.0
#: Seconds a local Ray takes to start and to shut down again on 2 busy cores (import, ``ray.init``'s processes,
#: ``ray.shutdown``: 8-13 s measured, docs/performance.md): with :data:`POOL_START_S`, what a job must have left for
#: the driver before a local Ray is worth starting at all.
RAY_START_S = 10.0
#: Inputs per Ray Data block at least (whole batches): fewer, bigger tasks for one-photo batches.
BLOCK_INPUTS = 8


class RayJobError(PCNNError, RuntimeError):
    """The Ray job failed (a cluster lost, a stage failing beyond Ray's retries)."""


def check_ray_installed() -> None:
    """Raise :func:`require_ray`'s one-line error when Ray Data is not installed, without importing Ray (two
    seconds: ``pcnn predict`` imports it in the thread that starts Ray)."""
    if "ray" in sys.modules:
        require_ray()
        return
    spec = importlib.util.find_spec("ray")
    if spec is None or not any((Path(p) / "data").is_dir() for p in spec.submodule_search_locations or ()):
        require_ray()


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


class RayStart:
    """:func:`connect` in a background thread, once :meth:`begin` is called: ``pcnn predict`` creates it before
    loading its own model and begins it once the driver's pace says the job is long enough for a local Ray
    (:data:`RAY_START_S`). The same thread shuts down the Ray it started when :meth:`close` asks (Ray is shut down
    by the thread that started it); one never begun is never started."""

    def __init__(self, options: RayOptions) -> None:
        self.options, self.started, self.error = options, False, None
        self.done, self._closing, self._go = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._connect, name="pcnn-ray-start", daemon=True)
        self.thread.start()

    @property
    def begun(self) -> bool:
        """Whether Ray is being (or has been) started."""
        return self._go.is_set()

    def begin(self) -> None:
        """Start Ray now (in the background thread)."""
        self._go.set()

    def _connect(self) -> None:
        while not self._go.wait(0.05):
            if self._closing.is_set():  # closed before it was needed: no Ray started
                self.done.set()
                return
        try:
            self.started = connect(self.options)
        except BaseException as e:  # noqa: BLE001 - raised by wait() in the thread that needs Ray
            self.error = e
        finally:
            self.done.set()
        self._closing.wait()
        if self.started:
            import ray

            ray.shutdown()

    def wait(self) -> None:
        """Block until Ray is up; raise what starting it raised."""
        self.done.wait()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Shut down the Ray this start began (once it is up: a starting Ray cannot be stopped half-way); one never
        begun ends without starting."""
        self._closing.set()
        self.thread.join()


#: The pool grows by one model actor per this many batches of the job (up to one per CPU, or GPU): a small job
#: is not worth a second actor's start-up (an import and a model load, seconds), as with ``--workers auto``.
BATCHES_PER_ACTOR = 50  # as AUTO_BATCHES_PER_CORE of --workers auto


@dataclass(frozen=True)
class Pool:
    """The model actor pool of a job: ``actors``, and per actor ``cpus`` and ``gpus`` reserved and the model's
    ``threads``."""

    actors: int
    cpus: float
    gpus: float
    threads: int


def pool_size(options: RayOptions, spec: RecognizerSpec, batches: int | None = None) -> Pool:
    """The model pool on the connected cluster: ``--actors``, else one actor per :data:`BATCHES_PER_ACTOR` of the
    job's ``batches`` up to one per GPU (CUDA) or CPU; an actor with CPUs to spare (fewer actors than CPUs) runs its
    model on as many threads, at most a node's CPUs."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if str(spec.device).startswith("cuda") else 0
    wanted = max(1, -(-batches // BATCHES_PER_ACTOR)) if batches is not None else None
    if options.actors is not None and options.actors < 1:
        raise UsageError(f"--actors must be at least 1, got {options.actors}")
    if gpus:
        return Pool(options.actors or min(gpus, wanted or gpus), 0.0, 1.0, 1)
    cpus = max(1, int(resources.get("CPU", 1)))
    actors = options.actors or min(cpus, wanted or cpus)
    if actors >= cpus:
        return Pool(actors, cpus / actors, 0.0, 1)
    node = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1)
    share = max(1, min(cpus // actors, node))
    return Pool(actors, float(share), 0.0, share)


@dataclass
class RayRun:
    """What a Ray job did, filled in as it runs: model ``actors`` in the pool, ``batches`` of the job and the
    ``driver_batches`` the driver classified itself while Ray started."""

    actors: int = 0
    batches: int = 0
    driver_batches: int = 0
    shared: bool = False  # the driver worked too (a local Ray started for the job)


def starts_local_ray(options: RayOptions) -> bool:
    """True when the job will start a Ray of its own on this machine (no cluster named, none joined yet)."""
    ray = sys.modules.get("ray")  # not imported yet: not initialised in this process either
    joined = ray is not None and ray.is_initialized()
    return not joined and not (options.address or os.environ.get("RAY_ADDRESS"))


def ray_predict_stream(sources: Sequence[Source], spec: RecognizerSpec, classes: Sequence[str], options: RayOptions,
                       every: int = 1, max_frames: int | None = None, tracking: TrackingConfig | None = None,
                       driver: Any = None, start: RayStart | None = None, run: RayRun | None = None
                       ) -> Iterator[tuple[dict[str, Any], Prediction]]:
    """(record, prediction) of every image and analysed video frame of ``sources``, in input order, computed on Ray.

    The inputs go in the local engine's batches (:func:`~pcnn_fer.faces.stream.chunk_starts`), one Ray Data row per
    batch. Without ``start``, this joins (or starts, and at the end shuts down) Ray itself (:func:`connect`) and the
    actors do every batch. With ``start`` (a local Ray being started, :class:`RayStart`; the caller closes it) and
    ``driver`` (this process's :class:`~pcnn_fer.faces.recognizer.Recognizer`), the driver classifies batches from
    the front while Ray starts and its actors take them from the back
    (:class:`~pcnn_fer.faces.two_ended.TwoEnded`), until the two meet; ``run`` records the split."""
    run = run if run is not None else RayRun()
    if not sources:
        return
    tracking = tracking or TrackingConfig()
    starts = chunk_starts(sources, frames_per_chunk(spec.detector != "none", spec.batch_size))
    bounds = list(zip(starts, starts[1:]))
    run.batches = len(bounds)
    from .workers import BatchRecognizer  # the recognizer's modules (torch): only once there is work

    job = _RayBatches(sources, bounds, spec, classes, options, every, max_frames, tracking, run)
    if start is None or driver is None:
        if start is None:
            started = connect(options)
        else:  # the caller closes (and so shuts down) the Ray it gave
            start.begin()
            start.wait()
            started = False
        ray = require_ray()
        try:
            for _, results in job.stream(list(range(len(bounds)))):
                yield from results
        finally:
            if started:
                ray.shutdown()
        return
    near = BatchRecognizer.around(driver, spec, every, max_frames, tracking)
    run.shared = True

    def far(untaken: Any) -> Iterator[tuple[int, list]]:
        if not start.begun:  # a local Ray not begun yet: only for a job longer than its start, at the driver's pace
            while two.near_items < 2 and not two.stop.wait(0.02):
                pass
            if two.stop.is_set() or two.near_seconds_for(two.count - two.near_items) < RAY_START_S + POOL_START_S:
                return
            start.begin()
        start.wait()
        left = untaken()
        # An actor pool needs POOL_START_S to give its first record: not worth starting for what the driver, at its
        # pace so far, finishes sooner (and a pool that has not answered yet could not be stopped before it does).
        if two.near_seconds_for(len(left)) < POOL_START_S:
            return
        if not two.stop.is_set():
            yield from job.stream(left)

    two: TwoEnded = TwoEnded(len(bounds), lambda c: job.rows_of(near(job.inputs(c))), far)
    try:
        yield from two.results()
    finally:
        two.stop.set()
        run.driver_batches = two.near_items
        # The far side ends at its next record (or once Ray is up); Ray is shut down (by the caller) only after it:
        # shutting Ray down under a thread still waiting on Ray Data ends the whole process (Ray's core worker
        # exits when its raylet goes away).
        if start.begun:
            start.done.wait()
        if two.thread.ident is not None:
            two.thread.join()


class _RayBatches:
    """The batches of one job on Ray Data: the rows sent and the records received."""

    def __init__(self, sources: Sequence[Source], bounds: list[tuple[int, int]], spec: RecognizerSpec,
                 classes: Sequence[str], options: RayOptions, every: int, max_frames: int | None,
                 tracking: TrackingConfig, run: RayRun) -> None:
        self.sources, self.bounds, self.spec, self.classes = sources, bounds, spec, classes
        self.options, self.every, self.max_frames, self.tracking, self.run = options, every, max_frames, tracking, run
        self.starts = [a for a, _ in bounds]

    def inputs(self, batch: int) -> dict[str, list[Any]]:
        """The :func:`~pcnn_fer.faces.workers.source_row` columns of a batch."""
        from .workers import source_row

        rows = [source_row(i, self.sources[i]) for i in range(*self.bounds[batch])]
        return {k: [r[k] for r in rows] for k in rows[0]}

    def rows_of(self, results: dict[str, list[Any]]) -> list[tuple[dict[str, Any], Prediction]]:
        """(record, prediction) of each :func:`~pcnn_fer.faces.workers.result_row` column."""
        from .workers import prediction_of

        return [prediction_of({k: results[k][j] for k in results}, self.sources[int(results["index"][j])],
                              self.classes) for j in range(len(results["index"]))]

    def stream(self, batches: list[int]) -> Iterator[tuple[int, list[tuple[dict[str, Any], Prediction]]]]:
        """(batch, its records) of ``batches`` in that order, from the model actors."""
        if not batches:
            return
        from .workers import BatchRecognizer, prediction_of, source_row

        ray = require_ray()  # imported by the thread that started Ray: the driver never waits on that import
        pool = pool_size(self.options, self.spec, batches=len(batches))
        self.run.actors = pool.actors
        items = [{"batch": b, "rows": json.dumps([source_row(i, self.sources[i]) for i in range(*self.bounds[b])])}
                 for b in batches]
        # a block holds whole batches, at least BLOCK_INPUTS inputs (a task per photo would cost more than the photo)
        per_block = max(1, BLOCK_INPUTS // max(1, self.bounds[batches[0]][1] - self.bounds[batches[0]][0]))
        with warnings.catch_warnings():  # Ray Data's advice on pool sizes and its deprecations are not the user's
            warnings.filterwarnings("ignore", module=r"ray(\.|$)")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            context = ray.data.DataContext.get_current()  # before the dataset, which copies it
            context.execution_options.preserve_order = True
            context.enable_progress_bars = False  # the driver's own bar counts the results as they come
            dataset = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // per_block)))
            # One stage: the actors decode their own inputs (only paths travel to them, never pixels).
            dataset = dataset.map_batches(BatchRecognizer, fn_constructor_kwargs={
                                              "spec": self.spec, "every": self.every, "max_frames": self.max_frames,
                                              "tracking": self.tracking, "threads": pool.threads},
                                          batch_size=1, batch_format="numpy",
                                          compute=ray.data.ActorPoolStrategy(size=pool.actors), num_cpus=pool.cpus,
                                          num_gpus=pool.gpus, max_restarts=MAX_RESTARTS,
                                          max_task_retries=MAX_RESTARTS)
            current, records, position = -1, [], 0
            try:
                for row in dataset.iter_rows():
                    index = int(row["index"])
                    batch = bisect.bisect_right(self.starts, index) - 1
                    if batch != current and records:
                        yield current, records
                        records = []
                        position += 1
                    if position >= len(batches) or batch != batches[position]:  # never out of input order
                        raise RayJobError(f"the Ray job returned batch {batch} out of input order (record {index})")
                    current = batch
                    records.append(prediction_of(row, self.sources[index], self.classes))
            except ray.exceptions.RayError as e:
                first = str(e).strip().splitlines()
                raise RayJobError(f"the Ray job failed: {type(e).__name__}: {first[0] if first else ''}"[:400]) \
                    from None
            if records:
                yield current, records


__all__ = ["BATCHES_PER_ACTOR", "BLOCK_INPUTS", "POOL_START_S", "Pool", "RAY_START_S", "RayJobError", "RayOptions",
           "RayRun", "RayStart", "check_ray_installed", "connect", "pool_size", "ray_predict_stream", "require_ray",
           "starts_local_ray"]
