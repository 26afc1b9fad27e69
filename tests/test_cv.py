"""``pcnn cv``'s workers and resume: the free-core measurement (two ``/proc/stat`` snapshots, and one real call), the
worker sizing it feeds, worker processes that follow the measured cores, and interrupted runs (mid-member, between
members, mid-evaluation, killed workers, deleted or broken files) finishing with the same result as a straight run
without retraining finished members. A tiny recipe on a synthetic image folder, so the file runs in well under a
minute."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pcnn_fer.engine.checkpoint import load_checkpoint
from pcnn_fer.engine.cores import (
    CoreMeasurement,
    CpuTimes,
    free_cores,
    measure_free_cores,
    parse_proc_stat,
    process_jiffies,
    usable_cpus,
)
from pcnn_fer.engine.cv_workers import size_workers


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_image_folder) -> Path:
    """A 3-class synthetic image folder (36 train faces)."""
    return make_image_folder(tmp_path_factory.mktemp("folder"))


def _cv(folder: Path, out: Path, *extra: str) -> list[str]:
    """``pcnn cv`` arguments for fold 0 of 3 subject-dependent folds of ``folder``, the tiny recipe."""
    return ["cv", "--dataset", "folder", "--root", str(folder), "--protocol", "random", "--folds", "3",
            "--only-folds", "0", "--recipe", "tiny", "--no-progress", "--out", str(out), *extra]


def _results(out: Path) -> tuple[list, dict, dict]:
    """What a finished cv directory concluded: per-fold results, fold 0's metrics (less its paths) and the bytes of
    every member's selected model."""
    cv = json.loads((out / "cv.json").read_text())
    metrics = json.loads((out / "fold00" / "metrics.json").read_text())
    metrics.pop("checkpoint")
    models = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("model.safetensors"))}
    return cv["per_fold"], metrics, models


# --- the free-core measurement ----------------------------------------------------------------------------------------

PROC_STAT = """cpu  300 0 100 500 100 0 0 0 0 0
cpu0 200 0 50 200 50 0 0 0 0 0
cpu1 100 0 50 300 50 0 0 0 10 5
intr 1519614 0 0
ctxt 3389088
"""


def test_proc_stat_lines_become_idle_and_total_jiffies_per_cpu():
    assert parse_proc_stat(PROC_STAT) == {0: (250, 500), 1: (350, 500)}  # guest time is inside user already
    assert parse_proc_stat("cpu0 1 2 3 4\n") == {0: (4, 10)}  # old kernels: fewer columns


def test_free_cores_from_two_snapshots():
    before = CpuTimes({0: (0, 0), 1: (0, 0), 2: (0, 0)})
    # over 50 jiffies per CPU: cpu0 fully busy, cpu1 idle, cpu2 half busy
    after = CpuTimes({0: (0, 50), 1: (50, 50), 2: (25, 50)})
    assert free_cores(before, after, {0, 1, 2}) == pytest.approx(1.5)
    assert free_cores(before, after, {0, 1}) == pytest.approx(1.0)  # only the CPUs of the affinity set count
    assert free_cores(before, after, {1, 7}) == pytest.approx(1.0)  # a CPU missing from /proc/stat is left out
    # 40 of the busy jiffies were our own processes': they are free for us
    ours = free_cores(replace(before, own={11: 100}), replace(after, own={11: 140}), {0, 1, 2})
    assert ours == pytest.approx(1.5 + 40 / 50)
    # a process of ours that started in the window counts in full, one that ended counts as another's
    assert free_cores(before, replace(after, own={12: 25}), {0, 1, 2}) == pytest.approx(2.0)
    assert free_cores(replace(before, own={13: 500}), after, {0, 1, 2}) == pytest.approx(1.5)
    # never below 0 or above the CPU count
    assert free_cores(before, replace(after, own={11: 10_000}), {0, 1, 2}) == pytest.approx(3.0)
    assert free_cores(CpuTimes({0: (0, 0)}), CpuTimes({0: (0, 50)}), {0}) == 0.0
    with pytest.raises(ValueError, match="no time"):
        free_cores(before, before, {0, 1})
    with pytest.raises(ValueError, match="no CPU"):
        free_cores(before, after, {5})


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="no /proc/stat (not Linux)")
def test_free_cores_measured_on_this_machine_count_our_busy_child_as_free():
    cpus = usable_cpus()
    assert cpus == set(os.sched_getaffinity(0))
    measured = measure_free_cores(0.2)
    assert isinstance(measured, CoreMeasurement) and measured.usable == len(cpus)
    assert 0.0 <= measured.free <= measured.usable and measured.to_dict()["usable"] == len(cpus)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        stat = Path("/proc/stat")
        before = CpuTimes(parse_proc_stat(stat.read_text()), process_jiffies([busy.pid]))
        time.sleep(0.5)
        after = CpuTimes(parse_proc_stat(stat.read_text()), process_jiffies([busy.pid]))
    finally:
        busy.kill()
        busy.wait()
    window = sum(after.per_cpu[c][1] - before.per_cpu[c][1] for c in cpus) / len(cpus)  # jiffies of one CPU
    used = (after.own[busy.pid] - before.own[busy.pid]) / window
    assert 0.1 < used <= 1.1  # one busy thread: at most one core
    as_ours = free_cores(before, after, cpus)
    as_others = free_cores(replace(before, own={}), replace(after, own={}), cpus)
    assert as_ours - as_others == pytest.approx(used, abs=0.1)


