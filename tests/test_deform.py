"""The pure-PyTorch modulated deformable convolution."""

import math

import pytest
import torch
import torch.nn.functional as F

from featherface.models.deform import DeformableConv2d, deform_conv2d


def _bilinear(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's per-pixel bilinear read: zero outside, corners outside the image contribute zero."""
    c, h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return torch.zeros(c, dtype=img.dtype)
    y0, x0 = math.floor(y), math.floor(x)
    out = torch.zeros(c, dtype=img.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def _naive(x, offset, weight, mask, stride, pad):
    b, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    out = torch.zeros(b, o, ho, wo, dtype=x.dtype)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                acc = torch.zeros(o, dtype=x.dtype)
                for ki in range(kh):
                    for kj in range(kw):
                        t = ki * kw + kj
                        dy, dx = offset[n, 2 * t, i, j].item(), offset[n, 2 * t + 1, i, j].item()
                        v = _bilinear(x[n], i * stride - pad + ki + dy, j * stride - pad + kj + dx)
                        acc += weight[:, :, ki, kj] @ (v * mask[n, t, i, j])
                out[n, :, i, j] = acc
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_offsets_unit_mask_equals_conv(stride):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 9, 11, generator=g)
    w = torch.randn(4, 5, 3, 3, generator=g)
    b = torch.randn(4, generator=g)
    ref = F.conv2d(x, w, b, stride=stride, padding=1)
    off = torch.zeros(2, 18, *ref.shape[-2:])
    mask = torch.ones(2, 9, *ref.shape[-2:])
    out = deform_conv2d(x, off, w, b, stride=stride, padding=1, mask=mask)
    assert (out - ref).abs().max().item() < 1e-5


def test_matches_naive_bilinear_reference_on_random_offsets():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    off = 2.5 * torch.randn(2, 18, 6, 7, generator=g, dtype=torch.float64)  # many samples leave the image
    mask = 2 * torch.rand(2, 9, 6, 7, generator=g, dtype=torch.float64)
    out = deform_conv2d(x, off, w, None, stride=1, padding=1, mask=mask)
    ref = _naive(x, off, w, mask, 1, 1)
    assert (out - ref).abs().max().item() < 1e-5
    assert (out.float() - ref.float()).abs().max().item() < 1e-5


def test_offset_layout_is_dy_then_dx():
    # One-tap kernel (centre tap only): offset channel 2t moves the sample along y, 2t+1 along x.
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 3, 2] = 1.0  # one pixel below the centre
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 1, 1] = 1.0
    off = torch.zeros(1, 18, 5, 5)
    off[0, 2 * 4, 2, 2] = 1.0  # Δy = +1 for the centre tap at output (2, 2)
    out = deform_conv2d(x, off, w, padding=1, mask=torch.ones(1, 9, 5, 5))
    assert out[0, 0, 2, 2].item() == pytest.approx(1.0)
    off2 = torch.zeros(1, 18, 5, 5)
    off2[0, 2 * 4 + 1, 2, 2] = 1.0  # Δx = +1 reads (2, 3), which is 0
    assert deform_conv2d(x, off2, w, padding=1, mask=torch.ones(1, 9, 5, 5))[0, 0, 2, 2].item() == pytest.approx(0.0)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    # Offsets away from integer positions: bilinear sampling is not differentiable exactly on the grid.
    off = (0.3 + 0.4 * torch.rand(1, 18, 4, 4, generator=g, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(1, 9, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: deform_conv2d(a[0], a[1], a[2], a[3], padding=1, mask=a[4]), (x, off, w, b, mask),
        eps=1e-6, atol=1e-5)


def test_fresh_module_is_a_plain_convolution():
    m = DeformableConv2d(4, 6)
    x = torch.randn(1, 4, 8, 8)
    ref = F.conv2d(x, m.regular_conv.weight, None, padding=1)
    assert (m(x) - ref).abs().max().item() < 1e-5


def test_bad_offset_shape_raises():
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(torch.zeros(1, 2, 4, 4), torch.zeros(1, 17, 4, 4), torch.zeros(1, 2, 3, 3), padding=1)
