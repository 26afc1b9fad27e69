"""DDP through torchrun: two Gloo processes on the CPU train the tiny recipe on a synthetic image folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pcnn_fer import load_model
from pcnn_fer.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # two torchrun processes train: minutes on 2 cores (pytest -m slow)


@pytest.mark.timeout(180)
def test_torchrun_two_gloo_processes(tmp_path, make_image_folder, pcnn_env):
    data = make_image_folder(tmp_path / "data", per_class=16, splits=("train", "val"))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pcnn_fer.cli", "train", "--dataset", "folder", "--root", str(data), "--recipe", "tiny",
           "--device", "cpu", "--out", str(run), "--no-progress"]
    proc = subprocess.run(cmd, env=pcnn_env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout
    assert proc.stdout.count("epoch 1/2") == 1  # only rank 0 logs
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2 and results["finished"]
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    # 48 training faces dealt to 2 ranks (24 each); the global batch 16 is 8 per rank, so 3 steps per epoch (under
    # the recipe's cap of 4) and 3 x 8 x 2 = 48 samples counted over both ranks
    assert [r["samples"] for r in history] == [48, 48]
    assert load_checkpoint(run)["scheduler"]["last_epoch"] == 2 * 3  # optimiser steps of rank 0
    assert (run / "model.safetensors").is_file()
    model = load_model(run)
    assert set(model.classes) == {"happiness", "sadness", "surprise"}
