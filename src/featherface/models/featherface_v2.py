"""FeatherFace V2, the student (upstream layout): MobileNetV1-0.25 → shared-spatial CBAM → 2×BiFPN_Light(32) →
CBAM → grouped SSH → light channel shuffle → per-level heads. 256,156 trainable parameters with the defaults.

The variants that the V2 write-up describes but upstream never built ((a)-(d) below) and its ablation swaps are
explicit config switches; their parameter counts are measured (``featherface info``), never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featherface.geometry.anchors import DEFAULT_ANCHORS, AnchorSpec
from featherface.models.blocks import (
    CBAM,
    SSH,
    BiFPNCell,
    BiFPNLightCell,
    CBAMManager,
    ChannelShuffleLight,
    MobileNetV1Body,
    SharedMultiHead,
    SSHGrouped,
)
from featherface.models.outputs import DetectionOutput
from featherface.models.outputs import check_anchor_layout as _check_anchor_layout
from featherface.models.registration import register_model

__all__ = ["FeatherFaceV2Config", "FeatherFaceV2"]

_SSH_KINDS = ("grouped", "factorised", "v1")
_HEAD_KINDS = ("per_level", "shared", "shared_trunk")
_NECK_KINDS = ("bifpn_light", "bifpn_v1")
_ATTENTION_KINDS = ("cbam_plus", "cbam_v1")


@dataclass(frozen=True)
class FeatherFaceV2Config:
    """V2 hyper-parameters. Defaults build the upstream 256,156-parameter model.

    ssh: ``grouped`` (upstream), ``factorised`` (grouped 1×3 + 3×1, variant a) or ``v1`` (V1's deformable SSH, ablation).
    head: ``per_level`` (upstream), ``shared`` (one head for all levels, variant c) or ``shared_trunk`` (c').
    shared_neck_cbam / shared_backbone_cbam: one channel gate for all levels (variants b / b').
    neck: ``bifpn_light`` (upstream) or ``bifpn_v1`` (V1's BiFPN cell at V2 width, ablation).
    attention: ``cbam_plus`` (upstream) or ``cbam_v1`` (V1's CBAM per level, ablation).
    dropblock_prob: DropBlock on the neck features fed to the SSH, active in training only (0 disables it).
    ssh_hidden / shuffle_hidden / head_channels: inner widths that structured pruning narrows (``None``: the upstream
    widths ``(C/2, C/4)``, ``C/2`` and ``C``); each must be a multiple of ``ssh_groups``. ``channels`` is the BiFPN
    trunk width; the SSH output stays 32 wide in pruned models (see ``featherface.prune``).
    """

    channels: int = 32
    bifpn_cells: int = 2
    ssh: str = "grouped"
    ssh_groups: int = 4
    head: str = "per_level"
    shared_neck_cbam: bool = False
    shared_backbone_cbam: bool = False
    neck: str = "bifpn_light"
    attention: str = "cbam_plus"
    dropblock_prob: float = 0.0
    dropblock_size: int = 3
    min_sizes: tuple = DEFAULT_ANCHORS.min_sizes
    steps: tuple = DEFAULT_ANCHORS.steps
    variances: tuple = DEFAULT_ANCHORS.variances
    ssh_channels: int | None = None
    ssh_hidden: tuple | None = None
    shuffle_hidden: int | None = None
    head_channels: int | None = None
    clip: bool = DEFAULT_ANCHORS.clip

    @property
    def anchor_spec(self) -> AnchorSpec:
        """The anchor contract of this model (steps, min_sizes, variances, clip)."""
        return AnchorSpec.from_config(self)

    @property
    def ssh_width(self) -> int:
        return self.channels if self.ssh_channels is None else int(self.ssh_channels)

    @property
    def feature_channels(self) -> int:
        """Width of the features fed to the heads (``[B, feature_channels, H/s, W/s]``)."""
        return self.ssh_width if self.head_channels is None else int(self.head_channels)

    def __post_init__(self) -> None:
        for field, value, allowed in (("ssh", self.ssh, _SSH_KINDS), ("head", self.head, _HEAD_KINDS),
                                      ("neck", self.neck, _NECK_KINDS), ("attention", self.attention, _ATTENTION_KINDS)):
            if value not in allowed:
                raise ValueError(f"FeatherFaceV2Config.{field} must be one of {allowed}, got {value!r}")
        _check_anchor_layout(self.anchor_spec, "FeatherFaceV2Config")
        if self.bifpn_cells < 1:
            raise ValueError(f"FeatherFaceV2Config.bifpn_cells must be >= 1, got {self.bifpn_cells}")
        if not 0.0 <= self.dropblock_prob < 1.0:
            raise ValueError(f"FeatherFaceV2Config.dropblock_prob must be in [0, 1), got {self.dropblock_prob}")
        g = self.ssh_groups
        widths = {"shuffle_hidden": self.shuffle_hidden, "head_channels": self.head_channels}
        if self.ssh_hidden is not None:
            if len(self.ssh_hidden) != 2:
                raise ValueError(f"FeatherFaceV2Config.ssh_hidden must be two widths, got {self.ssh_hidden!r}")
            widths.update({"ssh_hidden[0]": self.ssh_hidden[0], "ssh_hidden[1]": self.ssh_hidden[1]})
            if self.ssh == "v1":
                raise ValueError("FeatherFaceV2Config.ssh_hidden needs a grouped SSH (ssh = 'grouped' or 'factorised')")
        for name, width in widths.items():
            if width is not None and (int(width) < g or int(width) % g):
                raise ValueError(f"FeatherFaceV2Config.{name} must be a positive multiple of ssh_groups={g}, "
                                 f"got {width}")
        if self.ssh_width % 4 or (self.ssh_width // 4) % g:
            raise ValueError(f"FeatherFaceV2Config SSH width {self.ssh_width} must split into C/2 + C/4 + C/4 "
                             f"with each part a multiple of ssh_groups={g}")


class _V1Attention(nn.Module):
    """Ablation stand-in for CBAMManager: one V1 CBAM per level, same ``forward(x, level)`` contract."""

    def __init__(self, channels: dict[str, int]) -> None:
        super().__init__()
        self.cbams = nn.ModuleDict({k: CBAM(c) for k, c in channels.items()})

    def forward(self, x: Tensor, level: str) -> Tensor:
        return F.relu(self.cbams[level](x) + x)


class FeatherFaceV2(nn.Module):
    """FeatherFace V2. ``forward(x [B, 3, H, W]) -> DetectionOutput`` with raw logits, for any H×W."""

    backbone_levels = ("stage1", "stage2", "stage3")
    neck_levels = ("p3", "p4", "p5")

    def __init__(self, config: FeatherFaceV2Config | None = None) -> None:
        super().__init__()
        cfg = config or FeatherFaceV2Config()
        self.cfg = cfg
        c = cfg.channels
        self.body = MobileNetV1Body()
        in_ch = self.body.out_channels
        self.backbone_cbam_manager = self._attention(dict(zip(self.backbone_levels, in_ch)), cfg.shared_backbone_cbam)
        cell = BiFPNLightCell if cfg.neck == "bifpn_light" else BiFPNCell
        self.bifpn = nn.Sequential(*[cell(c, in_ch, first_time=(i == 0)) for i in range(cfg.bifpn_cells)])
        self.bifpn_cbam_manager = self._attention(dict.fromkeys(self.neck_levels, c), cfg.shared_neck_cbam)
        self.dropblock: nn.Module = nn.Identity()
        if cfg.dropblock_prob > 0:
            from featherface.models.dropblock import DropBlock2d

            self.dropblock = DropBlock2d(drop_prob=cfg.dropblock_prob, block_size=cfg.dropblock_size)
        self.ssh1, self.ssh2, self.ssh3 = (self._ssh(cfg) for _ in range(3))
        s, hc = cfg.ssh_width, cfg.feature_channels
        self.ssh1_cs, self.ssh2_cs, self.ssh3_cs = (ChannelShuffleLight(s, cfg.ssh_groups, cfg.shuffle_hidden, hc)
                                                    for _ in range(3))
        n_heads = 3 if cfg.head == "per_level" else 1
        self.shared_heads = nn.ModuleList(SharedMultiHead(hc, cfg.anchor_spec.anchors_per_cell[0], trunk=(cfg.head == "shared_trunk"))
                                          for _ in range(n_heads))

    def _attention(self, channels: dict[str, int], shared: bool) -> nn.Module:
        if self.cfg.attention == "cbam_v1":
            return _V1Attention(channels)
        return CBAMManager(channels, reduction=32, share_channel_gate=shared)

    @staticmethod
    def _ssh(cfg: FeatherFaceV2Config) -> nn.Module:
        if cfg.ssh == "v1":
            return SSH(cfg.channels, cfg.ssh_width)
        hidden = (int(cfg.ssh_hidden[0]), int(cfg.ssh_hidden[1])) if cfg.ssh_hidden is not None else None
        return SSHGrouped(cfg.channels, cfg.ssh_width, groups=cfg.ssh_groups, factorised=(cfg.ssh == "factorised"),
                          hidden=hidden)

    def forward_with_features(self, x: Tensor) -> tuple[DetectionOutput, list[Tensor]]:
        """Outputs plus the three features fed to the heads (``[B, feature_channels, H/s, W/s]``, s = 8, 16, 32)."""
        return self.forward_from_backbone(self.body(x))

    def forward_from_backbone(self, feats: list[Tensor]) -> tuple[DetectionOutput, list[Tensor]]:
        """:meth:`forward_with_features` from the three backbone feature maps ``self.body(x)`` (a frozen backbone
        shared with the teacher is computed once and fed here)."""
        feats = [self.backbone_cbam_manager(f, k) for f, k in zip(feats, self.backbone_levels)]
        feats = self.bifpn(feats)
        feats = [self.dropblock(self.bifpn_cbam_manager(f, k)) for f, k in zip(feats, self.neck_levels)]
        feats = [cs(ssh(f)) for ssh, cs, f in
                 zip((self.ssh1, self.ssh2, self.ssh3), (self.ssh1_cs, self.ssh2_cs, self.ssh3_cs), feats)]
        heads = self.shared_heads if len(self.shared_heads) == 3 else [self.shared_heads[0]] * 3
        outs = [head(f) for head, f in zip(heads, feats)]
        boxes, logits, landmarks = (torch.cat([o[i] for o in outs], dim=1) for i in range(3))
        return DetectionOutput(boxes, logits, landmarks), feats

    def forward(self, x: Tensor) -> DetectionOutput:
        return self.forward_with_features(x)[0]


@register_model("featherface_v2", FeatherFaceV2Config, "FeatherFace V2 student (256,156 params)")
def _build_v2(config: FeatherFaceV2Config) -> FeatherFaceV2:
    return FeatherFaceV2(config)
