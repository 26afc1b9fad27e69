"""Per-person smoothing, summaries and timelines (pcnn_fer.faces.smoothing, .people, .timeline)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pcnn_fer.errors import UsageError
from pcnn_fer.faces.people import GAP_SECONDS, MAX_BINS, PeopleSummary
from pcnn_fer.faces.smoothing import ExpressionSmoother
from pcnn_fer.faces.timeline import plot_timeline

CLASSES = ("neutral", "happiness", "sadness")
SAD, HAPPY = np.array([0.1, 0.1, 0.8]), np.array([0.1, 0.8, 0.1])


def test_smoothing_is_an_exponential_average_in_time():
    smoother = ExpressionSmoother(0.5)
    assert smoother.update(1, 0.0, SAD) == pytest.approx(SAD)
    w = 1 - np.exp(-0.1 / 0.5)
    assert smoother.update(1, 0.1, HAPPY) == pytest.approx(SAD + w * (HAPPY - SAD))
    assert smoother.update(2, 0.1, HAPPY) == pytest.approx(HAPPY)  # people are smoothed apart
    assert smoother.update(1, 60.0, SAD) == pytest.approx(SAD, abs=1e-9)  # after a long absence the frame counts
    off = ExpressionSmoother(0)
    off.update(1, 0.0, SAD)
    assert off.update(1, 0.04, HAPPY) == pytest.approx(HAPPY)
    smoother.keep_only([2])
    assert smoother.update(1, 60.1, HAPPY) == pytest.approx(HAPPY)  # forgotten: starts afresh
    with pytest.raises(UsageError, match="seconds"):
        ExpressionSmoother(-1)


def test_smoothing_removes_flicker():
    """Every fourth frame of a sad face is read as happy: the raw labels flip 25 times, the smoothed ones never."""
    smoother = ExpressionSmoother(0.5)
    labels = [int(np.argmax(smoother.update(1, k / 25, HAPPY if k % 4 == 3 else SAD))) for k in range(100)]
    assert set(labels) == {2}


def test_smoothed_label_has_hysteresis():
    """A face hovering between sadness and neutral keeps its label until another class leads by more than the
    margin (0.1); with smoothing off the label is the frame's own."""
    smoother = ExpressionSmoother(0.5)
    near = [np.array([0.44, 0.0, 0.56]), np.array([0.52, 0.0, 0.48]), np.array([0.47, 0.0, 0.53]),
            np.array([0.58, 0.0, 0.42])]
    assert [smoother.label(1, p) for p in near] == [2, 2, 2, 0]  # 0.52 vs 0.48 is no lead; 0.58 vs 0.42 is
    off = ExpressionSmoother(0)
    assert off.margin == 0 and [off.label(1, p) for p in near] == [2, 0, 2, 0]


def _feed(summary: PeopleSummary, face_id: int, start: int, stop: int, probs: np.ndarray, period: float = 0.1):
    for k in range(start, stop):
        summary.add(face_id, k * period, period, CLASSES[int(np.argmax(probs))], probs)


def test_summary_segments_shares_and_a_face_that_leaves():
    summary = PeopleSummary("clip.mp4", CLASSES, fps=10.0, period=0.1)
    for k in range(100):
        summary.add_frame(k * 0.1, 0.1)
    _feed(summary, 1, 0, 30, SAD)
    _feed(summary, 1, 30, 100, HAPPY)
    _feed(summary, 2, 10, 40, HAPPY)  # leaves at 4.0 s
    _feed(summary, 2, 42, 50, HAPPY)  # a 0.1 s miss is bridged, then leaves for good at 5.0 s
    _feed(summary, 3, 0, 10, SAD)
    _feed(summary, 3, 20, 30, SAD)  # away for 1 s: a new segment
    got = summary.to_dict()
    assert got["source"] == "clip.mp4" and got["duration_s"] == 10.0 and got["fps"] == 10.0 and got["frames"] == 100
    one, two, three = got["people"]
    assert one == {"face_id": 1, "first_s": 0.0, "last_s": 10.0, "seconds": 10.0, "dominant": "happiness",
                   "shares": {"happiness": 0.7, "sadness": 0.3},
                   "segments": [{"label": "sadness", "start_s": 0.0, "end_s": 3.0},
                                {"label": "happiness", "start_s": 3.0, "end_s": 10.0}]}
    assert two["first_s"] == 1.0 and two["last_s"] == 5.0 and two["seconds"] == 3.8
    assert two["segments"] == [{"label": "happiness", "start_s": 1.0, "end_s": 5.0}]
    assert three["segments"] == [{"label": "sadness", "start_s": 0.0, "end_s": 1.0},
                                 {"label": "sadness", "start_s": 2.0, "end_s": 3.0}]
    assert 1.0 > GAP_SECONDS > 0.1
    assert summary.line() == ("clip.mp4: 3 people (#1 happiness 70% of 10.0 s, #2 happiness 100% of 3.8 s, "
                              "#3 sadness 100% of 2.0 s)")


def test_summary_memory_is_bounded_and_records_rebuild_it():
    summary = PeopleSummary("long.mp4", CLASSES, fps=25.0, period=0.04)
    for k in range(3 * MAX_BINS + 5):  # 3 MAX_BINS frames: bins merged twice
        summary.add_frame(k * 0.04, 0.04)
        summary.add(1, k * 0.04, 0.04, "sadness", SAD)
    person = summary.people[1]
    assert person.bin_sums.shape == (MAX_BINS, 3) and person.bin_s == pytest.approx(0.16)
    times, probs = person.timeline()
    assert len(times) <= MAX_BINS and probs == pytest.approx(np.tile(SAD, (len(times), 1)))
    rebuilt = PeopleSummary("long.mp4", CLASSES, fps=25.0, period=0.04)
    for k in range(50):
        rebuilt.add_record({"source": "long.mp4", "frame": k, "time_s": k * 0.04, "faces": [
            {"face_id": 1, "smooth_label": "sadness", "smooth_probabilities": dict(zip(CLASSES, SAD, strict=True))}]},
            0.04)
    assert rebuilt.to_dict()["people"][0]["seconds"] == 2.0 and rebuilt.frames == 50


def test_timeline_png(tmp_path):
    summary = PeopleSummary("clip.mp4", CLASSES, fps=10.0, period=0.1)
    for k in range(80):
        summary.add_frame(k * 0.1, 0.1)
    _feed(summary, 1, 0, 30, SAD)
    _feed(summary, 1, 30, 80, HAPPY)
    _feed(summary, 2, 20, 40, HAPPY)
    _feed(summary, 2, 60, 80, HAPPY)
    path = plot_timeline(summary, tmp_path / "clip_timeline.png")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert (np.abs(image.astype(int) - (255, 200, 0)).sum(axis=2) < 30).sum() > 500  # happiness drawn in its colour
    empty = plot_timeline(PeopleSummary("none.mp4", CLASSES, fps=10.0), tmp_path / "none_timeline.png")
    assert empty.is_file()
