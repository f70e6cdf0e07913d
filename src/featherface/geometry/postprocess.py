"""Post-processing: the one place where raw head outputs become face detections.

Two steps, used by :class:`featherface.api.FaceDetector` (and so by every eval protocol, the ONNX Runtime backend and
the CLI), by :mod:`featherface.eval.protocols` (several passes, flipped ones included, merged) and by the tests:

1. :func:`decode_detections` -- one network pass: ``score = softmax(logits)[:, 1]``; keep ``score >
   score_threshold`` (strict); decode boxes and landmarks of those candidates against the anchors (variances of the
   :class:`~featherface.geometry.anchors.AnchorSpec`); scale to pixels of the original image (network-input pixels
   divided by ``scale``); undo a horizontal flip (boxes mirrored, landmark pairs swapped); sort by descending score
   with ``scores.argsort()[::-1]`` (the upstream order, ties as NumPy's quicksort gives them).
2. :func:`select_detections` -- candidates (one pass or several pooled): sort (unless already sorted) → optional
   ``top_k`` cut → greedy NMS with the upstream "+1" pixel convention (:data:`NMS_PIXEL_OFFSET`) → optional
   ``keep_top_k`` cut.

:func:`postprocess` is both steps for one pass. The in-graph version for ONNX exports is
:mod:`featherface.export.postprocess_graph` (same decoding code, ONNX ``NonMaxSuppression`` with the same "+1" IoU).
Arithmetic is float32 in a fixed order, so results are reproducible bit for bit. The same formulas
(:mod:`featherface.geometry.decode`) run on NumPy arrays (no torch needed) or on tensors (torch's ``exp`` and
``softmax``, which can differ from NumPy's by an ulp or two).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from featherface.geometry.landmarks import mirror_points
from featherface.geometry.nms import nms_np

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["NMS_PIXEL_OFFSET", "Detections", "face_scores", "decode_detections", "select_detections", "postprocess",
           "postprocess_batch"]

#: The NMS IoU convention of every path (upstream ``py_cpu_nms``): box sides are ``x2 - x1 + 1``.
NMS_PIXEL_OFFSET: float = 1.0


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


def _empty() -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 10), np.float32))


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch"


def _check_shapes(loc: Any, logits: Any, landmarks: Any, anchors: Any) -> None:
    a = anchors.shape[0]
    for name, t, k in (("loc", loc, 4), ("logits", logits, 2), ("landmarks", landmarks, 10), ("anchors", anchors, 4)):
        if t.ndim != 2 or t.shape != (a, k):
            raise ValueError(f"{name} must be Tensor[A={a}, {k}], got shape {tuple(t.shape)}")


def face_scores(logits: np.ndarray) -> np.ndarray:
    """``softmax(logits)[:, 1]`` of ``[A, 2]`` float32 logits (max-subtracted, as ``torch.softmax``) -> ``[A]``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e[:, 1] / (e[:, 0] + e[:, 1])


#: Margin (in logit units) of the cheap pre-selection in :func:`_numpy_keep`: rows whose logit difference is below
#: ``logit(t) - margin`` have a face probability under the threshold ``t`` even after float32 rounding. A few ulp of
#: relative error on the computed score ``p`` are ``~5e-7 / (1 - p)`` in logit units, so the margin is
#: ``1e-3 + 1e-5 / (1 - t)`` (20x that bound near ``t``, plus room for the rounding of ``l1 - l0`` itself).
_LOGIT_MARGIN = 1e-3


