"""From raw head outputs to face detections: the upstream WIDER test pipeline.

Steps (``test_widerface.py`` of the reference, with its optional ``top_k`` / ``keep_top_k`` made to work):
decode boxes and landmarks against the anchors, scale to pixels of the network input and divide by ``scale``;
score = ``softmax(logits)[:, 1]``; keep scores ``> score_threshold`` (strict); sort by descending score with
``scores.argsort()[::-1]``; optional ``top_k`` cut; greedy NMS with the "+1" pixel convention; optional
``keep_top_k`` cut. Arithmetic is float32 in the reference's order, so the upstream detections are reproduced.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from featherface.geometry.boxes import VARIANCES, decode_boxes, decode_landmarks
from featherface.geometry.nms import nms_np

__all__ = ["Detections", "postprocess", "postprocess_batch"]


class Detections(NamedTuple):
    """Detections of one image, by descending score (NumPy float32 arrays).

    Attributes:
        boxes: ``[K, 4]`` ``(x1, y1, x2, y2)`` in pixels of the original image (network input pixels / ``scale``).
        scores: ``[K]`` face probability in ``(score_threshold, 1]``.
        landmarks: ``[K, 10]`` five ``(x, y)`` points in the same pixels as ``boxes`` (left eye, right eye, nose,
            left mouth corner, right mouth corner).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


def _check_shapes(loc: Tensor, logits: Tensor, landmarks: Tensor, anchors: Tensor) -> None:
    a = anchors.shape[0]
    for name, t, k in (("loc", loc, 4), ("logits", logits, 2), ("landmarks", landmarks, 10), ("anchors", anchors, 4)):
        if t.ndim != 2 or t.shape != (a, k):
            raise ValueError(f"{name} must be Tensor[A={a}, {k}], got shape {tuple(t.shape)}")


def postprocess(
    loc: Tensor,
    logits: Tensor,
    landmarks: Tensor,
    anchors: Tensor,
    image_size: Sequence[int],
    *,
    score_threshold: float = 0.02,
    nms_threshold: float = 0.4,
    top_k: int | None = None,
    keep_top_k: int | None = None,
    scale: float = 1.0,
    variances: Sequence[float] = VARIANCES,
) -> Detections:
    """Decode, threshold, sort and NMS the outputs of one image.

    Args:
        loc: ``Tensor[A, 4]`` box-head outputs.
        logits: ``Tensor[A, 2]`` class logits (background, face).
        landmarks: ``Tensor[A, 10]`` landmark-head outputs.
        anchors: ``Tensor[A, 4]`` ``cxcywh`` normalised, from ``make_anchors(image_size)``.
        image_size: ``(height, width)`` of the network input in pixels.
        score_threshold: keep ``score > score_threshold``.
        nms_threshold: greedy NMS IoU threshold ("+1" convention).
        top_k: keep at most this many best-scoring candidates before NMS (``None``: all, as upstream).
        keep_top_k: keep at most this many detections after NMS (``None``: all, as upstream).
        scale: resize factor applied to the original image before the network (pixels are divided by it).
        variances: box / landmark parametrisation.

    Returns:
        :class:`Detections` in original-image pixels.
    """
    _check_shapes(loc, logits, landmarks, anchors)
    height, width = (int(v) for v in image_size)
    with torch.no_grad():
        dev = loc.device
        # Threshold first, then decode only the candidates (at 640×480 typically tens of 12,600 anchors).
        dtype = torch.promote_types(loc.dtype, anchors.dtype)  # the decoded boxes' dtype, as before
        scores = torch.softmax(logits.detach().to(dtype), dim=-1)[:, 1]
        cand = torch.nonzero(scores > score_threshold).squeeze(1)
        loc_c, lm_c, anchors_c = loc.detach()[cand], landmarks.detach()[cand], anchors[cand]
        boxes = decode_boxes(loc_c, anchors_c, variances)
        box_scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=dev)
        boxes = boxes * box_scale / scale
        points = decode_landmarks(lm_c, anchors_c, variances)
        point_scale = torch.tensor([width, height] * 5, dtype=points.dtype, device=dev)
        points = points * point_scale / scale
        scores = scores[cand]
    boxes_np = boxes.cpu().numpy()
    points_np = points.cpu().numpy()
    scores_np = scores.cpu().numpy()

    order = scores_np.argsort()[::-1]
    if top_k is not None:
        order = order[: int(top_k)]
    boxes_np, points_np, scores_np = boxes_np[order], points_np[order], scores_np[order]
    keep = nms_np(boxes_np, scores_np, nms_threshold, pixel_offset=1.0)
    if keep_top_k is not None:
        keep = keep[: int(keep_top_k)]
    return Detections(
        boxes=np.ascontiguousarray(boxes_np[keep]),
        scores=np.ascontiguousarray(scores_np[keep]),
        landmarks=np.ascontiguousarray(points_np[keep]),
    )


def postprocess_batch(
    loc: Tensor,
    logits: Tensor,
    landmarks: Tensor,
    anchors: Tensor,
    image_size: Sequence[int],
    *,
    scale: float | Sequence[float] = 1.0,
    **kwargs,
) -> list[Detections]:
    """:func:`postprocess` for each image of a batch.

    Args:
        loc, logits, landmarks: ``Tensor[B, A, 4]``, ``Tensor[B, A, 2]``, ``Tensor[B, A, 10]``.
        anchors: ``Tensor[A, 4]`` shared by the batch (all inputs are ``image_size``).
        scale: one factor for the batch or one per image.
        **kwargs: forwarded to :func:`postprocess` (thresholds, ``top_k``, ``keep_top_k``).

    Returns:
        ``B`` :class:`Detections`.
    """
    if loc.ndim != 3 or logits.ndim != 3 or landmarks.ndim != 3:
        raise ValueError(
            "batched outputs must be [B, A, k]; got shapes "
            f"{tuple(loc.shape)}, {tuple(logits.shape)}, {tuple(landmarks.shape)}"
        )
    b = loc.shape[0]
    scales = [float(scale)] * b if isinstance(scale, (int, float)) else [float(s) for s in scale]
    if len(scales) != b:
        raise ValueError(f"scale has {len(scales)} values for a batch of {b}")
    return [
        postprocess(loc[i], logits[i], landmarks[i], anchors, image_size, scale=scales[i], **kwargs) for i in range(b)
    ]
