"""Building blocks of FeatherFace V1 and V2.

Attribute names follow the upstream state-dict keys (typos such as ``conv7x7_3`` included) so upstream checkpoints
load strictly. Shapes are NCHW; no block stores a device or reads files.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featherface.models.deform import DeformableConv2d

__all__ = [
    "conv_bn", "conv_dw", "MobileNetV1Body",
    "ChannelGate", "SpatialGate", "CBAM",
    "ChannelGatePlus", "SpatialGatePlus", "CBAMManager",
    "BiFPNCell", "BiFPNLightCell",
    "SSH", "SSHGrouped", "ChannelShuffleBlock", "ChannelShuffleLight",
    "make_level_heads", "apply_level_heads", "SharedMultiHead", "channel_shuffle",
]


# --------------------------------------------------------------------------------------------------------- backbone
def conv_bn(inp: int, oup: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """3×3 conv (no bias) → BN → LeakyReLU."""
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup),
                         nn.LeakyReLU(negative_slope=leaky, inplace=True))


def conv_dw(inp: int, oup: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3×3/stride → BN → LReLU → pointwise 1×1 → BN → LReLU (keys .0, .1, .3, .4)."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class MobileNetV1Body(nn.Module):
    """MobileNetV1-0.25 without its classifier: three stages at strides 8, 16, 32 (64, 128, 256 channels)."""

    out_channels = (64, 128, 256)

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(conv_bn(3, 8, 2), conv_dw(8, 16, 1), conv_dw(16, 32, 2), conv_dw(32, 32, 1),
                                    conv_dw(32, 64, 2), conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: Tensor) -> list[Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]


# ------------------------------------------------------------------------------------------------------- attention
class ChannelGate(nn.Module):
    """V1 CBAM channel gate: shared MLP (with biases) on global avg and max pools, summed, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))

    def forward(self, x: Tensor) -> Tensor:
        att = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(att)[:, :, None, None]


