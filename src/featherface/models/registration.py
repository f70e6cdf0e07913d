"""The model registration table: ``@register_model(name, config_cls)`` on a builder. The model modules import this;
:mod:`featherface.models.registry` (build / list / configure) imports the model modules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ModelEntry", "REGISTRY", "register_model"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_cls: type
    builder: Callable[[Any], nn.Module]
    description: str


REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type, description: str = "") -> Callable:
    """Decorator registering ``builder(config) -> nn.Module`` under ``name``; a duplicate name raises."""

    def wrap(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        REGISTRY[name] = ModelEntry(name, config_cls, builder, description)
        return builder

    return wrap
