"""How well do the per-region occlusion heads find an occluder kind they never saw? Leave one kind out: heads are
trained (as ``pcnn occlusion`` does, on the frozen bundled model) on seeded FERPlus training faces occluded by every
other kind, and the face AUROC (largest of the five scores) separates FER2013Valid faces occluded by the left-out kind
from the clean ones (validation data, another seed). Recorded in docs/model-card.md.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/occlusion_unseen_kinds.py --root ../shared/data/ferplus
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from pcnn_fer.data.datasets import get_dataset
from pcnn_fer.data.loader import load_tensor_data
from pcnn_fer.engine.occlusion import auroc, describe_faces, fit_heads
from pcnn_fer.models.occlusion import OcclusionHeads
from pcnn_fer.models.pcnn import REGIONS
from pcnn_fer.robustness.occluders import COVERED, OCCLUDER_KINDS
from pcnn_fer.weights import load_model


def main() -> None:
    """Print and return the face AUROC of each left-out occluder kind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the FERPlus folder")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--train-faces", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.checkpoint).eval()
    reader = get_dataset("ferplus")
    train = reader.load(args.root, reader.train_split)
    generator = torch.Generator().manual_seed(args.seed)
    rows = torch.randperm(len(train), generator=generator)[: args.train_faces].sort().values.numpy()
    train_data, _ = load_tensor_data(train.subset(rows), model.config.input_size, "cpu", None, True, None, None)
    train_faces = describe_faces(model, train_data.images, generator)
    valid_data, _ = load_tensor_data(reader.load(args.root, reader.val_split), model.config.input_size, "cpu", None,
                                     True, None, None)
    valid_faces = describe_faces(model, valid_data.images, torch.Generator().manual_seed(args.seed + 1))
    train_kinds, valid_kinds = np.array(train_faces["kinds"]), np.array(valid_faces["kinds"])
    occluded = (valid_faces["coverage"] >= COVERED).any(1)
    results = {}
    for kind in OCCLUDER_KINDS:
        keep = torch.from_numpy(train_kinds != kind)
        heads = OcclusionHeads(REGIONS, train_faces["descriptors"].shape[2] // 2, 32)
        fit_heads(heads, train_faces["descriptors"][keep], train_faces["coverage"][keep], epochs=40)
        with torch.no_grad():
            score = torch.sigmoid(heads.logits_of_descriptors(valid_faces["descriptors"])).max(1).values
        this = torch.from_numpy(valid_kinds == kind)
        chosen = this | torch.from_numpy(valid_kinds == "clean")
        results[kind] = auroc(score[chosen], (occluded & this)[chosen])
        print(f"{kind}: face AUROC {results[kind]:.3f} (heads trained without {kind})", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
