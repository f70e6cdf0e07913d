"""Structured channel pruning of FeatherFace V2: the BiFPN trunk, the SSH reductions, the channel-shuffle blocks and
the head inputs lose a share of their channels; the backbone, the SSH outputs and the attention gates keep theirs.

A pruned model is an ordinary V2 with narrower widths in its config (``channels``, ``ssh_hidden``,
``shuffle_hidden``, ``head_channels``; ``ssh_channels`` stays at the original width), so it saves as a normal
checkpoint, loads with ``load_model`` (``weights_only``), exports to ONNX and quantises like any V2.

Channel sets and constraints (``g`` = ``ssh_groups``, 4 upstream):

* trunk (BiFPN width, shared by every cell, level and fusion node, the neck channel gates and the SSH inputs):
  any count; importance = Σ |γ| of the BatchNorms that produce the trunk;
* SSH reductions (1×1 outputs feeding the grouped 3×3s) and channel-shuffle hidden / output channels: grouped
  convolutions, so the same number is removed from every group; importance = |γ| of the BatchNorm after the
  producing convolution (network slimming), lowest removed within each group.
  The SSH outputs are not pruned: the channel shuffle that follows would scramble the group layout.

Removing a channel whose BatchNorm has γ = β = 0 leaves the outputs unchanged (tested). The neck spatial gates
average over channels; their mean-input weights are rescaled by ``kept / total`` so that holds there too.

Why not torch-pruning: torch-pruning 1.6 traced V2 but, at ratio 0.2, cut the channel-shuffle outputs by half and
left the BiFPN trunk untouched (its dependency graph does not follow the fusion nodes through the gates), and its
pruned modules cannot be rebuilt from a config, which ``weights_only`` loading needs. Hence the V2-specific pruner
below, with an exactness test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from featherface.errors import FeatherFaceError

__all__ = ["PrunePlan", "plan_pruning", "prune_v2"]


@dataclass(frozen=True)
class PrunePlan:
    """Indices of the channels kept (ascending), per set. ``ssh_hidden[level]`` = (3×3-branch, 5×5-branch)."""

    trunk: list[int]
    ssh_hidden: list[tuple[list[int], list[int]]]
    shuffle_hidden: list[list[int]]
    head: list[int]


def _bn_gamma(bn: nn.BatchNorm2d) -> Tensor:
    return bn.weight.detach().abs()


def _keep_top(importance: Tensor, keep: int) -> list[int]:
    return sorted(torch.topk(importance, keep, largest=True).indices.tolist())


def _keep_per_group(importance: Tensor, groups: int, ratio: float) -> list[int]:
    """Keep the most important ``per - round(per * ratio)`` channels of each of ``groups`` contiguous groups."""
    n = importance.numel()
    per = n // groups
    keep = max(per - int(round(per * ratio)), 1)
    out: list[int] = []
    for gi in range(groups):
        block = importance[gi * per:(gi + 1) * per]
        out += [gi * per + i for i in _keep_top(block, keep)]
    return out


def _levels(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    return [model.ssh1, model.ssh2, model.ssh3], [model.ssh1_cs, model.ssh2_cs, model.ssh3_cs]


def _trunk_bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    bns = []
    for cell in model.bifpn:
        if cell.first_time:
            bns += [cell.p3_down_channel[1], cell.p4_down_channel[1], cell.p5_down_channel[1]]
        for block in (cell.conv4_up, cell.conv3_up, cell.conv4_down, cell.conv5_down):
            bns += [block.bn1, block.bn2]
    return bns


def _check_supported(model: nn.Module) -> None:
    cfg = getattr(model, "config", None)
    name = type(model).__name__
    if name != "FeatherFaceV2" or cfg is None:
        raise FeatherFaceError(f"pruning supports FeatherFace V2 only, got {name}")
    bad = [f"{k}={getattr(cfg, k)!r}" for k, ok in (("neck", "bifpn_light"), ("attention", "cbam_plus"))
           if getattr(cfg, k) != ok]
    if cfg.ssh == "v1":
        bad.append("ssh='v1'")
    if cfg.head == "shared_trunk":
        bad.append("head='shared_trunk'")
    if bad:
        raise FeatherFaceError(f"pruning supports the upstream V2 layout (and shared gates/heads); not {', '.join(bad)}")


def plan_pruning(model: nn.Module, ratio: float) -> PrunePlan:
    """Which channels to keep when removing ``ratio`` of each prunable set (module docstring)."""
    _check_supported(model)
    if not 0.0 <= ratio < 1.0:
        raise FeatherFaceError(f"pruning ratio must be in [0, 1), got {ratio}")
    g = model.config.ssh_groups
    c = model.config.channels
    trunk_imp = sum(_bn_gamma(bn) for bn in _trunk_bns(model))
    trunk = _keep_top(trunk_imp, max(c - int(round(c * ratio)), 1))
    sshs, shuffles = _levels(model)
    ssh_hidden = [(_keep_per_group(_bn_gamma(s.conv3x3[1]), g, ratio), _keep_per_group(_bn_gamma(s.conv5x5_1[1]), g, ratio))
                  for s in sshs]
    shuffle_hidden = [_keep_per_group(_bn_gamma(cs.conv[1]), g, ratio) for cs in shuffles]
    # One head-input set for all levels, so that shared heads stay shared.
    head = _keep_per_group(sum(_bn_gamma(cs.conv[4]) for cs in shuffles), g, ratio)
    return PrunePlan(trunk, ssh_hidden, shuffle_hidden, head)


# ------------------------------------------------------------------------------------------------- weight slicing
def _idx(indices: list[int] | None, n: int) -> Tensor:
    return torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.long)


@torch.no_grad()
def _copy_bn(src: nn.BatchNorm2d, dst: nn.BatchNorm2d, keep: list[int] | None) -> None:
    i = _idx(keep, src.num_features)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[i])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


@torch.no_grad()
def _copy_conv(src: nn.Conv2d, dst: nn.Conv2d, out_keep: list[int] | None, in_keep: list[int] | None) -> None:
    """Copy a (possibly grouped) convolution keeping ``out_keep`` outputs and ``in_keep`` inputs (global indices).

    Grouped: kept inputs must be equally many per group (they are, by construction); depthwise: ``in_keep`` is
    ignored (the kept inputs are the kept outputs).
    """
    o = _idx(out_keep, src.out_channels)
    w = src.weight[o]
    if src.groups > 1 and src.groups == src.in_channels == src.out_channels:
        dst.weight.copy_(w)
    elif in_keep is not None:
        g = src.groups
        in_per, out_per = src.in_channels // g, src.out_channels // g
        local = [[i - gi * in_per for i in in_keep if gi * in_per <= i < (gi + 1) * in_per] for gi in range(g)]
        rows = [w[k][local[int(o[k]) // out_per]] for k in range(len(o))]
        dst.weight.copy_(torch.stack(rows))
    else:
        dst.weight.copy_(w)
    if src.bias is not None:
        dst.bias.copy_(src.bias[o])


@torch.no_grad()
def _copy_linear(src: nn.Linear, dst: nn.Linear, out_keep: list[int] | None, in_keep: list[int] | None) -> None:
    w = src.weight[_idx(out_keep, src.out_features)]
    dst.weight.copy_(w[:, _idx(in_keep, src.in_features)])
    if src.bias is not None:
        dst.bias.copy_(src.bias[_idx(out_keep, src.out_features)])


def _copy_gate(src: nn.Module, dst: nn.Module, keep: list[int]) -> None:
    _copy_linear(src.mlp[0], dst.mlp[0], None, keep)
    _copy_linear(src.mlp[2], dst.mlp[2], keep, None)


def _widths(cfg: Any) -> dict[str, Any]:
    """The prunable widths of a V2 config, defaults resolved."""
    return {"trunk": cfg.channels, "ssh_hidden": list(cfg.ssh_hidden or (cfg.ssh_width // 2, cfg.ssh_width // 4)),
            "shuffle_hidden": cfg.shuffle_hidden or cfg.ssh_width // 2, "head_channels": cfg.feature_channels}


def prune_v2(model: nn.Module, ratio: float = 0.2) -> tuple[nn.Module, dict[str, Any]]:
    """A new, narrower V2 (eval mode) holding ``model``'s weights for the kept channels, and a summary dict."""
    from featherface.models import build_model
    from featherface.models.stats import count_macs, count_parameters

    plan = plan_pruning(model, ratio)
    cfg = model.config
    g = cfg.ssh_groups
    new_cfg = dataclasses.replace(
        cfg, channels=len(plan.trunk), ssh_channels=cfg.ssh_width,
        ssh_hidden=(len(plan.ssh_hidden[0][0]), len(plan.ssh_hidden[0][1])),
        shuffle_hidden=len(plan.shuffle_hidden[0]), head_channels=len(plan.head))
    new = build_model(getattr(model, "model_name", "featherface_v2"), new_cfg)
    # Every tensor whose shape did not change (backbone, its gates, fusion weights, spatial-gate BNs, the SSH layers
    # after the reductions) is copied as it is; the narrowed ones are sliced below.
    new_shapes = {k: v.shape for k, v in new.state_dict().items()}
    new.load_state_dict({k: v for k, v in model.state_dict().items() if new_shapes.get(k) == v.shape}, strict=False)

    t = plan.trunk
    for sc, dc in zip(model.bifpn, new.bifpn):
        if sc.first_time:
            for name in ("p3_down_channel", "p4_down_channel", "p5_down_channel"):
                s_seq, d_seq = getattr(sc, name), getattr(dc, name)
                _copy_conv(s_seq[0].conv, d_seq[0].conv, t, None)
                _copy_bn(s_seq[1], d_seq[1], t)
        for name in ("conv4_up", "conv3_up", "conv4_down", "conv5_down"):
            sb, db = getattr(sc, name), getattr(dc, name)
            _copy_conv(sb.depthwise, db.depthwise, t, t)
            _copy_bn(sb.bn1, db.bn1, t)
            _copy_conv(sb.pointwise, db.pointwise, t, t)
            _copy_bn(sb.bn2, db.bn2, t)

    sm, dm = model.bifpn_cbam_manager, new.bifpn_cbam_manager
    if sm.share_channel_gate:
        _copy_gate(sm.channel_gate, dm.channel_gate, t)
    else:
        for k in sm.channel_gates:
            _copy_gate(sm.channel_gates[k], dm.channel_gates[k], t)
    with torch.no_grad():  # mean over fewer channels: rescale the mean input so kept/zero-channel sums match
        dm.spatial_gate.spatial[0].weight[:, 0] *= len(t) / cfg.channels

    (s_ssh, s_cs), (d_ssh, d_cs) = _levels(model), _levels(new)
    for level in range(3):
        h3, h5 = plan.ssh_hidden[level]
        for branch, keep in (("conv3x3", h3), ("conv5x5_1", h5)):
            s_seq, d_seq = getattr(s_ssh[level], branch), getattr(d_ssh[level], branch)
            _copy_conv(s_seq[0], d_seq[0], keep, t)
            _copy_bn(s_seq[1], d_seq[1], keep)
            _copy_conv(s_seq[3], d_seq[3], None, keep)
        hid = plan.shuffle_hidden[level]
        sconv, dconv = s_cs[level].conv, d_cs[level].conv
        _copy_conv(sconv[0], dconv[0], hid, None)
        _copy_bn(sconv[1], dconv[1], hid)
        _copy_conv(sconv[3], dconv[3], plan.head, hid)
        _copy_bn(sconv[4], dconv[4], plan.head)
    for sh, dh in zip(model.shared_heads, new.shared_heads):
        for name in ("cls_head", "bbox_head", "ldm_head"):
            _copy_conv(getattr(sh, name), getattr(dh, name), None, plan.head)
    new.eval()

    before, after = count_parameters(model), count_parameters(new)
    macs_before, macs_after = count_macs(model)["total"], count_macs(new)["total"]
    summary = {"ratio": ratio, "groups": g, "widths_before": _widths(cfg), "widths_after": _widths(new_cfg),
               "params_before": before, "params_after": after, "params_removed_pct": round(100 * (1 - after / before), 2),
               "macs_640_before": macs_before, "macs_640_after": macs_after,
               "macs_removed_pct": round(100 * (1 - macs_after / macs_before), 2)}
    return new, summary
