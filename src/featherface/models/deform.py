"""Modulated deformable convolution (DCNv2) in pure PyTorch.

torchvision is not usable beside our torch build, so the sampling is done with :func:`torch.nn.functional.grid_sample`
(bilinear, zero padding), which also exports to ONNX as ``GridSample`` (opset >= 16).

Offset layout is torchvision's ``deform_conv2d`` layout, so upstream FeatherFace weights work unchanged: for kernel
tap ``t = i * kw + j`` (row-major, ``i`` = kernel row) channel ``2t`` holds Δy and ``2t + 1`` holds Δx, one offset
group; mask channel ``t`` scales the same tap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["deform_conv2d", "DeformableConv2d"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Modulated deformable 2-D convolution, same semantics as ``torchvision.ops.deform_conv2d`` (groups = 1).

    Args:
        x: ``[B, C, H, W]`` input.
        offset: ``[B, 2·kh·kw, Ho, Wo]`` sampling offsets in input pixels, (Δy, Δx) per tap.
        weight: ``[O, C, kh, kw]`` kernel.
        bias: optional ``[O]``.
        mask: optional ``[B, kh·kw, Ho, Wo]`` modulation (1 everywhere = DCNv1).
    Returns:
        ``[B, O, Ho, Wo]``. Samples that fall outside the image read zeros (bilinear with zero padding).
    """
    b, c, h, w = x.shape
    out_c, in_c, kh, kw = weight.shape
    if in_c != c:
        raise ValueError(f"deform_conv2d: weight expects {in_c} input channels, got input with {c}")
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    taps = kh * kw
    if offset.shape != (b, 2 * taps, ho, wo):
        raise ValueError(f"deform_conv2d: offset must be {(b, 2 * taps, ho, wo)}, got {tuple(offset.shape)}")

    dtype, device = x.dtype, x.device
    # Regular sampling positions of every tap at every output location, in input pixels.
    base_y = (torch.arange(ho, device=device, dtype=dtype) * sh - ph).view(1, ho, 1)
    base_x = (torch.arange(wo, device=device, dtype=dtype) * sw - pw).view(1, 1, wo)
    tap_y = (torch.arange(kh, device=device, dtype=dtype) * dh).repeat_interleave(kw).view(taps, 1, 1)
    tap_x = (torch.arange(kw, device=device, dtype=dtype) * dw).repeat(kh).view(taps, 1, 1)
    offset = offset.view(b, taps, 2, ho, wo)
    pos_y = base_y + tap_y + offset[:, :, 0]  # [B, taps, Ho, Wo]
    pos_x = base_x + tap_x + offset[:, :, 1]
    # grid_sample with align_corners=False maps pixel p to (2p + 1) / size - 1.
    grid = torch.stack(((2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1), dim=-1)  # [B, taps, Ho, Wo, 2]
    grid = grid.view(b, taps * ho, wo, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(b, c, taps, ho, wo)
    if mask is not None:
        if mask.shape != (b, taps, ho, wo):
            raise ValueError(f"deform_conv2d: mask must be {(b, taps, ho, wo)}, got {tuple(mask.shape)}")
        sampled = sampled * mask.unsqueeze(1)
    columns = sampled.reshape(b, c * taps, ho * wo)
    out = torch.matmul(weight.reshape(out_c, c * taps), columns).view(b, out_c, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class DeformableConv2d(nn.Module):
    """DCNv2 block of the FeatherFace V1 SSH: offsets and a (0, 2) mask predicted from the input.

    Parameter names match upstream (``offset_conv``, ``modulator_conv``, ``regular_conv``). Offsets and mask logits
    start at zero, so a fresh block is a plain convolution (mask = 2·sigmoid(0) = 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 bias: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding
        taps = kernel_size * kernel_size
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, stride, padding, bias=True)
        self.modulator_conv = nn.Conv2d(in_channels, taps, kernel_size, stride, padding, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        for conv in (self.offset_conv, self.modulator_conv):
            nn.init.zeros_(conv.weight)
            if conv.bias is not None:  # always (bias=True above)
                nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return deform_conv2d(x, offset, self.regular_conv.weight, self.regular_conv.bias,
                             stride=self.stride, padding=self.padding, mask=mask)
