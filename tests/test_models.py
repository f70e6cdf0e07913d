"""Registry-wide model tests: exact parameter counts, output shapes = anchor count, gradients, variants."""

import pytest
import torch

from featherface.errors import ModelNameError
from featherface.geometry.anchors import make_anchors, num_anchors
from featherface.models import build_model, list_models
from featherface.models.blocks import MobileNetV1Body
from featherface.models.stats import count_parameters, parameter_table, thop_convention_params

EXPECTED = {"featherface_v1": 592_371, "featherface_v2": 256_156}

V1_TABLE = {"backbone (MobileNetV1-0.25)": 213_072, "backbone CBAM": 11_528, "BiFPN": 112_606, "BiFPN CBAM": 2_040,
            "SSH": 232_965, "channel shuffle": 13_920, "heads": 6_240}
V2_TABLE = {"backbone (MobileNetV1-0.25)": 213_072, "backbone CBAM": 5_732, "BiFPN": 26_068, "BiFPN CBAM": 868,
            "SSH": 6_192, "channel shuffle": 1_056, "heads": 3_168}


def test_registry_lists_both_models():
    assert list_models() == ["featherface_v1", "featherface_v2"]


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelNameError, match="featherface_v1, featherface_v2"):
        build_model("featherface_v3")


def test_unknown_config_key_is_refused():
    with pytest.raises(Exception, match="unknown config key"):
        build_model("featherface_v2", not_a_field=1)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_parameter_count(name):
    assert count_parameters(build_model(name)) == EXPECTED[name]


@pytest.mark.parametrize("name,table", [("featherface_v1", V1_TABLE), ("featherface_v2", V2_TABLE)])
def test_parameter_table_matches_the_upstream_layout(name, table):
    assert {r.group: r.params for r in parameter_table(build_model(name))} == table


def test_thop_convention_count_of_v1():
    assert thop_convention_params(build_model("featherface_v1")) == 488_661


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("size", [(64, 64), (75, 101), (33, 200)])
def test_output_shapes_equal_anchor_count(name, size):
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    a = num_anchors(size)
    assert a == make_anchors(size).shape[0]
    assert a == sum(2 * -(-size[0] // s) * -(-size[1] // s) for s in (8, 16, 32))
    assert tuple(out.boxes.shape) == (2, a, 4)
    assert tuple(out.logits.shape) == (2, a, 2)
    assert tuple(out.landmarks.shape) == (2, a, 10)
    assert all(torch.isfinite(t).all() for t in out)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_parameter_gets_a_gradient(name):
    """Every parameter must receive a non-zero gradient (a gradient that exists but is all zeros would mean the
    parameter does not influence the outputs)."""
    torch.manual_seed(0)
    model = build_model(name).train()
    out = model(torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 50)
    (out.boxes.square().mean() + out.logits.square().mean() + out.landmarks.square().mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    # V1 quirk kept for checkpoint compatibility: p5_w2[2] weighs no input, but it still gets a gradient via the
    # normaliser, so every parameter must have one.
    assert not no_grad
    zero = [n for n, p in model.named_parameters() if not bool(p.grad.abs().gt(0).any())]
    assert not zero, f"parameters with an all-zero gradient: {zero}"


def test_backbone_forward_directly():
    feats = MobileNetV1Body()(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_anchor_order_matches_head_flattening(name):
    # Zero the class heads and give each (level, anchor) its own bias: output row n must then carry the code of the
    # min_size of anchor n, so rows and anchors agree in count AND order.
    model = build_model(name).eval()
    heads = model.ClassHead if name == "featherface_v1" else model.shared_heads
    for level, head in enumerate(heads):
        conv = head.conv1x1 if name == "featherface_v1" else head.cls_head
        torch.nn.init.zeros_(conv.weight)
        with torch.no_grad():
            conv.bias.copy_(torch.tensor([0.0, 10 * level, 0.0, 10 * level + 1]))
    h, w = 72, 104
    with torch.no_grad():
        face_logit = model(torch.randn(1, 3, h, w)).logits[0, :, 1]
    anchors = make_anchors((h, w))
    size_index = {16: 0, 32: 1, 64: 10, 128: 11, 256: 20, 512: 21}
    expected = torch.tensor([size_index[round(float(a[2]) * w)] for a in anchors], dtype=torch.float32)
    assert torch.equal(face_logit, expected)


V2_VARIANTS = [
    ({"ssh": "factorised"}, 255_004),
    ({"shared_neck_cbam": True}, 255_644),
    ({"shared_backbone_cbam": True}, 254_620),
    ({"head": "shared"}, 254_044),
    ({"head": "shared_trunk"}, 255_484),
    ({"bifpn_cells": 1}, 250_386),
    ({"bifpn_cells": 3}, 261_926),
    ({"bifpn_cells": 4}, 267_696),
    ({"ssh": "factorised", "shared_neck_cbam": True, "head": "shared"}, 252_380),
]


@pytest.mark.parametrize("overrides,params", V2_VARIANTS)
def test_v2_variants_have_their_measured_parameter_counts(overrides, params):
    model = build_model("featherface_v2", **overrides).eval()
    assert count_parameters(model) == params
    with torch.no_grad():
        out = model(torch.randn(1, 3, 48, 80))
    assert out.boxes.shape[1] == num_anchors((48, 80))


@pytest.mark.parametrize("overrides", [{"ssh": "v1"}, {"neck": "bifpn_v1"}, {"attention": "cbam_v1"}])
def test_ablation_swaps_build_and_run(overrides):
    model = build_model("featherface_v2", **overrides).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 48, 80))
    assert out.logits.shape == (1, num_anchors((48, 80)), 2)


def test_bad_variant_value_is_refused():
    with pytest.raises(ValueError, match="ssh"):
        build_model("featherface_v2", ssh="octagonal")


def test_dropblock_is_active_only_in_training():
    model = build_model("featherface_v2", dropblock_prob=0.3)
    assert count_parameters(model) == 256_156
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a.logits, b.logits)
    model.train()
    torch.manual_seed(0)
    c = model(x)
    torch.manual_seed(1)
    d = model(x)
    assert not torch.equal(c.logits, d.logits)


def test_v2_inner_widths_are_validated_and_default_to_upstream():
    import pytest

    from featherface.models.featherface_v2 import FeatherFaceV2Config

    cfg = FeatherFaceV2Config()
    assert (cfg.ssh_width, cfg.feature_channels) == (32, 32)
    narrowed = build_model("featherface_v2", channels=26, ssh_channels=32, ssh_hidden=(12, 8), shuffle_hidden=12,
                           head_channels=24)
    out = narrowed(torch.zeros(1, 3, 64, 64))
    assert out.boxes.shape == (1, 2 * (64 + 16 + 4), 4)
    assert narrowed.shared_heads[0].cls_head.in_channels == 24
    with pytest.raises(ValueError, match="multiple of ssh_groups"):
        FeatherFaceV2Config(shuffle_hidden=10)
    with pytest.raises(ValueError, match="two widths"):
        FeatherFaceV2Config(ssh_hidden=(8,))
    with pytest.raises(ValueError, match="SSH width"):
        FeatherFaceV2Config(channels=26)  # SSH output would be 26 = 13 + 6.5 + 6.5
