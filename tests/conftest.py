"""Shared test plumbing: where ../shared lives, one torch thread, a private decode cache, a small model file, real and
synthetic datasets, and the ``pcnn`` command in-process (``run_cli``) or as a subprocess (``pcnn_subprocess``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pcnn_fer import create_model, save_model

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PCNN_FER_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data" if (SHARED / "data").is_dir() else SHARED
SAMPLES = SHARED / "samples"
#: The astronaut's face in samples/astronaut.png (512×512), read off the image: hairline to chin, ear to ear.
ASTRONAUT_FACE = (172, 70, 272, 180)

needs_samples = pytest.mark.skipif(not (SAMPLES / "astronaut.png").is_file(),
                                   reason=f"sample photos not found in {SAMPLES} (set PCNN_FER_SHARED)")


def _real_dataset(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real dataset not available: {path} (set PCNN_FER_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def real_dataset() -> Callable[[str], Path]:
    """``real_dataset(sub)``: the path of real dataset ``sub`` under ../shared/data, or skip the test saying why."""
    return _real_dataset


def real_face_pixels(size: int) -> np.ndarray:
    """The bundled astronaut's face and 7 FERPlus validation faces (when the shared data is there), as float32 RGB
    (N, size, size, 3): the real faces the weight readers' parity tests run on."""
    faces = [Image.open(REPO / "src" / "pcnn_fer" / "assets" / "astronaut.png").convert("RGB").crop(ASTRONAUT_FACE)]
    folder = SHARED_DATA / "ferplus" / "FER2013Valid"
    faces += [Image.open(p).convert("RGB") for p in sorted(folder.glob("fer*.png"))[:7]]
    return np.stack([np.asarray(f.resize((size, size), Image.BILINEAR), np.float32) for f in faces])


def _image_folder(root: Path, classes: tuple[str, ...] = ("happy", "sad", "surprise"), per_class: int = 12,
                  splits: tuple[str, ...] = ("train", "val", "test"), size: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split in splits:
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = (rng.integers(0, 80, (size, size)) + 80 * ci) % 256
                Image.fromarray(img.astype(np.uint8)).save(d / f"{c}_{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def make_image_folder() -> Callable[..., Path]:
    """``make_image_folder(root, classes=("happy", "sad", "surprise"), per_class=12, splits=("train", "val", "test"),
    size=48, seed=0)``: an ImageFolder tree ``root/<split>/<class>/<class>_NNN.png`` of grayscale PNGs whose
    brightness depends on the class (learnable); adds to an existing tree. Returns ``root``."""
    return _image_folder


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder (skips the test when it is absent)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED}")
    return SHARED


@pytest.fixture(autouse=True)
def _one_thread_private_cache(monkeypatch, tmp_path_factory):
    """One torch thread (tiny batches are fastest so, and 2 shared cores suffer from oversubscription) and a
    private decode cache per test session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("PCNN_FER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def dlib_file() -> Path:
    """dlib's face-recognition network from ``face_recognition_models`` (skips when it is not installed)."""
    from pcnn_fer.dlib_weights import DlibFormatError, find_dlib_model

    try:
        return find_dlib_model()
    except DlibFormatError as e:
        pytest.skip(str(e))


def assert_folding_keeps_outputs(model: torch.nn.Module, size: int, tol: float) -> torch.nn.Module:
    """Randomise ``model``'s batch-norm statistics and affine, fold them with ``optimize_for_inference`` and check the
    unpaired, norm-free result gives the same (global, local, regions) outputs within ``tol``; returns it."""
    from pcnn_fer.models.fuse import optimize_for_inference

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    fast = optimize_for_inference(model)
    assert not fast.paired and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for a, b in zip(model(x, return_regions=True), fast(x.contiguous(memory_format=torch.channels_last),
                                                           return_regions=True)):
            torch.testing.assert_close(b, a, atol=tol, rtol=tol)
    return fast


def in_process_budget_mb() -> float:
    """The default --max-memory-mb as room on top of what this process holds now: an in-process test server shares
    its process with pytest, which carries every earlier test's memory, where ``pcnn serve`` starts with its model."""
    from pcnn_fer.defaults import DEFAULT_MAX_MEMORY_MB
    from pcnn_fer.deploy.memory import rss_bytes

    return (rss_bytes() or 0) / 2**20 + DEFAULT_MAX_MEMORY_MB


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random tiny 8-class PCNN file with the bundled model's geometry (48×48, lowres stem)."""
    torch.manual_seed(0)
    return save_model(create_model("tiny", num_classes=8), tmp_path_factory.mktemp("model") / "m.safetensors")


@pytest.fixture
def run_cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """``run_cli(args)``: ``pcnn ARGS`` in-process (``pcnn_fer.cli.main``; arguments may be paths), returning (exit
    code, stdout, stderr)."""
    from pcnn_fer.cli import main

    def run(args: list) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def pcnn_env(tmp_path) -> dict[str, str]:
    """The environment of a subprocess that runs this checkout's ``pcnn_fer``: its ``src`` first on PYTHONPATH, one
    OpenMP thread, a private decode cache."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PCNN_FER_CACHE": str(tmp_path / "subprocess-cache"),
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}


#: The real ``pcnn`` command of this checkout (``python -m pcnn_fer.cli``), for subprocesses with :func:`pcnn_env`.
PCNN = [sys.executable, "-m", "pcnn_fer.cli"]


@pytest.fixture
def pcnn_subprocess(pcnn_env) -> Callable[..., subprocess.CompletedProcess]:
    """``pcnn_subprocess(args, timeout=120)``: the real ``pcnn`` command in a subprocess (:func:`pcnn_env`); returns
    the CompletedProcess with text stdout / stderr."""

    def run(args: list, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run([*PCNN, *[str(a) for a in args]], env=pcnn_env, capture_output=True, text=True,
                              timeout=timeout, **kwargs)

    return run


@pytest.fixture
def pcnn_popen(pcnn_env) -> Callable[..., subprocess.Popen]:
    """``pcnn_popen(args, **popen_kwargs)``: the real ``pcnn`` command started in the background (:func:`pcnn_env`)."""

    def start(args: list, **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen([*PCNN, *[str(a) for a in args]], env=pcnn_env, **kwargs)

    return start
