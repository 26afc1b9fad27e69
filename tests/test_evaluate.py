"""``pcnn evaluate``: metrics.json keys and values, cross-dataset class mapping, official checkpoints, TTA, subsets
and bad input (missing/corrupt/wrong-class-count checkpoints, empty splits), all on small synthetic image folders."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from official_reference import OfficialLayoutPCNN
from PIL import Image

from pcnn_fer import create_model, save_model
from pcnn_fer.data.transforms import eval_transform
from pcnn_fer.weights import DEFAULT_MODEL

KEYS = ["dataset", "split", "subset", "num_samples", "classes", "accuracy", "mean_class_accuracy",
        "per_class_accuracy", "confusion_matrix", "calibration", "risk_coverage", "checkpoint", "face_alignment"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained tiny PCNN over happiness / sadness / surprise, saved as a model file; its global head is scaled
    up so that its logits are far apart (backends within the export tolerance then agree on every argmax)."""
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=3, classes=("happiness", "sadness", "surprise"))
    with torch.no_grad():
        model.global_head.weight.mul_(30)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model.eval(), path)
    return path


def test_metrics_json_keys_and_values(tiny_model, tmp_path, run_cli, make_image_folder):
    root = make_image_folder(tmp_path / "data", ("happy", "sad", "surprise"), per_class=5, splits=("test",))
    code, out, err = run_cli(["evaluate", "--checkpoint", tiny_model, "--dataset", "folder", "--root", root,
                              "--split", "test", "--backend", "torch", "--out", tmp_path / "ev"])
    assert code == 0, err
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(m) == KEYS
    assert m["dataset"] == "folder" and m["split"] == "test" and m["subset"] is None
    assert m["num_samples"] == 15 and m["classes"] == ["happiness", "surprise", "sadness"]
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum(1).tolist() == [5, 5, 5]
    assert m["accuracy"] == pytest.approx(100 * np.trace(cm) / 15)
    assert m["mean_class_accuracy"] == pytest.approx(np.mean(list(m["per_class_accuracy"].values())))
    assert m["checkpoint"] == str(tiny_model) and m["face_alignment"] is None  # folder: not aligned by default
    assert f"accuracy {m['accuracy']:.2f}%" in out
    assert (tmp_path / "ev" / "confusion.png").is_file()
    rows = _predictions(tmp_path / "ev")
    assert len(rows) == 15 and {r["label"] for r in rows} == {"happiness", "sadness", "surprise"}
    assert all(Path(r["path"]).is_file() and r["stem"] == Path(r["path"]).stem for r in rows)
    assert sum(r["correct"] == "1" for r in rows) == np.trace(cm)
    assert f"{15 - np.trace(cm)} misclassified" in out
    for r in rows:
        probs = {c: float(r[f"p_{c}"]) for c in ("happiness", "sadness", "surprise")}
        assert max(probs, key=probs.get) == r["predicted"] and float(r["confidence"]) == max(probs.values())
        assert sum(probs.values()) == pytest.approx(1, abs=1e-3)
    # flip TTA runs and keeps the format; a subset list restricts the split and is named in the results
    lst = tmp_path / "subset.txt"
    lst.write_text("happy_000.png\nsad_001.png\n0/surprise_002.jpg\n")
    code, _, err = run_cli(["evaluate", "--checkpoint", tiny_model, "--dataset", "folder", "--root", root,
                            "--split", "test", "--tta", "flip", "--subset-list", lst, "--backend", "torch",
                            "--out", tmp_path / "ev2"])
    assert code == 0, err
    m2 = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert list(m2) == KEYS and m2["subset"] == "subset.txt" and m2["num_samples"] == 3


