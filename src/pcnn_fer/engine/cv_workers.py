"""The processes that train ``pcnn cv``'s fold members on a CPU.

:func:`size_workers` turns the free cores measured at the start (:mod:`pcnn_fer.engine.cores`) and the user's
``--workers`` / ``--threads`` into a :class:`WorkerSizing`; :class:`MemberTrainer` trains the members in this process
(one worker) or starts one spawned process per member. Left to itself (neither flag given) it starts a member only
when the cores measured free allow one more, measuring again whenever a member finishes and every ``recheck_s``
while it runs fewer than it may, so the number of members at once follows another job that starts or ends mid-run.
A worker whose ``pcnn cv`` process dies ends itself (no orphan keeps training behind the next run's back).
"""

from __future__ import annotations

import math
import os
import pickle
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing import connection, get_context
from pathlib import Path
from typing import Any

from ..data.loader import TensorData
from ..errors import PCNNError, UsageError
from .checkpoint import load_checkpoint
from .cores import CoreMeasurement, measure_free_cores
from .devices import set_threads
from .options import TrainOptions
from .recipes import Recipe
from .train import fit

__all__ = ["MemberJob", "MemberTrainer", "PrefixedLog", "WorkerSizing", "size_workers", "train_member"]

#: Seconds between measurements while fewer members run than the sizing allows (besides one per finished member).
RECHECK_S = 15.0


@dataclass(frozen=True)
class MemberJob:
    """One model to train: member ``member`` (of ``members``) of fold ``fold`` in ``run_dir`` on the fold's data."""

    fold: int
    member: int
    members: int
    run_dir: Path
    train_data: TensorData
    val_data: TensorData | None
    info: dict[str, Any]

    @property
    def label(self) -> str:
        """``[fold K member M]``, the prefix of a worker's lines."""
        return f"[fold {self.fold} member {self.member}]"


