"""The still-image pipeline (:mod:`pcnn_fer.faces.pipeline`): the model classifying one group of faces while the next
is prepared gives the records of one group after the other, byte for byte, on real faces; unreadable files keep
their rows and reasons; an error keeps its place; the batched face quality equals OpenCV's per-face measures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, needs_samples

from pcnn_fer.faces import Recognizer
from pcnn_fer.faces.quality import face_quality, faces_quality
from pcnn_fer.faces.sources import expand_sources
from pcnn_fer.faces.stream import chunks, prefetch
from pcnn_fer.faces.tracking import track_frames


def _ferplus_folder(real_dataset, tmp_path: Path, count: int) -> Path:
    """The first ``count`` FERPlus validation faces, with a truncated PNG, a text file and an empty file among them."""
    faces = sorted(real_dataset("ferplus/FER2013Valid").glob("*.png"))[:count]
    folder = tmp_path / "faces"
    folder.mkdir()
    for p in faces:
        shutil.copyfile(p, folder / p.name)
    middle = faces[count // 2].stem
    (folder / f"{middle}_a_truncated.png").write_bytes(faces[0].read_bytes()[:300])
    (folder / f"{middle}_b_text.png").write_text("not an image")
    (folder / f"{faces[-3].stem}_empty.png").write_bytes(b"")
    return folder


def _records(stream) -> list[str]:
    return [json.dumps(r.to_dict()) for r in stream]


def test_overlap_gives_the_sequential_records_on_real_faces(real_dataset, tmp_path):
    """predict_stream and track_stream (what ``pcnn predict`` drains) with the overlap equal one group after the other,
    byte for byte, on 70 real faces in groups of 8 (the bundled model, torch backend); the three unreadable files are
    skipped rows in place, with their reasons."""
    folder = _ferplus_folder(real_dataset, tmp_path, 70)
    rec = Recognizer(backend="torch", detector="none", batch_size=8)
    sequential = _records(rec.predict_stream([folder], overlap=False))
    assert _records(rec.predict_stream([folder])) == sequential
    groups = chunks(prefetch((f for s in expand_sources([folder]) for f in _frames(s, rec)), 16), 8)
    assert _records(track_frames(rec, groups, overlap=True)) == sequential
    rows = [json.loads(r) for r in sequential]
    assert len(rows) == 73 and sum(r["skipped"] is None for r in rows) == 70
    skipped = {Path(r["source"]).name: r["skipped"] for r in rows if r["skipped"]}
    names = sorted(p.name for p in folder.iterdir())
    assert [Path(r["source"]).name for r in rows] == names  # input order, the bad files in place
    truncated, text, empty = (next(v for k, v in skipped.items() if k.endswith(e))
                              for e in ("_a_truncated.png", "_b_text.png", "_empty.png"))
    assert "truncated" in truncated and text == "not an image file (unrecognised format)" and empty == "empty file"
    assert len({r["faces"][0]["label"] for r in rows if r["faces"]}) > 2  # real predictions, not one constant


def _frames(source, rec):
    from pcnn_fer.faces.sources import iter_frames

    return iter_frames(source, max_pixels=rec.max_pixels)


class _FailingOn:
    """A real classifier backend that raises on its ``n``-th batch (a fault in the middle of a job)."""

    def __init__(self, backend, n: int) -> None:
        self.backend, self.config, self.n, self.calls = backend, backend.config, n, 0

    def __call__(self, batch: np.ndarray):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError(f"batch {self.n} failed")
        return self.backend(batch)


@pytest.mark.parametrize("overlap", [False, True])
def test_an_error_comes_after_the_groups_before_it(checkpoint, tmp_path, overlap):
    """A backend failing on its third batch: the first two groups' predictions come out, in order, then the error
    (with and without the overlap alike), in predict_stream and in track_frames."""
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / f"f{i:02d}.png")
    plain = Recognizer(checkpoint, backend="torch", detector="none", batch_size=4)
    for stream_of in (lambda rec: rec.predict_stream([folder], overlap=overlap),
                      lambda rec: track_frames(rec, chunks(prefetch(
                          (f for s in expand_sources([folder]) for f in _frames(s, rec)), 8), 4), overlap=overlap)):
        rec = Recognizer(backend=_FailingOn(plain.backend, 3), detector="none", batch_size=4)
        got = []
        with pytest.raises(RuntimeError, match="batch 3 failed"):
            for result in stream_of(rec):
                got.append(result.source)
        assert [Path(s).name for s in got] == [f"f{i:02d}.png" for i in range(8)]


def test_batched_quality_equals_opencv_per_face(real_dataset):
    """faces_quality over a stack of real faces equals face_quality face by face, and its sharpness is OpenCV's own
    variance of the Laplacian (bit for bit, before rounding)."""
    import cv2
    from PIL import Image

    from pcnn_fer.faces.quality import sharpness

    paths = sorted(real_dataset("ferplus/FER2013Valid").glob("*.png"))[:200]
    crops = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    crops.append(cv2.resize(crops[0], (64, 64)))  # another size: resized to 48×48 first
    boxes = [np.array([0.0, 0.0, c.shape[1], c.shape[0]]) for c in crops]
    batched = faces_quality(crops, boxes, [None] * len(crops), ["none"] * len(crops))
    assert batched == [face_quality(c, b, None, "none") for c, b in zip(crops, boxes, strict=True)]
    for crop in crops[:50]:
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float64)
        assert sharpness(crop) == float(cv2.Laplacian(grey, cv2.CV_64F).var())
    assert faces_quality([], [], [], []) == []


@needs_samples
def test_photos_with_detection_give_the_sequential_records(tmp_path):
    """The sample photos with detection (YuNet; one photo per group): the overlap gives the records of one photo
    after the other, byte for byte, in predict_stream and in track_frames."""
    rec = Recognizer(backend="torch")
    sequential = _records(rec.predict_stream([SAMPLES], overlap=False))
    assert _records(rec.predict_stream([SAMPLES])) == sequential and len(sequential) == 3
    groups = chunks(prefetch((f for s in expand_sources([SAMPLES]) for f in _frames(s, rec)), 2), 1)
    assert _records(track_frames(rec, groups, overlap=True)) == sequential
    assert sum(len(json.loads(r)["faces"]) for r in sequential) >= 2


def test_the_overlap_is_used_where_the_model_leaves_cores(checkpoint, monkeypatch):
    """model_leaves_cores: onnxruntime on every core (its default) or on as many threads as the usable cores fills
    them; one thread of two leaves one; torch by its thread count; an unknown backend object: no overlap."""
    import torch

    from pcnn_fer.backends.dispatch import create_backend
    from pcnn_fer.engine import cores
    from pcnn_fer.faces.pipeline import model_leaves_cores

    monkeypatch.setattr(cores, "usable_cpus", lambda: {0, 1})
    pytest.importorskip("onnxruntime")
    assert not model_leaves_cores(create_backend("onnx", checkpoint, threads=None))
    assert not model_leaves_cores(create_backend("onnx", checkpoint, threads=2))
    assert model_leaves_cores(create_backend("onnx", checkpoint, threads=1))
    torch_backend = create_backend("torch", checkpoint)
    torch.set_num_threads(2)
    assert not model_leaves_cores(torch_backend)
    torch.set_num_threads(1)
    assert model_leaves_cores(torch_backend)
    assert not model_leaves_cores(_FailingOn(torch_backend, 1))
