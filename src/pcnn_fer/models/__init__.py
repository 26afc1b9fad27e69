"""Model architectures: PCNN, its ResNet trunks and its ablation baselines."""

from . import baselines  # noqa: F401 - registers the ablation architectures and their presets
from .pcnn import (
    ARCHITECTURES,
    MODEL_PRESETS,
    PCNN,
    REGIONS,
    PCNNConfig,
    build_model,
    count_parameters,
    create_model,
    preset_config,
)

__all__ = ["PCNN", "PCNNConfig", "REGIONS", "MODEL_PRESETS", "ARCHITECTURES", "build_model", "create_model",
           "preset_config", "count_parameters"]
