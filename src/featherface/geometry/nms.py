"""Greedy non-maximum suppression (no torchvision).

The result is exactly that of the reference greedy loop (``py_cpu_nms`` of the upstream test script): visit boxes by
descending score; keep a box unless a previously kept box overlaps it with IoU ``> iou_threshold``. IoU uses
``area = (x2 - x1 + pixel_offset) * (y2 - y1 + pixel_offset)`` and the same offset on the intersection sides
(``pixel_offset=1.0`` is the upstream "+1" convention, ``0.0`` the continuous one); IoU is computed in the input
dtype with the same operations as the reference, so float32 inputs reproduce its decisions bit for bit.

Implementation (two exact paths). Sparse: an x-sweep lists the pairs of boxes that can intersect, their IoU is
computed once and the greedy pass follows the suppressing pairs; used when few pairs meet (the usual case).
Dense: the sorted boxes are processed in blocks; inside a block a small IoU matrix drives the greedy
recursion, and the block's kept boxes then suppress all later boxes in one vectorised step. Cost is
``O(N * K)`` arithmetic (``K`` kept) but only ``O(N)`` Python iterations of cheap work.

Tie order (equal scores):

* :func:`nms_np` by default sorts with ``scores.argsort()[::-1]`` (NumPy's default, unstable introsort, reversed),
  exactly as upstream, so golden outputs made that way are reproduced; ``stable=True`` instead orders ties by
  ascending index (a stable descending sort).
* :func:`nms` (torch) always uses the stable order (ties by ascending index), so its result does not depend on the
  NumPy version or CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["nms", "nms_np"]

_BLOCK = 256
_SPARSE_FRACTION = 0.15  # sparse path when at most this share of all pairs meet in x


def _descending_order(scores: np.ndarray, stable: bool) -> np.ndarray:
    if stable:
        # Stable descending: ascending stable sort of the negated values keeps equal scores in index order.
        return np.argsort(-scores, kind="stable")
    return scores.argsort()[::-1]


def _overlaps(x1, y1, x2, y2, areas, rows, cols, offset):
    """IoU matrix [len(rows), len(cols)] with ``rows`` as the kept box, reference operation order."""
    xx1 = np.maximum(x1[rows, None], x1[None, cols])
    yy1 = np.maximum(y1[rows, None], y1[None, cols])
    xx2 = np.minimum(x2[rows, None], x2[None, cols])
    yy2 = np.minimum(y2[rows, None], y2[None, cols])
    w = np.maximum(0.0, xx2 - xx1 + offset)
    h = np.maximum(0.0, yy2 - yy1 + offset)
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (areas[rows, None] + areas[None, cols] - inter)


_PAIR_CHUNK = 1 << 15  # candidate pairs per step (cache-sized)


def _pair_ovr(x1, y1, x2, y2, areas, a, b, offset):
    """IoU of the pairs ``(a[k], b[k])`` with the reference operation order."""
    w = np.maximum(0.0, np.minimum(x2[a], x2[b]) - np.maximum(x1[a], x1[b]) + offset)
    h = np.maximum(0.0, np.minimum(y2[a], y2[b]) - np.maximum(y1[a], y1[b]) + offset)
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (areas[a] + areas[b] - inter)


def _greedy_sparse(x1, y1, x2, y2, areas, iou_threshold, offset):
    """Greedy NMS on score-sorted boxes from the sparse list of suppressing pairs (needs ``iou_threshold >= 0``).

    Returns the kept positions, or ``None`` when too many boxes meet in x for the sparse path to pay off.
    """
    n = x1.size
    # Sweep along x: in x1 order, box p may meet the boxes p+1 .. stop[p]-1 only.
    by_x = np.argsort(x1, kind="stable")
    xs1 = x1[by_x]
    # Slightly generous bounds so that float rounding can only add candidates, never drop one.
    bound = x2[by_x].astype(np.float64) + offset
    stop = np.searchsorted(xs1.astype(np.float64), bound + 1e-6 * (1.0 + np.abs(bound)), side="left")
    first = np.arange(1, n + 1)
    counts = np.maximum(stop - first, 0)
    if counts.sum() > _SPARSE_FRACTION * n * n:
        return None
    # Candidate test in float32 with a generous margin on the far side: it may keep extra pairs, never drop one.
    ys1 = y1[by_x].astype(np.float32)
    ys2 = y2[by_x].astype(np.float64) + offset
    ys2 = (ys2 + 1e-5 * (1.0 + np.abs(ys2))).astype(np.float32)
    cum = np.cumsum(counts)
    shift = first - (cum - counts)  # candidate k (global running index) of owner p is box k + shift[p]
    src_parts, dst_parts = [], []
    lo = 0
    while lo < n:
        base = int(cum[lo - 1]) if lo else 0
        hi = max(int(np.searchsorted(cum, base + _PAIR_CHUNK, side="right")), lo + 1)
        c = counts[lo:hi]
        total = int(cum[hi - 1]) - base
        if total:
            q = np.arange(base, base + total, dtype=np.int64)
            q += np.repeat(shift[lo:hi], c)
            # Cheap y test on candidates, exact IoU on the survivors only.
            top = np.repeat(ys1[lo:hi], c)
            np.maximum(top, ys1[q], out=top)
            bottom = np.repeat(ys2[lo:hi], c)
            np.minimum(bottom, ys2[q], out=bottom)
            m = np.flatnonzero(top < bottom)
            p = lo + np.searchsorted(cum[lo:hi] - base, m, side="right")
            i = by_x[p]
            j = by_x[q[m]]
            a = np.minimum(i, j)  # earlier in score order = the potential suppressor
            b = np.maximum(i, j)
            hit = _pair_ovr(x1, y1, x2, y2, areas, a, b, offset) > iou_threshold
            src_parts.append(a[hit])
            dst_parts.append(b[hit])
        lo = hi
    suppressed = np.zeros(n, dtype=bool)
    src = np.concatenate(src_parts) if src_parts else np.zeros(0, dtype=np.int64)
    if src.size:
        dst = np.concatenate(dst_parts)
        sort = np.argsort(src, kind="stable")
        src, dst = src[sort], dst[sort]
        nodes, begin = np.unique(src, return_index=True)
        end = np.append(begin[1:], src.size)
        for r, f, e in zip(nodes.tolist(), begin.tolist(), end.tolist()):
            if not suppressed[r]:
                suppressed[dst[f:e]] = True
    return np.flatnonzero(~suppressed)


def _greedy_sorted(boxes: np.ndarray, iou_threshold: float, offset: float) -> np.ndarray:
    """Greedy NMS on boxes already sorted by descending score; returns kept positions (ascending)."""
    n = boxes.shape[0]
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    if iou_threshold >= 0:
        # Boxes that do not meet in x have IoU 0 (or NaN) and cannot suppress each other: when such pairs are the
        # majority, enumerate only the candidate pairs.
        kept = _greedy_sparse(x1, y1, x2, y2, areas, iou_threshold, offset)
        if kept is not None:
            return kept
    suppressed = np.zeros(n, dtype=bool)
    keep: list[np.ndarray] = []
    for start in range(0, n, _BLOCK):
        end = min(start + _BLOCK, n)
        block = np.flatnonzero(~suppressed[start:end]) + start
        if block.size == 0:
            continue
        # NaN IoU (zero union) compares False, i.e. does not suppress, as in the reference.
        hit = _overlaps(x1, y1, x2, y2, areas, block, block, offset) > iou_threshold
        alive = np.ones(block.size, dtype=bool)
        local: list[int] = []
        for t in range(block.size):
            if alive[t]:
                local.append(t)
                alive[t + 1 :] &= ~hit[t, t + 1 :]
        kept = block[local]
        keep.append(kept)
        rest = np.flatnonzero(~suppressed[end:]) + end
        if rest.size:
            suppressed[rest] = (_overlaps(x1, y1, x2, y2, areas, kept, rest, offset) > iou_threshold).any(axis=0)
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def _check(boxes_shape: tuple, scores_shape: tuple) -> None:
    if len(boxes_shape) != 2 or boxes_shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] xyxy, got shape {boxes_shape}")
    if len(scores_shape) != 1 or scores_shape[0] != boxes_shape[0]:
        raise ValueError(f"scores must be [N={boxes_shape[0]}], got shape {scores_shape}")


def nms_np(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    *,
    pixel_offset: float = 1.0,
    stable: bool = False,
) -> np.ndarray:
    """Greedy NMS on NumPy arrays.

    Args:
        boxes: ``[N, 4]`` ``xyxy`` (pixels for the "+1" convention).
        scores: ``[N]``.
        iou_threshold: a box is suppressed by a kept box when their IoU is ``> iou_threshold``.
        pixel_offset: ``1.0`` upstream "+1" convention, ``0.0`` continuous.
        stable: tie order, see the module docstring (default: upstream ``scores.argsort()[::-1]``).

    Returns:
        ``int64 [K]`` indices into ``boxes`` of the kept boxes, by descending score.
    """
    boxes = np.asarray(boxes)
    scores = np.asarray(scores)
    _check(boxes.shape, scores.shape)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order = _descending_order(scores, stable)
    kept = _greedy_sorted(boxes[order], iou_threshold, pixel_offset)
    return order[kept].astype(np.int64, copy=False)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, *, pixel_offset: float = 1.0) -> Tensor:
    """Greedy NMS on tensors (computed on the CPU with NumPy, in the input dtype; float16/bfloat16 use float32).

    Args:
        boxes: ``Tensor[N, 4]`` ``xyxy``.
        scores: ``Tensor[N]``.
        iou_threshold: suppress when IoU ``> iou_threshold``.
        pixel_offset: ``1.0`` upstream "+1" convention, ``0.0`` continuous.

    Returns:
        ``LongTensor[K]`` on ``boxes.device``: kept indices by descending score, ties by ascending index.
    """
    import torch

    _check(tuple(boxes.shape), tuple(scores.shape))
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    if scores.dtype not in (torch.float32, torch.float64):
        scores = scores.float()
    b = boxes.detach().cpu().numpy()
    s = scores.detach().cpu().numpy()
    keep = nms_np(b, s, iou_threshold, pixel_offset=pixel_offset, stable=True)
    return torch.from_numpy(keep).to(device=boxes.device)
