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

__all__ = ["recompute_bn_stats", "training_batches"]


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


def training_batches(train_labels: str, images_root: str | None, *, image_size: int, crop_scales=None, n: int,
                     batch_size: int, seed: int = 0):
    """``n`` augmented training batches ``Tensor[B, 3, image_size, image_size]`` in a fixed random order (``seed``:
    the same batches on every call), for :func:`recompute_bn_stats` after training. ``crop_scales``: the recipe's
    (``None``: the transform's default)."""
    from featherface.data.dataset import WiderFaceDataset, detection_collate
    from featherface.data.transforms import TrainTransform

    scales = {} if crop_scales is None else {"crop_scales": tuple(float(c) for c in crop_scales)}
    transform = TrainTransform(image_size=image_size, **scales)
    ds = WiderFaceDataset(train_labels, images_root, transform=transform, seed=seed, verbose=False)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    for b in range(n):
        idx = order[b * batch_size:(b + 1) * batch_size]
        if not idx:
            return
        images, _ = detection_collate([ds[i] for i in idx])
        yield images
