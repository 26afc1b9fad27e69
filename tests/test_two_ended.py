"""The work split of ``pcnn predict --engine ray`` while Ray starts: the driver from the front, the actors from the
back (:class:`pcnn_fer.faces.two_ended.TwoEnded`); every item's results exactly once, in item order."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from pcnn_fer.faces.two_ended import TwoEnded


def _near(log: list[str], delay: float = 0.0):
    def near(item: int) -> list[str]:
        log.append(f"near {item}")
        time.sleep(delay)
        return [f"{item}a", f"{item}b"]  # an item may have several results (a video's frames)

    return near


def _expected(count: int) -> list[str]:
    return [f"{i}{s}" for i in range(count) for s in "ab"]


def test_a_far_side_never_ready_leaves_every_item_to_the_near_side():
    release, log = threading.Event(), []

    def far(untaken):
        release.wait(5)  # Ray still starting when the driver is done
        yield from ((i, ["far"]) for i in untaken())

    two = TwoEnded(7, _near(log), far)
    out = list(two.results())
    release.set()
    two.thread.join(5)
    assert out == _expected(7) and two.near_items == 7


def test_a_fast_far_side_takes_the_back_and_the_two_meet_once():
    log: list[str] = []
    taken: list[list[int]] = []

    def far(untaken):
        items = untaken()
        taken.append(items)
        for i in items:
            time.sleep(0.01)  # five far items per near one
            yield i, [f"{i}a", f"{i}b"]
            log.append(f"far {i}")

    two = TwoEnded(40, _near(log, delay=0.05), far)
    out = list(two.results())
    assert out == _expected(40)  # each item once, in order, whichever side did it
    assert taken[0] == sorted(taken[0], reverse=True) and taken[0][0] == 39  # from the back
    assert 1 <= two.near_items < 20 and sum(entry.startswith("far") for entry in log) > 20


def test_an_item_done_by_both_sides_keeps_the_near_results():
    started = threading.Event()

    def near(item: int) -> list[str]:
        started.set()
        time.sleep(0.2)  # the far side reaches this item meanwhile
        return [f"near {item}"]

    def far(untaken):
        started.wait(5)
        for i in untaken():
            yield i, [f"far {i}"]

    out = list(TwoEnded(3, near, far).results())
    assert out == ["near 0", "far 1", "far 2"]


def test_a_failing_far_side_stops_the_job():
    def far(untaken):
        untaken()
        raise RuntimeError("cluster lost")
        yield  # pragma: no cover - a generator

    def near(item: int) -> list[int]:
        time.sleep(0.05)
        return [item]

    with pytest.raises(RuntimeError, match="cluster lost"):
        list(TwoEnded(50, near, far).results())


def _noise_faces(folder, count: int, seed: int):
    """``folder`` with ``count`` seeded 48×48 noise PNGs named ``f0000.png`` … (sorted as numbered)."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / f"f{i:04d}.png")
    return folder


def test_a_job_shorter_than_a_local_rays_start_starts_no_ray_and_gives_the_local_rows(checkpoint, tmp_path, run_cli):
    """``--engine ray`` with no cluster on a job the driver finishes in well under :data:`RAY_START_S` +
    :data:`POOL_START_S`: no local Ray is started (Ray is not even imported), the console says so, and the rows are
    the local engine's."""
    pytest.importorskip("ray")

    folder = _noise_faces(tmp_path / "faces", 24, seed=4)
    common = [folder, "--no-detect", "--checkpoint", checkpoint, "--batch-size", "4", "--backend", "torch",
              "--save-csv", "--no-annotate"]
    code, _, _ = run_cli(["predict", *common, "--out", tmp_path / "local"])
    assert code == 0
    code, _, err = run_cli(["predict", *common, "--out", tmp_path / "ray", "--engine", "ray"])
    assert code == 0
    assert "ray: no local Ray started" in err and "classified all 6 batch(es)" in err
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()
    assert (tmp_path / "ray" / "predictions.csv").read_text() == (tmp_path / "local" / "predictions.csv").read_text()


@pytest.mark.slow
def test_a_local_ray_job_shares_its_batches_with_the_driver_and_gives_the_local_rows(checkpoint, tmp_path, run_cli,
                                                                                    monkeypatch):
    """``--engine ray`` with no cluster: the command starts a local Ray while it loads its model, classifies batches
    from the front while Ray starts, and writes the local engine's rows (every input once, in order). The driver is
    slowed to a second per batch, as in a job far longer than Ray's start-up, so that the actors take a share."""
    ray = pytest.importorskip("ray")
    from pcnn_fer.faces import workers

    around = workers.BatchRecognizer.around

    def slow_driver(*args, **kwargs):
        batches = around(*args, **kwargs)

        def recognise(batch):
            time.sleep(1.0)
            return workers.BatchRecognizer.__call__(batches, batch)

        return recognise

    monkeypatch.setattr(workers.BatchRecognizer, "around", slow_driver)
    pytest.importorskip("ray.data")
    pd = pytest.importorskip("pandas")
    import numpy as np

    if ray.is_initialized():
        ray.shutdown()
    folder = _noise_faces(tmp_path / "faces", 300, seed=3)
    common = [folder, "--no-detect", "--checkpoint", checkpoint, "--batch-size", "4", "--backend", "torch",
              "--save-csv", "--save-jsonl", "--no-annotate", "--quiet"]
    code, _, _ = run_cli(["predict", *common, "--out", tmp_path / "local"])
    assert code == 0
    code, _, err = run_cli(["predict", *common[:-1], "--out", tmp_path / "ray", "--engine", "ray", "--save-parquet"])
    assert code == 0 and not ray.is_initialized()  # the Ray it started is shut down
    line = next(x for x in err.splitlines() if x.startswith("ray: "))
    driver, total = (int(x) for x in line.split("classified ")[1].split(" batch")[0].split(" of "))
    assert total == 75 and 1 <= driver < total  # both ends worked
    local, remote = pd.read_csv(tmp_path / "local" / "predictions.csv"), pd.read_parquet(tmp_path / "ray" /
                                                                                       "predictions.parquet")
    assert list(remote["source"]) == list(local["source"]) == [str(folder / f"f{i:04d}.png") for i in range(300)]
    assert (remote["label"] == local["label"]).all()
    numbers = [c for c in local.columns if c.startswith("p_")]
    assert np.abs(remote[numbers].to_numpy() - local[numbers].to_numpy()).max() <= 1e-4
    assert (tmp_path / "ray" / "predictions.jsonl").read_text().count("\n") == 300
