"""``pcnn occlusion``: train per-region occlusion heads on a frozen model and write the model with them.

Training faces (a seeded sample of the dataset's training split) get synthetic occlusions
(:func:`pcnn_fer.robustness.occluders.occlude_batch`: hands, sunglasses, masks, hair, objects, patches, region
fills; 40 % stay clean); the frozen model's five local maps are pooled into region descriptors once, and one small
MLP per region learns whether at least :data:`~pcnn_fer.robustness.occluders.COVERED` of that region is covered
(binary cross-entropy, Adam). The validation split, occluded with another seed, measures per-region and per-face
AUROC (the face's score is the largest of its five) and the expression accuracy, which the heads cannot change: they
read the trunks' maps and feed nothing back.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.datasets import get_dataset
from ..data.loader import load_tensor_data
from ..data.transforms import eval_transform
from ..errors import UsageError
from ..models.occlusion import OcclusionHeads, region_descriptor
from ..models.pcnn import PCNN, REGIONS
from ..robustness.occluders import COVERED, OCCLUDER_KINDS, occlude_batch
from ..weights import save_model
from .calibrate import resolved_model_file, source_extra, stored_half
from .devices import set_threads
from .evaluate import load_any_model, match_classes
from .logs import write_json

__all__ = ["auroc", "describe_faces", "fit_heads", "occlusion_command", "occlusion_report"]


def auroc(score: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``score`` separating ``positive`` from the rest (ties count half); NaN when one
    side is empty."""
    score, positive = score.double().flatten().cpu(), positive.bool().flatten().cpu()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(score)
    ranks = torch.empty_like(score)
    sorted_scores = score[order]
    ranks[order] = torch.arange(1, len(score) + 1, dtype=torch.float64)
    _, inverse, counts = torch.unique(sorted_scores, return_inverse=True, return_counts=True)
    mean_rank = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, ranks[order]) / counts
    ranks[order] = mean_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def describe_faces(model: PCNN, images: torch.Tensor, generator: torch.Generator, batch_size: int = 256,
                   clean_share: float = 0.4, kinds: tuple[str, ...] = OCCLUDER_KINDS
                   ) -> dict[str, Any]:
    """Occlude uint8 ``images`` and run the frozen model: ``descriptors`` (N, 5, 2C), ``coverage`` (N, 5),
    ``kinds`` (per face), ``logits`` (N, K) global logits of the occluded faces."""
    config = model.config
    out: dict[str, list] = {"descriptors": [], "coverage": [], "kinds": [], "logits": []}
    for start in range(0, len(images), batch_size):
        batch, coverage, names = occlude_batch(images[start:start + batch_size], generator, config.crop_fractions,
                                               clean_share=clean_share, kinds=kinds)
        x = eval_transform(batch, config.input_size, config.mean, config.std)
        fused, local_maps = model.forward_features(x)
        out["descriptors"].append(torch.stack([region_descriptor(m) for m in local_maps], 1))
        out["coverage"].append(coverage)
        out["kinds"] += names
        out["logits"].append(model.global_head(fused.mean((2, 3))))
    return {k: (v if k == "kinds" else torch.cat(v)) for k, v in out.items()}


