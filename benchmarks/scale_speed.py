"""``pcnn predict`` past one process: the local engine against ``--engine ray`` on the same inputs, Ray with 1 and 2
model actors, and the local folder rate against the model's own batch-32 rate (issue 34).

Rows, measured in interleaved rounds (median of ``--rounds``), on one machine:

* **model** – the ``auto`` backend alone on batches of 32 preprocessed faces (what ``pcnn bench`` times), with
  onnxruntime's spinning workers on (its default) and off (what ``pcnn predict`` uses);
* **folder, in-process** – ``Recognizer.predict_stream`` over the face folder with ``--no-detect`` (decode, align,
  classify, records), the recognizer built before the clock starts; with onnxruntime's spinning workers on and off
  (the model overlapping the next group's preparation where it leaves cores free, as ``pcnn predict`` runs it), and
  (spinning off) with the overlap forced on and off; each row also gives the whole process's CPU time per image;
* **photos, in-process** – ``predict_stream`` over the photos with detection, one photo after the other and with
  the overlap, with the share of the cores the process kept busy;
* **CLI wall** – the whole ``pcnn predict`` command in a subprocess (start-up, model load, Ray start included):
  the local engine with ``--save-csv`` in one process (``--workers 1``) and with one worker process per CPU, against
  ``--engine ray --save-parquet`` (``--actors 1`` and the default, one per CPU), on the faces with ``--no-detect``
  and on the photos with detection. Each Ray run's Parquet rows are checked
  against the local run's CSV (same faces and labels, probabilities within 1e-4).

    python benchmarks/scale_speed.py --faces ../shared/data/ferplus/FER2013Valid --count 1000 \\
        --photos ../shared/samples --copies 5 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pcnn_fer.backends.dispatch import create_backend, describe_backend  # noqa: E402
from pcnn_fer.engine.precision import cpu_capabilities, cpu_model  # noqa: E402
from pcnn_fer.faces.pipeline import model_leaves_cores  # noqa: E402
from pcnn_fer.faces.sources import IMAGE_EXTENSIONS  # noqa: E402
from pcnn_fer.faces.spec import RecognizerSpec  # noqa: E402


def link_inputs(source: Path, folder: Path, count: int | None = None, copies: int = 1) -> Path:
    """``folder`` filled with links to the first ``count`` images of ``source`` (each ``copies`` times)."""
    folder.mkdir(parents=True)
    images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:count]
    for k in range(copies):
        for p in images:
            (folder / f"{p.stem}_{k}{p.suffix}").symlink_to(p.resolve())
    return folder


def model_and_folder_rates(faces: Path, threads: int, rounds: int, backend: str = "auto"
                           ) -> tuple[str, dict[str, tuple[float, float]]]:
    """The backend's description and (img/s, CPU ms per image of the whole process) of the backend alone at batch
    32 and of the in-process folder pipeline: spinning on and off, and with spinning off one group after the other
    (no overlap of the model with the next group's preparation, :mod:`pcnn_fer.faces.pipeline`)."""
    spec = RecognizerSpec(detector="none")
    plain = create_backend(backend, "default", "cpu", threads=threads)
    quiet = create_backend(backend, "default", "cpu", threads=threads, spinning=False)
    recognizers = {"folder, spinning on": (spec.build(plain), None), "folder, spinning off": (spec.build(quiet), None),
                   "folder, overlap": (spec.build(quiet), True), "folder, no overlap": (spec.build(quiet), False)}
    first = recognizers["folder, spinning on"][0]
    count = sum(1 for _ in first.predict_stream([faces]))  # warm-up, decode cache
    batch = first.preprocess([np.zeros((48, 48, 3), np.uint8)] * 32)
    models = {"model, spinning on": plain, "model, spinning off": quiet}
    rates: dict[str, list[float]] = {name: [] for name in [*models, *recognizers]}
    cpu: dict[str, list[float]] = {name: [] for name in rates}
    for _ in range(rounds):
        for name, backend in models.items():
            start, used = time.perf_counter(), time.process_time()
            for _ in range(count // 32):
                backend(batch)
            rates[name].append(32 * (count // 32) / (time.perf_counter() - start))
            cpu[name].append(1000 * (time.process_time() - used) / (32 * (count // 32)))
        for name, (rec, overlap) in recognizers.items():
            start, used = time.perf_counter(), time.process_time()
            n = sum(1 for _ in rec.predict_stream([faces], overlap=overlap))
            rates[name].append(n / (time.perf_counter() - start))
            cpu[name].append(1000 * (time.process_time() - used) / n)
    described = f"{describe_backend(quiet)}; pcnn predict's overlap {'on' if model_leaves_cores(quiet) else 'off'}"
    return described, {name: (statistics.median(rates[name]), statistics.median(cpu[name]))
                                     for name in rates}


def photo_rates(photos: Path, threads: int, rounds: int, backend: str = "auto") -> dict[str, tuple[float, float]]:
    """(photos/s, share of the ``threads`` cores used: process CPU time / (wall × threads)) of the in-process
    pipeline over the photos with detection (the default detector): one photo after the other and with the model
    classifying a photo while the next is detected and aligned."""
    model = create_backend(backend, "default", "cpu", threads=threads, spinning=False)
    spec = RecognizerSpec()
    recognizer = spec.build(model)
    recognizers = {"photos, one by one": (recognizer, False), "photos, overlap": (recognizer, True)}
    for rec, _ in recognizers.values():
        sum(1 for _ in rec.predict_stream([photos]))  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in recognizers}
    busy: dict[str, list[float]] = {name: [] for name in recognizers}
    for _ in range(rounds):
        for name, (rec, overlap) in recognizers.items():
            start, used = time.perf_counter(), time.process_time()
            n = sum(1 for _ in rec.predict_stream([photos], overlap=overlap))
            wall = time.perf_counter() - start
            rates[name].append(n / wall)
            busy[name].append((time.process_time() - used) / (wall * threads))
    return {name: (statistics.median(rates[name]), statistics.median(busy[name])) for name in rates}


def cli_wall(args: list[str], out: Path, src: Path = ROOT / "src") -> tuple[float, str]:
    """Seconds of one ``pcnn predict`` subprocess running the package in ``src`` (fails loudly) and its ``ray:``
    line (the work split), if any."""
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pcnn_fer.cli", "predict", *args, "--out", str(out),
                           "--no-annotate"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pcnn predict {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return wall, next((x for x in done.stderr.splitlines() if x.startswith("ray: ")), "")


def same_rows(local: Path, ray: Path) -> float:
    """Largest probability difference between the local CSV and the Ray Parquet (faces and labels must match)."""
    import pandas as pd

    a, b = pd.read_csv(local / "predictions.csv"), pd.read_parquet(ray / "predictions.parquet")
    a = a[[c for c in a.columns if c in b.columns]]  # a --baseline checkout may predate a column
    assert list(a.columns) == list(b.columns) and len(a) == len(b), "different rows"
    assert (a["source"] == b["source"]).all() and (a["label"] == b["label"]).all(), "different labels"
    numbers = [c for c in a.columns if a[c].dtype.kind == "f" and b[c].dtype.kind == "f"]
    return float(np.nanmax(np.abs(a[numbers].to_numpy(float) - b[numbers].to_numpy(float))))


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    """The two jobs' inputs (``--faces``/``--count``, ``--photos``/``--copies``), shared with ray_startup.py."""
    shared = Path(os.environ.get("PCNN_FER_SHARED", ROOT.parent / "shared"))
    parser.add_argument("--faces", type=Path, default=shared / "data" / "ferplus" / "FER2013Valid")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--photos", type=Path, default=shared / "samples")
    parser.add_argument("--copies", type=int, default=5, help="each photo this many times (15 photos from 3)")


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_job_flags(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--skip-cli", action="store_true", help="only the in-process rates")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"),
                        help="the classifier backend of the in-process rates (auto: what pcnn predict uses)")
    parser.add_argument("--cli-only", action="store_true", help="only the whole commands")
    parser.add_argument("--baseline", type=Path, help="another checkout's src/ whose Ray commands run alongside")
    parser.add_argument("--no-workers", action="store_true", help="leave out the local worker-pool row")
    parser.add_argument("--running-ray", action="store_true",
                        help="also time the Ray commands on a Ray started before them (--ray-address)")
    parser.add_argument("--running-ray-only", action="store_true", help="the local engine and --running-ray only")
    args = parser.parse_args()
    print(f"cpu: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; {cpu_capabilities()}")
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        faces = link_inputs(args.faces, Path(tmp) / "faces", args.count)
        photos = link_inputs(args.photos, Path(tmp) / "photos", copies=args.copies)
        if not args.cli_only:
            described, rates = model_and_folder_rates(faces, args.threads, args.rounds, args.backend)
            print(f"\n{args.count} faces, --no-detect, {args.threads} threads, backend {described}"
                  f", img/s and CPU ms/img (median of {args.rounds}):")
            best = max(rates["model, spinning on"][0], rates["model, spinning off"][0])
            for name, (rate, cpu_ms) in rates.items():
                print(f"  {name:<22} {rate:7.1f}   x the faster model row {rate / best:.2f}   "
                      f"{cpu_ms:6.2f} CPU ms/img")
            photo = photo_rates(photos, args.threads, args.rounds, args.backend)
            print(f"\n{len(list(photos.iterdir()))} photos, detection, {args.threads} threads (median of "
                  f"{args.rounds}):")
            for name, (rate, share) in photo.items():
                print(f"  {name:<22} {rate:7.2f} photos/s   x one by one "
                      f"{rate / photo['photos, one by one'][0]:.2f}   cores busy {share:.0%}")
            print(f"load average after the in-process rates: {os.getloadavg()}")
        if args.skip_cli:
            return
        jobs = {"faces": [str(faces), "--no-detect"], "photos": [str(photos)]}
        variants = {"local": ["--save-csv", "--workers", "1"],
                    "local, 1 worker per CPU": ["--save-csv", "--workers", str(args.threads)],
                    "ray, 1 actor": ["--engine", "ray", "--actors", "1", "--save-parquet"],
                    f"ray, {args.threads} actors": ["--engine", "ray", "--actors", str(args.threads),
                                                    "--save-parquet"],
                    "ray, default": ["--engine", "ray", "--save-parquet"]}
        if args.baseline is not None:  # the same Ray commands run by another checkout's package, in the same rounds
            variants.update({f"{name} (baseline)": flags for name, flags in list(variants.items())
                             if name.startswith("ray") and name != "ray, default"})
        if args.no_workers:
            del variants["local, 1 worker per CPU"]
        if args.running_ray_only:
            variants = {"local": variants["local"]}
        if args.running_ray or args.running_ray_only:  # the job alone, on a Ray already started (here, by this
            # benchmark) and joined
            import ray

            ray.init(num_cpus=args.threads, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            address = ray.get_runtime_context().gcs_address
            for actors in (1, args.threads):
                variants[f"running Ray, {actors} actor(s)"] = ["--engine", "ray", "--ray-address", address,
                                                               "--actors", str(actors), "--save-parquet"]
        walls: dict[tuple[str, str], list[float]] = {}
        worst = 0.0
        for _ in range(args.rounds):
            for job, sources in jobs.items():
                for name, flags in variants.items():
                    out = Path(tmp) / f"{job}-{name.replace(' ', '_')}"
                    src = args.baseline if name.endswith("(baseline)") else ROOT / "src"
                    wall, split = cli_wall([*sources, *flags], out, src)
                    walls.setdefault((job, name), []).append(wall)
                    if split:
                        print(f"  {job} / {name}: {wall:.1f} s; {split}", flush=True)
                    if "ray" in name.lower():
                        worst = max(worst, same_rows(Path(tmp) / f"{job}-local", out))
        print(f"\nCLI wall seconds (median of {args.rounds}; start-up included); max |Δp| Ray vs local {worst:.1e}")
        for job in jobs:
            local = statistics.median(walls[(job, "local")])
            for name in variants:
                wall = statistics.median(walls[(job, name)])
                print(f"  {job:<7} {name:<26} {wall:7.1f} s   x local {wall / local:.2f}   "
                      f"(all: {', '.join(f'{w:.1f}' for w in walls[(job, name)])})")
    print(f"load average at end: {os.getloadavg()}")
    print(f"CPU time of this benchmark's children: {os.times().children_user + os.times().children_system:.1f} s")


if __name__ == "__main__":
    main()
