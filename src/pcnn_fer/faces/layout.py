"""Where annotation boxes go: each label and region panel gets a spot inside the image that overlaps no label or
panel placed before it and, when there is one, no face box either.

:class:`Layout` keeps the rectangles placed so far. :meth:`Layout.place` tries a face's preferred spots in order
(e.g. above the box, below it, beside it), each moved inside the image; the first that hits nothing wins, then the
first that covers only faces (never another label); failing both, it searches outwards from the first spot, ring by
ring, for the nearest free one (the caller draws a leader line to the face when the spot is away from it), and says
None when the image is full.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)
#: The search for a free spot looks at most this many steps away from the preferred one (bounds its cost).
SEARCH_RINGS = 80

__all__ = ["Layout", "Rect", "overlaps", "inside"]


def overlaps(a: Rect, b: Rect) -> bool:
    """True when two rectangles share any pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(rect: Rect, width: int, height: int) -> Rect:
    """The rectangle moved (not resized, unless it is larger than the image) to lie inside a width×height image."""
    w, h = min(rect[2] - rect[0], width), min(rect[3] - rect[1], height)
    x = min(max(rect[0], 0), width - w)
    y = min(max(rect[1], 0), height - h)
    return (x, y, x + w, y + h)


class Layout:
    """Placed annotation rectangles of one image (``width``×``height``) and the face boxes to keep clear."""

    def __init__(self, width: int, height: int, faces: Iterable[Rect] = ()) -> None:
        self.width, self.height = width, height
        self.faces: list[Rect] = list(faces)
        self.placed: list[Rect] = []

    def free(self, rect: Rect, own: Rect | None = None, keep_faces_clear: bool = True) -> bool:
        """No placed rectangle overlaps ``rect`` (and, with ``keep_faces_clear``, no face box but ``own``)."""
        if any(overlaps(rect, p) for p in self.placed):
            return False
        return not keep_faces_clear or not any(overlaps(rect, f) for f in self.faces if f != own)

    def place(self, candidates: Sequence[Rect], own: Rect | None = None, search: bool = True,
              cover_faces: bool = True) -> Rect | None:
        """The first candidate (moved inside the image) that is free of labels and faces, else (``cover_faces``)
        the first free of labels, else (with ``search``) the nearest label-free spot around the first candidate; it
        is recorded as placed and returned. None when there is no such spot (nothing is recorded)."""
        moved = [inside(c, self.width, self.height) for c in candidates]
        spot = next((c for c in moved if self.free(c, own)), None)
        if spot is None and cover_faces:
            spot = next((c for c in moved if self.free(c, own, keep_faces_clear=False)), None)
        if spot is None and search and moved:
            spot = self._search(moved[0], own)
        if spot is not None:
            self.placed.append(spot)
        return spot

    def _search(self, start: Rect, own: Rect | None) -> Rect | None:
        """The label-free spot nearest ``start`` (rings of growing distance, in steps of half the rectangle's
        height), preferring spots off the faces; None when the image has no room left."""
        w, h = start[2] - start[0], start[3] - start[1]
        step = max(2, h // 2, max(self.width, self.height) // SEARCH_RINGS)  # at most SEARCH_RINGS rings
        reach = max(self.width, self.height) // step + 1
        for keep_clear in (True, False):
            for ring in range(1, reach + 1):
                best: tuple[float, Rect] | None = None
                for dy in range(-ring, ring + 1):
                    for dx in (range(-ring, ring + 1) if abs(dy) == ring else (-ring, ring)):
                        c = inside((start[0] + dx * step, start[1] + dy * step, start[0] + dx * step + w,
                                    start[1] + dy * step + h), self.width, self.height)
                        if self.free(c, own, keep_clear):
                            d = float((c[0] - start[0]) ** 2 + (c[1] - start[1]) ** 2)
                            if best is None or d < best[0]:
                                best = (d, c)
                if best is not None:
                    return best[1]
        return None
