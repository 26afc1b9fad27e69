"""Bad input gets one line naming its file and a non-zero exit code; a bug keeps its traceback (issue 13 items 4, 5).

The CLI cases run the real ``pcnn`` command in a subprocess, as a user would meet them (docs/bad-input.md).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pcnn_fer import cli
from pcnn_fer.errors import PCNNError, UsageError
from pcnn_fer.models.pcnn import PCNNConfig, create_model
from pcnn_fer.weights import WeightsError, load_model

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "src" / "pcnn_fer" / "assets" / "astronaut.png"


def run_pcnn(*args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:
    """The installed ``pcnn`` command (this tree's sources, via the inherited PYTHONPATH) run with ``args``."""
    command = shutil.which("pcnn") or sys.executable
    argv = [command] if command.endswith("pcnn") else [command, "-m", "pcnn_fer.cli"]
    return subprocess.run([*prefix, *argv, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess, verb: str) -> str:
    """The single ``pcnn VERB: error: ...`` line of a failed run (asserting there is no traceback)."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"pcnn {verb}: error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


# --- weights with a bad config sidecar (item 4) and bad config values (item 5) -----------------------------------


@pytest.fixture(scope="module")
def tiny_state() -> tuple[dict[str, torch.Tensor], dict]:
    """State dict and config dict of a random tiny 8-class PCNN."""
    model = create_model("tiny", num_classes=8)
    return {k: v.contiguous() for k, v in model.state_dict().items()}, model.config.to_dict()


def weights_with_sidecar(folder: Path, state: dict[str, torch.Tensor], sidecar: str) -> Path:
    """``folder/m.safetensors`` without config metadata, and ``m.json`` beside it holding ``sidecar`` (text)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "m.safetensors"))
    (folder / "m.json").write_text(sidecar)
    return folder / "m.safetensors"


SIDECAR_CASES = {  # name: (sidecar text from the config dict, what the one-line error must say)
    "no config": (lambda cfg: json.dumps({"format": "pcnn-fer"}), "expected a JSON object with a 'config' object"),
    "num_classes as text": (lambda cfg: json.dumps({"format": "pcnn-fer", "config": {**cfg, "num_classes": "8"}}),
                            "num_classes must be an integer, got '8'"),
    "input_size 0": (lambda cfg: json.dumps({"format": "pcnn-fer", "config": {**cfg, "input_size": 0}}),
                     "input_size must be at least 32, got 0"),
    "std 0": (lambda cfg: json.dumps({"format": "pcnn-fer", "config": {**cfg, "std": [0, 0, 0]}}),
              "std must be 3 positive numbers"),
    "malformed JSON": (lambda cfg: '{"format": "pcnn-fer", "weights": "model.safetensors", }',
                       "malformed JSON: Expecting property name enclosed in double quotes at line 1 column "),
}


@pytest.mark.parametrize("case", list(SIDECAR_CASES))
def test_predict_with_a_bad_sidecar_prints_one_line_naming_it(case, tiny_state, tmp_path):
    state, config = tiny_state
    sidecar, expected = SIDECAR_CASES[case]
    weights = weights_with_sidecar(tmp_path, state, sidecar(config))
    proc = run_pcnn("predict", str(ASTRONAUT), "--checkpoint", str(weights), "--out", str(tmp_path / "out"))
    line = one_line_error(proc, "predict")
    assert str(tmp_path / "m.json") in line and expected in line, line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no result was written


