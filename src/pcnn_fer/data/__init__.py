"""Datasets layer: native-layout readers (registry), evaluation protocols, decoded-tensor cache and stats.

Importing this package does not import torch; :mod:`pcnn_fer.data.cache` imports it when decoding.
"""

from .cache import DecodedSplit, cache_dir, cache_key, clear_cache, decode_split
from .datasets import (
    DATASETS,
    DatasetError,
    DatasetReader,
    Split,
    SubsetInfo,
    describe_datasets,
    ferplus_label,
    get_dataset,
    load_split,
    open_image,
    register_dataset,
)
from .protocols import (
    Fold,
    apply_subset,
    check_folds,
    cross_validation,
    leave_one_subject_out,
    match_subset,
    read_subset_list,
    subject_kfold,
    train_val,
    train_val_split,
)
from .stats import dataset_stats

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetReader",
    "DecodedSplit",
    "Fold",
    "Split",
    "SubsetInfo",
    "apply_subset",
    "cache_dir",
    "cache_key",
    "check_folds",
    "clear_cache",
    "cross_validation",
    "dataset_stats",
    "decode_split",
    "describe_datasets",
    "ferplus_label",
    "get_dataset",
    "leave_one_subject_out",
    "load_split",
    "match_subset",
    "open_image",
    "read_subset_list",
    "register_dataset",
    "subject_kfold",
    "train_val",
    "train_val_split",
]