def test_no_proc_stat_means_not_measured(monkeypatch, tmp_path):
    monkeypatch.setattr("pcnn_fer.engine.cores.PROC_STAT", tmp_path / "missing")
    assert measure_free_cores(0.01) is None


# --- sizing the workers --------------------------------------------------------------------------------------------


def _measured(free: float, usable: int = 2) -> CoreMeasurement:
    return CoreMeasurement(usable, free, 0.5)


def test_workers_follow_the_measured_free_cores():
    def size(jobs, free, torch_threads=2, **flags):
        s = size_workers(jobs, "cpu", torch_threads, measurement=None if free is None else _measured(free), **flags)
        return s.max_workers, s.start_workers, s.threads, s.budget, s.adaptive

    assert size(20, 2.0) == (2, 2, 1, 2, True)  # idle cores: one single-threaded worker per core
    assert size(20, 0.0) == (2, 1, 1, 1, True)  # busy cores: one at a time, more when cores free up
    assert size(20, 1.4) == (2, 1, 1, 1, True) and size(20, 1.5) == (2, 2, 1, 2, True)  # rounded half up
    assert size(20, 7.6, torch_threads=4) == (4, 4, 1, 4, True)  # never more than torch's threads
    assert size(1, 2.0) == (1, 1, 2, 2, False)  # one model: this process, the free cores as its threads
    assert size(1, 0.3) == (1, 1, 1, 1, False)
    assert size(2, 4.0, torch_threads=4) == (2, 2, 2, 4, True)
    assert size(5, 2.0, torch_threads=1) == (1, 1, 1, 1, False)  # one torch thread: this process
    assert size(20, None) == (2, 2, 1, 2, False)  # not measured (no /proc/stat): one worker per torch thread
    assert size(0, None) == (1, 1, 2, 2, False)
    # what the user asks for wins over the measurement
    assert size(20, 0.0, workers=2, threads=2) == (2, 2, 1, 2, False)
    assert size(20, 0.0, threads=2) == (2, 2, 1, 2, False)
    assert size(20, 0.0, workers=2) == (2, 2, 1, 1, False)
    assert size(20, 2.0, torch_threads=4, workers=1) == (1, 1, 2, 2, False)
    assert size(1, 2.0, workers=3, threads=1) == (1, 1, 1, 1, False)
    described = size_workers(20, "cpu", 2, measurement=_measured(0.04)).describe()
    assert described.startswith("cores: 0.0 of 2 free (/proc/stat over 0.5 s); training 20 model(s) in up to 2 "
                                "worker processes of 1 thread(s) each, 1 at once now")
    assert "not measured" in size_workers(3, "cpu", 2).describe()


