"""pcnn-fer: PCNN facial expression recognition toolkit."""

from .classes import CANONICAL_CLASSES
from .loss import TwoPhaseLoss
from .models import PCNN, PCNNConfig, create_model
from .weights import load_model, save_model

__version__ = "0.1.0"

__all__ = ["PCNN", "PCNNConfig", "TwoPhaseLoss", "CANONICAL_CLASSES", "create_model", "load_model", "save_model",
           "__version__"]