def fit_heads(heads: OcclusionHeads, descriptors: torch.Tensor, coverage: torch.Tensor, epochs: int = 40,
              seed: int = 0, batch_size: int = 256, lr: float = 3e-3) -> list[float]:
    """Train ``heads`` on region descriptors against ``coverage >= COVERED`` (BCE, Adam, cosine schedule; inputs
    standardised into the first layer); returns the loss per epoch."""
    target = (coverage >= COVERED).float()
    mean, std = descriptors.mean((0, 1)), descriptors.std((0, 1)).clamp_min(1e-4)
    x = (descriptors - mean) / std  # trained on standardised inputs, folded into the first layers afterwards
    optimizer = torch.optim.Adam(heads.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, -(-len(x) // batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    heads.train()
    for _ in range(epochs):
        order, total = torch.randperm(len(x), generator=generator), 0.0
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            loss = F.binary_cross_entropy_with_logits(heads.logits_of_descriptors(x[rows]), target[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / len(x))
    heads.eval()
    with torch.no_grad():
        for name in heads.heads:
            first = heads.heads[name][0]
            first.bias.sub_((first.weight * (mean / std)).sum(1))
            first.weight.div_(std)
    return losses


def occlusion_report(heads: OcclusionHeads, faces: dict[str, Any], labels: torch.Tensor) -> dict[str, Any]:
    """Per-region AUROC, the per-face AUROC of the largest score (occluded: any region at least COVERED covered)
    overall and per occluder kind against the clean faces, and the global accuracy on the clean and occluded faces."""
    with torch.no_grad():
        scores = torch.sigmoid(heads.logits_of_descriptors(faces["descriptors"]))
    covered = faces["coverage"] >= COVERED
    face_score, face_occluded = scores.max(1).values, covered.any(1)
    kinds = np.array(faces["kinds"])
    clean = torch.from_numpy(kinds == "clean")
    correct = faces["logits"].argmax(1) == labels
    report: dict[str, Any] = {
        "regions": {r: auroc(scores[:, i], covered[:, i]) for i, r in enumerate(REGIONS)},
        "face_max": auroc(face_score, face_occluded),
        "by_kind": {},
        "faces": len(labels), "occluded_faces": int(face_occluded.sum()),
        "accuracy_clean": 100.0 * float(correct[clean].float().mean()) if bool(clean.any()) else float("nan"),
        "accuracy_occluded": 100.0 * float(correct[~clean].float().mean()) if bool((~clean).any()) else float("nan"),
    }
    for kind in OCCLUDER_KINDS:
        rows = torch.from_numpy(kinds == kind)
        if bool(rows.any()):
            keep = rows | clean
            report["by_kind"][kind] = auroc(face_score[keep], face_occluded[keep] & rows[keep])
    return report


def occlusion_command(args: argparse.Namespace) -> int:
    """Run ``pcnn occlusion`` from parsed arguments."""
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must name a .safetensors file, got {out}")
    if out.exists():
        raise UsageError(f"{out} exists: pcnn occlusion never overwrites a file; name a new --out")
    set_threads(args.threads)
    started = time.perf_counter()
    model = load_any_model(args.checkpoint).eval()
    if not isinstance(model, PCNN):
        raise UsageError(f"{args.checkpoint} is not a PCNN: occlusion heads need its five regional branches")
    reader = get_dataset(args.dataset)
    train = reader.load(args.root, reader.train_split)
    valid = match_classes(model, reader.load(args.root, reader.val_split))[0] if reader.val_split else None
    generator = torch.Generator().manual_seed(args.seed)
    rows = torch.randperm(len(train), generator=generator)[: args.train_faces].sort().values.numpy()
    train = train.subset(rows)
    images, _ = load_tensor_data(train, model.config.input_size, "cpu", args.cache_dir, True, None, print)
    print(f"occluding and describing {len(images)} training faces of {reader.name}/{reader.train_split}")
    faces = describe_faces(model, images.images, generator)
    config = replace(model.config, occlusion_hidden=args.hidden)
    heads = OcclusionHeads(REGIONS, faces["descriptors"].shape[2] // 2, args.hidden)
    losses = fit_heads(heads, faces["descriptors"], faces["coverage"], epochs=args.epochs, seed=args.seed)
    report: dict[str, Any] = {"train": occlusion_report(heads, faces, images.labels), "losses": losses,
                              "train_faces": len(images), "seed": args.seed}
    if valid is not None:
        vdata, _ = load_tensor_data(valid, model.config.input_size, "cpu", args.cache_dir, True, None, print)
        vfaces = describe_faces(model, vdata.images, torch.Generator().manual_seed(args.seed + 1))
        labels = torch.tensor([model.classes.index(valid.classes[k]) if valid.classes[k] in model.classes else -1
                               for k in vdata.labels.tolist()])
        report["validation"] = occlusion_report(heads, vfaces, labels)
    model.config = config
    model.occlusion_heads = heads
    report["seconds"] = time.perf_counter() - started
    source = None if str(args.checkpoint).endswith(".pt") else resolved_model_file(args.checkpoint)
    save_model(model, out, half=source is not None and stored_half(source),
               extra={**source_extra(source), "occlusion_report": report})
    write_json(out.with_name(out.stem + "-occlusion.json"), report)
    for name in ("train", "validation"):
        if name in report:
            r = report[name]
            print(f"{name}: face AUROC (largest of 5) {r['face_max']:.3f}; regions "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["regions"].items())
                  + f"; accuracy clean {r['accuracy_clean']:.2f}%, occluded {r['accuracy_occluded']:.2f}%")
    print(f"-> {out} ({report['seconds']:.0f} s)")
    return 0

