"""Per-region occlusion: the synthetic occluders and their ground truth, the AUROC, the heads' training on a frozen
PCNN (expression outputs unchanged), the model file carrying the heads, and every backend returning the scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcnn_fer import create_model, load_model, save_model
from pcnn_fer.backends.dispatch import create_backend
from pcnn_fer.engine.occlusion import auroc, describe_faces, fit_heads, occlusion_report
from pcnn_fer.models.occlusion import OcclusionHeads
from pcnn_fer.models.pcnn import REGIONS, PCNNConfig
from pcnn_fer.robustness.occluders import COVERED, OCCLUDER_KINDS, occlude_batch, region_coverage

FRACTIONS = (0.5, 0.65, 0.5)


def _faces(n: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random grey faces (uint8, N×1×48×48)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 1, 6, 6, generator=g) * 200 + 30
    return torch.nn.functional.interpolate(small, size=48, mode="bilinear").round().to(torch.uint8)


def test_region_coverage_is_the_share_of_each_box():
    changed = torch.zeros(1, 48, 48, dtype=torch.bool)
    changed[0, 31:, :] = True  # rows from 0.65 × 48 = 31: exactly the mouth box
    assert region_coverage(changed, FRACTIONS).tolist() == [[0.0, 0.0, 0.0, 0.0, 1.0]]


@pytest.mark.parametrize("kind", OCCLUDER_KINDS)
def test_every_occluder_covers_something_and_reports_it(kind):
    images = _faces()
    out, coverage, names = occlude_batch(images, torch.Generator().manual_seed(1), FRACTIONS, clean_share=0.25,
                                         kinds=(kind,), group=4)
    assert out.shape == images.shape and out.dtype == torch.uint8 and coverage.shape == (32, 5)
    clean = np.array(names) == "clean"
    assert clean.sum() == 8 and torch.equal(out[torch.from_numpy(clean)], images[torch.from_numpy(clean)])
    assert float(coverage[torch.from_numpy(clean)].max()) == 0.0
    assert float(coverage[torch.from_numpy(~clean)].max(1).values.min()) > 0.0  # every occluded face changed
    assert set(names) == {"clean", kind}


def test_auroc_by_hand():
    assert auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert auroc(torch.tensor([0.5, 0.5, 0.5, 0.5]), torch.tensor([0, 1, 0, 1])) == 0.5
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    assert np.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))


@pytest.mark.slow
def test_heads_learn_occlusion_and_leave_the_expression_outputs_alone(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=3, classes=("happiness", "sadness", "surprise")).eval()
    images = _faces(192, seed=2)
    faces = describe_faces(model, images, torch.Generator().manual_seed(0), batch_size=64, kinds=("region",))
    assert faces["descriptors"].shape[:2] == (192, 5) and faces["coverage"].shape == (192, 5)
    heads = OcclusionHeads(REGIONS, faces["descriptors"].shape[2] // 2, 8)
    losses = fit_heads(heads, faces["descriptors"], faces["coverage"], epochs=30)
    assert losses[-1] < losses[0]
    report = occlusion_report(heads, faces, torch.zeros(192, dtype=torch.long))
    assert report["face_max"] > 0.7  # region fills are found even by an untrained trunk (chance: 0.5)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        before = model(x)
    model.config = PCNNConfig.from_dict({**model.config.to_dict(), "occlusion_hidden": 8})
    model.occlusion_heads = heads
    path = save_model(model, tmp_path / "occ.safetensors")
    loaded = load_model(path)
    with torch.no_grad():
        g, local, regions, occlusion = loaded(x, return_regions=True, return_occlusion=True)
        expected = heads([loaded.local_trunks[n](c) for n, c in zip(REGIONS, loaded.regions(x))])
    assert torch.allclose(g, before[0], atol=1e-6) and torch.allclose(local, before[1], atol=1e-6)
    assert occlusion.shape == (2, 5) and torch.allclose(occlusion, expected, atol=1e-6)
    torch_out = create_backend("torch", path).outputs(x.numpy())
    np.testing.assert_allclose(torch_out["occlusion"], occlusion.numpy(), atol=1e-5)  # the fused inference form
    plain = create_backend("torch", create_model("tiny", num_classes=3)).outputs(x.numpy())
    assert plain["occlusion"] is None
    pytest.importorskip("onnxruntime")
    onnx_out = create_backend("onnx", path, cache=tmp_path / "onnx").outputs(x.numpy())
    np.testing.assert_allclose(onnx_out["occlusion"], occlusion.numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx_out["probs"], torch_out["probs"], atol=1e-4)


def test_covered_threshold_is_a_share():
    assert 0 < COVERED < 1


def test_evaluate_writes_the_occluded_columns(tmp_path, run_cli, make_image_folder):
    import csv

    torch.manual_seed(0)
    model = create_model("tiny", num_classes=3, classes=("happiness", "sadness", "surprise")).eval()
    plain = save_model(model, tmp_path / "plain.safetensors")
    model.config = PCNNConfig.from_dict({**model.config.to_dict(), "occlusion_hidden": 4})
    model.occlusion_heads = OcclusionHeads(REGIONS, model.local_heads["mouth"].in_features, 4)
    heads = save_model(model, tmp_path / "heads.safetensors")
    root = make_image_folder(tmp_path / "data", ("happy", "sad", "surprise"), per_class=4, splits=("test",))
    columns = [f"occluded_{r}" for r in REGIONS]
    for path, filled in ((heads, True), (plain, False)):
        out = tmp_path / f"ev-{path.stem}"
        code, _, err = run_cli(["evaluate", "--checkpoint", path, "--dataset", "folder", "--root", root, "--split",
                                "test", "--backend", "torch", "--out", out, "--tta", "flip"])
        assert code == 0, err
        rows = list(csv.DictReader((out / "predictions.csv").open()))
        assert len(rows) == 12 and list(rows[0])[-5:] == columns
        if filled:
            assert all(0.0 <= float(r[c]) <= 1.0 for r in rows for c in columns)
        else:
            assert all(r[c] == "" for r in rows for c in columns)


def test_pcnn_occlusion_writes_the_model_with_heads(tmp_path, run_cli, make_image_folder):
    torch.manual_seed(0)
    source = save_model(create_model("tiny", num_classes=3, classes=("happiness", "sadness", "surprise")).eval(),
                        tmp_path / "tiny.safetensors")
    root = make_image_folder(tmp_path / "data", ("happy", "sad", "surprise"), per_class=10, splits=("train",))
    out = tmp_path / "occ.safetensors"
    args = ["occlusion", "--checkpoint", source, "--dataset", "folder", "--root", root, "--train-faces", "24",
            "--epochs", "2", "--hidden", "8", "--out", out]
    code, stdout, err = run_cli(args)
    assert code == 0, err
    assert "train: face AUROC" in stdout and out.is_file() and (tmp_path / "occ-occlusion.json").is_file()
    model = load_model(out)
    assert model.config.occlusion_hidden == 8 and hasattr(model, "occlusion_heads")
    code, _, err = run_cli(args)
    assert code == 1 and "never overwrites" in err and err.count("\n") == 1