def test_predictions_rows_follow_the_decoded_faces(tmp_path):
    from pcnn_fer.data.datasets import Split
    from pcnn_fer.data.loader import TensorData
    from pcnn_fer.engine.predictions import faces_of, write_predictions

    # split rows 0..4; row 2 could not be decoded, so the data holds rows 0, 1, 3, 4
    split = Split("d", "s", ("happy", "sad"), [Path(f"/x/{i}.png") for i in range(5)], np.array([0, 1, 0, 1, 0]),
                  stems=[f"f{i}" for i in range(5)])
    data = TensorData(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1, 0]), None, split.classes,
                      origin_rows=np.array([0, 1, 3, 4]), unreadable_rows=np.array([2]))
    assert faces_of(data, split) == (["f0", "f1", "f3", "f4"], [Path(f"/x/{i}.png") for i in (0, 1, 3, 4)])
    sub = split.subset([4, 3, 0])  # a derived split: its rows are found by origin, in the data's order
    assert faces_of(data.subset([3, 0]), sub) == (["f4", "f0"], [Path("/x/4.png"), Path("/x/0.png")])
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    wrong = write_predictions(tmp_path / "p.csv", ["a", "b", "c"], [None, "x/b.png", None], ["happy", "happy", "sad"],
                              torch.tensor([0, 0, 1]), probs, ("happiness", "sadness"))
    rows = _predictions_file(tmp_path / "p.csv")
    assert wrong == 2 and [r["correct"] for r in rows] == ["1", "0", "0"]  # a tie goes to the first class
    assert rows[1] == {"stem": "b", "path": "x/b.png", "label": "happy", "predicted": "sadness", "confidence": "0.8000",
                       "correct": "0", "p_happiness": "0.2000", "p_sadness": "0.8000",
                       **{f"occluded_{r}": "" for r in ("left_eye", "right_eye", "left_cheek", "right_cheek",
                                                         "mouth")}}  # no occlusion heads: empty
    with pytest.raises(ValueError, match="3 targets"):
        write_predictions(tmp_path / "q.csv", ["a"], [None], ["happy"], torch.tensor([0, 0, 1]), probs, ("h", "s"))
    assert not (tmp_path / "q.csv").exists()


@pytest.mark.slow
def test_cross_dataset_mapping_drops_unknown_classes(tiny_model, tmp_path, run_cli, make_image_folder):
    # dataset has anger (model lacks it: dropped) and lacks surprise (model's surprise output is never predicted)
    root = make_image_folder(tmp_path / "data", ("angry", "happy", "sad"), per_class=4, splits=("test",))
    code, out, err = run_cli(["evaluate", "--checkpoint", tiny_model, "--dataset", "folder", "--root", root,
                              "--split", "test", "--out", tmp_path / "ev"])
    assert code == 0, err
    assert "class mapping" in out and "happiness -> happiness" in out and "dropped (not in target): anger" in out
    assert "dropped 4 of 12 samples" in out
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["classes"] == ["happiness", "sadness"] and m["num_samples"] == 8
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (2, 2)
    rows = _predictions(tmp_path / "ev")  # the dropped anger faces are not listed; surprise is never predicted
    assert len(rows) == 8 and {r["label"] for r in rows} == {"happiness", "sadness"}
    assert {r["predicted"] for r in rows} <= {"happiness", "sadness"} and all(r["p_surprise"] == "0.0000" for r in rows)
    assert sum(r["correct"] == "1" for r in rows) == np.trace(cm)


def _predictions(out_dir: Path) -> list[dict[str, str]]:
    return _predictions_file(out_dir / "predictions.csv")


