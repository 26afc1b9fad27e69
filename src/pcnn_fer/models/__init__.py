"""Model architectures: PCNN and its ResNet trunks."""

from .pcnn import MODEL_PRESETS, PCNN, REGIONS, PCNNConfig, count_parameters, create_model, preset_config

__all__ = ["PCNN", "PCNNConfig", "REGIONS", "MODEL_PRESETS", "create_model", "preset_config", "count_parameters"]
