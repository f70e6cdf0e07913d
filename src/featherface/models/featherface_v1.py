"""FeatherFace V1, the teacher (upstream layout): MobileNetV1-0.25 → CBAM → 3×BiFPN(64) → CBAM → DCN-SSH →
channel shuffle → 1×1 heads. 592,371 trainable parameters; state-dict keys match upstream checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from featherface.geometry.anchors import DEFAULT_ANCHORS, AnchorSpec
from featherface.models.blocks import (
    CBAM,
    SSH,
    BiFPNCell,
    ChannelShuffleBlock,
    MobileNetV1Body,
    apply_level_heads,
    make_level_heads,
)
from featherface.models.outputs import DetectionOutput, check_anchor_layout
from featherface.models.registration import register_model

__all__ = ["FeatherFaceV1Config", "FeatherFaceV1"]


@dataclass(frozen=True)
class FeatherFaceV1Config:
    """V1 hyper-parameters (upstream ``cfg_mnet``); anchors are (min_sizes per level, steps)."""

    channels: int = 64
    bifpn_cells: int = 3
    min_sizes: tuple = DEFAULT_ANCHORS.min_sizes
    steps: tuple = DEFAULT_ANCHORS.steps
    variances: tuple = DEFAULT_ANCHORS.variances
    clip: bool = DEFAULT_ANCHORS.clip

    @property
    def anchor_spec(self) -> AnchorSpec:
        """The anchor contract of this model (steps, min_sizes, variances, clip)."""
        return AnchorSpec.from_config(self)

    def __post_init__(self) -> None:
        check_anchor_layout(self.anchor_spec, "FeatherFaceV1Config")


class FeatherFaceV1(nn.Module):
    """FeatherFace V1. ``forward(x [B, 3, H, W]) -> DetectionOutput`` with raw logits, for any H×W."""

    def __init__(self, config: FeatherFaceV1Config | None = None) -> None:
        super().__init__()
        cfg = config or FeatherFaceV1Config()
        c = cfg.channels
        self.body = MobileNetV1Body()
        c3, c4, c5 = self.body.out_channels
        self.bacbkbone_0_cbam = CBAM(c3)  # (sic) upstream key name
        self.bacbkbone_1_cbam = CBAM(c4)
        self.bacbkbone_2_cbam = CBAM(c5)
        self.bifpn = nn.Sequential(*[BiFPNCell(c, (c3, c4, c5), first_time=(i == 0)) for i in range(cfg.bifpn_cells)])
        self.bif_cbam_0 = CBAM(c)
        self.bif_cbam_1 = CBAM(c)
        self.bif_cbam_2 = CBAM(c)
        self.ssh1, self.ssh2, self.ssh3 = SSH(c, c), SSH(c, c), SSH(c, c)
        self.ssh1_cs, self.ssh2_cs, self.ssh3_cs = ChannelShuffleBlock(c), ChannelShuffleBlock(c), ChannelShuffleBlock(c)
        self.ClassHead, self.BboxHead, self.LandmarkHead = make_level_heads(c, 3, cfg.anchor_spec.anchors_per_cell[0])

    def forward_with_features(self, x: Tensor) -> tuple[DetectionOutput, list[Tensor]]:
        """Outputs plus the three neck features fed to the heads (``[B, 64, H/s, W/s]``, s = 8, 16, 32)."""
        return self.forward_from_backbone(self.body(x))

    def forward_from_backbone(self, feats: list[Tensor]) -> tuple[DetectionOutput, list[Tensor]]:
        """:meth:`forward_with_features` from the three backbone feature maps ``self.body(x)``."""
        feats = [F.relu(att(f) + f) for att, f in
                 zip((self.bacbkbone_0_cbam, self.bacbkbone_1_cbam, self.bacbkbone_2_cbam), feats)]
        feats = self.bifpn(feats)
        feats = [F.relu(att(f) + f) for att, f in zip((self.bif_cbam_0, self.bif_cbam_1, self.bif_cbam_2), feats)]
        feats = [cs(ssh(f)) for ssh, cs, f in
                 zip((self.ssh1, self.ssh2, self.ssh3), (self.ssh1_cs, self.ssh2_cs, self.ssh3_cs), feats)]
        return DetectionOutput(*apply_level_heads(self.ClassHead, self.BboxHead, self.LandmarkHead, feats)), feats

    def forward(self, x: Tensor) -> DetectionOutput:
        return self.forward_with_features(x)[0]


@register_model("featherface_v1", FeatherFaceV1Config, "FeatherFace V1 teacher (592,371 params, DCN SSH)")
def _build_v1(config: FeatherFaceV1Config) -> FeatherFaceV1:
    return FeatherFaceV1(config)
