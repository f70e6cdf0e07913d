"""FeatherFace models: V1 (teacher, 592,371 parameters) and V2 (student, 256,156 parameters)."""

from featherface.models.outputs import DetectionOutput
from featherface.models.registry import build_model, config_from_dict, list_models, model_config, register_model

__all__ = ["DetectionOutput", "build_model", "config_from_dict", "list_models", "model_config", "register_model"]
