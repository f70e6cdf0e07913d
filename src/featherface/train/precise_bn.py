"""Re-estimate BatchNorm running statistics ("precise BN").

FeatherFace's BiFPN and attention BNs use momentum 0.01 (upstream values), so after a short schedule their running
statistics still carry a large share of their initial values and the eval-mode network differs from the train-mode
one. Re-estimating them as a plain average over a few training batches (no gradients, weights untouched) removes the
lag; with a long schedule it changes almost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["recompute_bn_stats"]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[torch.Tensor], max_batches: int | None = None) -> int:
    """Reset the running mean/var of every *trainable* BatchNorm and re-estimate them as the average over
    ``batches``.

    ``batches`` yields image tensors ``[B, 3, H, W]`` on the model's device. Returns the number of batches used; the
    model is left in eval mode. Other layers (DropBlock, ...) run in train mode during the passes, as in training.
    BatchNorms that stay in eval mode under ``model.train()`` (a frozen backbone,
    :func:`featherface.train.freeze.freeze_module`) are neither reset nor updated.
    """
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not bns:
        model.eval()
        return 0
    saved = [(bn.momentum, bn.track_running_stats) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = exact mean over the batches seen
    used = 0
    try:
        for images in batches:
            if max_batches is not None and used >= max_batches:
                break
            model(images)
            used += 1
    finally:
        for bn, (momentum, _track) in zip(bns, saved):
            bn.momentum = momentum
        model.eval()
    return used
