"""ONNX export (``pcnn export``): parity with PyTorch, dynamic/static batch, metadata; the backend factory (``auto``
picks onnxruntime when installed, torch without it) through ``Recognizer`` and ``pcnn predict``; the export cache;
``pcnn bench --backend onnx``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import onnx  # noqa: E402
from conftest import in_process_budget_mb  # noqa: E402

from pcnn_fer import create_model, save_model  # noqa: E402
from pcnn_fer.backends import OnnxClassifier, onnx_backend, onnx_export  # noqa: E402
from pcnn_fer.backends.dispatch import create_backend, describe_backend  # noqa: E402
from pcnn_fer.backends.onnx_export import OUTPUT_NAMES, ExportError, check_parity, export_onnx, read_metadata  # noqa: E402
from pcnn_fer.backends.torch_backend import TorchClassifier  # noqa: E402
from pcnn_fer.cli import main  # noqa: E402
from pcnn_fer.errors import UsageError  # noqa: E402
from pcnn_fer.faces import Recognizer  # noqa: E402
from pcnn_fer.models.pcnn import REGIONS  # noqa: E402
from pcnn_fer.weights import ASSETS, load_model  # noqa: E402

ASTRONAUT = ASSETS / "astronaut.png"


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> tuple[Path, str]:
    """``pcnn export --dynamic-batch`` of the checkpoint: the .onnx path and the command's output."""
    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out),
                     "--dynamic-batch", "--opset", "18"])
    assert code == 0, buffer.getvalue()
    return out, buffer.getvalue()


def test_export_cli_parity_and_single_file(exported, checkpoint):
    path, output = exported
    assert "parity OK" in output and "max |diff| of logits" in output
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.onnx"]  # weights embedded: no .data side file
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert any(n.op_type == "GridSample" for n in model.graph.node)
    # the command's own figure: parse it and hold it to the 1e-4 bound
    worst = float(output.split("max |diff| of logits ")[1].split()[0])
    assert worst <= 1e-4
    # and check independently, at batch sizes the export did not use
    torch_model = load_model(checkpoint)
    diffs = check_parity(path, torch_model, batch_sizes=(2, 5), seed=7)
    assert set(diffs) == set(OUTPUT_NAMES) and max(diffs.values()) <= 1e-4


def test_export_metadata_round_trip(exported, checkpoint):
    path, _ = exported
    meta = read_metadata(path)
    config = load_model(checkpoint).config
    assert meta["config"] == config
    assert meta["classes"] == config.classes and len(meta["classes"]) == 8
    assert meta["input_size"] == 48 and meta["mean"] == config.mean and meta["std"] == config.std
    assert meta["crop_fractions"] == config.crop_fractions and meta["regions"] == REGIONS
    assert meta["graph"] == "optimized" and meta["dynamic_batch"] is True and meta["opset"] == 18
    props = meta["props"]
    assert json.loads(props["pcnn_config"]) == json.loads(json.dumps(config.to_dict()))
    assert props["producer"].startswith("pcnn-fer")


def test_metadata_is_read_without_the_onnx_package_and_equals_its_reading(exported, tmp_path):
    """Issue 33 (start-up): the backend read the metadata with ``onnx.load`` (a second of imports)."""
    from pcnn_fer.backends.onnx_props import OnnxFormatError, read_metadata_props

    path = exported[0]
    assert read_metadata_props(path) == {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(Path(path).read_bytes()[:200])
    with pytest.raises(OnnxFormatError):
        read_metadata_props(broken)
    broken.write_bytes(b"\x0f\xff\xff")  # wire type 7
    with pytest.raises(ExportError, match="not a readable ONNX model"):
        read_metadata(broken)


@pytest.mark.slow
def test_static_batch_export_with_input_size(checkpoint, tmp_path):
    result = export_onnx(checkpoint, tmp_path / "s64.onnx", input_size=64)
    assert result.max_abs_diff <= 1e-4 and not result.dynamic_batch and result.input_size == 64
    model = onnx.load(str(result.path))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]
    assert read_metadata(result.path)["input_size"] == 64
    # a batch-1 model still classifies batches (one face at a time) and matches torch
    onnx_backend_ = OnnxClassifier(result.path)
    assert onnx_backend_.fixed_batch == 1 and onnx_backend_.config.input_size == 64
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    probs, regions = onnx_backend_(x)
    ref_probs, ref_regions = TorchClassifier(checkpoint)(x)
    assert probs.shape == (3, 8) and regions.shape == (3, 5, 8)
    assert np.abs(probs - ref_probs).max() <= 1e-4 and np.abs(regions - ref_regions).max() <= 1e-4


