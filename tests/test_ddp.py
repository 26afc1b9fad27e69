"""DDP through torchrun: two Gloo processes on the CPU train the tiny recipe on a synthetic image folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcnn_fer import load_model

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.timeout(180)
def test_torchrun_two_gloo_processes(tmp_path, make_image_folder):
    data = make_image_folder(tmp_path / "data", per_class=16, splits=("train", "val"))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PCNN_FER_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pcnn_fer.cli", "train", "--dataset", "folder", "--root", str(data), "--recipe", "tiny",
           "--device", "cpu", "--out", str(run), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout
    assert proc.stdout.count("epoch 1/2") == 1  # only rank 0 logs
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2 and results["finished"]
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    # global batch 16 split as 8 per rank; 4 steps per epoch -> 64 samples counted over both ranks
    assert (run / "model.safetensors").is_file()
    model = load_model(run)
    assert set(model.classes) == {"happiness", "sadness", "surprise"}