def _predictions_file(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_backends_give_the_same_metrics(tiny_model, tmp_path, run_cli, make_image_folder):
    """``--backend torch`` and ``--backend onnx`` score the same; ``auto`` (the default) is onnx where onnxruntime is
    installed, and each run says which backend it used."""
    pytest.importorskip("onnxruntime")
    root = make_image_folder(tmp_path / "data", ("happy", "sad", "surprise"), per_class=5, splits=("test",))
    metrics, lines = {}, {}
    for backend in ("torch", "onnx", None):
        code, out, err = run_cli(["evaluate", "--checkpoint", tiny_model, "--dataset", "folder", "--root", root,
                                  "--out", tmp_path / str(backend), *(["--backend", backend] if backend else [])])
        assert code == 0, err
        lines[backend] = next(line for line in out.splitlines() if line.startswith("backend: "))
        metrics[backend] = json.loads((tmp_path / str(backend) / "metrics.json").read_text())
    assert lines == {"torch": "backend: torch", "onnx": "backend: onnx",
                     None: "backend: onnx (auto: onnxruntime is installed)"}
    assert len({m["accuracy"] for m in metrics.values()}) == 1
    assert metrics["torch"]["confusion_matrix"] == metrics["onnx"]["confusion_matrix"] == \
        metrics[None]["confusion_matrix"]
    assert np.count_nonzero(np.array(metrics["torch"]["confusion_matrix"]).sum(0)) > 1  # not one class for all


WITHOUT_ONNXRUNTIME = "import sys; sys.modules['onnxruntime'] = None\nfrom pcnn_fer.cli import main\nsys.exit(main())"


def test_auto_backend_falls_back_to_torch_without_onnxruntime(tiny_model, tmp_path, pcnn_env, run_cli,
                                                              make_image_folder):
    """``pcnn evaluate`` in a process where onnxruntime cannot be imported: auto runs torch, says why, and scores as
    ``--backend torch`` does."""
    root = make_image_folder(tmp_path / "data", ("happy", "sad", "surprise"), per_class=3, splits=("test",))
    args = ["evaluate", "--checkpoint", str(tiny_model), "--dataset", "folder", "--root", str(root)]
    proc = subprocess.run([sys.executable, "-c", WITHOUT_ONNXRUNTIME, *args, "--out", str(tmp_path / "auto"),
                           "--no-progress"], env=pcnn_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "backend: torch (auto: onnxruntime is not installed)" in proc.stdout.splitlines()
    code, _, err = run_cli([*args, "--backend", "torch", "--out", tmp_path / "torch"])
    assert code == 0, err
    auto, torch_metrics = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("auto", "torch"))
    assert auto["confusion_matrix"] == torch_metrics["confusion_matrix"]


def test_official_checkpoint_evaluates(tmp_path, run_cli, make_image_folder):
    """An official PCNN .pth (converted on load: 224 px, ImageNet mean/std, official class order)."""
    torch.manual_seed(0)
    official = OfficialLayoutPCNN(num_classes=7).eval()
    keep = ("features", "fc")
    state = {k: v.half() for k, v in official.state_dict().items() if k.startswith(keep)}
    torch.save({"state_dict": state}, tmp_path / "pcnn_official.pth")
    official.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    root = make_image_folder(tmp_path / "data", ("contempt", "happy", "sad"), per_class=2, splits=("test",))
    code, out, err = run_cli(["evaluate", "--checkpoint", tmp_path / "pcnn_official.pth", "--dataset", "folder",
                              "--root", root, "--split", "test", "--out", tmp_path / "ev", "--batch-size", "4",
                              "--backend", "torch"])
    assert code == 0, err
    assert "224px" in out and "dropped 2 of 6 samples" in out  # official models have no contempt class
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["classes"] == ["happiness", "sadness"] and m["num_samples"] == 4
    # same predictions as the official forward pass restricted to the shared classes
    images = torch.stack([torch.from_numpy(np.array(Image.open(p)))[None] for c in ("happy", "sad")
                          for p in sorted((root / "test" / c).glob("*.png"))])
    x = eval_transform(images, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with torch.no_grad():
        logits = official(x)[0]
    official_classes = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]
    shared = [official_classes.index("happiness"), official_classes.index("sadness")]
    pred = logits[:, shared].argmax(1)
    expected = np.zeros((2, 2), dtype=int)
    for t, p in zip([0, 0, 1, 1], pred.tolist()):
        expected[t, p] += 1
    assert m["confusion_matrix"] == expected.tolist()


def test_evaluate_training_checkpoint_and_run_dir(tmp_path, run_cli, make_image_folder):
    root = make_image_folder(tmp_path / "data", ("happy", "sad", "surprise"), per_class=6, splits=("train",))
    make_image_folder(root, ("happy", "sad", "surprise"), per_class=3, splits=("val",))
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "tiny", "--epochs", "1",
                            "--out", run, "--no-progress"])
    assert code == 0, err
    for ckpt in (run, run / "last.pt", run / "model.safetensors"):
        code, _, err = run_cli(["evaluate", "--checkpoint", ckpt, "--dataset", "folder", "--root", root, "--split",
                                "val", "--backend", "torch", "--out", tmp_path / "ev"])
        assert code == 0, err
        assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["num_samples"] == 9


