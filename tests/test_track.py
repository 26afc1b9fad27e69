"""Video-frame detection that reuses the previous frame's faces (pcnn_fer.faces.track)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcnn_fer.errors import UsageError
from pcnn_fer.faces.detect import Detection, DlibHOGDetector, dlib_available
from pcnn_fer.faces.detect import box_iou as iou
from pcnn_fer.faces.track import FrameTracker, search_windows

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "pcnn_fer" / "assets"
needs_dlib = pytest.mark.skipif(not dlib_available(), reason="dlib and face-recognition-models are not installed")


def _frames(count: int, second_from: int | None = None, first_until: int | None = None) -> list[np.ndarray]:
    """A 1280×720 clip: the astronaut's head (200 px) drifting right by 6 px a frame; optionally a second head that
    appears at frame ``second_from`` far from the first, and the first leaving after frame ``first_until``."""
    import cv2

    rgb = np.asarray(Image.open(SAMPLES / "astronaut.png").convert("RGB"))
    head = cv2.resize(rgb[40:210, 137:307], (200, 200))
    background = cv2.resize(rgb[300:400, 300:400], (1280, 720), interpolation=cv2.INTER_LINEAR)
    background = cv2.GaussianBlur(background, (0, 0), 25)
    frames = []
    for t in range(count):
        frame = background.copy()
        if first_until is None or t <= first_until:
            x = 100 + 6 * t
            frame[200:400, x:x + 200] = head
        if second_from is not None and t >= second_from:
            frame[400:600, 1000:1200] = head
        frames.append(frame)
    return frames


def _boxes(faces: list[Detection]) -> list[np.ndarray]:
    return [f.box for f in faces]


@needs_dlib
def test_window_search_finds_what_full_detection_finds():
    """Between refreshes only a window around the previous faces is searched, and it finds the same face as a full
    detection of the same frame: landmarks, which alignment uses, within 2 px; boxes overlapping by IoU ≥ 0.7 (HOG
    reports a box on its pyramid level's cell grid, and the coarser levels' grids do not line up with a window's
    corner: boxes shift by up to a cell there); every ``refresh``-th frame is full."""
    detector = DlibHOGDetector()
    tracker = FrameTracker(detector, refresh=4, flow_frames=0)
    for t, frame in enumerate(_frames(9)):
        faces, tried = tracker.detect_traced("clip", frame)
        full = detector.detect(frame)
        assert len(faces) == len(full) == 1, t
        assert iou(faces[0].box, full[0].box) >= 0.7, t
        assert np.abs(faces[0].landmarks - full[0].landmarks).max() <= 2, t
        windowed = t % 4 != 0
        assert all(x.endswith(" window") for x in tried) == windowed, (t, tried)


@needs_dlib
def test_new_face_is_found_at_the_next_refresh_and_a_lost_face_triggers_full_detection():
    tracker = FrameTracker(DlibHOGDetector(), refresh=5, flow_frames=0)
    counts = [len(tracker.detect_traced("clip", f)[0]) for f in _frames(8, second_from=2)]
    assert counts == [1, 1, 1, 1, 1, 2, 2, 2]  # the second head enters at frame 2, full detection at frame 5
    tracker = FrameTracker(DlibHOGDetector(), refresh=50, flow_frames=0)
    for t, frame in enumerate(_frames(5, first_until=2)):
        faces, tried = tracker.detect_traced("clip", frame)
        assert len(faces) == (1 if t <= 2 else 0), t
        if t == 3:  # the window finds no face where there was one: the whole frame is searched too
            assert tried[0].endswith(" window") and not tried[-1].endswith(" window")
        if t == 4:  # no face to search around: full detection
            assert not any(x.endswith(" window") for x in tried)


@needs_dlib
def test_a_new_video_and_refresh_1_use_full_detection():
    frames = _frames(3)
    tracker = FrameTracker(DlibHOGDetector(), refresh=10, flow_frames=0)
    tracker.detect_traced("a", frames[0])
    assert tracker.detect_traced("a", frames[1])[1][0].endswith(" window")
    assert not tracker.detect_traced("b", frames[2])[1][0].endswith(" window")
    every = FrameTracker(DlibHOGDetector(), refresh=1)
    assert all(not every.detect_traced("a", f)[1][0].endswith(" window") for f in frames)


def test_search_windows_and_arguments():
    faces = [Detection([100, 100, 150, 160]), Detection([300, 50, 320, 70])]
    # each face grown by margin × its larger side, corners on the 8-px HOG grid (30 → 24, 70 → 64, 290 → 288)
    assert search_windows(faces, 480, 640, 1.0) == [(40, 40, 210, 220), (280, 24, 340, 90)]
    assert search_windows(faces, 480, 640, 0.5) == [(64, 64, 180, 190), (288, 40, 330, 80)]
    assert search_windows(faces, 100, 330, 1.0) == [(40, 40, 210, 100), (280, 24, 330, 90)]  # clipped
    touching = [Detection([100, 100, 160, 160]), Detection([170, 100, 230, 160])]
    assert search_windows(touching, 480, 640, 0.5) == [(64, 64, 260, 190)]  # overlapping windows are merged
    for bad in ({"refresh": 0}, {"refresh": 2.5}, {"margin": 0}, {"flow_frames": -1}):
        with pytest.raises(UsageError):
            FrameTracker(object(), **bad)


@needs_dlib
def test_optical_flow_follows_faces_between_window_searches():
    """With the default ``flow_frames=1`` every other frame between full detections follows the faces by optical
    flow: the same landmarks as a full detection within 2 px; a window search comes next. Overlapping faces are
    never followed (the hidden one's points would go with the front one)."""
    from pcnn_fer.faces.flow import follow_faces

    detector = DlibHOGDetector()
    tracker = FrameTracker(detector, refresh=6)
    kinds = []
    for frame in _frames(12):
        faces, tried = tracker.detect_traced("clip", frame)
        full = detector.detect(frame)
        assert len(faces) == len(full) == 1
        assert np.abs(faces[0].landmarks - full[0].landmarks).max() <= 2
        assert iou(faces[0].box, full[0].box) >= 0.7
        kinds.append("flow" if tried == ["optical flow"] else "window" if tried[0].endswith(" window") else "full")
    assert kinds == ["full", "flow", "window", "flow", "window", "flow"] * 2
    gray = np.zeros((200, 200), np.uint8)
    overlapping = [Detection([10, 10, 110, 110], np.zeros((5, 2))), Detection([60, 10, 160, 110], np.zeros((5, 2)))]
    assert follow_faces(gray, gray, overlapping) is None
