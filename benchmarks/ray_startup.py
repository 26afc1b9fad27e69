"""Where the time of ``pcnn predict --engine ray`` goes on one machine (issue 34): each stage of a Ray job timed on
its own, in one process, in the order a job meets them.

* **import ray** – ``import ray, ray.data`` in the driver;
* **ray.init** – :func:`pcnn_fer.faces.ray_engine.connect` (a local Ray started for the job, the engine's options);
* **first task** – a no-op Ray task round trip (a prestarted worker taking work);
* **actor, bare** – an actor that imports nothing of ours, created and answering;
* **actor, model** – an actor building :class:`~pcnn_fer.faces.workers.BatchRecognizer` (inside it: the import of
  ``pcnn_fer.faces.workers``, the recognizer's build, and whether torch got imported);
* **Ray Data, no-op** – the engine's actor-pool stage with an actor that does nothing, over the job's rows and
  blocks: planning, streaming and per-block transfer without any work of ours (first row, per block, all rows);
* **pipeline** – :func:`~pcnn_fer.faces.ray_engine.ray_predict_stream` on the job (first row, all rows);
* **shutdown** – ``ray.shutdown()``.

    python benchmarks/ray_startup.py --faces ../shared/data/ferplus/FER2013Valid --count 1000 --photos ../shared/samples
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale_speed import add_job_flags, link_inputs  # noqa: E402

from pcnn_fer.engine.precision import cpu_capabilities, cpu_model  # noqa: E402
from pcnn_fer.faces.sources import expand_sources  # noqa: E402
from pcnn_fer.faces.spec import RecognizerSpec  # noqa: E402


class _Bare:
    """An actor that imports nothing."""

    def __call__(self, batch: dict) -> dict:
        return batch


def _actor_probe(spec: RecognizerSpec) -> dict[str, float]:
    """Inside a Ray actor: seconds to import the workers module and to build the recognizer; torch imported?"""
    start = time.perf_counter()
    from pcnn_fer.faces.workers import BatchRecognizer

    imported = time.perf_counter()
    BatchRecognizer(spec, every=1, max_frames=None)
    built = time.perf_counter()
    return {"import": imported - start, "build": built - imported, "torch": float("torch" in sys.modules)}


def _timed(label: str, start: float, times: dict[str, float]) -> float:
    now = time.perf_counter()
    times[label] = now - start
    return now


def breakdown(sources: list, spec: RecognizerSpec, actors: int | None) -> dict[str, float]:
    """Seconds of each stage (see the module docstring) for one job."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    import ray
    import ray.data

    from pcnn_fer.faces.ray_engine import BLOCK_INPUTS, RayOptions, connect, pool_size, ray_predict_stream
    from pcnn_fer.faces.workers import source_row

    start = _timed("import ray", start, times)
    options = RayOptions(actors=actors)
    connect(options)
    start = _timed("ray.init", start, times)
    ray.get(ray.remote(num_cpus=0)(lambda: 0).remote())
    start = _timed("first task", start, times)
    bare = ray.remote(num_cpus=0)(_Bare).remote()
    ray.get(bare.__call__.remote({}))
    start = _timed("actor, bare", start, times)
    probe = ray.get(ray.remote(num_cpus=0)(_actor_probe).remote(spec))
    start = _timed("actor, model (a task)", start, times)
    times.update({f"  in it: {k}": v for k, v in probe.items()})
    ray.kill(bare)
    per_block = spec.batch_size if spec.detector == "none" else BLOCK_INPUTS
    pool = pool_size(options, spec, batches=-(-len(sources) // (per_block if spec.detector == "none" else 1)))
    times["  actors in the pool"] = pool.actors
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    rows = [source_row(i, s) for i, s in enumerate(sources)]
    blocks = max(1, -(-len(rows) // per_block))
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    dataset = dataset.map_batches(_Bare, batch_size=per_block, compute=ray.data.ActorPoolStrategy(size=pool.actors),
                                  num_cpus=pool.cpus)
    first = None
    for _ in dataset.iter_rows():
        first = first or time.perf_counter()
    times["Ray Data no-op: first row"] = first - start
    end = time.perf_counter()
    times["Ray Data no-op: per block"] = (end - first) / max(1, blocks - 1)
    start = _timed("Ray Data no-op: all rows", start, times)
    first = None
    for _ in ray_predict_stream(sources, spec, ["x"] * 8, options):
        first = first or time.perf_counter()
    times["pipeline: first row"] = first - start
    start = _timed("pipeline: all rows", start, times)
    ray.shutdown()
    _timed("shutdown", start, times)
    return times


def main() -> None:
    """Print the breakdown of each job."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_job_flags(parser)
    parser.add_argument("--actors", type=int, default=None, help="model actors (default: the engine's choice)")
    parser.add_argument("--job", choices=("faces", "photos"), default="faces")
    args = parser.parse_args()
    print(f"cpu: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; {cpu_capabilities()}")
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.job == "faces":
            folder, spec = link_inputs(args.faces, Path(tmp) / "faces", args.count), RecognizerSpec(detector="none")
        else:
            folder, spec = link_inputs(args.photos, Path(tmp) / "photos", copies=args.copies), RecognizerSpec()
        spec.build()  # the export cache warm, as pcnn predict's driver leaves it
        sources = expand_sources([folder])
        times = breakdown(sources, spec, args.actors)
    print(f"\n{args.job} ({len(sources)} inputs), actors: {args.actors or 'default'}; seconds:")
    for label, seconds in times.items():
        print(f"  {label:<28} {seconds:6.2f}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