def test_default_checkpoint(tmp_path, run_cli, make_image_folder):
    root = make_image_folder(tmp_path / "data", ("happy", "sad"), per_class=2, splits=("test",))
    code, out, err = run_cli(["evaluate", "--checkpoint", "default", "--dataset", "folder", "--root", root,
                              "--split", "test", "--backend", "torch", "--out", tmp_path / "ev"])
    if DEFAULT_MODEL.exists():
        assert code == 0, err
        assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["checkpoint"] == "default"
    else:
        assert code == 1 and "bundled model is missing" in err and len(err.strip().splitlines()) == 1


def _wrong_class_count(tmp_path: Path) -> Path:
    from safetensors.torch import load_file, save_file

    model = create_model("tiny", num_classes=3, classes=("happiness", "sadness", "surprise"))
    path = save_model(model, tmp_path / "wrong.safetensors")
    state = load_file(path)
    state["global_head.weight"] = torch.zeros(7, state["global_head.weight"].shape[1])
    save_file(state, path, metadata={"pcnn_config": json.dumps(model.config.to_dict())})
    return path


@pytest.mark.parametrize("case, message", [
    ("missing_root", "does not exist"),
    ("missing_checkpoint", "no such checkpoint"),
    ("corrupt_checkpoint", "not a readable safetensors file"),
    ("corrupt_pth", "cannot be loaded safely"),
    ("wrong_class_count", "wrong class count"),
    ("no_shared_classes", "no shared classes"),
    ("empty_split", "empty"),
    ("unmatched_subset", "none of its"),
    ("unknown_split", "no split"),
    ("amp_on_cpu", "needs a CUDA device"),
])
def test_evaluate_bad_input(tiny_model, tmp_path, run_cli, case, message, make_image_folder):
    root = make_image_folder(tmp_path / "data", ("happy", "sad"), per_class=2, splits=("test",))
    ckpt: Path | str = tiny_model
    extra: list = []
    if case == "missing_root":
        root = tmp_path / "nowhere"
    elif case == "missing_checkpoint":
        ckpt = tmp_path / "nope.safetensors"
    elif case == "corrupt_checkpoint":
        ckpt = tmp_path / "bad.safetensors"
        ckpt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}")
    elif case == "corrupt_pth":
        ckpt = tmp_path / "bad.pth"
        ckpt.write_bytes(b"PK\x03\x04 truncated zip")
    elif case == "wrong_class_count":
        ckpt = _wrong_class_count(tmp_path)
    elif case == "no_shared_classes":
        root = make_image_folder(tmp_path / "other", ("angry", "fear"), per_class=2, splits=("test",))
    elif case == "empty_split":
        for c in ("happy", "sad"):
            (root / "empty" / c).mkdir(parents=True)
        extra = ["--split", "empty"]
    elif case == "unmatched_subset":
        (tmp_path / "list.txt").write_text("nothing_like_it.png\n")
        extra = ["--subset-list", tmp_path / "list.txt"]
    elif case == "unknown_split":
        extra = ["--split", "valid"]
    elif case == "amp_on_cpu":
        extra = ["--amp", "fp16", "--device", "cpu"]
    if "--split" not in extra:
        extra += ["--split", "test"]
    code, _, err = run_cli(["evaluate", "--checkpoint", ckpt, "--dataset", "folder", "--root", root,
                            "--out", tmp_path / "ev", *extra])
    assert code == 1, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "ev" / "metrics.json").exists()
