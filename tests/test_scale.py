"""Past one process: manifests of paths, ``--save-parquet`` and ``pcnn predict --engine ray`` (issue 34).

The Ray tests start a local Ray with 2 CPUs once for the module (about 10 s) and shut it down; the multi-node and
kill -9 test simulates a two-node cluster with ``ray.cluster_utils.Cluster``."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcnn_fer.errors import UsageError
from pcnn_fer.faces.sources import expand_sources


def _faces(folder: Path, count: int, seed: int = 5) -> Path:
    """``count`` distinct 48×48 gray faces-to-be (random textures), named in order."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / f"f{i:04d}.png")
    return folder


def _predict(run_cli, *argv) -> tuple[int, str, str]:
    return run_cli(["predict", *argv])


def _assert_same_table(csv_path: Path, table, tolerance: float = 0.0) -> None:
    """The Parquet table (a DataFrame) holds the CSV's columns and rows: numbers within ``tolerance``, text equal."""
    pd = pytest.importorskip("pandas")
    csv = pd.read_csv(csv_path)
    assert list(table.columns) == list(csv.columns) and len(table) == len(csv)
    for column in csv.columns:
        a, b = csv[column], table[column]
        if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
            assert np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=0, atol=tolerance, equal_nan=True), column
        else:
            assert [("" if pd.isna(v) else str(v)) for v in a] == [("" if pd.isna(v) else str(v)) for v in b], column


def test_csv_and_parquet_manifests_list_inputs(tmp_path):
    folder = _faces(tmp_path / "faces", 3)
    (tmp_path / "list.csv").write_text("path,label\nfaces/f0000.png,a\nfaces/nope.png,b\n" +
                                       f"{folder / 'f0002.png'},c\n\n")
    sources = expand_sources([tmp_path / "list.csv"])
    assert [s.kind for s in sources] == ["image", "missing", "image"]
    assert sources[0].location == str(tmp_path / "faces" / "f0000.png")  # relative to the manifest's folder
    assert "entry 2 of list.csv" in sources[1].reason
    (tmp_path / "bare.csv").write_text("faces/f0001.png\nfaces\n")  # no header: every line is a path
    assert [Path(s.location).name for s in expand_sources([tmp_path / "bare.csv"])] == \
        ["f0001.png", "f0000.png", "f0001.png", "f0002.png"]
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"id": [1, 2], "path": ["faces/f0001.png", "gone.jpg"]}), tmp_path / "list.parquet")
    assert [s.kind for s in expand_sources([tmp_path / "list.parquet"])] == ["image", "missing"]
    (tmp_path / "empty.csv").write_text("path\n")
    assert expand_sources([tmp_path / "empty.csv"])[0].reason == "manifest lists no paths"
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UsageError, match="not a readable Parquet file"):
        expand_sources([tmp_path / "broken.parquet"])


@pytest.mark.slow
def test_save_parquet_holds_the_csv_rows_typed(checkpoint, tmp_path, run_cli):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    folder = _faces(tmp_path / "faces", 5)
    (tmp_path / "list.csv").write_text("path\n" + "".join(f"faces/f{i:04d}.png\n" for i in range(5)) + "missing.png\n")
    code, _, _ = _predict(run_cli, tmp_path / "list.csv", "--no-detect", "--checkpoint", checkpoint, "--out",
                          tmp_path / "out", "--save-csv", "--save-parquet", "--save-jsonl", "--quiet")
    assert code == 0
    table = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    _assert_same_table(tmp_path / "out" / "predictions.csv", table)
    assert len(table) == 6 and table["frame"].isna().all() and table["face"][:5].tolist() == [0] * 5
    assert table["p_neutral"].dtype.kind == "f" and table["time_s"].dtype.kind == "f"
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records][-1].startswith("no such file")  # the manifest's missing entry: one record
    assert str(folder) in records[0]["source"]
    # ... and one row in the tables: its source and reason, the rest empty
    assert table["error"][:5].isna().all() and table["error"][5] == records[-1]["skipped"]
    assert table["source"][5] == str(tmp_path / "missing.png") and table[["label", "face", "p_neutral"]][5:].isna().all(
        axis=None)


