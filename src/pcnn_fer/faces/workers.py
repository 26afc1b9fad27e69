"""Batch recognition in worker processes, shared by the Ray engine's actors (:mod:`pcnn_fer.faces.ray_engine`) and
the local engine's process pool (``pcnn predict --workers N``): inputs travel as plain rows (:func:`source_row`), are
decoded where they are processed (:func:`decode_row`), recognised by a :class:`BatchRecognizer` holding the model
once, and come back as rows holding the record the local engine writes (:func:`result_row`), from which the driver
rebuilds a :class:`~pcnn_fer.faces.recognizer.Prediction` for its report (:func:`prediction_of`)."""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

import numpy as np

from ..errors import PCNNError, UsageError
from .recognizer import Face, Prediction
from .sources import Frame, Source, iter_frames
from .spec import RecognizerSpec
from .stream import STILL_KINDS, chunk_starts, frames_per_chunk
from .tracking import TrackingConfig


def source_row(index: int, source: Source) -> dict[str, Any]:
    """The Ray Data row of an input: its index and the fields of its :class:`Source`."""
    return {"index": index, "kind": source.kind, "location": source.location, "root": source.root or "",
            "reason": source.reason or "", "fps": source.fps or 0.0}


def row_source(row: dict[str, Any]) -> Source:
    """The :class:`Source` of a :func:`source_row`."""
    return Source(str(row["kind"]), str(row["location"]), str(row["root"]) or None, str(row["reason"]) or None,
                  float(row["fps"]) or None)


def decode_row(row: dict[str, Any], max_pixels: int) -> dict[str, Any]:
    """A still input decoded as the local engine decodes it (:func:`~pcnn_fer.faces.sources.iter_frames`): its
    pixels (raw RGB bytes and shape) or the reason it is skipped; videos pass on."""
    out = dict(row, pixels=b"", height=0, width=0, skipped="")
    source = row_source(row)
    if source.kind in STILL_KINDS:
        frame = next(iter_frames(source, max_pixels=max_pixels))
        if frame.image is None:
            out["skipped"] = frame.skipped or "unusable source"
        else:
            out.update(pixels=frame.image.tobytes(), height=frame.image.shape[0], width=frame.image.shape[1])
    return out


def result_row(index: int, result: Prediction, people: bool = False) -> dict[str, Any]:
    """What an actor sends back for one result: the record the local engine writes, what the report needs and, with
    ``people`` (a video's last frame), the video's people summary (pickled)."""
    meta = {"tried": list(result.tried), "detectors": [f.detector for f in result], "fps": result.fps,
            "time_s": result.time_s}
    summary = pickle.dumps(result.people) if people and result.people is not None else b""
    return {"index": index, "record": json.dumps(result.to_dict()), "meta": json.dumps(meta), "people": summary}


