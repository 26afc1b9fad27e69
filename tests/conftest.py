"""Shared test plumbing: where ../shared lives, one torch thread, a private decode cache, a small model file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pcnn_fer import create_model, save_model

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PCNN_FER_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data" if (SHARED / "data").is_dir() else SHARED
SAMPLES = SHARED / "samples"
#: The astronaut's face in samples/astronaut.png (512×512), read off the image: hairline to chin, ear to ear.
ASTRONAUT_FACE = (172, 70, 272, 180)

needs_samples = pytest.mark.skipif(not (SAMPLES / "astronaut.png").is_file(),
                                   reason=f"sample photos not found in {SAMPLES} (set PCNN_FER_SHARED)")


def real_dataset(sub: str) -> Path:
    """Path of a real dataset folder under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real dataset not available: {path} (set PCNN_FER_SHARED to the shared folder)")
    return path


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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random tiny 8-class PCNN file with the bundled model's geometry (48×48, lowres stem)."""
    torch.manual_seed(0)
    return save_model(create_model("tiny", num_classes=8), tmp_path_factory.mktemp("model") / "m.safetensors")
