"""The FeatherFace / RetinaFace detection loss (upstream ``MultiBoxLoss`` semantics, device-agnostic).

Per batch, with ``N = max(#positive anchors in the batch, 1)``:

* box: smooth-L1 (beta 1) summed over positive anchors, / ``N``;
* landmark: smooth-L1 summed over positive anchors whose face has landmarks, / ``max(#those, 1)``;
* classification: cross-entropy summed over positives and mined negatives, / ``N``. Hard negative mining is per
  image: the background anchors (neither positive nor ignored) with the largest cross-entropy,
  ``min(neg_pos_ratio * num_pos, A - 1)`` of them (never more than there are); an image without positives
  contributes no negatives. Ignored anchors (ignore regions, see :mod:`featherface.train.matching`) get no loss;
* total: ``box_weight * box + cls + landmark``.

Targets are dicts with ``"boxes"`` ``FloatTensor[G, 4]`` (``xyxy`` normalised to ``[0, 1]`` by the input
width/height), ``"landmarks"`` ``FloatTensor[G, 10]`` (normalised the same way) and ``"has_landmarks"``
``BoolTensor[G]``. ``"landmarks"`` may be omitted (no face has landmarks); ``"has_landmarks"`` defaults to all true
when ``"landmarks"`` is given. ``"ignore_boxes"`` ``FloatTensor[I, 4]`` (optional) are ignore regions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featherface.geometry.boxes import VARIANCES, encode_boxes, encode_landmarks
from featherface.train.matching import match_anchors

__all__ = ["Assignment", "DetectionLoss", "assign_targets", "mine_negatives"]


class Assignment(NamedTuple):
    """Per-anchor training targets of a batch (all on the anchors' device, float32 or float64).

    Attributes:
        positive: ``BoolTensor[B, A]`` face anchors.
        matched_gt: ``LongTensor[B, A]`` index of the assigned face in its image (meaningful where ``positive``).
        box_targets: ``Tensor[B, A, 4]`` encoded boxes (zeros where the image has no face).
        landmark_targets: ``Tensor[B, A, 10]`` encoded landmarks (zeros where unavailable).
        landmark_positive: ``BoolTensor[B, A]`` positive anchors whose face has landmarks.
        ignore: ``BoolTensor[B, A]`` anchors that are neither faces nor background (no loss, never negatives).
    """

    positive: Tensor
    matched_gt: Tensor
    box_targets: Tensor
    landmark_targets: Tensor
    landmark_positive: Tensor
    ignore: Tensor


def _target_tensors(target: Mapping[str, Tensor], index: int, device, dtype) -> tuple[Tensor, Tensor, Tensor]:
    if "boxes" not in target:
        raise ValueError(f"target {index} has no 'boxes' (keys: {sorted(target)})")
    boxes = torch.as_tensor(target["boxes"]).to(device=device, dtype=dtype)
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"target {index}: 'boxes' must be [G, 4], got shape {tuple(boxes.shape)}")
    g = boxes.shape[0]
    if target.get("landmarks") is None:
        landmarks = torch.zeros(g, 10, device=device, dtype=dtype)
        has = torch.zeros(g, dtype=torch.bool, device=device)
    else:
        landmarks = torch.as_tensor(target["landmarks"]).to(device=device, dtype=dtype)
        if landmarks.numel() == 0:
            landmarks = landmarks.reshape(0, 10)
        if landmarks.shape != (g, 10):
            raise ValueError(f"target {index}: 'landmarks' must be [G={g}, 10], got shape {tuple(landmarks.shape)}")
        has = target.get("has_landmarks")
        has = (
            torch.ones(g, dtype=torch.bool, device=device)
            if has is None
            else torch.as_tensor(has).to(device=device, dtype=torch.bool).reshape(-1)
        )
        if has.shape != (g,):
            raise ValueError(f"target {index}: 'has_landmarks' must be [G={g}], got shape {tuple(has.shape)}")
    return boxes, landmarks, has


def assign_targets(
    anchors: Tensor,
    targets: Sequence[Mapping[str, Tensor]],
    *,
    positive_iou: float = 0.35,
    force_match_min_iou: float = 0.2,
    variances: Sequence[float] = VARIANCES,
) -> Assignment:
    """Match every image's faces to the anchors and encode the regression targets.

    Args:
        anchors: ``Tensor[A, 4]`` ``cxcywh`` normalised.
        targets: ``B`` target dicts (see the module docstring).

    Returns:
        :class:`Assignment` for the batch.
    """
    device = anchors.device
    dtype = torch.float64 if anchors.dtype == torch.float64 else torch.float32
    anchors = anchors.to(dtype)
    num_a = anchors.shape[0]
    positive, matched, box_t, lm_t, lm_pos, ignore = [], [], [], [], [], []
    for index, target in enumerate(targets):
        boxes, landmarks, has = _target_tensors(target, index, device, dtype)
        ignore_boxes = target.get("ignore_boxes")
        if ignore_boxes is not None:
            ignore_boxes = torch.as_tensor(ignore_boxes).to(device=device, dtype=dtype).reshape(-1, 4)
        match = match_anchors(
            boxes, anchors, positive_iou=positive_iou, force_match_min_iou=force_match_min_iou,
            ignore_boxes=ignore_boxes,
        )
        positive.append(match.positive)
        ignore.append(match.ignore)
        matched.append(match.matched_gt)
        if boxes.shape[0] == 0:
            box_t.append(torch.zeros(num_a, 4, device=device, dtype=dtype))
            lm_t.append(torch.zeros(num_a, 10, device=device, dtype=dtype))
            lm_pos.append(torch.zeros(num_a, dtype=torch.bool, device=device))
            continue
        box_t.append(encode_boxes(boxes[match.matched_gt], anchors, variances))
        has_a = has[match.matched_gt]
        lm = encode_landmarks(landmarks[match.matched_gt], anchors, variances)
        lm_t.append(torch.where(has_a[:, None], lm, torch.zeros_like(lm)))
        lm_pos.append(match.positive & has_a)
    if not positive:
        empty_b = torch.zeros(0, num_a, dtype=torch.bool, device=device)
        return Assignment(
            empty_b,
            torch.zeros(0, num_a, dtype=torch.long, device=device),
            torch.zeros(0, num_a, 4, device=device, dtype=dtype),
            torch.zeros(0, num_a, 10, device=device, dtype=dtype),
            empty_b.clone(),
            empty_b.clone(),
        )
    return Assignment(
        positive=torch.stack(positive),
        matched_gt=torch.stack(matched),
        box_targets=torch.stack(box_t),
        landmark_targets=torch.stack(lm_t),
        landmark_positive=torch.stack(lm_pos),
        ignore=torch.stack(ignore),
    )


def mine_negatives(per_anchor_loss: Tensor, positive: Tensor, neg_pos_ratio: float = 7,
                   ignore: Tensor | None = None) -> Tensor:
    """Hard negative mining per image.

    Args:
        per_anchor_loss: ``Tensor[B, A]`` classification loss of each anchor (treated as constant).
        positive: ``BoolTensor[B, A]``.
        neg_pos_ratio: negatives per positive.
        ignore: ``BoolTensor[B, A]`` anchors that may never be negatives (ignore regions); None: none.

    Returns:
        ``BoolTensor[B, A]``: in each image the ``min(neg_pos_ratio * num_pos, A - 1)`` background anchors (neither
        positive nor ignored) with the largest loss (fewer if there are not that many; none if the image has no
        positive). Equal losses are ranked by anchor index (stable sort).
    """
    if per_anchor_loss.shape != positive.shape or per_anchor_loss.ndim != 2:
        raise ValueError(
            f"per_anchor_loss and positive must both be [B, A], got {tuple(per_anchor_loss.shape)} "
            f"and {tuple(positive.shape)}"
        )
    b, a = positive.shape
    if a == 0 or b == 0:
        return torch.zeros_like(positive)
    excluded = positive if ignore is None else positive | ignore
    loss = per_anchor_loss.detach().float().masked_fill(excluded, float("-inf"))
    num_pos = positive.sum(dim=1, keepdim=True)
    num_neg = torch.clamp(torch.floor(num_pos * float(neg_pos_ratio)).long(), max=a - 1)
    order = torch.sort(loss, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(a, device=order.device).expand(b, a))
    return (rank < num_neg) & ~excluded


class DetectionLoss(nn.Module):
    """``MultiBoxLoss``-equivalent loss returning named parts (see the module docstring).

    Args:
        positive_iou: matching IoU for positives (0.35).
        force_match_min_iou: minimum IoU for a face's forced best anchor (0.2).
        neg_pos_ratio: hard negatives per positive (7).
        box_weight: weight of the box term in ``total`` (2.0, ``loc_weight``).
        variances: box / landmark parametrisation.
    """

    def __init__(
        self,
        *,
        positive_iou: float = 0.35,
        force_match_min_iou: float = 0.2,
        neg_pos_ratio: float = 7,
        box_weight: float = 2.0,
        variances: Sequence[float] = VARIANCES,
    ) -> None:
        super().__init__()
        self.positive_iou = float(positive_iou)
        self.force_match_min_iou = float(force_match_min_iou)
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.box_weight = float(box_weight)
        self.variances = (float(variances[0]), float(variances[1]))

    def extra_repr(self) -> str:
        return (
            f"positive_iou={self.positive_iou}, force_match_min_iou={self.force_match_min_iou}, "
            f"neg_pos_ratio={self.neg_pos_ratio}, box_weight={self.box_weight}, variances={self.variances}"
        )

    def assign(self, anchors: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> Assignment:
        """:func:`assign_targets` with this loss's thresholds (reusable, e.g. by a distillation loss)."""
        return assign_targets(
            anchors,
            targets,
            positive_iou=self.positive_iou,
            force_match_min_iou=self.force_match_min_iou,
            variances=self.variances,
        )

    def negatives(self, logits: Tensor, positive: Tensor, ignore: Tensor | None = None) -> Tensor:
        """Mined negative mask ``BoolTensor[B, A]`` for ``logits: Tensor[B, A, 2]``, ``positive: [B, A]`` and the
        optional ``ignore: [B, A]`` anchors that may not be negatives."""
        with torch.no_grad():
            ce = F.cross_entropy(logits.detach().float().flatten(0, 1), positive.long().flatten(), reduction="none")
        return mine_negatives(ce.view(positive.shape), positive, self.neg_pos_ratio, ignore)

    def forward(
        self,
        boxes: Tensor,
        logits: Tensor,
        landmarks: Tensor,
        anchors: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        *,
        assignment: Assignment | None = None,
    ) -> dict[str, Tensor]:
        """Loss of a batch.

        Args:
            boxes: ``Tensor[B, A, 4]`` box-head outputs.
            logits: ``Tensor[B, A, 2]`` class logits (background, face).
            landmarks: ``Tensor[B, A, 10]`` landmark-head outputs.
            anchors: ``Tensor[A, 4]`` ``cxcywh`` normalised.
            targets: ``B`` target dicts (module docstring).
            assignment: a precomputed :meth:`assign` result for these targets (optional).

        Returns:
            ``{"box", "cls", "landmark", "total"}`` scalar float32 tensors and ``"num_positives"`` (long scalar).
        """
        b, a = boxes.shape[0], anchors.shape[0]
        for name, t, k in (("boxes", boxes, 4), ("logits", logits, 2), ("landmarks", landmarks, 10)):
            if t.ndim != 3 or t.shape != (b, a, k):
                raise ValueError(f"{name} must be Tensor[B={b}, A={a}, {k}], got shape {tuple(t.shape)}")
        if len(targets) != b:
            raise ValueError(f"got {len(targets)} targets for a batch of {b}")
        if assignment is None:
            assignment = self.assign(anchors, targets)
        pos = assignment.positive
        lm_pos = assignment.landmark_positive

        num_pos = pos.sum()
        n = num_pos.clamp(min=1).to(torch.float32)
        n_lm = lm_pos.sum().clamp(min=1).to(torch.float32)

        box_loss = (
            F.smooth_l1_loss(boxes.float()[pos], assignment.box_targets.float()[pos], reduction="sum") / n
        )
        landmark_loss = (
            F.smooth_l1_loss(landmarks.float()[lm_pos], assignment.landmark_targets.float()[lm_pos], reduction="sum")
            / n_lm
        )
        ce = F.cross_entropy(logits.float().flatten(0, 1), pos.long().flatten(), reduction="none").view(b, a)
        neg = mine_negatives(ce.detach(), pos, self.neg_pos_ratio, assignment.ignore)
        cls_loss = ce[pos | neg].sum() / n
        total = self.box_weight * box_loss + cls_loss + landmark_loss
        return {
            "box": box_loss,
            "cls": cls_loss,
            "landmark": landmark_loss,
            "total": total,
            "num_positives": num_pos,
        }
