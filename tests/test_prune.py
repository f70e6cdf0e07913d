"""Structured pruning of V2 (featherface.prune): exactness on dead channels, widths, save/load/export."""

from __future__ import annotations

import torch

from featherface.checkpoint import load_model, save_checkpoint
from featherface.models import build_model
from featherface.models.stats import count_parameters
from featherface.prune import plan_pruning, prune_v2


def _random_bn_(model: torch.nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
                m.running_mean.uniform_(-0.1, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)


def _kill(bn: torch.nn.BatchNorm2d, channels: list[int]) -> None:
    """γ = β = 0 (and mean 0) on ``channels``: their outputs are exactly 0, so removing them changes nothing."""
    with torch.no_grad():
        for c in channels:
            bn.weight[c] = 0.0
            bn.bias[c] = 0.0
            bn.running_mean[c] = 0.0


def _dead_channel_model() -> tuple[torch.nn.Module, dict[str, list[int]]]:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model("featherface_v2").eval()
    _random_bn_(model, gen)
    dead_trunk = [3, 7, 11, 20, 25, 30]  # 6 of 32 = round(0.2 * 32)
    for cell in model.bifpn:
        if cell.first_time:
            for seq in (cell.p3_down_channel, cell.p4_down_channel, cell.p5_down_channel):
                _kill(seq[1], dead_trunk)
        for block in (cell.conv4_up, cell.conv3_up, cell.conv4_down, cell.conv5_down):
            _kill(block.bn1, dead_trunk)
            _kill(block.bn2, dead_trunk)
    dead_h3, dead_hid, dead_head = [1, 6, 8, 15], [0, 5, 10, 15], [0, 3, 9, 12, 17, 22, 24, 31]
    for ssh, cs in ((model.ssh1, model.ssh1_cs), (model.ssh2, model.ssh2_cs), (model.ssh3, model.ssh3_cs)):
        _kill(ssh.conv3x3[1], dead_h3)  # one per group of 4
        _kill(cs.conv[1], dead_hid)  # one per group of 4
        _kill(cs.conv[4], dead_head)  # two per group of 8
    return model, {"trunk": dead_trunk, "h3": dead_h3, "hid": dead_hid, "head": dead_head}


def test_plan_removes_the_dead_channels_and_respects_groups():
    model, dead = _dead_channel_model()
    plan = plan_pruning(model, 0.2)
    assert sorted(set(range(32)) - set(plan.trunk)) == dead["trunk"]
    assert sorted(set(range(32)) - set(plan.head)) == dead["head"]
    for (h3, h5), hid in zip(plan.ssh_hidden, plan.shuffle_hidden):
        assert sorted(set(range(16)) - set(h3)) == dead["h3"]
        assert len(h5) == 8  # 2 per group: round(2 * 0.2) = 0 removed
        assert sorted(set(range(16)) - set(hid)) == dead["hid"]


def test_pruning_dead_channels_leaves_outputs_unchanged():
    model, _ = _dead_channel_model()
    pruned, summary = prune_v2(model, 0.2)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(x), pruned(x)
    for name in ("boxes", "logits", "landmarks"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5), name
    assert summary["widths_after"] == {"trunk": 26, "ssh_hidden": [12, 8], "shuffle_hidden": 12, "head_channels": 24}
    assert summary["params_after"] == count_parameters(pruned) < summary["params_before"] == 256_156
    assert summary["macs_640_after"] < summary["macs_640_before"]


def test_pruned_model_saves_loads_and_trains(tmp_path):
    torch.manual_seed(0)
    pruned, _ = prune_v2(build_model("featherface_v2").eval(), 0.2)
    path = save_checkpoint(tmp_path / "pruned.pth", pruned, extra={"pruning": {"ratio": 0.2}})
    loaded = load_model(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, pruned(x).logits)
    loaded.train()
    out = loaded(x)
    (out.boxes.sum() + out.logits.sum()).backward()
    assert loaded.shared_heads[0].cls_head.weight.grad is not None


def test_pruned_model_exports_to_onnx(tmp_path):
    from featherface.export.onnx_export import check_parity, export_onnx

    torch.manual_seed(0)
    pruned, _ = prune_v2(build_model("featherface_v2").eval(), 0.2)
    path = export_onnx(pruned, tmp_path / "pruned.onnx")
    assert check_parity(pruned, path, sizes=[(64, 96)], batch=1) < 1e-4


def test_unsupported_layouts_are_refused():
    import pytest

    from featherface.errors import FeatherFaceError

    with pytest.raises(FeatherFaceError, match="ssh='v1'"):
        plan_pruning(build_model("featherface_v2", ssh="v1"), 0.2)
    with pytest.raises(FeatherFaceError, match="V2 only"):
        plan_pruning(build_model("featherface_v1"), 0.2)
    with pytest.raises(FeatherFaceError, match="ratio"):
        plan_pruning(build_model("featherface_v2"), 1.0)


def test_prune_command_writes_a_loadable_checkpoint(tmp_path, capsys):
    import json

    from featherface.cli import main

    out = tmp_path / "p.pth"
    assert main(["prune", "featherface_v2", "-o", str(out), "--ratio", "0.2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params_before"] == 256_156 and report["params_after"] < 256_156
    assert load_model(out).config.head_channels == 24
    assert main(["prune", str(tmp_path / "missing.pth"), "-o", str(out)]) == 2
