"""Anchor (prior) generation for the FeatherFace / RetinaFace heads.

Anchors are ``(cx, cy, w, h)`` normalised by the image width (x, w) and height (y, h). Level ``k`` (stride
``steps[k]``) has a ``ceil(H / s) x ceil(W / s)`` grid; the order is level -> row -> column -> min_size, which is the
order in which the heads flatten their outputs (NHWC, anchor fastest), so anchor ``n`` corresponds to output row ``n``.
Anchors are square in pixels; with ``clip`` (upstream ``cfg['clip']``, off for FeatherFace) their normalised values
are clamped to ``[0, 1]``.

:class:`AnchorSpec` is the anchor contract of a model (steps, min sizes, variances, clip). It lives in the model config
(``model.config.anchor_spec``; the fields ``steps``, ``min_sizes``, ``variances``, ``clip`` of every model config) and
is read by the loss, the API, the ONNX export (metadata and in-graph anchors), the ONNX Runtime backend and the
in-graph post-processing; :data:`DEFAULT_ANCHORS` (upstream ``cfg_mnet``) is the one place its default values live.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import Tensor

__all__ = ["AnchorSpec", "DEFAULT_ANCHORS", "DEFAULT_STEPS", "DEFAULT_MIN_SIZES", "anchor_spec_of", "make_anchors",
           "make_anchors_np", "num_anchors"]


@dataclass(frozen=True)
class AnchorSpec:
    """The anchor contract between a model's heads and everything that decodes them.

    steps: stride of each level (its grid is ``ceil(H / s) x ceil(W / s)``).
    min_sizes: square anchor sides in pixels, per level (the heads predict ``len(min_sizes[k])`` anchors per cell).
    variances: ``(v_centre, v_size)`` of the box / landmark parametrisation.
    clip: clamp the normalised anchors to ``[0, 1]`` (upstream ``cfg['clip']``).
    """

    steps: tuple[int, ...] = (8, 16, 32)
    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    variances: tuple[float, float] = (0.1, 0.2)
    clip: bool = False

    def __post_init__(self) -> None:
        steps = tuple(int(s) for s in self.steps)
        sizes = tuple(tuple(int(m) for m in level) for level in self.min_sizes)
        variances = tuple(float(v) for v in self.variances)
        if len(steps) != len(sizes):
            raise ValueError(f"steps ({len(steps)} levels) and min_sizes ({len(sizes)} levels) differ in length")
        if len(variances) != 2:
            raise ValueError(f"variances must be (v_centre, v_size), got {variances!r}")
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "min_sizes", sizes)
        object.__setattr__(self, "variances", variances)
        object.__setattr__(self, "clip", bool(self.clip))

    @classmethod
    def from_config(cls, config: Any) -> AnchorSpec:
        """The spec of a model config (its ``steps``, ``min_sizes``, ``variances`` and ``clip`` fields)."""
        return cls(steps=config.steps, min_sizes=config.min_sizes, variances=config.variances, clip=config.clip)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "min_sizes": [list(m) for m in self.min_sizes],
                "variances": list(self.variances), "clip": self.clip}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AnchorSpec:
        """Read :meth:`to_dict` output (ONNX metadata); ``clip`` absent (older exports) means False."""
        missing = [k for k in ("steps", "min_sizes", "variances") if k not in values]
        if missing:
            raise ValueError(f"anchor spec lacks {', '.join(missing)}")
        return cls(steps=values["steps"], min_sizes=values["min_sizes"], variances=values["variances"],
                   clip=bool(values.get("clip", False)))

    def anchors(self, image_size: Sequence[int], *, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> Tensor:
        """:func:`make_anchors` for this spec (a torch tensor, float32 unless ``dtype``)."""
        return make_anchors(image_size, self.steps, self.min_sizes, clip=self.clip, device=device, dtype=dtype)

    def anchors_np(self, image_size: Sequence[int], dtype: Any = np.float32) -> np.ndarray:
        """:func:`make_anchors_np` for this spec (no torch needed)."""
        return make_anchors_np(image_size, self.steps, self.min_sizes, clip=self.clip, dtype=dtype)

    def num_anchors(self, image_size: Sequence[int]) -> int:
        return num_anchors(image_size, self.steps, self.min_sizes)

    @property
    def anchors_per_cell(self) -> tuple[int, ...]:
        return tuple(len(m) for m in self.min_sizes)


#: Upstream ``cfg_mnet``: the spec of FeatherFace V1 / V2 and RetinaFace-MobileNet0.25.
DEFAULT_ANCHORS = AnchorSpec()
DEFAULT_STEPS: tuple[int, ...] = DEFAULT_ANCHORS.steps
DEFAULT_MIN_SIZES: tuple[tuple[int, ...], ...] = DEFAULT_ANCHORS.min_sizes


def anchor_spec_of(model: Any) -> AnchorSpec:
    """The :class:`AnchorSpec` of a model: its ``anchor_spec`` attribute (ONNX Runtime models, adapters) or its
    config's. A model without either is an error: decoding with guessed anchors gives silently wrong boxes."""
    spec = getattr(model, "anchor_spec", None)
    if spec is None:
        config = getattr(model, "config", None)
        spec = getattr(config, "anchor_spec", None)
    if not isinstance(spec, AnchorSpec):
        from featherface.errors import FeatherFaceError

        raise FeatherFaceError(f"{type(model).__name__} has no anchor spec: build it with featherface.models."
                               "build_model, or give it an `anchor_spec = AnchorSpec(...)` attribute")
    return spec


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
def _anchors_f64(
    image_size: tuple[int, int], steps: tuple[int, ...], min_sizes: tuple[tuple[int, ...], ...], clip: bool = False
) -> np.ndarray:
    height, width = image_size
    levels = []
    for step, sizes in zip(steps, min_sizes):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        # float64 arithmetic in the same order as the reference ((j + 0.5) * step / W), rounded once by the caller.
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        size = np.asarray(sizes, dtype=np.float64)
        n = len(sizes)
        level = np.empty((rows, cols, n, 4), dtype=np.float64)
        level[..., 0] = cx.reshape(1, cols, 1)
        level[..., 1] = cy.reshape(rows, 1, 1)
        level[..., 2] = (size / width).reshape(1, 1, n)
        level[..., 3] = (size / height).reshape(1, 1, n)
        levels.append(level.reshape(-1, 4))
    out = np.concatenate(levels, axis=0) if levels else np.zeros((0, 4), dtype=np.float64)
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    out.flags.writeable = False  # cached: shared by every caller
    return out


