"""Decoding head outputs against anchors: the inverse of the box / landmark encoding, written once for NumPy arrays
and torch tensors alike (the API and the ONNX Runtime backend decode NumPy outputs without torch; training, the
in-graph post-processing of ONNX exports and the tests decode tensors).

Anchors are ``[A, 4]`` ``cxcywh`` normalised by the image width/height; variances are the model's
:class:`~featherface.geometry.anchors.AnchorSpec` ``(v_centre, v_size)``. The arithmetic is the same sequence of
float32 (or float64) operations for both array types, so NumPy and torch agree to the last bit except where their
``exp`` implementations round differently (at most one unit in the last place).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from featherface.geometry.anchors import DEFAULT_ANCHORS

__all__ = ["VARIANCES", "MAX_LOG_SCALE", "cxcywh_to_xyxy", "decode_boxes", "decode_landmarks"]

#: Default variances ``(v_centre, v_size)`` of the box / landmark parametrisation (``cfg_mnet['variance']``);
#: models carry their own in their :class:`~featherface.geometry.anchors.AnchorSpec`.
VARIANCES: tuple[float, float] = DEFAULT_ANCHORS.variances

#: Upper clamp of ``loc[..., 2:] * v_size`` before ``exp`` in :func:`decode_boxes`: a box at most 10,000x its anchor.
#: Far beyond any real face (so reference decodes are unchanged), it only keeps ``exp`` finite in float32.
MAX_LOG_SCALE: float = math.log(1e4)


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch"


class _Ops:
    """The four operations decoding needs, for NumPy or torch."""

    def __init__(self, like: Any) -> None:
        self.torch = _is_tensor(like)
        if self.torch:
            import torch

            self.exp: Callable = torch.exp
            self.cat: Callable = lambda parts: torch.cat(parts, dim=-1)
            self.min: Callable = lambda x, hi: x.clamp(max=hi)
        else:
            self.exp = np.exp
            self.cat = lambda parts: np.concatenate(parts, axis=-1)
            self.min = np.minimum

    def as_float(self, data: Any, anchors: Any) -> tuple[Any, Any]:
        """``data`` in float32 (float64 stays float64) and ``anchors`` in the same dtype (and device)."""
        if self.torch:
            import torch

            dtype = torch.float64 if data.dtype == torch.float64 else torch.float32
            data = data.to(dtype)
            return data, anchors.to(device=data.device, dtype=dtype)
        data = np.asarray(data)
        np_dtype: Any = np.float64 if data.dtype == np.float64 else np.float32
        return data.astype(np_dtype, copy=False), np.asarray(anchors).astype(np_dtype, copy=False)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in x.shape)


def check_anchors(anchors: Any, data: Any, last: int, what: str) -> None:
    """``anchors`` must be ``[A, 4]`` and ``data`` ``[..., A, last]`` (a one-line ``ValueError`` otherwise)."""
    if anchors.ndim != 2 or anchors.shape[-1] != 4:
        raise ValueError(f"anchors must be Tensor[A, 4], got shape {_shape(anchors)}")
    if data.ndim < 2 or data.shape[-1] != last or data.shape[-2] != anchors.shape[0]:
        raise ValueError(f"{what} must be Tensor[..., A={anchors.shape[0]}, {last}], got shape {_shape(data)}")


def cxcywh_to_xyxy(boxes: Any) -> Any:
    """``[..., 4]`` ``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``, same unit (array or tensor).

    ``x1 = cx - w / 2`` and ``x2 = x1 + w`` (the reference decode's order of operations).
    """
    xy1 = boxes[..., :2] - boxes[..., 2:] / 2
    return _Ops(boxes).cat((xy1, xy1 + boxes[..., 2:]))


def decode_boxes(loc: Any, anchors: Any, variances: Sequence[float] = VARIANCES) -> Any:
    """Boxes from regression outputs (inverse of :func:`featherface.geometry.boxes.encode_boxes`).

    Args:
        loc: ``[..., A, 4]`` raw box-head outputs (NumPy array or tensor).
        anchors: ``[A, 4]`` ``cxcywh`` normalised (same kind as ``loc``).

    Returns:
        ``[..., A, 4]`` ``xyxy`` normalised to ``[0, 1]`` by image width/height (multiply by ``[W, H, W, H]`` for
        pixels), computed in float32 (float64 if ``loc`` is float64). ``loc[..., 2:] * v1`` is clamped at
        :data:`MAX_LOG_SCALE` before ``exp``.
    """
    check_anchors(anchors, loc, 4, "loc")
    ops = _Ops(loc)
    loc, anchors = ops.as_float(loc, anchors)
    v0, v1 = float(variances[0]), float(variances[1])
    centre = anchors[:, :2] + loc[..., :2] * v0 * anchors[:, 2:]
    size = anchors[:, 2:] * ops.exp(ops.min(loc[..., 2:] * v1, MAX_LOG_SCALE))
    xy1 = centre - size / 2
    return ops.cat((xy1, xy1 + size))


def decode_landmarks(pred: Any, anchors: Any, variances: Sequence[float] = VARIANCES) -> Any:
    """Landmarks from landmark-head outputs (inverse of :func:`featherface.geometry.boxes.encode_landmarks`).

    Args:
        pred: ``[..., A, 10]`` raw landmark-head outputs (NumPy array or tensor).
        anchors: ``[A, 4]`` ``cxcywh`` normalised.

    Returns:
        ``[..., A, 10]`` five ``(x, y)`` points normalised by image width/height (multiply by ``[W, H] * 5`` for
        pixels), in float32 (float64 if ``pred`` is float64).
    """
    check_anchors(anchors, pred, 10, "pred")
    ops = _Ops(pred)
    pred, anchors = ops.as_float(pred, anchors)
    v0 = float(variances[0])
    points = pred.reshape(*pred.shape[:-1], 5, 2)
    points = anchors[:, None, :2] + points * v0 * anchors[:, None, 2:]
    return points.reshape(*points.shape[:-2], 10)
