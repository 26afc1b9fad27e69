"""``pcnn predict``: its parser (the work is in :mod:`pcnn_fer.faces.predict_command`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..backends.dispatch import BACKEND_NAMES
from ..defaults import MAX_PIXELS, REID_SECONDS, SMOOTH_SECONDS
from .common import LazyHandler, add_checkpoint_flag, probability

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``predict`` verb to the ``pcnn`` sub-parsers (sets ``func``)."""
    p = subparsers.add_parser(
        "predict", help="recognise facial expressions in photos, folders, videos or a webcam",
        description="Detect faces, align them onto the training crops and classify their expressions. SOURCE: image "
                    "files, folders (recursive), glob patterns, video files, or a webcam index (0, 1, ...); with "
                    "--sequence FPS, folders of video frames. Unusable "
                    "inputs and images without faces are reported; the exit code is 1 only when no input could be "
                    "read.")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    add_checkpoint_flag(p, onnx=True)
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="classifier backend: auto (onnxruntime when installed, else torch; default), torch or onnx")
    p.add_argument("--out", type=Path, help="write annotated images/videos (and JSON/CSV) to this folder")
    p.add_argument("--save-json", action="store_true", help="write OUT/predictions.json (one record per input/frame)")
    p.add_argument("--save-jsonl", action="store_true",
                   help="stream OUT/predictions.jsonl, one record per line as results come (resumable)")
    p.add_argument("--save-csv", action="store_true", help="write OUT/predictions.csv (one row per face)")
    p.add_argument("--save-parquet", action="store_true",
                   help="write OUT/predictions.parquet: predictions.csv's rows and columns, typed (needs pyarrow: "
                        "the scale extra)")
    p.add_argument("--resume", action="store_true",
                   help="carry on an interrupted job: keep OUT/predictions.jsonl and skip the inputs it already holds "
                        "(implies --save-jsonl)")
    p.add_argument("--no-annotate", action="store_true", help="with --out: do not write annotated images/videos")
    p.add_argument("--no-detect", action="store_true", help="each input is already a cropped face")
    p.add_argument("--detector", default="auto", choices=["auto", "yunet", "dlib-auto", "dlib", "cnn", "haar"],
                   help="face detector (auto: YuNet, a CNN with 5 landmarks shipped in the package, or dlib-auto when "
                        "neither onnxruntime nor OpenCV is installed; dlib-auto: dlib HOG, then dlib's CNN on still "
                        "images where HOG finds nothing; dlib: HOG alone)")
    p.add_argument("--detect-threshold", type=float,
                   help="minimum detector score: YuNet face score for auto/yunet (default 0.6), dlib HOG window score "
                        "for dlib-auto/dlib (default 0.25)")
    p.add_argument("--color", default="auto", choices=["auto", "gray", "rgb"],
                   help="feed faces as gray (FER-trained models) or colour; auto decides from the model input size")
    p.add_argument("--device", default="cpu", help="device (cpu, cuda, cuda:1, mps)")
    p.add_argument("--batch-size", type=int, default=32, help="faces per forward pass")
    p.add_argument("--threads", type=int, help="CPU threads for inference; 1 is often fastest for a few small faces "
                   "per image and on busy machines")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos/webcams: analyse every N-th frame")
    p.add_argument("--detect-every", type=int, default=10, metavar="N",
                   help="videos/webcams: run the full detector every N analysed frames and search only around the "
                        "previous frame's faces in between (also whenever a face is lost); 1 = every frame")
    p.add_argument("--smooth", type=float, default=SMOOTH_SECONDS, metavar="SECONDS",
                   help="videos/webcams: time constant of each person's smoothed expression (exponential average; "
                        f"0 = off; default {SMOOTH_SECONDS})")
    p.add_argument("--reid-seconds", type=float, default=REID_SECONDS, metavar="SECONDS",
                   help="videos/webcams: a person who leaves and comes back within this many seconds gets their face "
                        "id back (by dlib's face descriptor); default %(default)s")
    p.add_argument("--no-reid", action="store_true",
                   help="videos/webcams: follow faces by motion only (no face descriptors; a returning person gets a "
                        "new id)")
    p.add_argument("--sequence", type=float, metavar="FPS",
                   help="read each SOURCE (which must be a folder) as one image sequence: its images in name order "
                        "are the frames of a video at FPS frames per second, followed like a video (face ids, "
                        "smoothed labels, time_s, summary.json, a timeline and an annotated video)")
    p.add_argument("--max-frames", type=int, help="videos/webcams: stop after this many analysed frames")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="skip images larger than this many pixels")
    p.add_argument("--min-confidence", type=probability, metavar="P",
                   help="label a face 'uncertain' when its (calibrated) confidence is below P; its probabilities "
                        "stay in the output (docs/model-card.md: the share of faces each P answers)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars and no per-input lines; the closing summary line stays (progress bars "
                        "are shown only when stderr is a terminal)")
    p.add_argument("--workers", default="auto", metavar="N|auto",
                   help="local engine: worker processes that decode, detect and classify (each holds the model, one "
                        "thread each); auto (default): one per core for jobs of enough photos or faces, else the "
                        "main process alone")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process (default); ray: Ray Data stages (decode tasks, then an actor pool "
                        "holding the model) on a local Ray or the cluster of --ray-address (the scale extra)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="--engine ray: join this Ray cluster (e.g. HEAD:6379 or auto; default: RAY_ADDRESS, else "
                        "start a local Ray for the job)")
    p.add_argument("--actors", type=int, metavar="N",
                   help="--engine ray: model actors (default: one per CPU of the cluster, one per GPU with --device "
                        "cuda)")
    p.set_defaults(func=LazyHandler("pcnn_fer.faces.predict_command", "run_predict"))
    return p
