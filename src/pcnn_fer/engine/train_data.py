"""A training run's data: the training split and the selection split, decoded onto the training device.

Selection uses ``--select-on`` if given (a test split only with ``--allow-test-selection``), else the dataset's own
validation split, else a seeded validation split carved from train (by subject where subjects are known).
"""

from __future__ import annotations

from typing import Any

import torch

from ..data.align import FaceAligner, face_summary, wants_alignment
from ..data.datasets import DatasetError, DatasetReader, dataset_root, get_dataset
from ..data.loader import TensorData, load_tensor_data, seed_for
from ..data.protocols import train_val_split
from ..errors import UsageError
from .options import TrainOptions
from .recipes import Recipe

__all__ = ["is_test_split", "load_train_val"]


def _option_for(reader: DatasetReader, explicit: str | None, recipe_rule: str | None) -> str | None:
    """The dataset option's value: the run option's, else the recipe's label rule where the dataset has it."""
    if explicit is not None:
        return reader.check_option(explicit)
    if recipe_rule is not None and recipe_rule in reader.option_values:
        return recipe_rule
    return reader.check_option(None)


def is_test_split(reader: DatasetReader, split: str) -> bool:
    """True for a dataset's held-out test split (model selection on it is refused by default)."""
    if split == reader.val_split:
        return False
    return split == reader.test_split or split in ("test", "private_test")


def _seeded_subset(data: TensorData, n: int | None, seed: int) -> TensorData:
    if n is None or n >= len(data):
        return data
    g = torch.Generator().manual_seed(seed_for(seed, 7919, len(data)))
    rows = torch.randperm(len(data), generator=g)[:n].sort().values
    return data.subset(rows, name=f"{data.name}[{n} of {len(data)}]")


def _selection_split(reader: DatasetReader, opts: TrainOptions, present: list[str], train_name: str) -> str | None:
    """The split named by ``--select-on`` (checked) or the dataset's validation split; None: carve one."""
    name = opts.select_on
    if name is None:
        if reader.val_split is not None and reader.val_split in present:
            return reader.val_split
        if reader.name == "folder":
            return next((s for s in ("val", "valid", "validation") if s in present), None)
        return None
    if name == train_name:
        raise UsageError(f"--select-on {name}: that is the training split; select on validation data")
    if is_test_split(reader, name) and not opts.allow_test_selection:
        raise UsageError(f"--select-on {name} is a test split: model selection on test data is refused "
                         "(pass --allow-test-selection to do it anyway; it is recorded in the results)")
    return name


def load_train_val(opts: TrainOptions, recipe: Recipe, device: torch.device,
                   log: Any = print) -> tuple[TensorData, TensorData, dict[str, Any]]:
    """Decode the training split and the selection split onto ``device`` (see the module docstring); returns them
    with a description (dataset, splits, label modes, sizes) that goes into the results."""
    reader = get_dataset(opts.dataset)
    root = dataset_root(opts.root, reader.name)
    train_mode = _option_for(reader, opts.dataset_option, recipe.label_rule)
    val_mode = _option_for(reader, opts.val_dataset_option, recipe.val_label_rule)
    present = reader.splits(root)
    train_name = reader.train_split
    if train_name not in present:
        if len(present) == 1 and not is_test_split(reader, present[0]) and present[0] != reader.val_split:
            train_name = present[0]  # e.g. an image folder without split folders ("all")
        else:
            raise DatasetError(f"{reader.name}: no training split {reader.train_split!r} under {root}; present: "
                               f"{', '.join(present) or 'none'}")
    train_split = reader.load(root, train_name, train_mode)
    info: dict[str, Any] = {"dataset": reader.name, "train_split": train_name, "train_mode": train_mode,
                            "val_mode": val_mode, "test_selection": False}
    val_name = _selection_split(reader, opts, present, train_name)
    if val_name == train_name:  # never train and select on the same images
        raise DatasetError(f"{reader.name}: the training split {train_name!r} is also the selection split")
    aligner = FaceAligner() if wants_alignment(reader, opts.align_faces) else None

    def decode(split: Any) -> TensorData:
        return load_tensor_data(split, recipe.input_size, device, opts.cache_dir, opts.use_cache, aligner, log)[0]

    if val_name is not None:
        info["test_selection"] = is_test_split(reader, val_name)
        if val_name not in present:
            raise DatasetError(f"{reader.name}: no split {val_name!r} under {root}; present: {', '.join(present)}")
        val_split = reader.load(root, val_name, val_mode)
        train_data, val_data = decode(train_split), decode(val_split)
        info["val_split"] = val_name
    else:
        tr, va = train_val_split(train_split, val_fraction=opts.val_fraction, seed=opts.seed,
                                 by_subject=train_split.subjects is not None)
        full = decode(train_split)
        train_data = full.subset(tr, name=f"{full.name}-minus-val")
        val_data = full.subset(va, name=f"{full.name}-val")
        how = "by subject" if train_split.subjects is not None else "stratified"
        info["val_split"] = f"{train_name}-val({opts.val_fraction:g}, {how}, seed {opts.seed})"
    if len(train_data) == 0 or len(val_data) == 0:
        raise DatasetError(f"{reader.name}: empty training or validation data")
    if train_data.classes != val_data.classes:
        raise DatasetError(f"{reader.name}: training and validation classes differ")
    train_data = _seeded_subset(train_data, opts.max_train_samples, opts.seed)
    val_data = _seeded_subset(val_data, recipe.max_val_samples, opts.seed)
    info["num_train"], info["num_val"] = len(train_data), len(val_data)
    info["face_alignment"] = face_summary([train_data, val_data], aligner.name if aligner else None)
    return train_data, val_data, info