def make_anchors_np(
    image_size: Sequence[int],
    steps: Sequence[int] = DEFAULT_STEPS,
    min_sizes: Sequence[Sequence[int]] = DEFAULT_MIN_SIZES,
    *,
    clip: bool = False,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Anchors for an input of ``image_size = (height, width)`` pixels, as a NumPy array.

    Returns:
        ``[A, 4]`` of ``(cx, cy, w, h)`` normalised to ``[0, 1]`` by the image width/height (``cx``/``w`` by
        width, ``cy``/``h`` by height), ``A = num_anchors(image_size, steps, min_sizes)``; order level -> row ->
        column -> min_size. Values are computed in float64 (clamped to ``[0, 1]`` with ``clip``) and rounded once
        to ``dtype`` (cached per size; the returned array is a fresh copy).
    """
    key = _normalise_args(image_size, steps, min_sizes)
    return _anchors_f64(*key, bool(clip)).astype(dtype, copy=True)


def make_anchors(
    image_size: Sequence[int],
    steps: Sequence[int] = DEFAULT_STEPS,
    min_sizes: Sequence[Sequence[int]] = DEFAULT_MIN_SIZES,
    *,
    clip: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """:func:`make_anchors_np` as a ``Tensor[A, 4]`` (float32 unless ``dtype``) on ``device``: the same values."""
    import torch

    key = _normalise_args(image_size, steps, min_sizes)
    return torch.from_numpy(_anchors_f64(*key, bool(clip)).copy()).to(device=device, dtype=dtype or torch.float32)
