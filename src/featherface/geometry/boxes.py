"""Pure tensor box and landmark operations.

Conventions (every function states its own):

* ``xyxy``: ``(x1, y1, x2, y2)`` corners; ``cxcywh``: ``(cx, cy, w, h)`` centre and size.
* Anchors are ``Tensor[A, 4]`` in ``cxcywh``, normalised to ``[0, 1]`` by image width/height
  (see :func:`featherface.geometry.anchors.make_anchors`).
* Regression offsets use the SSD/RetinaFace parametrisation with the variances of the model's
  :class:`~featherface.geometry.anchors.AnchorSpec` (``VARIANCES``: those of :data:`~featherface.geometry.anchors.DEFAULT_ANCHORS`).
* IoU here uses the continuous convention (area = w * h); the "+1 pixel" convention only exists in NMS
  (:mod:`featherface.geometry.nms`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from featherface.geometry.decode import MAX_LOG_SCALE, VARIANCES, cxcywh_to_xyxy, decode_boxes, decode_landmarks
from featherface.geometry.decode import check_anchors as _check_anchors

__all__ = [
    "VARIANCES",
    "MAX_LOG_SCALE",
    "box_iou",
    "box_iou_np",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
    "encode_boxes",
    "decode_boxes",
    "encode_landmarks",
    "decode_landmarks",
]

#: Smallest box side used in ``log`` by :func:`encode_boxes`, so degenerate (zero-size) boxes encode finitely.
_MIN_ENCODE_SIZE: float = 1e-8


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` ``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``, same unit."""
    return torch.cat(((boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]), dim=-1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of ``a: Tensor[N, 4]`` and ``b: Tensor[M, 4]``, both ``xyxy`` in the same unit.

    Continuous convention: area = ``(x2 - x1) * (y2 - y1)``. Returns ``Tensor[N, M]`` in ``[0, 1]``; pairs whose
    union is 0 (two empty boxes) get 0.
    """
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def box_iou_np(a: np.ndarray, b: np.ndarray, *, pixel_offset: float = 0.0) -> np.ndarray:
    """NumPy pairwise IoU of ``a: [N, 4]`` and ``b: [M, 4]`` ``xyxy`` boxes -> ``[N, M]``.

    ``pixel_offset=0.0`` is the continuous convention (as :func:`box_iou`), ``1.0`` the "+1" pixel convention.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    area_a = np.maximum(0.0, a[:, 2] - a[:, 0] + pixel_offset) * np.maximum(0.0, a[:, 3] - a[:, 1] + pixel_offset)
    area_b = np.maximum(0.0, b[:, 2] - b[:, 0] + pixel_offset) * np.maximum(0.0, b[:, 3] - b[:, 1] + pixel_offset)
    w = np.maximum(0.0, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + pixel_offset)
    h = np.maximum(0.0, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + pixel_offset)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0).astype(np.result_type(a, b, np.float32))


def encode_boxes(matched_xyxy: Tensor, anchors: Tensor, variances: Sequence[float] = VARIANCES) -> Tensor:
    """Regression targets of boxes w.r.t. their anchors.

    Args:
        matched_xyxy: ``Tensor[..., A, 4]`` boxes ``xyxy``, normalised like the anchors.
        anchors: ``Tensor[A, 4]`` ``cxcywh`` normalised.
        variances: ``(v_centre, v_size)``.

    Returns:
        ``Tensor[..., A, 4]`` offsets ``((gcx - cx) / (v0 * w), (gcy - cy) / (v0 * h), log(gw / w) / v1,
        log(gh / h) / v1)``. Box sides are clamped to a tiny positive value before ``log``.
    """
    _check_anchors(anchors, matched_xyxy, 4, "matched_xyxy")
    v0, v1 = float(variances[0]), float(variances[1])
    g = xyxy_to_cxcywh(matched_xyxy)
    centre = (g[..., :2] - anchors[:, :2]) / (v0 * anchors[:, 2:])
    size = torch.log(g[..., 2:].clamp(min=_MIN_ENCODE_SIZE) / anchors[:, 2:]) / v1
    return torch.cat((centre, size), dim=-1)


def encode_landmarks(landmarks: Tensor, anchors: Tensor, variances: Sequence[float] = VARIANCES) -> Tensor:
    """Landmark regression targets.

    Args:
        landmarks: ``Tensor[..., A, 10]`` five ``(x, y)`` points (left eye, right eye, nose, left mouth corner,
            right mouth corner), normalised like the anchors.
        anchors: ``Tensor[A, 4]`` ``cxcywh`` normalised.

    Returns:
        ``Tensor[..., A, 10]`` offsets ``((x - cx) / (v0 * w), (y - cy) / (v0 * h))`` per point.
    """
    _check_anchors(anchors, landmarks, 10, "landmarks")
    v0 = float(variances[0])
    points = landmarks.unflatten(-1, (5, 2))
    out = (points - anchors[:, None, :2]) / (v0 * anchors[:, None, 2:])
    return out.flatten(-2)
