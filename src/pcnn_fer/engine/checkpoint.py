"""Training checkpoints: atomic writes and ``weights_only=True`` loads.

A checkpoint holds only tensors and plain Python values (dicts, lists, str, int, float, bool, None), RNG states
included, so ``torch.load(..., weights_only=True)`` reads it back and no code is ever unpickled.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import PCNNError
from ..fileio import publish

__all__ = ["CheckpointError", "capture_rng_state", "load_checkpoint", "restore_rng_state", "save_checkpoint"]

CHECKPOINT_FORMAT = "pcnn-fer-train/1"


class CheckpointError(PCNNError, ValueError):
    """A training checkpoint that is missing, unreadable or not ours."""


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and the current CUDA device), NumPy and Python ``random`` as tensors / plain
    values."""
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # only the current device's generator: touching every GPU would create a context on each of them
        "cuda": ({"device": torch.cuda.current_device(), "state": torch.cuda.get_rng_state()}
                 if torch.cuda.is_available() and torch.cuda.is_initialized() else {}),
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_cached)},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": None if py_gauss is None else float(py_gauss)},
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (the CUDA state goes to the current device)."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or {}
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda["state"].cpu())  # onto this process's current device
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, then ``os.replace``.

    A crash (even ``kill -9``) leaves either the previous checkpoint or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (CheckpointError if not)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"no training checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt or refused files
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path}: unreadable training checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a pcnn-fer training checkpoint")
    return state
