"""A small registry of model builders: ``build_model("featherface_v2", bifpn_cells=3)``.

A built model carries ``model_name``, ``config`` (its dataclass, whose ``anchor_spec`` is the anchor contract) and
``preprocessing`` (:class:`featherface.preprocessing.Preprocessing`, the input contract).

Builders are registered once under a unique name together with their config dataclass; unknown names raise with the
list of known ones, and unknown config keys are refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from featherface.errors import FeatherFaceError, ModelNameError

# The built-in models register themselves (featherface.models.registration) when imported; importing them here,
# below the registration table they depend on, keeps the import graph acyclic.
from featherface.models import featherface_v1, featherface_v2  # noqa: F401
from featherface.models.registration import REGISTRY, ModelEntry, register_model

__all__ = ["register_model", "build_model", "list_models", "model_config", "config_from_dict", "ModelEntry"]


def _entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelNameError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def config_from_dict(name: str, values: dict[str, Any] | None = None) -> Any:
    """The config dataclass of model ``name`` with ``values`` applied; unknown keys raise."""
    cls = _entry(name).config_cls
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise FeatherFaceError(f"unknown config key(s) for {name}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for f in dataclasses.fields(cls):  # TOML/JSON give lists where the dataclass holds tuples
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def model_config(name: str, **overrides: Any) -> Any:
    return config_from_dict(name, overrides)


def build_model(name: str, config: Any = None, **overrides: Any) -> nn.Module:
    """Build model ``name`` from ``config`` (its dataclass) or from keyword overrides of the defaults."""
    entry = _entry(name)
    if config is None:
        config = config_from_dict(name, overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    if not isinstance(config, entry.config_cls):
        raise FeatherFaceError(f"model {name!r} needs a {entry.config_cls.__name__}, got {type(config).__name__}")
    from featherface.preprocessing import DEFAULT_PREPROCESSING

    model = entry.builder(config)
    # plain attributes (nn.Module's __setattr__ types its values as tensors / modules, hence setattr)
    setattr(model, "model_name", name)  # noqa: B010
    setattr(model, "config", config)  # noqa: B010
    setattr(model, "preprocessing", DEFAULT_PREPROCESSING)  # noqa: B010  (a checkpoint's own record replaces it)
    return model


def list_models() -> list[str]:
    return sorted(REGISTRY)