BAD_CONFIGS = {  # field overrides a PCNNConfig must refuse (each one crashed or misbehaved later)
    "std zero": {"std": [0, 0, 0]},
    "std negative": {"std": [0.5, -0.5, 0.5]},
    "mean nan": {"mean": [math.nan, 0.5, 0.5]},
    "mean two values": {"mean": [0.5, 0.5]},
    "std as text": {"std": "0.5"},
    "input_size 0": {"input_size": 0},
    "input_size fraction": {"input_size": 48.5},
    "input_size bool": {"input_size": True},
    "num_classes text": {"num_classes": "8"},
    "num_classes inf": {"num_classes": math.inf},
    "classes count": {"classes": ["neutral", "happiness"]},
    "classes repeat": {"classes": ["neutral"] * 8},
    "classes text": {"classes": "neutral"},
    "classes empty name": {"classes": ["neutral", "", "a", "b", "c", "d", "e", "f"]},
    "width zero": {"width": 0},
    "width nan": {"width": math.nan},
    "stem": {"stem": "big"},
    "stn_grid zero": {"stn_grid": 0},
    "dropout one": {"dropout": 1.0},
    "crop fractions order": {"crop_fractions": [0.7, 0.5, 0.5]},
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_config_refuses_bad_values(case, tiny_state):
    _, config = tiny_state
    with pytest.raises(UsageError):
        PCNNConfig.from_dict({**config, **BAD_CONFIGS[case]})


def test_config_keeps_good_values(tiny_state):
    _, config = tiny_state
    good = PCNNConfig.from_dict({**config, "std": [1, 2, 3], "input_size": 64.0, "width": 1})
    assert good.std == (1.0, 2.0, 3.0) and good.input_size == 64 and isinstance(good.input_size, int)
    assert PCNNConfig.from_dict(good.to_dict()) == good
    assert PCNNConfig(num_classes=10).classes == tuple(f"class_{i}" for i in range(10))


def test_config_in_safetensors_metadata_is_checked_and_named(tiny_state, tmp_path):
    state, config = tiny_state
    path = tmp_path / "meta.safetensors"
    save_file(state, str(path), metadata={"pcnn_config": json.dumps({**config, "std": [0, 0, 0]})})
    with pytest.raises(WeightsError, match=f"^{path}: bad PCNN config: std must be"):
        load_model(path)



def test_weights_with_nan_are_refused_naming_the_file(tiny_state, tmp_path):
    state, config = tiny_state
    damaged = {**state, "global_head.bias": torch.full_like(state["global_head.bias"], math.nan)}
    path = tmp_path / "nan.safetensors"
    save_file(damaged, str(path), metadata={"pcnn_config": json.dumps(config)})
    with pytest.raises(WeightsError, match=f"^{path}: global_head.bias holds NaN or infinite values"):
        load_model(path)

@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool, torch.complex64])
def test_weights_that_are_not_floating_point_are_refused(tiny_state, tmp_path, dtype, capsys):
    """Issue 33 item 5: float weights cast to int64 loaded and predicted garbage (neutral 0.28 for a happy face)."""
    state, config = tiny_state
    cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    path = tmp_path / "cast.safetensors"
    save_file(cast, str(path), metadata={"pcnn_config": json.dumps(config)})
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(WeightsError, match=rf"^{path}: \S+ holds {name} values, the model expects floating-point"):
        load_model(path)
    assert cli.main(["predict", str(ASTRONAUT), "--checkpoint", str(path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"holds {name} values" in err and "Traceback" not in err
    counter = "global_trunk.bn1.num_batches_tracked"  # an integer counter stored as a float (official files) loads
    save_file({**state, counter: state[counter].half()}, str(path), metadata={"pcnn_config": json.dumps(config)})
    assert load_model(path).state_dict()[counter].dtype == torch.int64


# --- unreadable dataset files (item 4) ---------------------------------------------------------------------------


def ferplus_root(root: Path) -> Path:
    """A one-row FERPlus tree ``root/FER2013Train/label.csv``; returns the label file."""
    (root / "FER2013Train").mkdir(parents=True)
    label = root / "FER2013Train" / "label.csv"
    label.write_text("fer0000000.png,(0, 0, 48, 48),10,0,0,0,0,0,0,0,0,0\n")
    return label


def without_root_privileges() -> tuple[str, ...]:
    """A command prefix under which file modes apply: none for a normal user; for root, ``setpriv`` dropping the
    capabilities that let root read any file (skips the test where that is impossible)."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a mode-000 file stays readable")
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root and setpriv cannot drop capabilities here")
    return prefix


def test_unreadable_label_file_is_one_line_naming_it(tmp_path):
    label = ferplus_root(tmp_path / "ferplus")
    label.chmod(0)
    proc = run_pcnn("data", "stats", "--dataset", "ferplus", "--root", str(tmp_path / "ferplus"),
                    prefix=without_root_privileges())
    assert one_line_error(proc, "data") == f"pcnn data: error: cannot read {label}: Permission denied"


def test_binary_label_file_is_one_line_naming_it(tmp_path):
    label = ferplus_root(tmp_path / "ferplus")
    label.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 8)
    proc = run_pcnn("data", "stats", "--dataset", "ferplus", "--root", str(tmp_path / "ferplus"))
    assert one_line_error(proc, "data").startswith(f"pcnn data: error: {label}: not a text file (byte ")



def test_predict_on_a_device_this_machine_lacks_is_one_line(tmp_path):
    proc = run_pcnn("predict", str(ASTRONAUT), "--device", "cuda:99", "--out", str(tmp_path / "out"))
    assert one_line_error(proc, "predict").startswith("pcnn predict: error: device cuda:99: ")  # no CUDA / 99 GPUs


BAD_OPTIONS = [  # (pcnn arguments, the one error line): option values refused before any work
    (["train", "--lr", "nan"], "pcnn train: error: recipe 'tiny': lr must be a finite number, got nan"),
    (["train", "--weight-decay", "nan"],
     "pcnn train: error: recipe 'tiny': weight_decay must be a finite number, got nan"),
    (["train", "--device", "gpu"], "pcnn train: error: unknown device 'gpu' (use cpu, cuda, cuda:N or mps)"),
    (["bench", "--model", "tiny", "--device", "gpu"],
     "pcnn bench: error: unknown device 'gpu' (use cpu, cuda, cuda:N or mps)"),
]


@pytest.mark.parametrize(("argv", "line"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_values_are_one_line(argv, line, make_image_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PCNN_DEBUG", raising=False)
    if argv[0] == "train":
        root = make_image_folder(tmp_path / "faces", per_class=2, splits=("train",))
        argv = [*argv, "--dataset", "folder", "--root", str(root), "--recipe", "tiny", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == line + "\n"
    assert not (tmp_path / "run").exists()


PARSER_ERRORS = [  # (pcnn arguments, the one error line): values argparse itself refuses
    (["predict", "x.png", "--every", "nan"],
     "pcnn predict: error: argument --every: invalid int value: 'nan' (see pcnn predict --help)"),
    (["cv", "--dataset", "ckplus", "--root", "r", "--out", "o", "--folds", "0"],
     "pcnn cv: error: argument --folds: expected a positive integer, got 0 (see pcnn cv --help)"),
    (["train", "--dataset"], "pcnn train: error: argument --dataset: expected one argument (see pcnn train --help)"),
    (["predict", "x.png", "--backend", "gpu"], "pcnn predict: error: argument --backend: invalid choice: 'gpu' "),
]


@pytest.mark.parametrize(("argv", "line"), PARSER_ERRORS, ids=[" ".join(a) for a, _ in PARSER_ERRORS])
def test_values_the_parser_refuses_are_one_line_and_exit_1_too(argv, line, capsys):
    """Issue 33: ``--every nan`` exited 2 with argparse's usage text while other bad values exit 1 with one line."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith(line) and err.count("\n") == 1, err


def test_every_help_text_prints_percent_signs_once(capsys):
    """Issue 33: ``pcnn robustness --help`` printed "95%%"."""
    parser = cli.build_parser()
    verbs = next(a for a in parser._actions if a.dest == "command").choices
    texts = {name: sub.format_help() for name, sub in verbs.items()}
    assert "95% confidence" in texts["robustness"]
    assert not [name for name, text in texts.items() if "%%" in text]


def test_robustness_checks_out_before_any_work(tmp_path, capsys):
    """Issue 33: ``pcnn robustness --out EXISTING_FILE`` failed only after 17 s of work."""
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    argv = ["robustness", "--checkpoint", "no-such-model", "--dataset", "folder", "--root", str(tmp_path / "none"),
            "--out", str(existing)]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err == f"pcnn robustness: error: --out {existing}: exists and is not a folder\n"
    assert captured.out == "" and existing.read_text() == "keep me"  # nothing loaded, nothing printed
    assert cli.main([*argv[:-1], str(existing / "sub")]) == 1
    assert "is not a folder" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_unusable_paths_say_why(tmp_path):
    """Issue 33: a symbolic link loop read as "no such file or directory"."""
    from pcnn_fer.faces.sources import expand_sources

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(tmp_path / "fifo")
    os.chmod(tmp_path / "fifo", 0o644)
    reasons = [s.reason for s in expand_sources([tmp_path / "a", tmp_path / "dangling", tmp_path / "fifo",
                                                 tmp_path / "missing.png"])]
    assert reasons == ["a symbolic link loop: too many levels of symbolic links",
                       f"a broken symbolic link to {tmp_path / 'nowhere.png'}",
                       "not a regular file or folder: prw-r--r--", "no such file or directory"]


WRITE_PAST_A_FILE_SIZE_LIMIT = """
import importlib.util, resource, signal, sys
spec = importlib.util.spec_from_file_location("fileio", sys.argv[1])
fileio = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fileio)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (10, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    fileio.atomic_write(sys.argv[2], b"x" * 1000)
except OSError as e:
    print(e.filename, e.strerror, sep="|")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_a_failed_write_names_the_file(tmp_path):
    target = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-c", WRITE_PAST_A_FILE_SIZE_LIMIT, str(REPO / "src/pcnn_fer/fileio.py"),
                           str(target)], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == f"{target}|File too large", proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind

SAVE_A_MODEL_PAST_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
from pcnn_fer import create_model, save_model
model = create_model("tiny", num_classes=3)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    save_model(model, sys.argv[1])
except OSError as e:
    print(e.filename, e.strerror, sep="|")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_a_failed_model_save_keeps_the_old_file_and_no_temporary(tmp_path, pcnn_env):
    from pcnn_fer.weights import save_model

    target = save_model(create_model("tiny"), tmp_path / "model.safetensors")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = subprocess.run([sys.executable, "-c", SAVE_A_MODEL_PAST_A_FILE_SIZE_LIMIT, str(target)], env=pcnn_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == f"{target}|File too large", proc.stdout + proc.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # the old model, no .tmp left behind


# --- the printer: expected errors are one line, bugs keep their traceback (issue 14 item 5) ------------------------

def open_missing_file(args) -> None:
    """A verb reading a file that is not there."""
    open(args.path / "no" / "such.csv").close()


def refuse_option(args) -> None:
    """A verb refusing an option value."""
    raise UsageError("--rounds must be at least 1, got 0")


def multiply_wrong_shapes(args) -> None:
    """A verb with a shape bug: a RuntimeError from inside torch."""
    torch.ones(2, 3) @ torch.ones(2, 3)


VERB_ACTIONS = {"missing-file": open_missing_file, "usage": refuse_option, "torch-bug": multiply_wrong_shapes}


def add_test_verbs(subparsers) -> None:
    """Register the verbs of :data:`VERB_ACTIONS` (each takes ``--path``) on the pcnn parser."""
    for name, action in VERB_ACTIONS.items():
        p = subparsers.add_parser(name)
        p.add_argument("--path", type=Path, default=Path("."))
        p.set_defaults(func=action)


@pytest.fixture
def test_verbs(monkeypatch):
    """``pcnn`` with the test verbs added next to the real ones."""
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, (__name__, "add_test_verbs")])
    monkeypatch.delenv("PCNN_DEBUG", raising=False)


def test_os_error_names_its_file(test_verbs, tmp_path, capsys):
    assert cli.main(["missing-file", "--path", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == f"pcnn missing-file: error: {tmp_path / 'no' / 'such.csv'}: No such file or directory\n"


def test_pcnn_error_is_one_line(test_verbs, capsys):
    assert cli.main(["usage"]) == 1
    assert capsys.readouterr().err == "pcnn usage: error: --rounds must be at least 1, got 0\n"
    assert issubclass(UsageError, PCNNError) and issubclass(UsageError, ValueError)


def test_torch_bug_keeps_its_traceback(test_verbs, capsys):
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        cli.main(["torch-bug"])
    assert "error:" not in capsys.readouterr().err


def test_debug_reraises_expected_errors(test_verbs, monkeypatch):
    monkeypatch.setenv("PCNN_DEBUG", "1")
    with pytest.raises(UsageError):
        cli.main(["usage"])