def _manifest_with_faults(tmp_path: Path) -> Path:
    """A CSV manifest of 6 faces with a missing entry and an unreadable one (a text file named .png) between them."""
    _faces(tmp_path / "faces", 6)
    (tmp_path / "faces" / "broken.png").write_text("not an image")
    names = ["f0000.png", "f0001.png", "gone.png", "f0002.png", "broken.png", "f0003.png", "f0004.png", "f0005.png"]
    (tmp_path / "list.csv").write_text("path\n" + "".join(f"faces/{n}\n" for n in names))
    return tmp_path / "list.csv"


def _assert_fault_rows(out: Path) -> None:
    """Each bad manifest entry is one row with its error, between the rows of the faces around it."""
    pd = pytest.importorskip("pandas")
    for table in (pd.read_csv(out / "predictions.csv"), pd.read_parquet(out / "predictions.parquet")):
        assert [Path(s).name for s in table["source"]] == ["f0000.png", "f0001.png", "gone.png", "f0002.png",
                                                           "broken.png", "f0003.png", "f0004.png", "f0005.png"]
        errors = [None if pd.isna(e) else e for e in table["error"]]
        assert errors[2].startswith("no such file or directory (entry 3 of list.csv)")
        assert "not an image" in errors[4] or "cannot" in errors[4]
        assert [k for k, e in enumerate(errors) if e is None] == [0, 1, 3, 5, 6, 7]
        assert table["label"].isna().tolist() == [e is not None for e in errors]


@pytest.mark.slow
def test_a_manifests_bad_entries_are_error_rows_locally(checkpoint, tmp_path, run_cli):
    pytest.importorskip("pyarrow")
    manifest = _manifest_with_faults(tmp_path)
    code, _, _ = _predict(run_cli, manifest, "--no-detect", "--checkpoint", checkpoint, "--out", tmp_path / "out",
                          "--save-csv", "--save-parquet", "--quiet", "--no-annotate")
    assert code == 0
    _assert_fault_rows(tmp_path / "out")


