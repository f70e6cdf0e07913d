"""Parameter tables, the "thop convention" count, and MACs.

True parameter count = ``sum(p.numel() for p in model.parameters())``. The FeatherFace paper's "0.49 M" is what the
``thop`` profiler prints: it only counts parameters owned directly by layers whose ``forward`` runs, so it misses the
deformable kernels (passed to a functional op; their ``nn.Conv2d`` never runs) and the BiFPN fusion weights (owned by
a container). :func:`thop_convention_params` reproduces that rule with forward hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from featherface.models.deform import DeformableConv2d

__all__ = ["ParamRow", "parameter_table", "count_parameters", "thop_convention_params", "count_macs", "GROUPS"]

# Top-level state-dict prefix → row of the design-reference parameter table.
GROUPS = {
    "body": "backbone (MobileNetV1-0.25)",
    "bacbkbone_0_cbam": "backbone CBAM", "bacbkbone_1_cbam": "backbone CBAM", "bacbkbone_2_cbam": "backbone CBAM",
    "backbone_cbam_manager": "backbone CBAM",
    "bifpn": "BiFPN",
    "bif_cbam_0": "BiFPN CBAM", "bif_cbam_1": "BiFPN CBAM", "bif_cbam_2": "BiFPN CBAM", "bifpn_cbam_manager": "BiFPN CBAM",
    "ssh1": "SSH", "ssh2": "SSH", "ssh3": "SSH",
    "ssh1_cs": "channel shuffle", "ssh2_cs": "channel shuffle", "ssh3_cs": "channel shuffle",
    "ClassHead": "heads", "BboxHead": "heads", "LandmarkHead": "heads", "shared_heads": "heads",
}

# Layer types thop 0.1.1 has a rule for (a parameter counts only if its owner is one of these and runs).
_THOP_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
               nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.Linear, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU,
               nn.ELU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample,
               nn.Dropout, nn.Identity, nn.Sigmoid, nn.SiLU, nn.Softmax, nn.Flatten)


@dataclass(frozen=True)
class ParamRow:
    group: str
    modules: tuple[str, ...]
    params: int


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_table(model: nn.Module) -> list[ParamRow]:
    """Parameters per architectural group (the upstream layout's module groups), in network order."""
    rows: dict[str, list] = {}
    for name, child in model.named_children():
        n = sum(p.numel() for p in child.parameters())
        if n == 0:
            continue
        group = GROUPS.get(name, name)
        entry = rows.setdefault(group, [[], 0])
        entry[0].append(name)
        entry[1] += n
    return [ParamRow(g, tuple(mods), n) for g, (mods, n) in rows.items()]


def _probe(model: nn.Module, input_size: tuple[int, int]) -> torch.Tensor:
    p = next(model.parameters())
    return torch.zeros(1, 3, *input_size, device=p.device, dtype=p.dtype)


def _forward_with_hooks(model: nn.Module, hooks: list, input_size: tuple[int, int]) -> None:
    """One no-grad eval-mode forward of a zero image, then remove ``hooks`` and restore the training flag."""
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(_probe(model, input_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


def thop_convention_params(model: nn.Module, input_size: tuple[int, int] = (640, 640)) -> int:
    """Parameters counted the way ``thop.profile`` counts them (see module docstring)."""
    ran: set[int] = set()
    hooks = [m.register_forward_hook(lambda mod, i, o: ran.add(id(mod)))
             for m in model.modules() if isinstance(m, _THOP_TYPES)]
    _forward_with_hooks(model, hooks, input_size)
    return sum(p.numel() for m in model.modules() if id(m) in ran for p in m.parameters(recurse=False))


def count_macs(model: nn.Module, input_size: tuple[int, int] = (640, 640)) -> dict[str, int]:
    """Multiply-accumulates of one forward pass at ``input_size`` (H, W).

    Returns ``conv`` (regular convolutions), ``linear``, ``deformable`` (the DCN kernels' products, which thop does not
    see) and ``total``. Element-wise ops (BN, activations, pooling, interpolation, attention products) are not counted.
    """
    macs = {"conv": 0, "linear": 0, "deformable": 0}

    def conv_hook(mod: nn.Conv2d, inputs, output) -> None:
        k = mod.kernel_size[0] * mod.kernel_size[1]
        macs["conv"] += output.numel() * (mod.in_channels // mod.groups) * k

    def linear_hook(mod: nn.Linear, inputs, output) -> None:
        macs["linear"] += output.numel() * mod.in_features

    def dcn_hook(mod: DeformableConv2d, inputs, output) -> None:
        w = mod.regular_conv.weight
        macs["deformable"] += output.numel() * w.shape[1] * w.shape[2] * w.shape[3]

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, DeformableConv2d):
            hooks.append(m.register_forward_hook(dcn_hook))
    _forward_with_hooks(model, hooks, input_size)
    macs["total"] = macs["conv"] + macs["linear"] + macs["deformable"]
    return macs
