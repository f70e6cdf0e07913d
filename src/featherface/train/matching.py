"""Anchor-to-face matching (RetinaFace / SSD rule, with the upstream defect T8 fixed;
defect codes: docs/upstream-defects.md).

Rule, for ground-truth boxes ``g`` and anchors ``a`` (IoU in corner form, continuous convention):

1. ``best_anchor[j] = argmax_a IoU(g_j, a)``; face ``j`` is *valid* when that best IoU ``>= force_match_min_iou``.
   If no face is valid the whole image is background.
2. Every anchor is assigned its best face ``argmax_j IoU(g_j, a)``.
3. Forced matches: for every **valid** face ``j`` (upstream also did this for invalid ones, defect T8), anchor
   ``best_anchor[j]`` is assigned to ``j`` and made positive; when several faces share a best anchor, the last one
   (highest index) wins, as in the upstream loop.
4. An anchor is positive when its IoU with its assigned face is ``>= positive_iou`` or it was force-matched.
5. **Ignore regions.** The *ignored faces* are the ``ignore_boxes`` (faces flagged invalid or too small in the
   labels) and the faces of ``gt_boxes`` too small to be matched (best IoU ``< force_match_min_iou``). A
   non-positive anchor is *ignored* (neither face nor background: no classification loss, never mined as a hard
   negative) when its IoU with an ignored face ``j`` is ``>= min(positive_iou, best_iou_j)`` and ``> 0``: the
   anchors a face would have been matched to, and for a face too small for any of them, its best anchor(s).
   Everything else is background.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from featherface.geometry.boxes import box_iou, cxcywh_to_xyxy

__all__ = ["MatchResult", "match_anchors"]


class MatchResult(NamedTuple):
    """Assignment of one image's anchors.

    Attributes:
        matched_gt: ``LongTensor[A]`` index of the assigned face (meaningful only where ``positive``; 0 when G = 0).
        positive: ``BoolTensor[A]`` anchors that are faces.
        ignore: ``BoolTensor[A]`` anchors that are neither faces nor background (never positive).
    """

    matched_gt: Tensor
    positive: Tensor
    ignore: Tensor


def match_anchors(
    gt_boxes: Tensor,
    anchors: Tensor,
    *,
    positive_iou: float = 0.35,
    force_match_min_iou: float = 0.2,
    ignore_boxes: Tensor | None = None,
) -> MatchResult:
    """Match anchors to ground-truth faces of one image.

    Args:
        gt_boxes: ``Tensor[G, 4]`` faces ``xyxy`` normalised to ``[0, 1]`` by the input width/height (G may be 0).
        anchors: ``Tensor[A, 4]`` ``cxcywh`` normalised the same way.
        positive_iou: IoU at or above which an anchor is positive.
        force_match_min_iou: a face's best anchor is forced positive only if their IoU is at least this.
        ignore_boxes: ``Tensor[I, 4]`` ignore regions, ``xyxy`` normalised like ``gt_boxes`` (None: none).

    Returns:
        :class:`MatchResult` (fresh tensors on ``anchors.device``).
    """
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"anchors must be Tensor[A, 4], got shape {tuple(anchors.shape)}")
    if gt_boxes.ndim != 2 or gt_boxes.shape[1] != 4:
        raise ValueError(f"gt_boxes must be Tensor[G, 4], got shape {tuple(gt_boxes.shape)}")
    num_a = anchors.shape[0]
    device = anchors.device
    dtype = torch.float64 if anchors.dtype == torch.float64 else torch.float32
    if ignore_boxes is None:
        ignore_boxes = torch.zeros(0, 4, device=device, dtype=dtype)
    if ignore_boxes.ndim != 2 or ignore_boxes.shape[1] != 4:
        raise ValueError(f"ignore_boxes must be Tensor[I, 4], got shape {tuple(ignore_boxes.shape)}")
    num_g = gt_boxes.shape[0]
    positive = torch.zeros(num_a, dtype=torch.bool, device=device)
    matched_gt = torch.zeros(num_a, dtype=torch.long, device=device)
    if num_a == 0 or num_g + ignore_boxes.shape[0] == 0:
        return MatchResult(matched_gt=matched_gt, positive=positive, ignore=positive.clone())

    anchors_xyxy = cxcywh_to_xyxy(anchors.to(dtype))
    ignored_iou = [box_iou(ignore_boxes.to(device=device, dtype=dtype), anchors_xyxy)]  # [I, A]
    if num_g:
        iou = box_iou(gt_boxes.to(device=device, dtype=dtype), anchors_xyxy)  # [G, A]
        best_anchor_iou, best_anchor = iou.max(dim=1)  # per face
        valid = best_anchor_iou >= force_match_min_iou
        ignored_iou.append(iou[~valid])
        if bool(valid.any()):
            best_gt_iou, best_gt = iou.max(dim=0)  # per anchor
            faces = torch.arange(num_g, device=device)[valid]
            forced_anchor = best_anchor[valid]
            # Highest face index wins a shared best anchor (the upstream loop overwrites in ascending order).
            forced_gt = torch.full((num_a,), -1, dtype=torch.long, device=device)
            forced_gt.scatter_reduce_(0, forced_anchor, faces, reduce="amax", include_self=True)
            forced = forced_gt >= 0
            matched_gt = torch.where(forced, forced_gt, best_gt)
            positive = forced | (best_gt_iou >= positive_iou)
    ignore = torch.zeros(num_a, dtype=torch.bool, device=device)
    iou_ign = torch.cat(ignored_iou)  # [J, A]
    if iou_ign.shape[0]:
        bar = torch.clamp(iou_ign.max(dim=1, keepdim=True).values, max=positive_iou)
        ignore = ((iou_ign >= bar) & (iou_ign > 0)).any(dim=0) & ~positive
    return MatchResult(matched_gt=matched_gt, positive=positive, ignore=ignore)