def test_missing_extras_are_one_line(checkpoint, tmp_path, run_cli, monkeypatch):
    folder = _faces(tmp_path / "faces", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    code, _, err = _predict(run_cli, folder, "--no-detect", "--checkpoint", checkpoint, "--engine", "ray")
    assert code == 1
    assert err.strip() == "pcnn predict: error: --engine ray needs Ray Data: pip install 'pcnn-fer[scale]'"
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    code, _, err = _predict(run_cli, folder, "--no-detect", "--checkpoint", checkpoint, "--save-parquet")
    assert code == 1 and err.strip().endswith("--save-parquet needs pyarrow: pip install 'pcnn-fer[scale]'")
    code, _, err = _predict(run_cli, folder, "--no-detect", "--checkpoint", checkpoint, "--actors", "2")
    assert code == 1 and "apply to --engine ray" in err


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for the module's tests, shut down after them."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def _local_and_ray(checkpoint, tmp_path, run_cli, sources, *extra) -> tuple[Path, Path]:
    common = [*sources, "--checkpoint", checkpoint, "--save-csv", "--save-jsonl", "--no-annotate", "--quiet", *extra]
    assert _predict(run_cli, *common, "--out", tmp_path / "local")[0] == 0
    assert _predict(run_cli, *common, "--out", tmp_path / "ray", "--engine", "ray", "--save-parquet")[0] == 0
    return tmp_path / "local", tmp_path / "ray"


def _assert_same_rows(local: Path, ray: Path) -> None:
    pd = pytest.importorskip("pandas")
    _assert_same_table(local / "predictions.csv", pd.read_parquet(ray / "predictions.parquet"), tolerance=1e-4)
    local_records = [json.loads(x) for x in (local / "predictions.jsonl").read_text().splitlines()]
    ray_records = [json.loads(x) for x in (ray / "predictions.jsonl").read_text().splitlines()]
    assert [(r["source"], r["frame"], r["skipped"], len(r["faces"])) for r in local_records] == \
        [(r["source"], r["frame"], r["skipped"], len(r["faces"])) for r in ray_records]


@pytest.mark.slow
def test_ray_engine_gives_the_local_rows(local_ray, checkpoint, tmp_path, run_cli, shared_dir):
    """Cropped faces (with a missing manifest entry) and a real photo with detection: the same records, labels and
    probabilities (≤ 1e-4) as the local engine; a resumed Ray job skips what is written."""
    _faces(tmp_path / "faces", 40)
    (tmp_path / "list.csv").write_text("path\n" + "".join(f"faces/f{i:04d}.png\n" for i in range(40)) + "gone.png\n")
    crops = [tmp_path / "list.csv", "--no-detect", "--batch-size", "8", "--backend", "torch"]
    local, ray = _local_and_ray(checkpoint, tmp_path / "crops", run_cli, crops)
    _assert_same_rows(local, ray)
    assert json.loads((ray / "predictions.jsonl").read_text().splitlines()[-1])["skipped"].startswith("no such")
    # --resume: a job cut after 12 records carries on and ends with the same file
    whole = (ray / "predictions.jsonl").read_bytes()
    (ray / "predictions.jsonl").write_bytes(b"".join(whole.splitlines(keepends=True)[:12]))
    code, _, err = _predict(run_cli, *crops, "--checkpoint", checkpoint, "--out", ray, "--resume", "--no-annotate",
                            "--engine", "ray")
    assert code == 0 and "resuming after 8 record(s)" in err  # cut back to a batch boundary
    assert (ray / "predictions.jsonl").read_bytes() == whole
    photo = shared_dir / "samples" / "astronaut.png"
    if not photo.is_file():
        pytest.skip(f"sample photo not found: {photo}")
    import cv2

    video = tmp_path / "clip.mp4"  # the photo as a 4-frame video: tracked faces, people summary
    image = cv2.imread(str(photo))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (image.shape[1], image.shape[0]))
    for _ in range(4):
        writer.write(image)
    writer.release()
    code, _, err = _predict(run_cli, video, "--checkpoint", checkpoint, "--out", tmp_path / "drawn", "--engine", "ray")
    assert code == 1 and "annotated videos are drawn by the local engine" in err
    local, ray = _local_and_ray(checkpoint, tmp_path / "photos", run_cli, [photo, video, "--backend", "torch"])
    _assert_same_rows(local, ray)
    records = [json.loads(x) for x in (ray / "predictions.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [None, 0, 1, 2, 3] and all(len(r["faces"]) == 1 for r in records)
    assert records[1]["faces"][0]["face_id"] is not None
    summaries = sorted(p.relative_to(local) for p in local.rglob("*.json"))
    assert summaries and summaries == sorted(p.relative_to(ray) for p in ray.rglob("*.json"))


@pytest.mark.slow
def test_a_manifests_bad_entries_are_error_rows_on_ray(local_ray, checkpoint, tmp_path, run_cli):
    pytest.importorskip("pyarrow")
    manifest = _manifest_with_faults(tmp_path)
    local, ray = _local_and_ray(checkpoint, tmp_path, run_cli, [manifest, "--no-detect", "--backend", "torch"],
                                "--save-parquet")
    _assert_fault_rows(ray)
    _assert_same_rows(local, ray)
    # 2 actors on batches of one input, Ray Data's order left at its default: the engine asks for input order itself
    local_ray.data.DataContext.get_current().execution_options.preserve_order = False
    (tmp_path / "many.csv").write_text(manifest.read_text() + manifest.read_text().split("\n", 1)[1] * 5)
    common = [tmp_path / "many.csv", "--no-detect", "--backend", "torch", "--batch-size", "1", "--checkpoint",
              checkpoint, "--save-csv", "--save-parquet", "--save-jsonl", "--no-annotate", "--quiet"]
    assert _predict(run_cli, *common, "--out", tmp_path / "one")[0] == 0
    assert _predict(run_cli, *common, "--out", tmp_path / "two", "--engine", "ray", "--actors", "2")[0] == 0
    _assert_same_rows(tmp_path / "one", tmp_path / "two")  # 48 inputs in 6 blocks over 2 actors, in input order


def _actor_pids() -> list[int]:
    """Ray model actors among this process's descendants (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    mine, found = {os.getpid()}, []
    for _ in range(8):
        mine |= {p for p, q in parents.items() if q in mine}
    for pid in mine - {os.getpid()}:
        try:
            if b"BatchRecognizer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the Ray worker to kill through /proc")
def test_two_node_cluster_survives_a_killed_worker(checkpoint, tmp_path, run_cli):
    """A simulated two-node cluster (1 CPU each): a model actor killed with SIGKILL mid-job is restarted and its
    batch redone; every input comes out exactly once, with the local engine's rows."""
    ray = pytest.importorskip("ray")
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    if ray.is_initialized():
        ray.shutdown()
    count = 160
    folder = _faces(tmp_path / "faces", count)
    common = [folder, "--no-detect", "--checkpoint", checkpoint, "--batch-size", "4", "--backend", "torch",
              "--save-csv", "--save-jsonl", "--quiet"]
    assert _predict(run_cli, *common, "--out", tmp_path / "local")[0] == 0
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    killed: list[int] = []
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        jsonl = tmp_path / "ray" / "predictions.jsonl"

        def kill_one() -> None:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not killed:
                lines = jsonl.read_bytes().count(b"\n") if jsonl.is_file() else 0
                pids = _actor_pids()
                if lines >= 8 and pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(lines)
                time.sleep(0.05)

        killer = threading.Thread(target=kill_one, daemon=True)
        killer.start()
        code, _, _ = _predict(run_cli, *common, "--out", tmp_path / "ray", "--engine", "ray", "--save-parquet",
                              "--actors", "2")  # one per node (the job alone would be given one)
        killer.join(timeout=5)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert code == 0
    assert killed and killed[0] < count, "no actor was killed mid-job"
    records = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [r["source"] for r in records] == [str(folder / f"f{i:04d}.png") for i in range(count)]
    _assert_same_rows(tmp_path / "local", tmp_path / "ray")


def test_parquet_rows_keep_undecodable_names_and_publish_only_complete_files(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from pcnn_fer.faces.parquet import ParquetRows

    rows = ParquetRows(tmp_path / "p.parquet", ["source", "frame", "face", "score", "note"])
    rows.add([[os.fsdecode(b"caf\xe9.png"), "", 0, 0.5, "x"], ["b.png", 3, 1, 1, ""]])
    assert rows.close() == tmp_path / "p.parquet"
    table = pq.read_table(tmp_path / "p.parquet").to_pydict()
    assert table == {"source": ["caf\\udce9.png", "b.png"], "frame": [None, 3], "face": [0, 1], "score": [0.5, 1.0],
                     "note": ["x", None]}
    dropped = ParquetRows(tmp_path / "q.parquet", ["source"])
    dropped.add([["a"]])
    assert dropped.close(complete=False) is None and list(tmp_path.iterdir()) == [tmp_path / "p.parquet"]


def test_auto_workers_need_enough_stills():
    from pcnn_fer.faces.sources import Source
    from pcnn_fer.faces.workers import AUTO_BATCHES_PER_CORE, auto_workers

    photos = [Source("image", f"{i}.jpg") for i in range(AUTO_BATCHES_PER_CORE * 2)]
    assert auto_workers(photos, detects=True, batch_size=32, cores=2) == 2
    assert auto_workers(photos[:-1], detects=True, batch_size=32, cores=2) == 1
    assert auto_workers(photos * 100, detects=False, batch_size=32, cores=2) == 1  # crops: the model's threads
    assert auto_workers(photos, detects=True, batch_size=32, cores=1) == 1
    assert auto_workers([*photos, Source("video", "v.mp4")], detects=True, batch_size=32, cores=2) == 1


@pytest.mark.slow
def test_worker_processes_give_the_same_files(checkpoint, tmp_path, run_cli):
    _faces(tmp_path / "faces", 30)
    (tmp_path / "list.csv").write_text("path\n" + "".join(f"faces/f{i:04d}.png\n" for i in range(30)) + "gone.png\n")
    common = [tmp_path / "list.csv", "--no-detect", "--checkpoint", checkpoint, "--batch-size", "4", "--save-csv",
              "--save-jsonl", "--no-annotate", "--quiet"]
    assert _predict(run_cli, *common, "--out", tmp_path / "one", "--workers", "1")[0] == 0
    assert _predict(run_cli, *common, "--out", tmp_path / "two", "--workers", "2")[0] == 0
    for name in ("predictions.csv", "predictions.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    for bad, why in (("0", "at least 1"), ("many", "a number or auto")):
        code, _, err = _predict(run_cli, *common, "--out", tmp_path / "bad", "--workers", bad)
        assert code == 1 and f"--workers must be {why}" in err


def _children(pid: int) -> list[int]:
    """Descendants of ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, q in parents.items() if q in frontier} - found
        found |= frontier
    return sorted(found)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker to kill through /proc")
def test_a_killed_worker_stops_the_job_in_one_line_and_resume_finishes_it(checkpoint, tmp_path, pcnn_popen,
                                                                           pcnn_subprocess):
    import subprocess

    folder = _faces(tmp_path / "faces", 400)
    common = ["predict", folder, "--no-detect", "--checkpoint", checkpoint, "--batch-size", "4", "--save-csv",
              "--save-jsonl", "--no-annotate", "--quiet", "--backend", "torch"]
    assert pcnn_subprocess([*common, "--out", tmp_path / "whole", "--workers", "1"], timeout=600).returncode == 0
    out = tmp_path / "killed"
    proc = pcnn_popen([*common, "--out", out, "--workers", "2"], stderr=subprocess.PIPE, text=True)
    jsonl, killed = out / "predictions.jsonl", False
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not killed:
        workers = [p for p in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        if len(workers) >= 2 and jsonl.is_file() and jsonl.read_bytes().count(b"\n") >= 8:
            os.kill(workers[0], signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert killed, "the job ended before a worker was killed"
    assert proc.returncode == 1 and err.strip().splitlines()[-1].startswith("pcnn predict: error: a worker process")
    assert not (out / "predictions.csv").exists()  # nothing half-written is published
    resumed = pcnn_subprocess([*common, "--out", out, "--workers", "2", "--resume"], timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("predictions.csv", "predictions.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_workers_end_with_a_killed_job(checkpoint, tmp_path, pcnn_popen):
    import subprocess

    folder = _faces(tmp_path / "faces", 400)
    proc = pcnn_popen(["predict", folder, "--no-detect", "--checkpoint", checkpoint, "--batch-size", "4",
                       "--save-jsonl", "--out", tmp_path / "out", "--workers", "2", "--quiet", "--backend", "torch"],
                      stderr=subprocess.DEVNULL)
    jsonl, workers, deadline = tmp_path / "out" / "predictions.jsonl", [], time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        workers = [p for p in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        if len(workers) >= 2 and jsonl.is_file() and jsonl.read_bytes().count(b"\n") >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None and len(workers) >= 2, "the job ended before it was killed"
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [p for p in workers if Path(f"/proc/{p}").exists()]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive, "worker processes outlived the killed job"
