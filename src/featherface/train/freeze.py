"""Freezing a sub-module for training: eval mode that survives ``model.train()``, no gradients.

A frozen backbone keeps its BatchNorm statistics (running mean/var are never updated), its DropBlock (if any) off
and (unless ``keep_gradients``) its weights out of the optimizer, whatever ``train()`` calls the training loop makes
on the parent model.
"""

from __future__ import annotations

import types

from torch import nn

__all__ = ["freeze_module", "unfreeze_module", "is_frozen"]


def _train_stays_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    # Bound as ``module.train`` of a frozen module: ``parent.train(True)`` reaches it and is turned into eval.
    nn.Module.train(self, False)
    return self


def freeze_module(module: nn.Module, *, keep_gradients: bool = False) -> nn.Module:
    """Put ``module`` in eval mode for good (``train()`` on it or any parent leaves it in eval mode) and stop its
    parameters' gradients. ``keep_gradients``: only the eval mode (BatchNorm statistics fixed, DropBlock off); the
    weights still train. Returns ``module``. Undo with :func:`unfreeze_module`."""
    module.requires_grad_(keep_gradients)
    module.train = types.MethodType(_train_stays_eval, module)  # type: ignore[method-assign]
    nn.Module.train(module, False)
    return module


def unfreeze_module(module: nn.Module) -> nn.Module:
    """Undo :func:`freeze_module`: ``train()`` works again and parameters require gradients."""
    if "train" in module.__dict__:
        del module.train
    module.requires_grad_(True)
    return module


def is_frozen(module: nn.Module) -> bool:
    return "train" in module.__dict__
