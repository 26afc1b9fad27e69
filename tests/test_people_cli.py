"""``pcnn predict`` on videos: face ids, smoothed labels, summary.json, timelines, console lines and --resume."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcnn_fer.faces.detect import dlib_available

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import people_clips  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not dlib_available() or not people_clips.CKPLUS.is_dir(),
    reason="needs dlib + face-recognition-models and ../shared/data/ckplus48")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """walk.avi: the crossing scene's first 4 s at 10 fps (three people); empty.avi: 1 s of background only."""
    folder = tmp_path_factory.mktemp("videos")
    people_clips.render(folder / "walk.avi", people_clips.crossing_scene(0.8), size=(768, 432), fps=10.0,
                        seconds=4.0)
    people_clips.render(folder / "empty.avi", [], size=(320, 240), fps=10.0, seconds=1.0)
    return [folder / "walk.avi", folder / "empty.avi"]


def test_predict_writes_ids_smoothed_labels_summary_and_timelines(clips, run_cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["predict", *clips, "--out", out, "--save-csv", "--save-jsonl", "--save-json"])
    assert code == 0
    assert "walk.avi: 3 people (#1 " in stdout and "empty.avi: no face found in 10 frame(s)" in stdout
    assert "2 video(s): 50 frame(s), 3 people" in stdout and "input(s)" not in stdout
    summary = json.loads((out / "summary.json").read_text())
    walk, empty = summary["sources"]
    assert set(walk) >= {"source", "duration_s", "fps", "people"} and walk["duration_s"] == 4.0 and walk["fps"] == 10
    assert [p["face_id"] for p in walk["people"]] == [1, 2, 3] and empty["people"] == []
    for person in walk["people"]:
        assert list(person) == ["face_id", "first_s", "last_s", "seconds", "dominant", "shares", "segments"]
        assert all(set(s) == {"label", "start_s", "end_s"} for s in person["segments"])
    assert {p["dominant"] for p in walk["people"]} == {"sadness", "happiness", "surprise"}
    for name in ("walk_timeline.png", "empty_timeline.png"):
        assert Image.open(out / name).size[0] > 800
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert {"face_id", "time_s", "smooth_label", "smooth_happiness"} <= set(rows[0])
    assert {r["face_id"] for r in rows} == {"1", "2", "3"}
    assert rows[0]["time_s"] == "0.0" and rows[-1]["time_s"] == "3.9"
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    face = records[5]["faces"][0]
    assert records[5]["time_s"] == 0.5 and list(face)[0] == "face_id"
    assert face["smooth_label"] == max(face["smooth_probabilities"], key=face["smooth_probabilities"].get)
    assert json.loads((out / "predictions.json").read_text()) == records


def test_resume_keeps_ids_and_rebuilds_the_summary(clips, run_cli, tmp_path):
    """A job stopped in its second video: --resume keeps the first video's records, redoes the second, and writes
    the same JSONL and summary as an uninterrupted run."""
    out = tmp_path / "out"
    args = ["predict", *clips, "--out", out, "--save-jsonl", "--no-annotate", "--quiet"]
    assert run_cli(args)[0] == 0
    whole, summary = (out / "predictions.jsonl").read_bytes(), json.loads((out / "summary.json").read_text())
    lines = whole.splitlines(keepends=True)
    (out / "predictions.jsonl").write_bytes(b"".join(lines[:43]))  # 40 frames of walk.avi, 3 of empty.avi
    (out / "summary.json").unlink()
    assert run_cli([*args, "--resume"])[0] == 0
    assert (out / "predictions.jsonl").read_bytes() == whole
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["sources"][0]["people"] == summary["sources"][0]["people"]
    assert resumed["sources"][0]["fps"] == 10.0 and resumed["sources"][1] == summary["sources"][1]


def test_smoothing_flag_and_bad_values(clips, run_cli, tmp_path):
    code, _, err = run_cli(["predict", clips[0], "--smooth", "-1", "--out", tmp_path / "bad"])
    assert code == 1 and "--smooth must be a number of seconds >= 0" in err and "Traceback" not in err
    out = tmp_path / "raw"
    assert run_cli(["predict", clips[0], "--smooth", "0", "--no-reid", "--max-frames", "12", "--out", out,
                    "--save-jsonl", "--no-annotate", "--quiet"])[0] == 0
    for line in (out / "predictions.jsonl").read_text().splitlines():
        for face in json.loads(line)["faces"]:
            assert face["smooth_label"] == face["label"]
            assert np.allclose(list(face["smooth_probabilities"].values()), list(face["probabilities"].values()))