def _numpy_keep(logits: np.ndarray, score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ascending) of the anchors with ``face_scores(logits) > score_threshold`` and their scores, bit for bit
    those of :func:`face_scores` on all rows, but computed only on the rows that can pass: ``softmax[:, 1] > t`` iff
    ``l1 - l0 > log(t / (1 - t))``, so one subtraction and compare over every anchor pre-selects the few candidates
    (with a safety margin) and the exact softmax runs on those alone (issue 18: ~0.5 ms less at 640×480)."""
    t = float(score_threshold)
    if 0.0 < t < 1.0:
        cut = np.float32(np.log(t / (1.0 - t)) - _LOGIT_MARGIN - 1e-5 / (1.0 - t))
        rows = np.flatnonzero((logits[:, 1] - logits[:, 0]) > cut)
        scores = face_scores(logits[rows])
        ok = scores > t
        return rows[ok], scores[ok]
    scores = face_scores(logits)
    rows = np.flatnonzero(scores > t)
    return rows, scores[rows]


def decode_detections(
    loc: Any,
    logits: Any,
    landmarks: Any,
    anchors: Any,
    input_size: Sequence[int],
    *,
    variances: Sequence[float],
    score_threshold: float = 0.02,
    scale: float = 1.0,
    flip: bool = False,
) -> Detections:
    """Candidates of one network pass (step 1 of the module docstring), before NMS.

    Args:
        loc, logits, landmarks: ``[A, 4]``, ``[A, 2]``, ``[A, 10]`` head outputs of one image: NumPy arrays
            (decoded by NumPy, no torch needed: the ONNX Runtime path) or tensors on any device (decoded by torch).
        anchors: ``[A, 4]`` ``cxcywh`` normalised, for ``input_size``.
        input_size: ``(height, width)`` of the network input in pixels.
        variances: the anchor spec's ``(v_centre, v_size)``.
        score_threshold: keep ``score > score_threshold``.
        scale: resize factor from the original image to the network input (pixels are divided by it).
        flip: the network input was the mirrored image; boxes and landmarks are mirrored back.

    Returns:
        :class:`Detections` in original-image pixels, by descending score.
    """
    from featherface.geometry.decode import decode_boxes, decode_landmarks

    _check_shapes(loc, logits, landmarks, anchors)
    h, w = (int(v) for v in input_size)
    sx, sy = w / scale, h / scale  # normalised -> original pixels
    if _is_tensor(loc):  # tensors are decoded by torch (bit-identical to the reference pipeline), then moved
        import torch

        if not _is_tensor(anchors):
            anchors = torch.from_numpy(np.array(anchors, np.float32))  # a copy: cached anchors are read-only
        anchors = anchors.to(loc.device)
        with torch.no_grad():
            scores_t = torch.softmax(logits.detach().float(), dim=-1)[:, 1]
            keep_t = scores_t > score_threshold
            if not bool(keep_t.any()):
                return _empty()
            anchors_k = anchors[keep_t]
            boxes_t = decode_boxes(loc.detach()[keep_t], anchors_k, variances)
            points_t = decode_landmarks(landmarks.detach()[keep_t], anchors_k, variances)
            boxes = (boxes_t * torch.tensor([sx, sy, sx, sy], device=boxes_t.device)).cpu().numpy()
            points = (points_t * torch.tensor([sx, sy] * 5, device=points_t.device)).cpu().numpy()
            scores = scores_t[keep_t].cpu().numpy()
    else:
        keep, scores = _numpy_keep(np.asarray(logits, np.float32), score_threshold)
        if not len(keep):
            return _empty()
        anchors_k = np.asarray(anchors)[keep]
        boxes = decode_boxes(np.asarray(loc)[keep], anchors_k, variances) * np.asarray([sx, sy, sx, sy], np.float32)
        points = decode_landmarks(np.asarray(landmarks)[keep], anchors_k, variances) * np.asarray([sx, sy] * 5,
                                                                                                 np.float32)
    if flip:
        width = w / scale
        boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
        points = mirror_points(points, width)
    order = scores.argsort()[::-1]  # upstream ordering (ties as numpy's quicksort gives them)
    return Detections(boxes[order].astype(np.float32), scores[order].astype(np.float32),
                      points[order].astype(np.float32))


def select_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    landmarks: np.ndarray,
    *,
    nms_threshold: float,
    top_k: int | None = None,
    keep_top_k: int | None = None,
    presorted: bool = False,
) -> Detections:
    """Step 2 of the module docstring: sort → ``top_k`` → greedy NMS ("+1") → ``keep_top_k``.

    Args:
        boxes, scores, landmarks: ``[N, 4]``, ``[N]``, ``[N, 10]`` candidates (any order unless ``presorted``).
        nms_threshold: a box is suppressed by a kept box when their IoU is ``> nms_threshold``.
        top_k / keep_top_k: optional caps on the candidates before / the detections after NMS.
        presorted: the candidates are already by descending score (one :func:`decode_detections` pass); they are
            then not re-sorted (a re-sort could reorder equal scores).

    Returns:
        :class:`Detections` (arrays in the input dtype), by descending score.
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    landmarks = np.asarray(landmarks).reshape(-1, 10)
    if not presorted and len(scores):
        order = scores.argsort()[::-1]
        boxes, scores, landmarks = boxes[order], scores[order], landmarks[order]
    if top_k is not None:
        boxes, scores, landmarks = boxes[: int(top_k)], scores[: int(top_k)], landmarks[: int(top_k)]
    keep = nms_np(boxes, scores, nms_threshold, pixel_offset=NMS_PIXEL_OFFSET)
    if keep_top_k is not None:
        keep = keep[: int(keep_top_k)]
    return Detections(boxes[keep], scores[keep], landmarks[keep])


def postprocess(
    loc: Tensor,
    logits: Tensor,
    landmarks: Tensor,
    anchors: Tensor,
    image_size: Sequence[int],
    *,
    variances: Sequence[float],
    score_threshold: float = 0.02,
    nms_threshold: float = 0.4,
    top_k: int | None = None,
    keep_top_k: int | None = None,
    scale: float = 1.0,
    flip: bool = False,
) -> Detections:
    """:func:`decode_detections` then :func:`select_detections` for one image (``image_size`` = network input
    ``(height, width)``); the defaults are upstream ``test_widerface.py``'s (score > 0.02, NMS 0.4, no caps)."""
    cand = decode_detections(loc, logits, landmarks, anchors, image_size, variances=variances,
                             score_threshold=score_threshold, scale=scale, flip=flip)
    det = select_detections(*cand, nms_threshold=nms_threshold, top_k=top_k, keep_top_k=keep_top_k, presorted=True)
    return Detections(*(np.ascontiguousarray(a) for a in det))


def postprocess_batch(
    loc: Tensor,
    logits: Tensor,
    landmarks: Tensor,
    anchors: Tensor,
    image_size: Sequence[int],
    *,
    scale: float | Sequence[float] = 1.0,
    **kwargs: Any,
) -> list[Detections]:
    """:func:`postprocess` for each image of a batch.

    Args:
        loc, logits, landmarks: ``Tensor[B, A, 4]``, ``Tensor[B, A, 2]``, ``Tensor[B, A, 10]``.
        anchors: ``Tensor[A, 4]`` shared by the batch (all inputs are ``image_size``).
        scale: one factor for the batch or one per image.
        **kwargs: forwarded to :func:`postprocess` (``variances``, thresholds, ``top_k``, ``keep_top_k``).

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
