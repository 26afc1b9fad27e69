"""Face ids through a video (pcnn_fer.faces.identity) and the people of a real-photo clip (Recognizer.track)."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
import pytest

from pcnn_fer.errors import UsageError
from pcnn_fer.faces.detect import Detection, dlib_available
from pcnn_fer.faces.identity import IdentityConfig, IdentityTracker, box_iou_matrix

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import people_clips  # noqa: E402

needs_clip_faces = pytest.mark.skipif(not dlib_available() or not people_clips.CKPLUS.is_dir(),
                                      reason="needs dlib + face-recognition-models and ../shared/data/ckplus48")


def _det(cx: float, cy: float, side: float = 100.0) -> Detection:
    return Detection([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def test_iou_matrix():
    iou = box_iou_matrix([[0, 0, 10, 10], [5, 0, 15, 10]], [[0, 0, 10, 10], [20, 20, 30, 30]])
    assert iou == pytest.approx(np.array([[1.0, 0.0], [50 / 150, 0.0]]))


def test_crossing_paths_keep_their_ids_by_motion_and_a_hidden_face_keeps_its_id():
    """Two faces walk towards each other 20 px/frame, one 40 px lower; while they overlap the back one is not
    detected (hidden) for 5 frames, then reappears on its course."""
    tracker = IdentityTracker(IdentityConfig(), describer=None)
    history = collections.defaultdict(set)
    for k in range(30):
        a, b = (100 + 20 * k, 300), (700 - 20 * k, 340)
        hidden = 13 <= k <= 17
        dets = [_det(*a)] + ([] if hidden else [_det(*b)])
        ids = tracker.update(dets, k / 25)
        assert len(set(ids)) == len(ids)
        history["a"].add(ids[0])
        if not hidden:
            history["b"].add(ids[1])
    assert history == {"a": {1}, "b": {2}}


def test_a_person_who_returns_without_descriptors_gets_a_new_id_and_old_ones_are_forgotten():
    tracker = IdentityTracker(IdentityConfig(reid_seconds=2.0, coast_seconds=0.5), describer=None)
    assert tracker.update([_det(200, 200)], 0.0) == [1]
    assert tracker.update([_det(205, 200)], 0.04) == [1]
    assert tracker.update([], 0.5) == []
    assert tracker.update([_det(210, 200)], 1.0) == [2]  # past coast_seconds, no appearance: a new person
    assert [t.face_id for t in tracker.tracks] == [1, 2]
    assert tracker.update([_det(212, 200)], 1.04) == [2]
    assert tracker.update([_det(214, 200)], 2.5) == [3]
    assert [t.face_id for t in tracker.tracks] == [2, 3]  # id 1 unseen for more than reid_seconds: forgotten


def test_hundreds_of_people_over_time_keep_memory_bounded():
    """300 people pass one after another (each seen for 3 frames): ids 1…300, never shared, and the tracker holds
    only those seen within reid_seconds."""
    tracker = IdentityTracker(IdentityConfig(reid_seconds=5.0), describer=None)
    seen = []
    for person in range(300):
        x = 100 + (person % 7) * 150
        for k in range(3):
            seen += tracker.update([_det(x, 300)], person * 1.0 + k * 0.04)
        assert len(tracker.tracks) <= 7
    assert seen == [i for i in range(1, 301) for _ in range(3)]


def test_identity_config_rejects_bad_values():
    with pytest.raises(UsageError, match="reid_seconds"):
        IdentityConfig(reid_seconds=-1)
    with pytest.raises(UsageError, match="min_iou"):
        IdentityConfig(min_iou=1.5)


@pytest.fixture(scope="module")
def crossing(tmp_path_factory):
    """The crossing clip at 768×432, 10 fps (80 frames), its ground truth and ``Recognizer().track`` of it."""
    if not dlib_available() or not people_clips.CKPLUS.is_dir():
        pytest.skip("needs dlib + face-recognition-models and ../shared/data/ckplus48")
    from pcnn_fer.faces import Recognizer

    path = tmp_path_factory.mktemp("clips") / "crossing.avi"
    truth = people_clips.render(path, people_clips.crossing_scene(0.8), size=(768, 432), fps=10.0)
    result = Recognizer(backend="onnx").track(path)
    return path, truth, result


def _ids_per_actor(result, truth) -> dict[str, collections.Counter]:
    df = result.to_pandas()
    seen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in df.itertuples():
        cx, cy = (row.x1 + row.x2) / 2, (row.y1 + row.y2) / 2
        for name, (x1, y1, x2, y2, _) in truth[row.frame].items():
            if x1 < cx < x2 and y1 < cy < y2:
                seen[name][row.face_id] += 1
    return seen


@pytest.mark.slow
@needs_clip_faces
def test_one_id_per_person_through_crossing_and_reentry(crossing):
    """Zero id switches: every face matched to a person carries that person's one id; three people, three ids; the
    astronaut leaves the picture for 2 s and gets her id back by appearance."""
    _, truth, result = crossing
    seen = _ids_per_actor(result, truth)
    assert set(seen) == {"sad_then_happy", "surprised", "astronaut"}
    assert all(len(ids) == 1 for ids in seen.values()), seen
    assert len({next(iter(ids)) for ids in seen.values()}) == 3
    assert result.face_ids == sorted(next(iter(ids)) for ids in seen.values())
    astronaut = next(iter(seen["astronaut"]))
    df = result.to_pandas()
    frames = sorted(int(f) for f in df[df.face_id == astronaut].frame)
    assert frames[0] < 30 and frames[-1] > 60  # seen before she left (3-5.5 s) and after she came back
    for name, ids in seen.items():  # found in nearly every frame where the face is wholly visible
        present = sum(name in frame for frame in truth)
        assert sum(ids.values()) >= 0.9 * present, (name, sum(ids.values()), present)


@pytest.mark.slow
@needs_clip_faces
def test_summary_of_the_crossing_clip(crossing):
    """Dominant expressions per person, the smoothed segments in the order shown (sad, then happy), and the summary
    of a face that leaves: her first segment ends where she left the picture."""
    _, truth, result = crossing
    seen = {name: next(iter(ids)) for name, ids in _ids_per_actor(result, truth).items()}
    summary = result.summary()
    assert summary["fps"] == 10.0 and summary["duration_s"] == 8.0 and summary["frames"] == 80
    people = {p["face_id"]: p for p in summary["people"]}
    walker = people[seen["sad_then_happy"]]
    assert walker["dominant"] == "happiness" and [s["label"] for s in walker["segments"]] == ["sadness", "happiness"]
    assert 3.0 <= walker["segments"][1]["start_s"] <= 3.6  # the face turns happy at 3 s; smoothing lags a little
    assert walker["first_s"] == 0.0 and walker["last_s"] == 8.0 and walker["seconds"] == 8.0
    happy = walker["segments"][1]
    assert walker["shares"]["happiness"] == pytest.approx((happy["end_s"] - happy["start_s"]) / 8.0, abs=1e-3)
    assert people[seen["surprised"]]["dominant"] == "surprise"
    astronaut = people[seen["astronaut"]]
    assert astronaut["dominant"] == "happiness"
    left = max(k for k, frame in enumerate(truth) if "astronaut" in frame and k < 50) / 10  # last frame wholly in
    assert abs(astronaut["segments"][0]["end_s"] - (left + 0.1)) <= 0.25
    assert astronaut["segments"][-1]["end_s"] == astronaut["last_s"] == 8.0
    assert sum(s["end_s"] - s["start_s"] for s in astronaut["segments"]) >= astronaut["seconds"] - 1e-6
    for p in summary["people"]:
        assert sum(p["shares"].values()) == pytest.approx(1.0, abs=0.01)
        assert list(p) == ["face_id", "first_s", "last_s", "seconds", "dominant", "shares", "segments"]


@pytest.mark.slow
@needs_clip_faces
def test_an_image_sequence_is_tracked_like_a_video(crossing, tmp_path):
    """The crossing clip's first 4 s written as numbered PNG frames: ``track(folder, fps=10)`` gives the same people
    (three ids, one per person) with times from the frame numbers."""
    import cv2

    from pcnn_fer.faces import Recognizer

    path, truth, _ = crossing
    capture = cv2.VideoCapture(str(path))
    for k in range(40):
        ok, bgr = capture.read()
        assert ok
        cv2.imwrite(str(tmp_path / f"frame_{k:04d}.png"), bgr)
    capture.release()
    result = Recognizer(backend="onnx").track(tmp_path, fps=10.0)
    summary = result.summary()
    assert summary["source"] == str(tmp_path) and summary["fps"] == 10.0 and summary["duration_s"] == 4.0
    seen = _ids_per_actor(result, truth)
    assert set(seen) == {"sad_then_happy", "surprised", "astronaut"}
    assert all(len(ids) == 1 for ids in seen.values()) and len({next(iter(i)) for i in seen.values()}) == 3
    assert result.to_pandas().time_s.max() == pytest.approx(3.9)
