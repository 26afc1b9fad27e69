"""Annotations that read: labels inside the image and never on one another, region panels beside (never over) the
face, legible sizes, face ids and smoothed labels; boxes in records clipped to the image."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pytest

from pcnn_fer.faces.draw import MAX_UPSCALED_PIXELS, MIN_PANEL_FACE, MIN_TEXT_SCALE, draw_faces, label_text, text_scale
from pcnn_fer.faces.layout import Layout, inside, overlaps
from pcnn_fer.models.pcnn import REGIONS

CLASSES = ("neutral", "happiness", "surprise")


@dataclass
class FakeFace:
    """A recognised face as draw_faces reads it (box, label, score, landmarks, regions, optional id/smoothing)."""

    box: np.ndarray
    label: str = "happiness"
    score: float = 0.9
    landmarks: np.ndarray | None = None
    regions: dict = field(default_factory=lambda: {r: {c: 1 / 3 for c in CLASSES} for r in REGIONS})
    face_id: int | None = None
    smooth_label: str | None = None
    smooth_probabilities: dict | None = None


def crowd(n: int, width: int, height: int, side: tuple[int, int], seed: int = 0) -> list[FakeFace]:
    """``n`` faces at random spots, overlapping allowed, partly past the edges."""
    rng = np.random.default_rng(seed)
    faces = []
    for _ in range(n):
        s = int(rng.integers(*side))
        x, y = int(rng.integers(-s // 3, width - s // 2)), int(rng.integers(-s // 3, height - s // 2))
        faces.append(FakeFace(np.array([x, y, x + s, y + s], float), label=str(rng.choice(CLASSES))))
    return faces


@pytest.mark.parametrize("n, size, side", [(30, (640, 480), (16, 40)), (12, (1920, 1080), (80, 300)),
                                           (60, (1280, 720), (20, 60)), (3, (300, 260), (120, 200))])
def test_labels_and_panels_stay_inside_and_never_overlap(n, size, side):
    width, height = size
    faces = crowd(n, width, height, side, seed=n)
    placed: list = []
    out = draw_faces(np.full((height, width, 3), 90, np.uint8), faces, placements=placed)
    assert out.shape == (height, width, 3)
    assert sum(kind == "label" for _, kind, _ in placed) == n  # every face gets its label
    for _, _, (x1, y1, x2, y2) in placed:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    for (_, _, a), (_, _, b) in combinations(placed, 2):
        assert not overlaps(a, b), (a, b)
    for k, kind, rect in placed:  # a region panel never lies on a face
        if kind == "regions":
            for face in faces:
                x1, y1, x2, y2 = face.box
                assert not overlaps(rect, (int(x1) + 1, int(y1) + 1, int(x2), int(y2))), (k, rect, face.box)


def test_region_panel_goes_beside_the_box_and_the_label_above_it():
    face = FakeFace(np.array([200, 150, 320, 270], float))
    placed: list = []
    draw_faces(np.zeros((480, 640, 3), np.uint8), [face], placements=placed)
    kinds = {kind: rect for _, kind, rect in placed}
    assert kinds["label"][3] <= 150 and kinds["label"][0] == 200  # above the box, at its left edge
    assert kinds["regions"][0] > 320 and kinds["regions"][1] == 150  # right of the box, level with its top


def test_label_of_a_face_past_the_edge_is_moved_inside():
    face = FakeFace(np.array([-77, -20, 60, 110], float), label="neutral", score=0.59)
    placed: list = []
    draw_faces(np.zeros((300, 400, 3), np.uint8), [face], placements=placed)
    (_, _, (x1, y1, x2, y2)), *_ = placed
    assert x1 == 0 and y1 >= 0  # "neutral 59%", not "tral 59%"


def test_sizes_follow_the_face_with_a_legible_minimum():
    assert text_scale(10) == MIN_TEXT_SCALE and text_scale(300) > text_scale(150) > text_scale(60)
    small, big = FakeFace(np.array([50, 50, 50 + MIN_PANEL_FACE - 1, 50 + MIN_PANEL_FACE - 1], float)), \
        FakeFace(np.array([300, 100, 500, 300], float))
    placed: list = []
    draw_faces(np.zeros((600, 800, 3), np.uint8), [small, big], placements=placed)
    kinds = {(k, kind): rect for k, kind, rect in placed}
    assert (0, "regions") not in kinds and (1, "regions") in kinds  # no panel that would dwarf a tiny face
    assert kinds[(1, "label")][3] - kinds[(1, "label")][1] > kinds[(0, "label")][3] - kinds[(0, "label")][1] >= 12


def test_face_id_and_smoothed_label_are_shown():
    assert label_text(FakeFace(np.zeros(4))) == "happiness 90%"
    assert label_text(FakeFace(np.zeros(4), face_id=3)) == "#3 happiness 90%"
    tracked = FakeFace(np.zeros(4), face_id=3, smooth_label="neutral",
                       smooth_probabilities={"neutral": 0.62, "happiness": 0.3, "surprise": 0.08})
    assert label_text(tracked) == "#3 neutral 62%"  # a tracked face shows its person's smoothed label


def test_layout_finds_a_free_spot_and_moves_rectangles_inside():
    assert inside((-10, -5, 20, 15), 100, 50) == (0, 0, 30, 20)
    assert inside((90, 40, 120, 60), 100, 50) == (70, 30, 100, 50)
    layout = Layout(200, 100)
    first = layout.place([(10, 10, 60, 30)])
    second = layout.place([(10, 10, 60, 30)])  # the same wish: it goes elsewhere, nearby
    assert first == (10, 10, 60, 30) and not overlaps(first, second)
    assert abs(second[1] - first[1]) + abs(second[0] - first[0]) <= 40


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1000, 3), (5, 3, 3)])
def test_drawing_on_tiny_images(shape):
    out = draw_faces(np.zeros(shape, np.uint8), [FakeFace(np.array([0, 0, shape[1], shape[0]], float))])
    assert out.ndim == 3 and out.shape[0] * out.shape[1] <= MAX_UPSCALED_PIXELS
    assert min(out.shape[:2]) >= 240 or out.shape[0] * out.shape[1] * 4 > MAX_UPSCALED_PIXELS  # upscaled, or capped