class _BasicConv(nn.Module):
    """7×7 conv (no bias) + BN(eps 1e-5, momentum 0.01), no activation (keys ``conv``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    """V1 CBAM spatial gate: cat(max, mean) over channels → 7×7 conv + BN → sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = _BasicConv(2, 1, 7)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """V1 CBAM (channel then spatial gate). The network uses it as ``ReLU(CBAM(x) + x)``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class ChannelGatePlus(nn.Module):
    """V2 channel gate: bias-free MLP with ``hidden = max(C // reduction, min_hidden)`` on avg and max pools.

    ``forward`` accepts inputs with fewer channels than the gate was built for (``C' <= C``) and then uses the first
    ``C'`` inputs/outputs of the MLP; this is how one 256-channel gate serves all backbone stages when shared.
    """

    def __init__(self, channels: int, reduction: int = 32, min_hidden: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_hidden)
        self.channels = channels
        self.mlp = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, channels, bias=False))

    def _mlp(self, v: Tensor) -> Tensor:
        c = v.shape[1]
        if c == self.channels:
            return self.mlp(v)
        if c > self.channels:
            raise ValueError(f"ChannelGatePlus built for {self.channels} channels got {c}")
        first, last = self.mlp[0], self.mlp[2]
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        hidden = F.relu(F.linear(v, first.weight[:, :c]))
        return F.linear(hidden, last.weight[:c])

    def forward(self, x: Tensor) -> Tensor:
        att = self._mlp(x.mean(dim=(2, 3))) + self._mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(att)[:, :, None, None]


class SpatialGatePlus(nn.Module):
    """V2 spatial gate: cat(mean, max) (order differs from V1) → 7×7 conv → BN(1e-5, 0.01) → sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Sequential(nn.Conv2d(2, 1, 7, 1, 3, bias=False), nn.BatchNorm2d(1, eps=1e-5, momentum=0.01))

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAMManager(nn.Module):
    """V2 attention for several feature levels: channel gates (one per level, or one shared) + one shared spatial gate.

    ``forward(x, level)`` returns ``ReLU(spatial(channel(x)) + x)``.
    """

    def __init__(self, channels: dict[str, int], reduction: int = 32, share_channel_gate: bool = False) -> None:
        super().__init__()
        self.levels = list(channels)
        self.share_channel_gate = share_channel_gate
        if share_channel_gate:
            self.channel_gate = ChannelGatePlus(max(channels.values()), reduction)
        else:
            self.channel_gates = nn.ModuleDict({k: ChannelGatePlus(c, reduction) for k, c in channels.items()})
        self.spatial_gate = SpatialGatePlus()

    def forward(self, x: Tensor, level: str) -> Tensor:
        gate = self.channel_gate if self.share_channel_gate else self.channel_gates[level]
        return F.relu(self.spatial_gate(gate(x)) + x)


# ----------------------------------------------------------------------------------------------------------- BiFPN
def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) for one dimension."""
    total = max((math.ceil(size / stride) - 1) * stride - size + kernel, 0)
    return total // 2, total - total // 2


class _Conv2dSame(nn.Module):
    """Conv2d with TF-style static "same" padding (key ``conv``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        if k > 1 or s > 1:
            top, bottom = _same_pad(x.shape[-2], k, s)
            left, right = _same_pad(x.shape[-1], k, s)
            x = F.pad(x, [left, right, top, bottom])
        return self.conv(x)


class _MaxPoolSame(nn.Module):
    """3×3/2 max pool with TF "same" padding by zeros (asymmetric for even sizes), output ``ceil(n / 2)``."""

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = _same_pad(x.shape[-2], 3, 2)
        left, right = _same_pad(x.shape[-1], 3, 2)
        return F.max_pool2d(F.pad(x, [left, right, top, bottom]), 3, 2)


class _SeparableConvBlock(nn.Module):
    """V1 BiFPN block: dw 3×3 (no bias) → pw 1×1 (bias) → BN(1e-3, 0.01), no activation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise_conv = _Conv2dSame(channels, channels, 3, groups=channels, bias=False)
        self.pointwise_conv = _Conv2dSame(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.pointwise_conv(self.depthwise_conv(x)))


def _down_channel(cin: int, cout: int, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(_Conv2dSame(cin, cout, 1, bias=bias), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01))


def _fuse(weights: Tensor, inputs: list[Tensor], eps: float) -> Tensor:
    """Fast normalised fusion then SiLU: ``silu(Σ_i relu(w_i)·x_i / (Σ_j relu(w_j) + eps))``.

    ``weights`` may be longer than ``inputs`` (V1's P5 node): the extra weights only enter the normaliser.
    """
    w = F.relu(weights)
    w = w / (w.sum() + eps)
    return F.silu(sum(wi * x for wi, x in zip(w, inputs)))


def _upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")


class _BiFPNCellBase(nn.Module):
    """Fusion weights shared by both BiFPN cells: P4 top-down (2), P3 (2), P4 bottom-up (3), P5 (3), all 1 at init."""

    def __init__(self, first_time: bool, epsilon: float) -> None:
        super().__init__()
        self.first_time = first_time
        self.epsilon = epsilon
        self.p4_w1 = nn.Parameter(torch.ones(2))
        self.p3_w1 = nn.Parameter(torch.ones(2))
        self.p4_w2 = nn.Parameter(torch.ones(3))
        self.p5_w2 = nn.Parameter(torch.ones(3))  # V1 quirk: w[2] weighs no input there but sits in the normaliser


class BiFPNCell(_BiFPNCellBase):
    """One V1 BiFPN cell (EfficientDet-D0 style, 3 levels, fast normalised fusion, swish before each block).

    ``first_time`` cells map the raw backbone levels to ``channels`` with 1×1 conv + BN, and keep separate maps
    (``p4_down_channel_2``, ``p5_down_channel_2``) for the bottom-up path, as upstream.
    """

    def __init__(self, channels: int = 64, in_channels: tuple[int, int, int] = (64, 128, 256), first_time: bool = False,
                 epsilon: float = 1e-4) -> None:
        super().__init__(first_time, epsilon)
        self.conv4_up = _SeparableConvBlock(channels)
        self.conv3_up = _SeparableConvBlock(channels)
        self.conv4_down = _SeparableConvBlock(channels)
        self.conv5_down = _SeparableConvBlock(channels)
        self.pool = _MaxPoolSame()
        if first_time:
            c3, c4, c5 = in_channels
            self.p5_down_channel = _down_channel(c5, channels)
            self.p4_down_channel = _down_channel(c4, channels)
            self.p3_down_channel = _down_channel(c3, channels)
            self.p4_down_channel_2 = _down_channel(c4, channels)
            self.p5_down_channel_2 = _down_channel(c5, channels)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        p3, p4, p5 = feats
        if self.first_time:
            p3_in, p4_in, p5_in = self.p3_down_channel(p3), self.p4_down_channel(p4), self.p5_down_channel(p5)
        else:
            p3_in, p4_in, p5_in = p3, p4, p5
        eps = self.epsilon
        p4_up = self.conv4_up(_fuse(self.p4_w1, [p4_in, _upsample_to(p5_in, p4_in)], eps))
        p3_out = self.conv3_up(_fuse(self.p3_w1, [p3_in, _upsample_to(p4_up, p3_in)], eps))
        if self.first_time:
            p4_in, p5_in = self.p4_down_channel_2(p4), self.p5_down_channel_2(p5)
        p4_out = self.conv4_down(_fuse(self.p4_w2, [p4_in, p4_up, self.pool(p3_out)], eps))
        p5_out = self.conv5_down(_fuse(self.p5_w2, [p5_in, self.pool(p4_out)], eps))
        return [p3_out, p4_out, p5_out]


class _DepthwiseSeparable(nn.Module):
    """V2 block: dw 3×3 (no bias) → BN(1e-5, 0.01) → ReLU → pw 1×1 (no bias) → BN(1e-5, 0.01)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.01)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn2(self.pointwise(F.relu(self.bn1(self.depthwise(x)))))


class BiFPNLightCell(_BiFPNCellBase):
    """One V2 BiFPN_Light cell (32 channels, SiLU before each block, 3-input P5 node, symmetric max pool)."""

    def __init__(self, channels: int = 32, in_channels: tuple[int, int, int] = (64, 128, 256), first_time: bool = False,
                 epsilon: float = 1e-4) -> None:
        super().__init__(first_time, epsilon)
        self.conv4_up = _DepthwiseSeparable(channels)
        self.conv3_up = _DepthwiseSeparable(channels)
        self.conv4_down = _DepthwiseSeparable(channels)
        self.conv5_down = _DepthwiseSeparable(channels)
        if first_time:
            c3, c4, c5 = in_channels
            self.p3_down_channel = _down_channel(c3, channels, bias=False)
            self.p4_down_channel = _down_channel(c4, channels, bias=False)
            self.p5_down_channel = _down_channel(c5, channels, bias=False)

    @staticmethod
    def _down(x: Tensor) -> Tensor:
        return F.max_pool2d(x, 3, 2, 1)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        p3_in, p4_in, p5_in = feats
        if self.first_time:
            p3_in, p4_in, p5_in = self.p3_down_channel(p3_in), self.p4_down_channel(p4_in), self.p5_down_channel(p5_in)
        eps, down = self.epsilon, self._down
        p4_up = self.conv4_up(_fuse(self.p4_w1, [p4_in, _upsample_to(p5_in, p4_in)], eps))
        p3_out = self.conv3_up(_fuse(self.p3_w1, [p3_in, _upsample_to(p4_up, p3_in)], eps))
        p4_out = self.conv4_down(_fuse(self.p4_w2, [p4_in, p4_up, down(p3_out)], eps))
        p5_out = self.conv5_down(_fuse(self.p5_w2, [p5_in, down(p4_out), down(p4_up)], eps))
        return [p3_out, p4_out, p5_out]


# ------------------------------------------------------------------------------------------------------------- SSH
def _dcn_bn(cin: int, cout: int, leaky: float | None) -> nn.Sequential:
    layers: list[nn.Module] = [DeformableConv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


class SSH(nn.Module):
    """V1 SSH context module with modulated deformable 3×3 convs: cat[3×3 (C/2), 5×5 (C/4), 7×7 (C/4)] → ReLU."""

    def __init__(self, in_channels: int = 64, out_channels: int = 64, leaky: float = 0.1) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"SSH out_channels must be divisible by 4, got {out_channels}")
        self.conv3X3 = _dcn_bn(in_channels, out_channels // 2, None)
        self.conv5X5_1 = _dcn_bn(in_channels, out_channels // 4, leaky)
        self.conv5X5_2 = _dcn_bn(out_channels // 4, out_channels // 4, None)
        self.conv7X7_2 = _dcn_bn(out_channels // 4, out_channels // 4, leaky)
        self.conv7x7_3 = _dcn_bn(out_channels // 4, out_channels // 4, None)

    def forward(self, x: Tensor) -> Tensor:
        c3 = self.conv3X3(x)
        c5_1 = self.conv5X5_1(x)
        c5 = self.conv5X5_2(c5_1)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat((c3, c5, c7), dim=1))


def _grouped3x3(channels: int, groups: int, factorised: bool, in_channels: int | None = None) -> list[nn.Module]:
    cin = channels if in_channels is None else in_channels
    if factorised:  # V2 variant (a): 1×3 then 3×1, grouped, no BN in between
        return [nn.Conv2d(cin, channels, (1, 3), 1, (0, 1), groups=groups, bias=False),
                nn.Conv2d(channels, channels, (3, 1), 1, (1, 0), groups=groups, bias=False)]
    return [nn.Conv2d(cin, channels, 3, 1, 1, groups=groups, bias=False)]


class SSHGrouped(nn.Module):
    """V2 SSH: 1×1 reductions and grouped 3×3 convs (no deformable convs), ReLU; output C channels.

    ``factorised=True`` replaces every grouped 3×3 by a grouped 1×3 + 3×1 pair (the V2 write-up's description).
    ``hidden``: widths of the two 1×1 reductions (3×3 branch, 5×5/7×7 branch); default ``(C/2, C/4)``. Pruned models
    set them lower (each a multiple of ``groups``).
    """

    def __init__(self, in_channels: int = 32, out_channels: int = 32, groups: int = 4, factorised: bool = False,
                 hidden: tuple[int, int] | None = None) -> None:
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        h3, h5 = hidden if hidden is not None else (half, quarter)
        g3 = _grouped3x3
        self.conv3x3 = nn.Sequential(nn.Conv2d(in_channels, h3, 1, bias=False), nn.BatchNorm2d(h3), nn.ReLU(inplace=True),
                                     *g3(half, groups, factorised, h3), nn.BatchNorm2d(half))
        self.conv5x5_1 = nn.Sequential(nn.Conv2d(in_channels, h5, 1, bias=False), nn.BatchNorm2d(h5),
                                       nn.ReLU(inplace=True), *g3(quarter, groups, factorised, h5), nn.BatchNorm2d(quarter))
        self.conv5x5_2 = nn.Sequential(*g3(quarter, groups, factorised), nn.BatchNorm2d(quarter))
        self.conv7x7_2 = nn.Sequential(*g3(quarter, groups, factorised), nn.BatchNorm2d(quarter), nn.ReLU(inplace=True))
        self.conv7x7_3 = nn.Sequential(*g3(quarter, groups, factorised), nn.BatchNorm2d(quarter))

    def forward(self, x: Tensor) -> Tensor:
        c3 = self.conv3x3(x)
        c5_1 = self.conv5x5_1(x)
        c5 = self.conv5x5_2(c5_1)
        c7 = self.conv7x7_3(self.conv7x7_2(c5_1))
        return F.relu(torch.cat((c3, c5, c7), dim=1))


# ---------------------------------------------------------------------------------------------- channel shuffle
def channel_shuffle(x: Tensor, groups: int, *, alternative: bool = False) -> Tensor:
    """ShuffleNet channel shuffle. ``alternative=True`` is V1's variant: view (B, C/g, g, H, W) before transposing."""
    b, c, h, w = x.shape
    if alternative:
        x = x.view(b, c // groups, groups, h, w)
    else:
        x = x.view(b, groups, c // groups, h, w)
    return x.transpose(1, 2).reshape(b, c, h, w)


class _Shuffle(nn.Module):
    def __init__(self, groups: int, alternative: bool) -> None:
        super().__init__()
        self.groups = groups
        self.alternative = alternative

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups, alternative=self.alternative)


class ChannelShuffleBlock(nn.Sequential):
    """V1 ``sshN_cs``: shuffle(2) → 1×1 C→C/2 → BN → dw 3×3 → BN → 1×1 C/2→C → BN → ReLU (indices 0..7)."""

    def __init__(self, channels: int = 64, groups: int = 2) -> None:
        half = channels // 2
        super().__init__(
            _Shuffle(groups, alternative=True),
            nn.Conv2d(channels, half, 1, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, channels, 1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )


class ChannelShuffleLight(nn.Module):
    """V2 ``sshN_cs``: standard shuffle(g) → 1×1 C→C/2 (g) → BN → ReLU → 1×1 C/2→C (g) → BN → ReLU.

    ``hidden`` (default C/2) and ``out_channels`` (default C) are set lower by pruning (multiples of ``groups``).
    """

    def __init__(self, channels: int = 32, groups: int = 4, hidden: int | None = None,
                 out_channels: int | None = None) -> None:
        super().__init__()
        self.groups = groups
        half = channels // 2 if hidden is None else hidden
        out = channels if out_channels is None else out_channels
        self.conv = nn.Sequential(nn.Conv2d(channels, half, 1, groups=groups, bias=False), nn.BatchNorm2d(half),
                                  nn.ReLU(inplace=True), nn.Conv2d(half, out, 1, groups=groups, bias=False),
                                  nn.BatchNorm2d(out), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(channel_shuffle(x, self.groups))


# ----------------------------------------------------------------------------------------------------------- heads
def _flatten_head(x: Tensor, k: int) -> Tensor:
    """NCHW head output → ``[B, H·W·anchors, k]`` (anchor index fastest, matching the anchor order)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, k)


class _Head1x1(nn.Module):
    def __init__(self, channels: int, outputs: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(channels, outputs, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1x1(x)


def make_level_heads(channels: int, num_levels: int = 3, num_anchors: int = 2) -> tuple[nn.ModuleList, ...]:
    """V1 heads: per level, 1×1 convs for class (2·A), box (4·A) and landmarks (10·A); upstream keeps them at the
    model root as ``ClassHead.i.conv1x1``, ``BboxHead.i.conv1x1``, ``LandmarkHead.i.conv1x1``."""
    return tuple(nn.ModuleList(_Head1x1(channels, k * num_anchors) for _ in range(num_levels)) for k in (2, 4, 10))


def apply_level_heads(class_heads: nn.ModuleList, box_heads: nn.ModuleList, landmark_heads: nn.ModuleList,
                      feats: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Run per-level heads and concatenate levels: boxes ``[B, A, 4]``, logits ``[B, A, 2]``, landmarks ``[B, A, 10]``."""
    boxes = torch.cat([_flatten_head(h(f), 4) for h, f in zip(box_heads, feats)], dim=1)
    logits = torch.cat([_flatten_head(h(f), 2) for h, f in zip(class_heads, feats)], dim=1)
    landmarks = torch.cat([_flatten_head(h(f), 10) for h, f in zip(landmark_heads, feats)], dim=1)
    return boxes, logits, landmarks


class SharedMultiHead(nn.Module):
    """V2 head for one level (or for all levels when shared): three 1×1 convs, optionally after a shared trunk.

    ``trunk=True`` adds dw 3×3 + BN + ReLU + pw 1×1 + BN + ReLU before the three convs (V2 variant (c')).
    """

    def __init__(self, channels: int = 32, num_anchors: int = 2, trunk: bool = False) -> None:
        super().__init__()
        self.trunk: nn.Module
        if trunk:
            self.trunk = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                                       nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                       nn.ReLU(inplace=True))
        else:
            self.trunk = nn.Identity()
        self.cls_head = nn.Conv2d(channels, 2 * num_anchors, 1)
        self.bbox_head = nn.Conv2d(channels, 4 * num_anchors, 1)
        self.ldm_head = nn.Conv2d(channels, 10 * num_anchors, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.trunk(x)
        return (_flatten_head(self.bbox_head(x), 4), _flatten_head(self.cls_head(x), 2),
                _flatten_head(self.ldm_head(x), 10))