def test_workers_need_a_cpu(folder, tmp_path, run_cli):
    from pcnn_fer.errors import UsageError

    gpu = size_workers(5, "cuda", 8)
    assert (gpu.max_workers, gpu.adaptive) == (1, False) and "in this process" in gpu.describe()
    with pytest.raises(UsageError, match="--workers 2 trains in parallel CPU processes"):
        size_workers(5, "cuda", 8, workers=2)
    with pytest.raises(UsageError, match="--workers must be at least 1"):
        size_workers(5, "cpu", 2, workers=0)
    with pytest.raises(SystemExit) as exit_:  # an argparse value check: one line, exit 1 like every bad value
        run_cli(_cv(folder, tmp_path / "x", "--workers", "0"))
    assert exit_.value.code == 1


@pytest.mark.slow
def test_cv_json_records_the_measurement_and_the_choice(folder, tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr("pcnn_fer.engine.cv.measure_free_cores", lambda: _measured(0.0))
    code, out, err = run_cli(_cv(folder, tmp_path / "cv", "--epochs", "1"))
    assert code == 0, err
    assert "cores: 0.0 of 2 free (/proc/stat over 0.5 s); training 1 model(s) in this process with 1 thread(s)" in out
    cv = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert cv["workers"] == 1 and cv["threads"] == 1
    assert cv["worker_sizing"]["cores"] == _measured(0.0).to_dict() and cv["worker_sizing"]["adaptive"] is False


# --- worker processes ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cv_workers_train_the_same_models_as_one_process(folder, tmp_path, run_cli):
    common = ["--only-folds", "0", "1", "--epochs", "1", "--members", "2"]
    code, out, err = run_cli(_cv(folder, tmp_path / "one", *common, "--threads", "1", "--workers", "1"))
    assert code == 0, err
    assert "worker processes" not in out and json.loads((tmp_path / "one" / "cv.json").read_text())["workers"] == 1
    code, out, err = run_cli(_cv(folder, tmp_path / "two", *common, "--threads", "2", "--workers", "2"))
    assert code == 0, err
    assert "training 4 model(s) in 2 worker processes of 1 thread(s) each" in out
    one, two = (json.loads((tmp_path / d / "cv.json").read_text()) for d in ("one", "two"))
    assert two["workers"] == 2 and two["per_fold"] == one["per_fold"]
    for fold, member in (("fold00", ""), ("fold00", "member1"), ("fold01", ""), ("fold01", "member1")):
        a, b = (tmp_path / d / fold / member / "model.safetensors" for d in ("one", "two"))
        assert a.read_bytes() == b.read_bytes()  # one thread each, same seeds: the same weights
    code, out, err = run_cli(_cv(folder, tmp_path / "two", *common, "--threads", "2", "--workers", "2"))
    assert code == 0 and "reusing" in out and "worker processes" not in out  # nothing left to train


@pytest.mark.slow
def test_adaptive_workers_follow_the_free_cores_between_members(folder, tmp_path, run_cli, monkeypatch):
    """Busy cores at the start: one member at a time; the cores free up after the first member: two at once. The
    models are those of one process."""
    common = ["--epochs", "1", "--members", "3"]
    code, _, err = run_cli(_cv(folder, tmp_path / "one", *common, "--threads", "1", "--workers", "1"))
    assert code == 0, err
    torch.set_num_threads(2)  # torch's default here: the ceiling of the adaptive sizing (reset after the test)
    monkeypatch.setattr("pcnn_fer.engine.cv.measure_free_cores", lambda: _measured(0.0))
    monkeypatch.setattr("pcnn_fer.engine.cv_workers.measure_free_cores", lambda: _measured(2.0))
    code, out, err = run_cli(_cv(folder, tmp_path / "adaptive", *common))
    assert code == 0, err
    assert "training 3 model(s) in up to 2 worker processes of 1 thread(s) each, 1 at once now" in out
    assert "cores: 2.0 of 2 free for this run now: up to 2 member(s) at once" in out
    cv = json.loads((tmp_path / "adaptive" / "cv.json").read_text())
    assert cv["worker_sizing"]["adaptive"] is True and cv["worker_sizing"]["start_workers"] == 1
    assert cv["workers_timeline"][0]["running"] == 0 and cv["workers_timeline"][0]["limit"] == 2
    assert _results(tmp_path / "adaptive") == _results(tmp_path / "one")


@pytest.mark.slow
def test_killed_cv_leaves_no_worker_behind_and_resumes(folder, tmp_path, run_cli, pcnn_popen):
    """SIGKILL ``pcnn cv`` while its two workers train: the workers end themselves (no orphan keeps writing the run
    directory), and the next run finishes from their checkpoints with a straight run's models."""
    common = ["--epochs", "8", "--members", "2"]
    code, _, err = run_cli(_cv(folder, tmp_path / "straight", *common, "--threads", "1", "--workers", "1"))
    assert code == 0, err
    out = tmp_path / "killed"
    proc = pcnn_popen(_cv(folder, out, *common, "--threads", "2", "--workers", "2"), stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE)
    deadline = time.time() + 120
    checkpoints = (out / "fold00" / "last.pt", out / "fold00" / "member1" / "last.pt")
    while not all(p.exists() for p in checkpoints) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")
               if _parent_of(p) == proc.pid]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert len(workers) >= 2
    deadline = time.time() + 15
    while any(Path(f"/proc/{pid}").exists() and _state_of(pid) != "Z" for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists() and _state_of(pid) != "Z"]
    epochs = [load_checkpoint(p.parent)["epoch"] for p in checkpoints]
    assert all(1 <= e < 8 for e in epochs), epochs  # killed in the middle of both members
    code, out_text, err = run_cli(_cv(folder, out, *common, "--threads", "1", "--workers", "1"))
    assert code == 0, err
    assert f"resuming {out / 'fold00'} after epoch {epochs[0]}" in out_text
    assert f"resuming {out / 'fold00' / 'member1'} after epoch {epochs[1]}" in out_text
    assert _results(out) == _results(tmp_path / "straight")


