"""Dataset readers: one registry (:mod:`._base`) and one module per dataset, each parsing its native layout.

Importing this package registers every reader, in this order: fer2013, ferplus, rafdb, ckplus, jaffe, affectnet,
folder. A reader module declares its own aliases and registers itself; :func:`get_dataset` resolves names.
"""

from ._base import (
    DATASETS,
    IMAGE_EXTENSIONS,
    DatasetError,
    DatasetReader,
    Split,
    SubsetInfo,
    UnsplitDatasetReader,
    dataset_root,
    describe_datasets,
    get_dataset,
    load_split,
    open_image,
    open_text,
    register_dataset,
)

# Import order is registration order: the order of DATASETS and of help texts.
# isort: off
from .fer2013 import FER2013Reader
from .ferplus import FERPlusReader, ferplus_label
from .rafdb import RAFDBReader
from .ckplus import CKPlusReader
from .jaffe import JAFFEReader
from .affectnet import AffectNetReader
from .folder import FolderReader
# isort: on

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "AffectNetReader",
    "CKPlusReader",
    "DatasetError",
    "DatasetReader",
    "FER2013Reader",
    "FERPlusReader",
    "FolderReader",
    "JAFFEReader",
    "RAFDBReader",
    "Split",
    "SubsetInfo",
    "UnsplitDatasetReader",
    "dataset_root",
    "describe_datasets",
    "ferplus_label",
    "get_dataset",
    "load_split",
    "open_image",
    "open_text",
    "register_dataset",
]
