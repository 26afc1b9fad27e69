"""Stable face ids through a video: motion first, appearance when motion is not enough.

:class:`IdentityTracker` gives every detected face of a frame a ``face_id`` that stays with the person through the
source (SORT/ByteTrack-style, with dlib descriptors for re-identification):

1. **Motion.** Every track carries a constant-velocity Kalman filter over its box centre and side. Each frame, the
   tracks seen within :attr:`IdentityConfig.coast_seconds` are predicted to the frame's time, and detections are
   assigned to them by the Hungarian method (:func:`scipy.optimize.linear_sum_assignment`) on ``1 - IoU`` between
   the predicted and the detected box; pairs below :attr:`IdentityConfig.min_iou` are not assigned.
2. **Appearance where motion is ambiguous.** When a detection overlaps more than one predicted track (two people
   crossing, a face passing behind another), dlib's 128-d descriptors of those detections are computed and the cost
   becomes ``1 - IoU`` plus the descriptor distance to each track's gallery, so that crossing paths do not swap ids.
3. **Re-identification.** A detection left unassigned gets a descriptor and is compared with the galleries of the
   tracks not seen in this frame but within :attr:`IdentityConfig.reid_seconds`: the closest one under
   :attr:`IdentityConfig.max_distance` takes it back (Hungarian again, so two detections never take one id); else
   a new id is born. Tracks unseen for longer than ``reid_seconds`` are forgotten (memory stays bounded).

Two faces of one frame never share an id. Without dlib's face-recognition network (``describer=None``) the tracker
associates by motion alone, and a person who leaves and returns gets a new id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..defaults import REID_SECONDS
from ..errors import UsageError
from .descriptors import SAME_PERSON_DISTANCE, FaceDescriber
from .detect import Detection

__all__ = ["IdentityConfig", "IdentityTracker", "Track", "box_iou_matrix"]

#: Cost given to pairs that may not be assigned.
_FORBIDDEN = 1e6


@dataclass(frozen=True)
class IdentityConfig:
    """Settings of :class:`IdentityTracker` (``pcnn predict --reid-seconds`` sets ``reid_seconds``)."""

    #: A person unseen for this long is forgotten; one who returns sooner gets their id back (by appearance).
    reid_seconds: float = REID_SECONDS
    #: A track is predicted by motion for this long after it was last seen; after that only appearance finds it.
    coast_seconds: float = 1.0
    #: Least IoU between a predicted box and a detection for them to be assigned by motion.
    min_iou: float = 0.15
    #: Largest descriptor distance at which a returning face takes a remembered id (dlib's threshold is 0.6).
    max_distance: float = SAME_PERSON_DISTANCE
    #: Motion is ambiguous (descriptors are computed) when a detection's two best tracks, or a track's two best
    #: detections, differ by less than this IoU.
    ambiguity_margin: float = 0.3
    #: Descriptors kept per track (the oldest is dropped); one is added at most every ``refresh_seconds``.
    gallery_size: int = 8
    #: A visible track gets a fresh descriptor this often, so that its gallery follows pose and expression changes.
    refresh_seconds: float = 5.0

    def __post_init__(self) -> None:
        for name in ("reid_seconds", "coast_seconds", "refresh_seconds"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise UsageError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if not 0 < self.min_iou < 1:
            raise UsageError(f"min_iou must lie between 0 and 1, got {self.min_iou!r}")
        if not self.max_distance > 0:
            raise UsageError(f"max_distance must be positive, got {self.max_distance!r}")
        if self.gallery_size < 1:
            raise UsageError(f"gallery_size must be at least 1, got {self.gallery_size!r}")


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of boxes ``[x1, y1, x2, y2]``."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Track:
    """One person: ``face_id``, a constant-velocity Kalman state ``[cx, cy, side, vx, vy, vside]`` (pixels and
    pixels per second) with its covariance, when it was first and last seen, and a gallery of descriptors."""

    face_id: int
    state: np.ndarray
    cov: np.ndarray
    first_s: float
    last_s: float
    aspect: float
    gallery: list[np.ndarray] = field(default_factory=list)
    described_s: float = -np.inf
    hits: int = 1

    def box_at(self, t: float) -> np.ndarray:
        """The box predicted at time ``t`` (constant velocity from the last update)."""
        dt = max(0.0, t - self.last_s)
        cx, cy, side = self.state[:3] + dt * self.state[3:]
        side = max(side, 1.0)
        half_w, half_h = side / 2, side * self.aspect / 2
        return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])

    def distance(self, descriptor: np.ndarray) -> float:
        """Smallest Euclidean distance between ``descriptor`` and the gallery (inf when the gallery is empty)."""
        if not self.gallery:
            return float("inf")
        return float(np.min(np.linalg.norm(np.stack(self.gallery) - descriptor, axis=1)))


def _measure(box: np.ndarray) -> tuple[np.ndarray, float]:
    x1, y1, x2, y2 = box
    width = max(x2 - x1, 1.0)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, width]), (y2 - y1) / width


class IdentityTracker:
    """Face ids for the consecutive frames of one source (see the module docstring). ``describer``: a
    :class:`~pcnn_fer.faces.descriptors.FaceDescriber` (None: motion only)."""

    def __init__(self, config: IdentityConfig | None = None, describer: FaceDescriber | None = None) -> None:
        self.config = config or IdentityConfig()
        self.describer = describer
        self.tracks: list[Track] = []
        self.next_id = 1
        self.descriptors_computed = 0

    # -- Kalman filter over (cx, cy, side) with constant velocity ---------------------------------------------------
    @staticmethod
    def _predict(track: Track, t: float) -> None:
        dt = max(0.0, t - track.last_s)
        if dt == 0:
            return
        f = np.eye(6)
        f[:3, 3:] = dt * np.eye(3)
        q = (0.5 * track.state[2]) ** 2 * np.diag([dt ** 3 / 3] * 3 + [dt] * 3)  # acceleration of half a side/s²
        track.state, track.cov = f @ track.state, f @ track.cov @ f.T + q

    @staticmethod
    def _correct(track: Track, z: np.ndarray) -> None:
        r = np.diag([(0.05 * z[2]) ** 2] * 3)  # detections jitter by about 5 % of the side
        h = np.hstack([np.eye(3), np.zeros((3, 3))])
        s = h @ track.cov @ h.T + r
        gain = track.cov @ h.T @ np.linalg.inv(s)
        track.state = track.state + gain @ (z - h @ track.state)
        track.cov = (np.eye(6) - gain @ h) @ track.cov

    def _new_track(self, det: Detection, t: float, descriptor: np.ndarray | None) -> Track:
        z, aspect = _measure(det.box)
        side = z[2]
        cov = np.diag([(0.1 * side) ** 2] * 3 + [side ** 2] * 3)  # speed unknown: about a side per second
        track = Track(self.next_id, np.concatenate([z, np.zeros(3)]), cov, t, t, aspect)
        self.next_id += 1
        if descriptor is not None:
            track.gallery.append(descriptor)
            track.described_s = t
        self.tracks.append(track)
        return track

    def _update(self, track: Track, det: Detection, t: float, descriptor: np.ndarray | None) -> None:
        z, aspect = _measure(det.box)
        if t - track.last_s > self.config.coast_seconds:  # back after a while: restart the motion model there
            track.state = np.concatenate([z, np.zeros(3)])
            track.cov = np.diag([(0.1 * z[2]) ** 2] * 3 + [z[2] ** 2] * 3)
        else:
            self._predict(track, t)
            self._correct(track, z)
        track.aspect = 0.8 * track.aspect + 0.2 * aspect
        track.last_s = t
        track.hits += 1
        if descriptor is not None and t - track.described_s >= self.config.refresh_seconds:
            track.gallery = (track.gallery + [descriptor])[-self.config.gallery_size:]
            track.described_s = t

    def _describe(self, rgb: np.ndarray | None, dets: Sequence[Detection]) -> list[np.ndarray | None]:
        if self.describer is None or rgb is None or not dets:
            return [None] * len(dets)
        self.descriptors_computed += len(dets)
        return list(self.describer.describe(rgb, dets))

    # -- one frame ----------------------------------------------------------------------------------------------------
    def update(self, detections: Sequence[Detection], t: float, rgb: np.ndarray | None = None) -> list[int]:
        """The face ids of ``detections`` (faces of the frame at time ``t`` seconds, image ``rgb`` for descriptors),
        in their order. Times must not decrease."""
        cfg = self.config
        self.tracks = [tr for tr in self.tracks if t - tr.last_s <= cfg.reid_seconds]
        n = len(detections)
        ids: list[int | None] = [None] * n
        descriptors: list[np.ndarray | None] = [None] * n
        live = [tr for tr in self.tracks if t - tr.last_s <= cfg.coast_seconds]
        used: set[int] = set()
        if n and live:
            predicted = np.stack([tr.box_at(t) for tr in live])
            iou = box_iou_matrix(np.stack([d.box for d in detections]), predicted)
            cost = np.where(iou >= cfg.min_iou, 1.0 - iou, _FORBIDDEN)
            contested = _contested(iou, cfg.min_iou, cfg.ambiguity_margin)
            if contested and self.describer is not None:  # crossing paths: let appearance decide
                for i, desc in zip(contested, self._describe(rgb, [detections[i] for i in contested]), strict=True):
                    descriptors[i] = desc
                    for j, tr in enumerate(live):
                        if cost[i, j] < _FORBIDDEN and tr.gallery:
                            cost[i, j] += tr.distance(desc)
            rows, cols = _assign(cost)
            for i, j in zip(rows, cols, strict=True):
                ids[i] = live[j].face_id
                used.add(live[j].face_id)
                self._update(live[j], detections[i], t, descriptors[i])
        left = [i for i in range(n) if ids[i] is None]
        if left:
            missing = [i for i in left if descriptors[i] is None]
            for i, desc in zip(missing, self._describe(rgb, [detections[i] for i in missing]), strict=True):
                descriptors[i] = desc
            lost = [tr for tr in self.tracks if tr.face_id not in used and tr.gallery and tr.last_s < t]
            if lost and all(descriptors[i] is not None for i in left):
                dist = np.array([[tr.distance(descriptors[i]) for tr in lost] for i in left])
                rows, cols = _assign(np.where(dist <= cfg.max_distance, dist, _FORBIDDEN))
                for r, c in zip(rows, cols, strict=True):
                    i, tr = left[r], lost[c]
                    ids[i] = tr.face_id
                    used.add(tr.face_id)
                    self._update(tr, detections[i], t, descriptors[i])
            for i in left:
                if ids[i] is None:
                    ids[i] = self._new_track(detections[i], t, descriptors[i]).face_id
        # Visible tracks whose gallery is due for a refresh get a descriptor (already computed ones are reused above).
        due = [i for i in range(n) if descriptors[i] is None and self.describer is not None
               and t - self._track(ids[i]).described_s >= cfg.refresh_seconds]
        for i, desc in zip(due, self._describe(rgb, [detections[i] for i in due]), strict=True):
            track = self._track(ids[i])
            track.gallery = (track.gallery + [desc])[-cfg.gallery_size:]
            track.described_s = t
        return [int(i) for i in ids]  # type: ignore[arg-type]

    def _track(self, face_id: int | None) -> Track:
        return next(tr for tr in self.tracks if tr.face_id == face_id)

    def reset(self) -> None:
        """Forget every track and restart the ids at 1 (a new source)."""
        self.tracks, self.next_id = [], 1


def _contested(iou: np.ndarray, min_iou: float, margin: float) -> list[int]:
    """Detections (rows of ``iou``) whose assignment motion cannot settle: two tracks overlap one nearly as well as
    each other, or one track overlaps two detections nearly as well (then both of them)."""

    def ambiguous(values: np.ndarray) -> bool:
        top = np.sort(values[values >= min_iou])[::-1]
        return len(top) > 1 and top[0] - top[1] < margin

    rows = {i for i in range(iou.shape[0]) if ambiguous(iou[i])}
    for j in range(iou.shape[1]):
        if ambiguous(iou[:, j]):
            rows.update(np.flatnonzero(iou[:, j] >= min_iou).tolist())
    return sorted(rows)


def _assign(cost: np.ndarray) -> tuple[list[int], list[int]]:
    """Minimum-cost assignment that leaves out forbidden pairs."""
    from scipy.optimize import linear_sum_assignment

    if cost.size == 0:
        return [], []
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] < _FORBIDDEN
    return rows[keep].tolist(), cols[keep].tolist()
