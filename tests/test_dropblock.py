"""DropBlock2d: identity in eval / p=0, block structure, drop rate, rescaling, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featherface.models.dropblock import DropBlock2d


def test_identity_in_eval_and_when_p_is_zero():
    x = torch.randn(2, 4, 10, 12)
    m = DropBlock2d(0.1, 3).eval()
    assert m(x) is x
    m0 = DropBlock2d(0.0, 3).train()
    assert m0(x) is x


def test_drops_whole_blocks_and_rescales():
    torch.manual_seed(0)
    m = DropBlock2d(0.1, 3).train()
    x = torch.ones(4, 8, 20, 24)
    y = m(x)
    assert y.shape == x.shape
    zero = (y == 0).float()
    kept = y[y != 0]
    # every kept value carries the same rescale factor numel / kept
    scale = x.numel() / (y != 0).sum().item()
    torch.testing.assert_close(kept, torch.full_like(kept, scale))
    # every dropped pixel lies in a fully dropped 3x3 block
    # morphological opening (erode then dilate, 3x3) keeps exactly the unions of whole 3x3 squares
    opening = F.max_pool2d(-F.max_pool2d(-zero, 3, 1, 1), 3, 1, 1)
    assert zero.sum() > 0 and torch.equal(opening * zero, zero)


@pytest.mark.parametrize("h,w", [(20, 20), (16, 40), (80, 80)])
def test_drop_rate_close_to_drop_prob(h, w):
    torch.manual_seed(1)
    m = DropBlock2d(0.1, 3).train()
    x = torch.ones(8, 16, h, w)
    rates = [(m(x) == 0).float().mean().item() for _ in range(4)]
    r = sum(rates) / len(rates)
    # overlapping blocks make the dropped fraction a bit below drop_prob (1 - exp(-p) ~ 0.095)
    assert 0.08 < r < 0.11, r
    # gamma uses both dimensions
    assert m.gamma(h, w) == pytest.approx(0.1 / 9 * h * w / ((h - 2) * (w - 2)))


def test_expected_value_preserved_and_gradients_flow():
    torch.manual_seed(2)
    m = DropBlock2d(0.1, 3).train()
    x = torch.randn(8, 16, 24, 24, requires_grad=True)
    y = m(x)
    assert abs(y.mean().item() - x.mean().item()) < 0.05
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_small_maps_and_block_bigger_than_map():
    torch.manual_seed(3)
    m = DropBlock2d(0.5, 5).train()
    for shape in [(2, 3, 1, 1), (2, 3, 2, 7), (1, 1, 5, 5)]:
        x = torch.ones(shape)
        y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
    m = DropBlock2d(0.1, 4).train()  # even block size
    y = m(torch.ones(2, 2, 9, 11))
    assert y.shape == (2, 2, 9, 11)


def test_uses_torch_rng_and_module_api():
    m = DropBlock2d(0.2, 3).train()
    x = torch.ones(2, 4, 16, 16)
    torch.manual_seed(7)
    a = m(x)
    torch.manual_seed(7)
    b = m(x)
    assert torch.equal(a, b)
    assert "drop_prob=0.2" in repr(m) and "block_size=3" in repr(m)
    seq = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), DropBlock2d())
    seq.eval()
    torch.testing.assert_close(seq(x), seq[0](x))
    with pytest.raises(ValueError):
        DropBlock2d(1.0)
    with pytest.raises(ValueError):
        DropBlock2d(0.1, 0)
    if torch.cuda.is_available():
        assert m(x.cuda()).device.type == "cuda"
