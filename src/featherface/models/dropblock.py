"""DropBlock (Ghiasi, Lin and Le, NeurIPS 2018) as a module inside the network.

Unlike upstream V2 (defect D4 in docs/upstream-defects.md, where it only touched detached copies of the features), this
is meant to sit on the forward path. It is the identity in ``eval()`` mode and when ``drop_prob == 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DropBlock2d"]


class DropBlock2d(nn.Module):
    """Zero ``block_size x block_size`` squares of each feature map and rescale the rest.

    The seed rate is ``gamma = drop_prob / block_size**2 * H * W / ((H - b + 1) * (W - b + 1))`` with ``b`` the
    block size clipped to the map, computed from both H and W; seeds are drawn only where a whole block fits,
    expanded to blocks by max-pooling, and the output is ``x * mask * mask.numel() / mask.sum()``.
    A mask is drawn independently for every sample and channel with the torch RNG on ``x``'s device.
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 3):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.drop_prob = float(drop_prob)
        self.block_size = int(block_size)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"

    def gamma(self, height: int, width: int) -> float:
        b = min(self.block_size, height, width)
        return self.drop_prob / (b * b) * (height * width) / ((height - b + 1) * (width - b + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        if x.dim() != 4:
            raise ValueError(f"DropBlock2d expects N x C x H x W, got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        b = min(self.block_size, h, w)
        gamma = self.gamma(h, w)
        # seeds only at positions where the block (top-left anchored) fits entirely inside the map
        valid = torch.zeros((1, 1, h, w), dtype=x.dtype, device=x.device)
        valid[..., : h - b + 1, : w - b + 1] = 1.0
        seeds = (torch.rand((n, c, h, w), dtype=x.dtype, device=x.device) < gamma).to(x.dtype) * valid
        # a seed at (i, j) drops [i, i+b) x [j, j+b): max-pool over the window ending at each position
        block = F.max_pool2d(F.pad(seeds, (b - 1, 0, b - 1, 0)), kernel_size=b, stride=1)
        mask = 1.0 - block
        count = mask.sum()
        scale = mask.numel() / count.clamp(min=1.0)
        return x * mask * scale
