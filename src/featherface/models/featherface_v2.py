"""FeatherFace V2, the student (design reference §2.2): MobileNetV1-0.25 → shared-spatial CBAM → 2×BiFPN_Light(32) →
CBAM → grouped SSH → light channel shuffle → per-level heads. 256,156 trainable parameters with the defaults.

The variants that the seed report describes but upstream never built (§2.9) and the ablation swaps of seed §6.1 are
explicit config switches; their parameter counts are measured (``featherface info``), never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featherface.models.blocks import (CBAM, SSH, BiFPNCell, BiFPNLightCell, CBAMManager, ChannelShuffleLight,
                                      MobileNetV1Body, SharedMultiHead, SSHGrouped)
from featherface.models.outputs import DetectionOutput
from featherface.models.registry import register_model

__all__ = ["FeatherFaceV2Config", "FeatherFaceV2"]

_SSH_KINDS = ("grouped", "factorised", "v1")
_HEAD_KINDS = ("per_level", "shared", "shared_trunk")
_NECK_KINDS = ("bifpn_light", "bifpn_v1")
_ATTENTION_KINDS = ("cbam_plus", "cbam_v1")


@dataclass(frozen=True)
class FeatherFaceV2Config:
    """V2 hyper-parameters. Defaults build the upstream 256,156-parameter model.

    ssh: ``grouped`` (upstream), ``factorised`` (grouped 1×3 + 3×1, §2.9 a) or ``v1`` (V1's deformable SSH, ablation).
    head: ``per_level`` (upstream), ``shared`` (one head for all levels, §2.9 c) or ``shared_trunk`` (§2.9 c').
    shared_neck_cbam / shared_backbone_cbam: one channel gate for all levels (§2.9 b / b').
    neck: ``bifpn_light`` (upstream) or ``bifpn_v1`` (V1's BiFPN cell at V2 width, ablation).
    attention: ``cbam_plus`` (upstream) or ``cbam_v1`` (V1's CBAM per level, ablation).
    dropblock_prob: DropBlock on the neck features fed to the SSH, active in training only (0 disables it).
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
    min_sizes: tuple = ((16, 32), (64, 128), (256, 512))
    steps: tuple = (8, 16, 32)
    variances: tuple = (0.1, 0.2)

    def __post_init__(self) -> None:
        for field, value, allowed in (("ssh", self.ssh, _SSH_KINDS), ("head", self.head, _HEAD_KINDS),
                                      ("neck", self.neck, _NECK_KINDS), ("attention", self.attention, _ATTENTION_KINDS)):
            if value not in allowed:
                raise ValueError(f"FeatherFaceV2Config.{field} must be one of {allowed}, got {value!r}")
        if self.bifpn_cells < 1:
            raise ValueError(f"FeatherFaceV2Config.bifpn_cells must be >= 1, got {self.bifpn_cells}")
        if not 0.0 <= self.dropblock_prob < 1.0:
            raise ValueError(f"FeatherFaceV2Config.dropblock_prob must be in [0, 1), got {self.dropblock_prob}")


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
        self.ssh1_cs, self.ssh2_cs, self.ssh3_cs = (ChannelShuffleLight(c, cfg.ssh_groups) for _ in range(3))
        n_heads = 3 if cfg.head == "per_level" else 1
        self.shared_heads = nn.ModuleList(SharedMultiHead(c, 2, trunk=(cfg.head == "shared_trunk")) for _ in range(n_heads))

    def _attention(self, channels: dict[str, int], shared: bool) -> nn.Module:
        if self.cfg.attention == "cbam_v1":
            return _V1Attention(channels)
        return CBAMManager(channels, reduction=32, share_channel_gate=shared)

    @staticmethod
    def _ssh(cfg: FeatherFaceV2Config) -> nn.Module:
        if cfg.ssh == "v1":
            return SSH(cfg.channels, cfg.channels)
        return SSHGrouped(cfg.channels, cfg.channels, groups=cfg.ssh_groups, factorised=(cfg.ssh == "factorised"))

    def forward_with_features(self, x: Tensor) -> tuple[DetectionOutput, list[Tensor]]:
        """Outputs plus the three neck features fed to the heads (``[B, 32, H/s, W/s]``, s = 8, 16, 32)."""
        feats = self.body(x)
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