@dataclass(frozen=True)
class WorkerSizing:
    """How the members train: at most ``max_workers`` at once (1: in the ``pcnn cv`` process), ``start_workers`` at
    first, ``threads`` torch threads each, of ``budget`` threads in all; ``adaptive``: the number at once follows the
    free cores measured between members. ``measurement``: what was measured at the start (None: nothing)."""

    jobs: int
    max_workers: int
    start_workers: int
    threads: int
    budget: int
    adaptive: bool
    measurement: CoreMeasurement | None
    note: str

    def describe(self) -> str:
        """One line: what was measured and what was chosen."""
        m = self.measurement
        cores = (f"cores: {m.free:.1f} of {m.usable} free (/proc/stat over {m.window_s:g} s)" if m is not None
                 else "cores: not measured")
        if self.max_workers == 1:
            how = f"training {self.jobs} model(s) in this process with {self.threads} thread(s)"
        elif self.adaptive:
            how = (f"training {self.jobs} model(s) in up to {self.max_workers} worker processes of {self.threads} "
                   f"thread(s) each, {self.start_workers} at once now, as many as the free cores allow")
        else:
            how = (f"training {self.jobs} model(s) in {self.max_workers} worker processes of {self.threads} "
                   "thread(s) each")
        return f"{cores}; {how} ({self.note})"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored in ``cv.json``)."""
        return {"max_workers": self.max_workers, "start_workers": self.start_workers, "threads": self.threads,
                "budget": self.budget, "adaptive": self.adaptive, "note": self.note,
                "cores": None if self.measurement is None else self.measurement.to_dict()}


def _cores_to_use(free: float, ceiling: int) -> int:
    """``free`` measured cores rounded half up, at least 1 and at most ``ceiling``."""
    return max(1, min(ceiling, math.floor(free + 0.5)))


def size_workers(jobs: int, device_type: str, torch_threads: int, workers: int | None = None,
                 threads: int | None = None, measurement: CoreMeasurement | None = None) -> WorkerSizing:
    """The :class:`WorkerSizing` for ``jobs`` trainings: ``workers`` / ``threads`` as the user gave them win; else
    the free cores of ``measurement`` (rounded, at least 1, at most ``torch_threads``) are the thread budget, one
    single-threaded worker per core up to one per job, and the count at once adapts; without a measurement (not
    Linux) one single-threaded worker per torch thread, fixed. Off the CPU the members train here, one by one."""
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    jobs = max(1, jobs)
    if device_type != "cpu":
        if workers is not None and workers > 1:
            raise UsageError(f"--workers {workers} trains in parallel CPU processes; on {device_type} use --workers 1")
        budget = threads or torch_threads
        return WorkerSizing(jobs, 1, 1, budget, budget, False, None, f"on {device_type}: one model at a time")
    if threads is not None:
        budget, note = threads, "--threads as given"
    elif measurement is not None:
        budget, note = _cores_to_use(measurement.free, torch_threads), f"at most {torch_threads} thread(s) of torch"
    else:
        budget, note = torch_threads, "no /proc/stat here: one worker per torch thread"
    if workers is not None:
        count = min(workers, jobs)
        note = "--workers and --threads as given" if threads is not None else "--workers as given"
        return WorkerSizing(jobs, count, count, max(1, budget // count), budget, False, measurement, note)
    start = min(budget, jobs)
    per_worker = max(1, budget // start)
    if threads is not None or measurement is None:
        return WorkerSizing(jobs, start, start, per_worker, budget, False, measurement, note)
    most = max(1, min(torch_threads // per_worker, jobs))
    return WorkerSizing(jobs, most, start, per_worker, budget, most > 1, measurement, note)


@dataclass(frozen=True)
class PrefixedLog:
    """``print`` with a prefix on every line, written in one call with its newline and flushed at once (a worker's
    lines interleave with the others'; ``print`` writes the text and the newline apart, which under
    ``PYTHONUNBUFFERED`` are two writes that another worker's line can split)."""

    prefix: str

    def __call__(self, text: str) -> None:
        sys.stdout.write("".join(f"{self.prefix} {line}\n" for line in str(text).splitlines() or [""]))
        sys.stdout.flush()


def train_member(recipe: Recipe, opts: TrainOptions, job: MemberJob, log: Any) -> None:
    """Train ``job``'s member in its run directory (training seed ``opts.seed + member``), resuming from its
    ``last.pt`` when there is one."""
    if job.members > 1:
        log(f"fold {job.fold}: member {job.member + 1}/{job.members} (training seed {opts.seed + job.member})")
    checkpoint = load_checkpoint(job.run_dir) if (job.run_dir / "last.pt").exists() else None
    fit(recipe, replace(opts, out=str(job.run_dir), seed=opts.seed + job.member), job.train_data, job.val_data,
        job.run_dir, checkpoint=checkpoint, info=job.info, log=log)


def _exit_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """End this process once ``parent`` is gone (this process is re-parented), checked every ``interval_s``."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker_main(recipe: Recipe, opts: TrainOptions, job: MemberJob, parent: int, conn: Any) -> None:
    """A worker process: train ``job`` with ``opts.threads`` threads and prefixed lines, then send ``("done",)`` or
    ``("error", exception, traceback)`` on ``conn``."""
    _exit_with_parent(parent)
    set_threads(opts.threads)
    try:
        train_member(recipe, opts, job, PrefixedLog(job.label))
    except BaseException as e:
        try:
            pickle.dumps(e)
            error = e
        except Exception:  # noqa: BLE001 - an exception that cannot travel is sent as its text
            error = PCNNError(f"{type(e).__name__}: {e}")
        conn.send(("error", error, traceback.format_exc()))
        sys.exit(1)
    conn.send(("done",))


@dataclass
class _Running:
    """A worker process, the read end of its pipe and the job it trains."""

    process: Any
    conn: Any
    job: MemberJob


@dataclass
class MemberTrainer:
    """Trains submitted members: in this process when a fold is waited for (``sizing.max_workers`` = 1), else in one
    spawned process per member, at most as many at once as the sizing (and, when adaptive, the cores measured free
    now) allow. Leaving the ``with`` block on an error or Ctrl-C stops the workers at once; their checkpoints let
    the next run resume. ``timeline`` records every measurement made between members."""

    recipe: Recipe
    opts: TrainOptions
    sizing: WorkerSizing
    log: Any = print
    measure: Callable[[], CoreMeasurement | None] | None = None  # None: measure_free_cores
    recheck_s: float = RECHECK_S
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.queue: deque[MemberJob] = deque()
        self.running: list[_Running] = []
        self.pending: dict[int, int] = {}  # fold -> members submitted and not finished
        self.limit = self.sizing.start_workers
        self.started = self.measured = time.monotonic()
        self.slot_freed = False

    def __enter__(self) -> MemberTrainer:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        for r in self.running:
            r.process.terminate()
        for r in self.running:
            r.process.join(10)
            if r.process.is_alive():
                r.process.kill()
                r.process.join()
        self.running.clear()

    @property
    def in_process(self) -> bool:
        """Whether the members train in this process."""
        return self.sizing.max_workers == 1

    def submit(self, jobs: list[MemberJob]) -> None:
        """Queue ``jobs`` (in this process they are trained by :meth:`wait`; else workers start as slots allow)."""
        for job in jobs:
            self.pending[job.fold] = self.pending.get(job.fold, 0) + 1
        self.queue.extend(jobs)
        if not self.in_process:
            self._start_allowed()

    def wait(self, fold: int) -> None:
        """Return once every submitted member of ``fold`` is trained; a worker's error is raised here."""
        if self.in_process:
            set_threads(self.sizing.threads)
            opts = replace(self.opts, threads=self.sizing.threads)
            for job in [j for j in self.queue if j.fold == fold]:
                train_member(self.recipe, opts, job, self.log)
                self.queue.remove(job)
                self.pending[fold] -= 1
            return
        while self.pending.get(fold, 0) > 0:
            self._start_allowed()  # the fold's members run or are queued, so at least one worker runs now
            waiting_for_cores = self.sizing.adaptive and self.queue and len(self.running) < self.sizing.max_workers
            ready = connection.wait([r.conn for r in self.running] + [r.process.sentinel for r in self.running],
                                    timeout=min(1.0, self.recheck_s) if waiting_for_cores else None)
            if ready:
                self._reap()

    def _reap(self) -> None:
        """Collect the workers that ended: a finished one frees its slot, a failed one's error is raised."""
        for r in list(self.running):
            message = None
            if r.conn.poll():
                try:
                    message = r.conn.recv()
                except EOFError:
                    message = None
            elif r.process.is_alive():
                continue
            r.process.join()
            self.running.remove(r)
            if message is None:
                raise PCNNError(f"the worker training fold {r.job.fold} member {r.job.member} ended with exit code "
                                f"{r.process.exitcode} (-9 is often the out-of-memory killer); re-run the same "
                                "command to resume from its checkpoint")
            if message[0] == "error":
                error = message[1]
                error.add_note(f"in the worker training fold {r.job.fold} member {r.job.member}:\n{message[2]}")
                raise error
            self.pending[r.job.fold] -= 1
            self.slot_freed = True

    def _allowed(self) -> int:
        """How many members may run at once now: the sizing's, or when adaptive the free cores measured again
        after a member finished or every ``recheck_s``."""
        if not self.sizing.adaptive:
            return self.sizing.max_workers
        now = time.monotonic()
        if self.slot_freed or now - self.measured >= self.recheck_s:
            measurement = (self.measure or measure_free_cores)()
            self.measured, self.slot_freed = time.monotonic(), False
            if measurement is not None:
                limit = max(1, min(self.sizing.max_workers,
                                   math.floor(measurement.free / self.sizing.threads + 0.5)))
                self.timeline.append({"t_s": round(now - self.started, 1), "free": round(measurement.free, 2),
                                      "running": len(self.running), "limit": limit})
                if limit != self.limit:
                    self.log(f"cores: {measurement.free:.1f} of {measurement.usable} free for this run now: up to "
                             f"{limit} member(s) at once")
                self.limit = limit
        return self.limit

    def _start_allowed(self) -> None:
        """Start queued members while fewer run than :meth:`_allowed`."""
        while self.queue and len(self.running) < self.sizing.max_workers and len(self.running) < self._allowed():
            job = self.queue.popleft()
            context = get_context("spawn")
            receiver, sender = context.Pipe(duplex=False)
            opts = replace(self.opts, threads=self.sizing.threads, progress=False)
            process = context.Process(target=_worker_main, args=(self.recipe, opts, job, os.getpid(), sender),
                                      name=f"pcnn-cv-fold{job.fold}-member{job.member}", daemon=True)
            process.start()
            sender.close()
            self.running.append(_Running(process, receiver, job))
