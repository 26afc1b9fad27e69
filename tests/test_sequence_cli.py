"""``pcnn predict FOLDER --sequence FPS``: a folder of frames followed like a video (face ids, time_s, smoothed
labels, summary.json, a timeline) and the flag's bad values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ASTRONAUT = Path(__file__).resolve().parents[1] / "src" / "pcnn_fer" / "assets" / "astronaut.png"
#: The sequence: 12 frames at 4 frames/s; the astronaut's head is in frames 2…9 (0.5 s to the end of 2.25 s).
FRAMES, FPS, ENTERS, LEAVES = 12, 4.0, 2, 9


def _write_frames(folder: Path) -> None:
    """640×360 frames over a blurred background; the astronaut's head (160 px) moves right 24 px a frame while it
    is in the picture. Names sort in frame order."""
    import cv2

    rgb = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    head = cv2.resize(rgb[40:210, 137:307], (160, 160))
    background = cv2.GaussianBlur(cv2.resize(rgb[300:400, 300:400], (640, 360)), (0, 0), 25)
    folder.mkdir()
    for k in range(FRAMES):
        frame = background.copy()
        if ENTERS <= k <= LEAVES:
            x = 60 + 24 * (k - ENTERS)
            frame[100:260, x:x + 160] = head
        Image.fromarray(frame).save(folder / f"frame_{k:03d}.png")


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sequence") / "walk"
    _write_frames(folder)
    return folder


def test_a_folder_of_frames_gets_ids_times_summary_and_timeline(frames, run_cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["predict", frames, "--sequence", FPS, "--out", out, "--save-csv", "--save-jsonl",
                                 "--save-json", "--backend", "torch"])
    assert code == 0, err
    assert "walk: 1 person (#1 " in stdout and "1 image sequence(s): 12 frame(s), 1 person" in stdout
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert [r["time_s"] for r in records] == [k / FPS for k in range(FRAMES)]
    assert all(r["source"] == str(frames) for r in records)
    with_face = [k for k, r in enumerate(records) if r["faces"]]
    assert with_face == list(range(ENTERS, LEAVES + 1))
    assert {f["face_id"] for r in records for f in r["faces"]} == {1}
    assert all(f["smooth_label"] in f["smooth_probabilities"] for r in records for f in r["faces"])
    assert json.loads((out / "predictions.json").read_text()) == records
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert {r["face_id"] for r in rows if r["label"]} == {"1"}
    assert {"time_s", "smooth_label"} <= set(rows[0])
    (source,) = json.loads((out / "summary.json").read_text())["sources"]
    assert source["source"] == str(frames) and source["fps"] == FPS and source["duration_s"] == FRAMES / FPS
    (person,) = source["people"]
    assert person["face_id"] == 1 and person["first_s"] == ENTERS / FPS and person["last_s"] == (LEAVES + 1) / FPS
    assert person["segments"][-1]["end_s"] == (LEAVES + 1) / FPS
    assert Image.open(out / "walk_timeline.png").size[0] > 800
    assert (out / "walk.mp4").is_file() or (out / "walk.avi").is_file()


@pytest.mark.parametrize("value", ["0", "-2", "nan", "inf"])
def test_bad_frame_rates_are_one_line_errors(frames, run_cli, tmp_path, value):
    code, _, err = run_cli(["predict", frames, "--sequence", value, "--out", tmp_path / "out"])
    assert code == 1 and "--sequence must be a frame rate > 0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_sequence_needs_folders(frames, run_cli, tmp_path):
    code, _, err = run_cli(["predict", frames / "frame_000.png", "--sequence", "25", "--out", tmp_path / "out"])
    assert code == 1 and "is not a folder" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["predict", empty, "--sequence", "25", "--quiet", "--backend", "torch"])
    assert code == 1 and "no input could be read" in err