def _parent_of(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def test_cv_worker_lines_are_prefixed_line_by_line(capsys):
    from pcnn_fer.engine.cv_workers import PrefixedLog

    PrefixedLog("[fold 1 member 0]")("init: class map\n  anger <- anger")
    assert capsys.readouterr().out.splitlines() == ["[fold 1 member 0] init: class map",
                                                    "[fold 1 member 0]   anger <- anger"]


def test_cv_worker_lines_are_written_whole_with_their_newline(monkeypatch):
    """One write per message, newline included: under PYTHONUNBUFFERED each write reaches the file at once, and a
    newline written apart lets another worker's line land in the middle of this one."""
    import io

    from pcnn_fer.engine.cv_workers import PrefixedLog

    writes: list[str] = []

    class Recorder(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    monkeypatch.setattr("sys.stdout", Recorder())
    PrefixedLog("[fold 0 member 1]")("epoch 2/20 loss 4.7 *")
    PrefixedLog("[fold 0 member 1]")("a\nb")
    assert writes == ["[fold 0 member 1] epoch 2/20 loss 4.7 *\n", "[fold 0 member 1] a\n[fold 0 member 1] b\n"]


# --- resume --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight(folder, tmp_path_factory) -> Path:
    """A cv directory trained without interruption: fold 0, two members of three epochs, in this process."""
    from pcnn_fer.cli import main

    out = tmp_path_factory.mktemp("straight") / "cv"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:  # the decode cache of the test session, as for every test
            patch.setenv("PCNN_FER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
            assert main(_cv(folder, out, "--epochs", "3", "--members", "2", "--threads", "1")) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _interrupt_after(monkeypatch, run_dir: Path, epoch: int) -> None:
    """Ctrl-C right after ``run_dir`` saved ``epoch`` (its last.pt is written)."""
    from pcnn_fer.engine.artefacts import RunFolder

    save_epoch = RunFolder.save_epoch

    def interrupted(self, state, *args, **kwargs):
        save_epoch(self, state, *args, **kwargs)
        if self.path == run_dir and state.epoch == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunFolder, "save_epoch", interrupted)


def _trained(out_text: str) -> list[str]:
    """The epoch lines a run printed (one per epoch it trained)."""
    return [line for line in out_text.splitlines() if re.match(r"(\[fold \d+ member \d+\] )?epoch \d+/\d+ ", line)]


@pytest.mark.slow
@pytest.mark.parametrize("member, epoch", [(0, 1), (1, 2)], ids=["first-member", "second-member"])
def test_cv_interrupted_mid_member_resumes_it_and_keeps_finished_ones(folder, tmp_path, run_cli, monkeypatch,
                                                                      straight, member, epoch):
    out = tmp_path / "cv"
    run_dir = out / "fold00" / (f"member{member}" if member else "")
    args = _cv(folder, out, "--epochs", "3", "--members", "2", "--threads", "1")
    with monkeypatch.context() as patch:
        _interrupt_after(patch, run_dir, epoch)
        code, _, err = run_cli(args)
    assert code == 130 and "interrupted" in err
    assert load_checkpoint(run_dir)["epoch"] == epoch and not (out / "fold00" / "metrics.json").exists()
    finished = (out / "fold00" / "last.pt").read_bytes() if member else None
    code, out_text, err = run_cli(args)
    assert code == 0, err
    assert f"resuming {run_dir} after epoch {epoch}" in out_text
    assert len(_trained(out_text)) == (3 - epoch) + (3 if member == 0 else 0)  # only the missing epochs
    if member:  # the finished first member was neither retrained nor rewritten
        assert "member 1/2" not in out_text and (out / "fold00" / "last.pt").read_bytes() == finished
    assert _results(out) == _results(straight)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["write_predictions", "plot_confusion"])
def test_cv_interrupted_evaluation_is_redone_without_training(folder, tmp_path, run_cli, monkeypatch, straight,
                                                              step):
    out = tmp_path / "cv"
    args = _cv(folder, out, "--epochs", "3", "--members", "2", "--threads", "1")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(f"pcnn_fer.engine.cv.{step}", interrupted)
        code, _, _ = run_cli(args)
    assert code == 130 and not (out / "fold00" / "metrics.json").exists()  # the fold is not taken as done
    code, out_text, err = run_cli(args)
    assert code == 0, err
    assert not _trained(out_text) and "fold 0: test accuracy" in out_text
    assert (out / "fold00" / "confusion.png").stat().st_size > 1000 and (out / "fold00" / "predictions.csv").is_file()
    assert _results(out) == _results(straight)


@pytest.mark.slow
def test_cv_after_deleted_files_redoes_only_what_is_missing(folder, tmp_path, run_cli, straight):
    import shutil

    out = tmp_path / "cv"
    shutil.copytree(straight, out)
    args = _cv(folder, out, "--epochs", "3", "--members", "2", "--threads", "1")
    first = (out / "fold00" / "last.pt").read_bytes()
    (out / "fold00" / "metrics.json").unlink()  # evaluation lost: evaluated again
    code, out_text, err = run_cli(args)
    assert code == 0, err
    assert not _trained(out_text) and "fold 0: test accuracy" in out_text and _results(out) == _results(straight)
    (out / "fold00" / "member1" / "results.json").unlink()  # stopped between last.pt and results.json
    (out / "fold00" / "metrics.json").unlink()
    code, out_text, err = run_cli(args)
    assert code == 0, err
    assert not _trained(out_text) and (out / "fold00" / "member1" / "results.json").is_file()
    assert json.loads((out / "fold00" / "member1" / "results.json").read_text())["finished"] is True
    shutil.rmtree(out / "fold00" / "member1")  # a member lost: only it is trained again
    (out / "fold00" / "metrics.json").unlink()
    code, out_text, err = run_cli(args)
    assert code == 0, err
    assert len(_trained(out_text)) == 3 and "member 1/2" not in out_text and "member 2/2" in out_text
    assert (out / "fold00" / "last.pt").read_bytes() == first and _results(out) == _results(straight)


@pytest.mark.slow
def test_cv_broken_checkpoint_is_one_line_naming_it(folder, tmp_path, run_cli, straight):
    import shutil

    out = tmp_path / "cv"
    shutil.copytree(straight, out)
    (out / "fold00" / "metrics.json").unlink()
    checkpoint = out / "fold00" / "member1" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # truncated
    code, _, err = run_cli(_cv(folder, out, "--epochs", "3", "--members", "2", "--threads", "1"))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert str(checkpoint) in err and "delete it to train this member again" in err


def test_a_cv_directory_with_only_a_member_checkpoint_is_kept(tmp_path):
    from pcnn_fer.engine.cv import has_checkpoints

    assert not has_checkpoints(tmp_path)
    (tmp_path / "fold03" / "member1").mkdir(parents=True)
    (tmp_path / "fold03" / "member1" / "last.pt").write_bytes(b"x")
    assert has_checkpoints(tmp_path)


def _recorded_setup(folder: Path, out: Path, args: list[str]) -> str:
    """Write the cv-setup.json that ``pcnn cv ARGS`` records before its first fold (without training one)."""
    from pcnn_fer.cli import build_parser
    from pcnn_fer.cli.train import recipe_from_args, train_options
    from pcnn_fer.data import load_split
    from pcnn_fer.data.protocols import cross_validation
    from pcnn_fer.engine.cv_setup import fold_setup, record_fold_setup

    parsed = build_parser().parse_args(args)
    recipe, opts = recipe_from_args(parsed), train_options(parsed)
    split = load_split("folder", folder, "train")
    folds = cross_validation(split, protocol=parsed.protocol, k=parsed.folds, seed=opts.seed)
    out.mkdir(parents=True)
    record_fold_setup(out, fold_setup(recipe, opts, parsed.protocol, len(folds),
                                      recipe.cv_val if parsed.val is None else parsed.val, split))
    (out / "fold00").mkdir()
    return (out / "cv-setup.json").read_text()


@pytest.mark.parametrize("change, named", [(("--folds", "4"), "folds was 3, now 4"),
                                           (("--seed", "1"), "seed was 0, now 1"),
                                           (("--epochs", "4"), "recipe.epochs was 3, now 4"),
                                           (("--no-val",), "use_val was True, now False"),
                                           (("--root", "ELSEWHERE"), "root was "),
                                           (("--init", "default"), "init was None, now 'default'")])
def test_cv_refuses_to_reuse_folds_of_another_setup(folder, tmp_path, run_cli, change, named):
    """Issue 33 item 2: folds of a 3-fold run were reused by a 4-fold run and reported as one protocol."""
    import shutil

    out = tmp_path / "cv"
    args = _cv(folder, out, "--epochs", "3", "--threads", "1")
    setup = _recorded_setup(folder, out, args)
    if change[0] == "--root":  # the same images elsewhere
        shutil.copytree(folder, tmp_path / "copy")
        change = ("--root", str(tmp_path / "copy"))
    code, out_text, err = run_cli([*args, *change])  # the later flag wins
    assert code == 1 and len(err.strip().splitlines()) == 1 and "holds folds of another set-up" in err, err
    assert named in err and (out / "cv-setup.json").read_text() == setup and not _trained(out_text)
    code, out_text, err = run_cli([*args, "--only-folds", "9"])  # the same set-up passes the check
    assert code == 1 and "--only-folds [9]: folds are numbered 0..2" in err, err


@pytest.mark.slow
def test_cv_folder_without_a_setup_record(folder, tmp_path, run_cli, straight):
    """Folders of older runs: checked against their cv.json; without one they are refused."""
    import shutil

    out = tmp_path / "cv"
    shutil.copytree(straight, out)
    (out / "cv-setup.json").unlink()
    args = _cv(folder, out, "--epochs", "3", "--members", "2", "--threads", "1")
    code, out_text, err = run_cli([*args, "--seed", "2"])
    assert code == 1 and "seed was 0, now 2" in err, err
    code, out_text, err = run_cli(args)
    assert code == 0 and "fold 0: reusing" in out_text and not _trained(out_text), err
    assert (out / "cv-setup.json").is_file()
    (out / "cv-setup.json").unlink()
    (out / "cv.json").unlink()
    code, _, err = run_cli(args)
    assert code == 1 and "without a record of their set-up" in err, err