def test_export_rejects_bad_requests(checkpoint, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "a.onnx"), "--opset", "17"]) == 1
    assert "opset must be at least 18" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "a.txt")]) == 1
    missing = tmp_path / "missing.safetensors"
    assert main(["export", "--checkpoint", str(missing), "--out", str(tmp_path / "b.onnx")]) == 1
    assert not list(tmp_path.iterdir())


def test_parity_failure_exits_non_zero_and_writes_nothing(exported, checkpoint, tmp_path, monkeypatch, capsys):
    """A graph that does not match PyTorch: the optimised form falls back to the plain one, which fails too."""
    path, _ = exported
    torch.manual_seed(1)
    other = save_model(create_model("tiny", num_classes=8), tmp_path / "other.safetensors")
    # export a different model's graph (a stand-in for a broken exporter) without paying for real exports
    monkeypatch.setattr(onnx_export, "_export_graph", lambda module, example, out, opset, dyn: shutil.copy(path, out))
    out = tmp_path / "broken.onnx"
    assert main(["export", "--checkpoint", str(other), "--out", str(out), "--dynamic-batch"]) == 1
    err = capsys.readouterr().err
    assert "parity check failed" in err and "nothing written" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.suffix == ".onnx"]
    with pytest.raises(ExportError, match="tolerance"):
        export_onnx(checkpoint, tmp_path / "strict.onnx", dynamic_batch=True, tolerance=0.0)


def test_onnx_backend_matches_torch_through_recognizer(exported, checkpoint):
    path, _ = exported
    torch_rec = Recognizer(checkpoint, backend="torch")
    onnx_rec = Recognizer(str(path), backend="onnx")
    assert onnx_rec.classes == torch_rec.classes and onnx_rec.gray == torch_rec.gray
    a, b = torch_rec.predict(ASTRONAUT), onnx_rec.predict(ASTRONAUT)
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(a[0].box, b[0].box)
    assert a[0].label == b[0].label
    pa, pb = np.array(list(a[0].probabilities.values())), np.array(list(b[0].probabilities.values()))
    assert np.abs(pa - pb).max() <= 1e-4
    for region in REGIONS:
        ra, rb = np.array(list(a[0].regions[region].values())), np.array(list(b[0].regions[region].values()))
        assert np.abs(ra - rb).max() <= 1e-4
    # batches of several faces (crops) agree as well
    crops = np.random.default_rng(1).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    (p1, r1, o1), (p2, r2, o2) = torch_rec.classify(list(crops)), onnx_rec.classify(list(crops))
    assert np.abs(p1 - p2).max() <= 1e-4 and np.abs(r1 - r2).max() <= 1e-4
    assert np.isnan(o1).all() and np.isnan(o2).all()  # no occlusion heads in this model: not measured


