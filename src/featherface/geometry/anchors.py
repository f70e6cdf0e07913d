"""Anchor (prior) generation for the FeatherFace / RetinaFace heads.

Anchors are ``(cx, cy, w, h)`` normalised by the image width (x, w) and height (y, h). Level ``k`` (stride
``steps[k]``) has a ``ceil(H / s) x ceil(W / s)`` grid; the order is level -> row -> column -> min_size, which is the
order in which the heads flatten their outputs (NHWC, anchor fastest), so anchor ``n`` corresponds to output row ``n``.
Anchors are square in pixels and not clipped to the image.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["DEFAULT_STEPS", "DEFAULT_MIN_SIZES", "make_anchors", "num_anchors"]

DEFAULT_STEPS: tuple[int, ...] = (8, 16, 32)
DEFAULT_MIN_SIZES: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))


def _normalise_args(
    image_size: Sequence[int], steps: Sequence[int], min_sizes: Sequence[Sequence[int]]
) -> tuple[tuple[int, int], tuple[int, ...], tuple[tuple[int, ...], ...]]:
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (height, width), got {tuple(image_size)!r}")
    height, width = (int(v) for v in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got (height={height}, width={width})")
    steps_t = tuple(int(s) for s in steps)
    sizes_t = tuple(tuple(int(m) for m in level) for level in min_sizes)
    if len(steps_t) != len(sizes_t):
        raise ValueError(f"steps ({len(steps_t)} levels) and min_sizes ({len(sizes_t)} levels) differ in length")
    if any(s <= 0 for s in steps_t):
        raise ValueError(f"steps must be positive, got {steps_t!r}")
    return (height, width), steps_t, sizes_t


def num_anchors(
    image_size: Sequence[int],
    steps: Sequence[int] = DEFAULT_STEPS,
    min_sizes: Sequence[Sequence[int]] = DEFAULT_MIN_SIZES,
) -> int:
    """Number of anchors ``A = sum_k len(min_sizes[k]) * ceil(H / steps[k]) * ceil(W / steps[k])``.

    ``image_size`` is ``(height, width)`` in pixels. 640x640 -> 16,800; H=405, W=700 -> 11,836.
    """
    (height, width), steps_t, sizes_t = _normalise_args(image_size, steps, min_sizes)
    return sum(len(m) * math.ceil(height / s) * math.ceil(width / s) for s, m in zip(steps_t, sizes_t))


@lru_cache(maxsize=32)
def _anchors_cpu_f64(
    image_size: tuple[int, int], steps: tuple[int, ...], min_sizes: tuple[tuple[int, ...], ...]
) -> Tensor:
    height, width = image_size
    levels = []
    for step, sizes in zip(steps, min_sizes):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        # float64 arithmetic in the same order as the reference ((j + 0.5) * step / W), rounded once at the end.
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        size = torch.tensor(sizes, dtype=torch.float64)
        n = len(sizes)
        level = torch.empty(rows, cols, n, 4, dtype=torch.float64)
        level[..., 0] = cx.view(1, cols, 1)
        level[..., 1] = cy.view(rows, 1, 1)
        level[..., 2] = (size / width).view(1, 1, n)
        level[..., 3] = (size / height).view(1, 1, n)
        levels.append(level.reshape(-1, 4))
    out = torch.cat(levels, dim=0) if levels else torch.zeros(0, 4, dtype=torch.float64)
    out.requires_grad_(False)
    return out


def make_anchors(
    image_size: Sequence[int],
    steps: Sequence[int] = DEFAULT_STEPS,
    min_sizes: Sequence[Sequence[int]] = DEFAULT_MIN_SIZES,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Anchors for an input of ``image_size = (height, width)`` pixels.

    Returns:
        ``Tensor[A, 4]`` of ``(cx, cy, w, h)`` normalised to ``[0, 1]`` by the image width/height (``cx``/``w`` by
        width, ``cy``/``h`` by height), ``A = num_anchors(image_size, steps, min_sizes)``; order level -> row ->
        column -> min_size. Values are computed in float64 and rounded once to ``dtype`` (cached per size; the
        returned tensor is a fresh copy).
    """
    key = _normalise_args(image_size, steps, min_sizes)
    return _anchors_cpu_f64(*key).to(device=device, dtype=dtype, copy=True)
