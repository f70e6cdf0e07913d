"""BatchNormAct2d / fuse_batchnorm_activation: same numbers as BatchNorm2d + activation, same state dict."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from featherface.models.fused_norm import BatchNormAct2d, fuse_batchnorm_activation
from featherface.models.registry import build_model
from featherface.train.precise_bn import recompute_bn_stats

ACTIVATIONS = {"identity": nn.Identity, "relu": lambda: nn.ReLU(inplace=True),
               "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True)}


def _reference(c: int, activation: str, momentum: float | None) -> nn.Sequential:
    ref = nn.Sequential(nn.BatchNorm2d(c, momentum=momentum), ACTIVATIONS[activation]())
    with torch.no_grad():
        ref[0].weight.uniform_(0.5, 1.5)
        ref[0].bias.uniform_(-0.5, 0.5)
        ref[0].running_mean.uniform_(-1, 1)
        ref[0].running_var.uniform_(0.5, 2)
    return ref


@pytest.mark.parametrize("activation", ["identity", "relu", "leaky_relu"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(4, 8, 12, 10), (2, 48, 5, 7), (3, 3, 1, 2)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_batchnorm_plus_activation(activation, channels_last, shape, momentum):
    torch.manual_seed(0)
    c = shape[1]
    ref = _reference(c, activation, momentum)
    fused = BatchNormAct2d(c, momentum=momentum, activation=activation, negative_slope=0.1)
    fused.load_state_dict(ref[0].state_dict())
    x = torch.randn(shape, dtype=torch.float64) * 2 + 0.7
    ref, fused = ref.double(), fused.double()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape, dtype=torch.float64)
    results = []
    for m in (ref, fused):
        xi = x.clone().requires_grad_(True)
        for _ in range(2):  # two steps: running statistics accumulate (momentum None = cumulative average)
            xi.grad = None
            m.zero_grad()
            y = m(xi)
            y.backward(grad)
        bn = m[0] if isinstance(m, nn.Sequential) else m
        results.append((y.detach(), xi.grad, bn.weight.grad, bn.bias.grad, bn.running_mean.clone(),
                        bn.running_var.clone(), int(bn.num_batches_tracked)))
    for a, b in zip(results[0][:6], results[1][:6]):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    assert results[0][6] == results[1][6] == 2
    # eval mode: plain BN + activation on the running statistics
    ref.eval()
    fused.eval()
    torch.testing.assert_close(fused(x), ref(x), rtol=0, atol=0)


def test_float32_channels_last_narrow_map_close():
    """The fast path (channels-last, float32, narrow high-resolution map) stays within float rounding."""
    torch.manual_seed(1)
    ref = _reference(8, "leaky_relu", 0.1)
    fused = BatchNormAct2d(8, activation="leaky_relu", negative_slope=0.1)
    fused.load_state_dict(ref[0].state_dict())
    x = (torch.randn(2, 8, 64, 64) * 3 + 1).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    grads = []
    for m in (ref, fused):
        xi = x.clone().requires_grad_(True)
        m(xi).backward(grad)
        bn = m[0] if isinstance(m, nn.Sequential) else m
        grads.append((xi.grad, bn.weight.grad, bn.bias.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_bad_activation_rejected():
    with pytest.raises(ValueError, match="activation"):
        BatchNormAct2d(4, activation="gelu")


@pytest.mark.parametrize("name", ["featherface_v2", "featherface_v1"])
def test_fusing_a_model_keeps_state_dict_and_outputs(name):
    torch.manual_seed(0)
    model = build_model(name)
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    fused = copy.deepcopy(model)
    n = fuse_batchnorm_activation(fused)
    assert n == sum(type(m) is nn.BatchNorm2d for m in model.modules()) and n > 0
    assert not any(type(m) is nn.BatchNorm2d for m in fused.modules())
    folded = sum(isinstance(m, BatchNormAct2d) and m.activation != "identity" for m in fused.modules())
    assert folded > 0
    sd_a, sd_b = model.state_dict(), fused.state_dict()
    assert list(sd_a) == list(sd_b)
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    x = torch.randn(2, 3, 96, 96)
    model.eval()
    fused.eval()
    with torch.no_grad():
        for a, b in zip(model(x), fused(x)):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
    # training step in float64: same loss and gradients (float32 differs from both by its own rounding only)
    model.train().double()
    fused.train().double()
    losses = []
    for m in (model, fused):
        m.zero_grad()
        loss = sum(t.pow(2).mean() for t in m(x.double()))
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-10)
    for (ka, pa), (kb, pb) in zip(model.named_parameters(), fused.named_parameters()):
        assert ka == kb
        if pa.grad is not None:
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-7, atol=1e-12, msg=ka)
    model.float()
    fused.float()
    # and the fused model loads the unfused model's weights strictly
    fused.load_state_dict(model.state_dict(), strict=True)


def test_precise_bn_same_on_fused_model():
    torch.manual_seed(0)
    model = build_model("featherface_v2")
    fused = copy.deepcopy(model)
    fuse_batchnorm_activation(fused)
    batches = [torch.randn(2, 3, 64, 64) for _ in range(3)]
    assert recompute_bn_stats(model, batches) == recompute_bn_stats(fused, batches) == 3
    sd_a, sd_b = model.state_dict(), fused.state_dict()
    for k in sd_a:
        torch.testing.assert_close(sd_b[k], sd_a[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_model_gradients_as_accurate_as_native(channels_last):
    """Against a float64 reference, the fused float32 gradients are as accurate as the native float32 ones."""
    torch.manual_seed(0)
    model = build_model("featherface_v2").train()
    fused = copy.deepcopy(model)
    fuse_batchnorm_activation(fused)
    x = torch.randn(2, 3, 96, 96)
    ref = copy.deepcopy(model).double()
    sum(t.pow(2).mean() for t in ref(x.double())).backward()

    def errors(m: nn.Module) -> torch.Tensor:
        xx = x
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
            xx = x.contiguous(memory_format=torch.channels_last)
        sum(t.pow(2).mean() for t in m(xx)).backward()
        return torch.tensor([float((p.grad.double() - r.grad).abs().max() / r.grad.abs().max())
                             for p, r in zip(m.parameters(), ref.parameters()) if r.grad is not None])

    native, ours = errors(model), errors(fused)
    assert float(ours.median()) <= 2 * float(native.median()) + 1e-6
    assert float(ours.max()) <= 3 * float(native.max()) + 1e-5


def test_non_positive_leaky_slope_is_not_fused():
    seq = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.LeakyReLU(-0.2))
    assert fuse_batchnorm_activation(seq) == 1
    assert isinstance(seq[1], BatchNormAct2d) and seq[1].activation == "identity"
    assert type(seq[2]) is nn.LeakyReLU  # left in place
    with pytest.raises(ValueError, match="negative_slope"):
        BatchNormAct2d(4, activation="leaky_relu", negative_slope=0.0)