def test_onnx_backend_exports_a_checkpoint_once_into_the_cache(exported, checkpoint, tmp_path, monkeypatch, capsys):
    """A .safetensors checkpoint is exported on first use (here: the already-exported file stands in for the
    export) and the cached file is reused afterwards; ``pcnn predict --backend onnx`` goes the same way."""
    path, _ = exported
    calls = []

    def fake_export(model, out, dynamic_batch, opset, input_size):
        calls.append(out)
        assert dynamic_batch and opset >= 18 and input_size is None
        shutil.copy(path, out)

    monkeypatch.setenv("PCNN_FER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_backend, "export_onnx", fake_export)
    first = OnnxClassifier(str(checkpoint))
    assert len(calls) == 1 and first.path.parent == tmp_path / "cache" / "onnx" and first.path.is_file()
    # named after the checkpoint file's sha256 (with its config file), the input size and the opset
    digest = hashlib.sha256(Path(checkpoint).read_bytes() + Path(checkpoint).with_suffix(".json").read_bytes())
    assert first.path.name == f"pcnn-{digest.hexdigest()[:24]}-native-opset18-v{onnx_backend.CACHE_FORMAT}.onnx"
    second = Recognizer(checkpoint)  # the default backend: auto, onnxruntime being installed
    assert len(calls) == 1 and second.backend.path == first.path
    assert describe_backend(second.backend) == "onnx (auto: onnxruntime is installed)"
    out = tmp_path / "out"
    assert main(["predict", str(ASTRONAUT), "--checkpoint", str(checkpoint), "--backend", "onnx", "--out", str(out),
                 "--save-json", "--no-annotate", "--quiet"]) == 0
    assert len(calls) == 1
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 1 and len(records[0]["faces"]) == 1
    expected = Recognizer(checkpoint).predict(ASTRONAUT).to_dict()["faces"][0]
    got = records[0]["faces"][0]
    assert got["box"] == expected["box"] and got["label"] == expected["label"]
    assert max(abs(got["probabilities"][c] - expected["probabilities"][c]) for c in expected["probabilities"]) <= 1e-4


@pytest.mark.slow
def test_auto_backend_matches_torch_and_falls_back_without_onnxruntime(checkpoint, exported, monkeypatch, tmp_path):
    """``auto`` is onnxruntime here, within the export's parity tolerance of torch; in a process where onnxruntime
    cannot be imported it is torch, and says why."""
    auto = create_backend("auto", checkpoint)
    assert isinstance(auto, OnnxClassifier) and auto.note == "onnx (auto: onnxruntime is installed)"
    batch = np.random.default_rng(3).standard_normal((4, 3, 48, 48)).astype(np.float32)
    for got, want in zip(auto(batch), TorchClassifier(checkpoint)(batch), strict=True):
        assert np.abs(got - want).max() <= 1e-4
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from pcnn_fer.backends.dispatch import create_backend, describe_backend\n"
            f"b = create_backend('auto', {str(checkpoint)!r})\n"
            "print(type(b).__name__, '|', describe_backend(b))\n"
            "try:\n    create_backend('onnx', 'default')\nexcept RuntimeError as e:\n    print(e)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["TorchClassifier | torch (auto: onnxruntime is not installed)",
                                        "the onnx backend needs onnxruntime: onnxruntime is not installed (pip install "
                                        "onnxruntime, or use --backend torch)"]
    # a model that cannot be exported falls back to torch too; an unusable checkpoint is an error either way
    from pcnn_fer.weights import WeightsError

    def broken_export(*args, **kwargs):
        raise ExportError("parity check failed")

    monkeypatch.setattr(onnx_backend, "export_onnx", broken_export)
    fallback = create_backend("auto", checkpoint, cache=tmp_path)
    assert isinstance(fallback, TorchClassifier)
    assert fallback.note == "torch (auto: no onnx model: parity check failed)"

    with pytest.raises(WeightsError, match="no such model file"):
        create_backend("auto", "/nonexistent/model.safetensors")


def test_bench_rejects_empty_runs(capsys):
    """Refused by the parser, before torch is imported (one line, exit 1); the library refuses them too."""
    from pcnn_fer.bench import benchmark

    for flag in ("--batch-size", "--rounds"):
        with pytest.raises(SystemExit) as exit_:
            main(["bench", "--model", "tiny", flag, "0"])
        assert exit_.value.code == 1
        assert capsys.readouterr().err == (f"pcnn bench: error: argument {flag}: expected a positive integer, got 0 "
                                           "(see pcnn bench --help)\n")
    with pytest.raises(UsageError, match="--batch-size and --rounds must be at least 1, got 0 and 7"):
        benchmark("tiny", batch_size=0)


@pytest.mark.slow
def test_bench_with_onnx_backend(capsys):
    assert main(["bench", "--model", "tiny", "--backend", "onnx", "--rounds", "1", "--batch-size", "2",
                 "--threads", "1", "--json"]) == 0
    results = {r["model"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert {"resnet18", "pcnn-tiny", "pcnn-tiny-onnx"} <= set(results)
    onnx_row = results["pcnn-tiny-onnx"]
    assert onnx_row["latency_ms_b1"] > 0 and onnx_row["throughput_img_s"] > 0
    assert onnx_row["gflops"] == results["pcnn-tiny"]["gflops"] and onnx_row["params"] == results["pcnn-tiny"]["params"]


def test_serve_with_the_onnx_backend(exported):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from pcnn_fer.deploy.server import create_app, serve_in_background

    path, _ = exported
    app = create_app(checkpoint=str(path), backend="onnx", workers=2, threads=1,
                     max_memory_mb=in_process_budget_mb())
    service = app.state.service
    shared = {id(rec.backend) for rec in service.recognizers.queue}
    assert len(shared) == 1 and isinstance(service.recognizers.queue[0].backend, OnnxClassifier)  # loaded once
    with serve_in_background(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/health").json()["backend"] == "onnx"
        record = client.post("/predict", files={"file": ("a.png", ASTRONAUT.read_bytes(), "image/png")}).json()
        assert len(record["faces"]) == 1 and record["faces"][0]["label"] in record["faces"][0]["probabilities"]
