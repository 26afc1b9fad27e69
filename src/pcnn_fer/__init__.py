"""pcnn-fer: PCNN facial expression recognition toolkit.

The public names below are loaded from their modules on first use (:mod:`pcnn_fer.lazy`), so ``import pcnn_fer``
(and ``pcnn --help``) imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_attributes

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .classes import CANONICAL_CLASSES
    from .loss import TwoPhaseLoss
    from .models import PCNN, PCNNConfig, create_model
    from .weights import load_model, save_model

__getattr__, __dir__ = lazy_attributes(__name__, {
    "CANONICAL_CLASSES": "classes", "TwoPhaseLoss": "loss", "PCNN": "models", "PCNNConfig": "models",
    "create_model": "models", "load_model": "weights", "save_model": "weights",
})

__all__ = ["PCNN", "PCNNConfig", "TwoPhaseLoss", "CANONICAL_CLASSES", "create_model", "load_model", "save_model",
           "__version__"]