class BatchRecognizer:
    """A worker's recognizer (a Ray Data actor, or a process of the local pool): detect → align → classify the
    decoded images of a batch (videos whole, with tracking)."""

    def __init__(self, spec: RecognizerSpec, every: int, max_frames: int | None,
                 tracking: TrackingConfig | None = None, threads: int = 1) -> None:
        self.recognizer = spec.build(threads=threads)
        self.max_pixels = spec.max_pixels
        self.every, self.max_frames, self.tracking = every, max_frames, tracking or TrackingConfig()

    @classmethod
    def around(cls, recognizer: Any, spec: RecognizerSpec, every: int, max_frames: int | None,
               tracking: TrackingConfig | None = None) -> BatchRecognizer:
        """A batch recognizer working with a recognizer already built (the driver's, in the Ray engine)."""
        self = cls.__new__(cls)
        self.recognizer, self.max_pixels = recognizer, spec.max_pixels
        self.every, self.max_frames, self.tracking = every, max_frames, tracking or TrackingConfig()
        return self

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Rows of inputs (:func:`source_row`, decoded here unless they are :func:`decode_row`'s already) → rows of
        :func:`result_row`, in input order. A ``rows`` column (the Ray engine) holds whole batches instead, each a
        JSON list of :func:`source_row` rows."""
        if "rows" in batch:
            # not self(...): Ray Data runs __call__ on a one-thread executor, where a nested call waits on itself
            results = [self._recognise(_columns(json.loads(text))) for text in batch["rows"]]
            return {key: [v for r in results for v in r[key]] for key in ("index", "record", "meta", "people")}
        return self._recognise(batch)

    def _recognise(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = [{k: batch[k][j] for k in batch} for j in range(len(batch["index"]))]
        if "pixels" not in batch:
            rows = [decode_row(row, self.max_pixels) for row in rows]
        out: list[dict[str, Any]] = []
        stills: list[tuple[int, Frame]] = []
        for row in rows:
            source = row_source(row)
            if source.kind in STILL_KINDS:
                image = None
                if not row["skipped"]:
                    image = np.frombuffer(row["pixels"], np.uint8).reshape(int(row["height"]), int(row["width"]), 3)
                stills.append((int(row["index"]), Frame(source, None, image, str(row["skipped"]) or None)))
                continue
            out.extend(self._stills(stills))
            stills = []
            results = list(self.recognizer.track_stream([source], every=self.every, max_frames=self.max_frames,
                                                        config=self.tracking))
            out.extend(result_row(int(row["index"]), r, people=k == len(results) - 1) for k, r in enumerate(results))
        out.extend(self._stills(stills))
        return {key: [r[key] for r in out] for key in ("index", "record", "meta", "people")}

    def _stills(self, stills: list[tuple[int, Frame]]) -> list[dict[str, Any]]:
        if not stills:
            return []
        results = self.recognizer.predict_frames([f for _, f in stills])
        return [result_row(i, r) for (i, _), r in zip(stills, results, strict=True)]


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in rows[0]}


def prediction_of(row: dict[str, Any], origin: Source, classes: Sequence[str]) -> tuple[dict[str, Any], Prediction]:
    """The record an actor sent and a :class:`Prediction` rebuilt from it for the report (no image)."""
    record, meta = json.loads(row["record"]), json.loads(row["meta"])
    faces = [Face(box=np.asarray(f["box"]), landmarks=None if f["landmarks"] is None else np.asarray(f["landmarks"]),
                  label=f["label"], score=f["score"], probabilities=f["probabilities"], regions=f["regions"],
                  detection_score=f["detection_score"], detector=d, face_id=f.get("face_id"),
                  smooth_label=f.get("smooth_label"), smooth_probabilities=f.get("smooth_probabilities"))
             for f, d in zip(record["faces"], meta["detectors"], strict=True)]
    result = Prediction(faces, source=record["source"], frame=record["frame"], skipped=record["skipped"],
                        classes=classes, tried=meta["tried"], origin=origin, fps=meta["fps"])
    result.time_s = meta.get("time_s")
    if row.get("people"):
        result.people = pickle.loads(row["people"])  # noqa: S301 - sent by this job's own actors
    return record, result



class WorkerError(PCNNError, RuntimeError):
    """A worker process of the local pool died."""


_WORKER: BatchRecognizer | None = None


def _start_worker(spec: RecognizerSpec, every: int, max_frames: int | None, tracking: TrackingConfig | None,
                  parent: int) -> None:
    global _WORKER
    threading.Thread(target=_exit_with, args=(parent,), name="pcnn-parent-watch", daemon=True).start()
    _WORKER = BatchRecognizer(spec, every, max_frames, tracking)


def _exit_with(parent: int) -> None:
    """End this worker when the process that started it is gone (``kill -9`` of the job): no orphan keeps a model
    in memory."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _work(rows: list[dict[str, Any]], max_pixels: int) -> dict[str, list[Any]]:
    assert _WORKER is not None, "worker not started"
    decoded = [decode_row(r, max_pixels) for r in rows]
    return _WORKER({k: [r[k] for r in decoded] for k in decoded[0]})


#: ``--workers auto`` starts one worker per core for photos with detection when the job holds at least this many
#: photos per core, so that a worker's start-up (a model and detector load) is small next to its share of the work.
AUTO_BATCHES_PER_CORE = 50


def auto_workers(sources: Sequence[Source], detects: bool, batch_size: int, cores: int) -> int:
    """Worker processes for ``--workers auto``: one per core for a job of enough photos with detection
    (:data:`AUTO_BATCHES_PER_CORE`), else 1 (the main process alone: cropped faces, videos, webcams)."""
    stills = sum(s.kind in STILL_KINDS for s in sources)
    if cores < 2 or not detects or stills < len(sources):
        return 1  # cropped faces: the model's threads already use the cores; videos: tracked by the main process
    return cores if stills >= AUTO_BATCHES_PER_CORE * cores * frames_per_chunk(detects, batch_size) else 1


def pool_predict_stream(sources: Sequence[Source], spec: RecognizerSpec, classes: Sequence[str], workers: int,
                        every: int = 1, max_frames: int | None = None,
                        tracking: TrackingConfig | None = None) -> Iterator[tuple[dict[str, Any], Prediction]]:
    """(record, prediction) of every input of ``sources`` in input order, computed by ``workers`` processes that
    each hold the model (one thread each) and decode their own inputs. Batches are the local engine's
    (:func:`~pcnn_fer.faces.stream.chunk_starts`: ``--resume`` cuts fall on their boundaries); a video is one task."""
    if any(s.kind == "webcam" for s in sources):
        raise UsageError("--workers applies to files: a webcam is read by the main process (use --workers 1)")
    starts = chunk_starts(sources, frames_per_chunk(spec.detector != "none", spec.batch_size))
    tasks = [[source_row(i, sources[i]) for i in range(a, b)] for a, b in zip(starts, starts[1:]) if b > a]
    context = get_context("spawn")  # the parent holds threads (decode-ahead, onnxruntime): never fork it
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(spec, every, max_frames, tracking, os.getpid()))
    pending: list[Future] = []
    try:
        for task in tasks:  # at most two tasks per worker in flight: memory stays flat
            pending.append(pool.submit(_work, task, spec.max_pixels))
            if len(pending) >= 2 * workers:
                yield from _rows(pending.pop(0).result(), sources, classes)
        for future in pending:
            yield from _rows(future.result(), sources, classes)
    except BrokenProcessPool:
        raise WorkerError("a worker process died (killed, or out of memory): the complete lines of "
                          "predictions.jsonl hold the inputs done; rerun with --resume") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _rows(batch: dict[str, list[Any]], sources: Sequence[Source], classes: Sequence[str]
          ) -> Iterator[tuple[dict[str, Any], Prediction]]:
    for j in range(len(batch["index"])):
        row = {k: batch[k][j] for k in batch}
        yield prediction_of(row, sources[int(row["index"])], classes)


__all__ = ["AUTO_BATCHES_PER_CORE", "BatchRecognizer", "WorkerError", "auto_workers", "decode_row",
           "pool_predict_stream", "prediction_of", "result_row", "row_source", "source_row"]
