"""Knowledge distillation from a FeatherFace V1 teacher into a student (V2), fixing upstream D1–D5
(defect codes: docs/upstream-defects.md).

Total loss of a batch (defaults α = 0.7, T = 4, λ = 0.1, the V2 recipe's)::

    total = (1 − α) · task + α · KD + λ · feature
    task  = 2 · box + cls + landmark                              (DetectionLoss, named parts: D1 cannot recur)
    KD    = KL_T + box_weight · KD_box + landmark_weight · KD_landmark

**Informative anchors** (the set the classification KL is averaged over; upstream averaged over all 16,800 anchors
and summed over images, D2). Per image:

* positives ``P`` = ground-truth positives (``DetectionLoss.assign``) ∪ *teacher positives* (anchors whose teacher
  face probability at T = 1 is ≥ ``teacher_positive_threshold``, 0.5);
* negatives ``N`` = hard negatives mined on the **student's** logits against ``P``, ``neg_pos_ratio`` (7) per
  positive (``DetectionLoss.negatives``): the background anchors the student is most wrong about, where the
  teacher's soft "no face" matters most. Easy background, where both nets agree, is left out.

``KL_T = T² · Σ_{a ∈ P∪N} KL(softmax(t_a / T) ‖ softmax(s_a / T)) / |P ∪ N|`` summed over the whole batch and
divided by the batch's number of selected anchors: a per-anchor mean, so its value does not grow with the batch
size (duplicating every image gives exactly the same value). Images without any positive contribute nothing.

**Box / landmark distillation**: smooth-L1 between the student's and the teacher's raw regression outputs (the
encoded offsets) on teacher-positive anchors, summed and divided by their number (0 when there are none).

**Feature distillation**: the three neck features fed to the heads (after BiFPN, CBAM and SSH; P3, P4, P5) of the
student pass through learnable 1×1 convolutions (student channels → teacher channels, the *adapters*) and are
matched to the teacher's with MSE (element mean per level, then the mean of the levels). The adapters are
parameters of :class:`DistillationLoss`, optimised with the student, never part of the model's state dict: they
are saved in the training state for resume only and are absent from inference weights and exports.

The teacher must be frozen, in eval mode and run under ``torch.no_grad()`` on exactly the student's input tensor
(:func:`prepare_teacher`, :func:`teacher_forward`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featherface.models.outputs import DetectionOutput
from featherface.train.loss import mine_negatives

__all__ = ["DistillationLoss", "prepare_teacher", "teacher_forward", "init_backbone_from", "informative_anchors", "combine"]


def prepare_teacher(teacher: nn.Module) -> nn.Module:
    """Freeze ``teacher``: eval mode (BN statistics and DropBlock fixed) and no parameter requires grad."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def teacher_forward(teacher: nn.Module, images: Tensor,
                    backbone_features: Sequence[Tensor] | None = None) -> tuple[DetectionOutput, list[Tensor]]:
    """Teacher outputs and neck features on ``images`` (the very tensor the student sees), without autograd.

    ``backbone_features``: the backbone maps of ``images`` computed once by a backbone the teacher shares with the
    student (frozen); the teacher then runs only its neck and heads on them."""
    if teacher.training:
        teacher.eval()
    if backbone_features is not None:
        return teacher.forward_from_backbone(list(backbone_features))
    return teacher.forward_with_features(images)


def init_backbone_from(model: nn.Module, source: Mapping[str, Tensor] | nn.Module, prefix: str = "body.") -> int:
    """Copy every ``prefix*`` tensor of ``source`` (a state dict or module) into ``model``; strict on keys and shapes.

    Returns the number of tensors copied. Raises ``ValueError`` naming missing / mis-shaped keys."""
    src = source.state_dict() if isinstance(source, nn.Module) else source
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    if not own:
        raise ValueError(f"model has no parameters under {prefix!r}")
    missing = [k for k in own if k not in src]
    bad = [f"{k}: {tuple(src[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
           if k in src and tuple(src[k].shape) != tuple(v.shape)]
    if missing or bad:
        raise ValueError(f"backbone initialisation: {len(missing)} missing keys {missing[:4]}, "
                         f"{len(bad)} shape mismatches {bad[:4]}")
    with torch.no_grad():
        sd = model.state_dict()
        for k in own:
            sd[k].copy_(src[k].to(sd[k].dtype))
    return len(own)


def informative_anchors(student_logits: Tensor, teacher_logits: Tensor, gt_positive: Tensor, *,
                        teacher_positive_threshold: float = 0.5, neg_pos_ratio: float = 7.0,
                        ignore: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(positive, negative, teacher_positive)`` ``BoolTensor[B, A]`` masks (module docstring); anchors in
    ``ignore`` (ignore regions) are never mined as negatives."""
    with torch.no_grad():
        t_face = torch.softmax(teacher_logits.detach().float(), dim=-1)[..., 1]
        teacher_pos = t_face >= teacher_positive_threshold
        pos = gt_positive | teacher_pos
        ce = F.cross_entropy(student_logits.detach().float().flatten(0, 1), pos.long().flatten(),
                             reduction="none").view(pos.shape)
        neg = mine_negatives(ce, pos, neg_pos_ratio, ignore)
    return pos, neg, teacher_pos


class DistillationLoss(nn.Module):
    """KD + feature terms (module docstring). Holds the 1×1 adapters (``adapters``), the only parameters.

    Args:
        student_channels / teacher_channels: neck widths (V2 32, V1 64).
        num_levels: neck levels (3).
        temperature: T of the softened scores.
        box_weight / landmark_weight: weights of the regression terms inside KD.
        teacher_positive_threshold / neg_pos_ratio: informative-anchor selection.
    """

    def __init__(self, *, student_channels: int = 32, teacher_channels: int = 64, num_levels: int = 3,
                 temperature: float = 4.0, box_weight: float = 1.0, landmark_weight: float = 1.0,
                 teacher_positive_threshold: float = 0.5, neg_pos_ratio: float = 7.0) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.box_weight = float(box_weight)
        self.landmark_weight = float(landmark_weight)
        self.teacher_positive_threshold = float(teacher_positive_threshold)
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.adapters = nn.ModuleList(
            nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=True) for _ in range(num_levels)
        )

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, box_weight={self.box_weight}, landmark_weight={self.landmark_weight}, "
                f"teacher_positive_threshold={self.teacher_positive_threshold}, neg_pos_ratio={self.neg_pos_ratio}")

    def kl(self, student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
        """``T² · mean over mask`` of the per-anchor binary KL(teacher_T ‖ student_T)."""
        t = self.temperature
        log_s = F.log_softmax(student_logits.float() / t, dim=-1)
        log_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
        per_anchor = (log_t.exp() * (log_t - log_s)).sum(dim=-1)  # [B, A]
        n = mask.sum().clamp(min=1).to(per_anchor.dtype)
        return per_anchor[mask].sum() / n * (t * t)

    def feature(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
        if len(student_feats) != len(self.adapters) or len(teacher_feats) != len(self.adapters):
            raise ValueError(f"expected {len(self.adapters)} feature levels, got {len(student_feats)} student / "
                             f"{len(teacher_feats)} teacher")
        losses = []
        for adapter, s, t in zip(self.adapters, student_feats, teacher_feats):
            a = adapter(s.float())
            if a.shape != t.shape:
                raise ValueError(f"adapted student feature {tuple(a.shape)} does not match teacher {tuple(t.shape)}")
            losses.append(F.mse_loss(a, t.detach().float()))
        return torch.stack(losses).mean()

    def forward(self, student: DetectionOutput, student_feats: Sequence[Tensor], teacher: DetectionOutput,
                teacher_feats: Sequence[Tensor], gt_positive: Tensor,
                ignore: Tensor | None = None) -> dict[str, Tensor]:
        """Returns ``{"kd", "kd_cls", "kd_box", "kd_landmark", "feature", "kd_anchors"}`` (scalars).

        ``gt_positive`` / ``ignore``: ``BoolTensor[B, A]`` from ``DetectionLoss.assign(...)`` (``.positive``,
        ``.ignore``); ignored anchors are never KD negatives."""
        for name in ("boxes", "logits", "landmarks"):
            s, t = getattr(student, name), getattr(teacher, name)
            if s.shape != t.shape:
                raise ValueError(f"student {name} {tuple(s.shape)} and teacher {name} {tuple(t.shape)} differ")
        pos, neg, t_pos = informative_anchors(
            student.logits, teacher.logits, gt_positive,
            teacher_positive_threshold=self.teacher_positive_threshold, neg_pos_ratio=self.neg_pos_ratio,
            ignore=ignore,
        )
        mask = pos | neg
        kd_cls = self.kl(student.logits, teacher.logits, mask)
        n_t = t_pos.sum().clamp(min=1).float()
        kd_box = F.smooth_l1_loss(student.boxes.float()[t_pos], teacher.boxes.detach().float()[t_pos],
                                  reduction="sum") / n_t
        kd_lm = F.smooth_l1_loss(student.landmarks.float()[t_pos], teacher.landmarks.detach().float()[t_pos],
                                 reduction="sum") / n_t
        kd = kd_cls + self.box_weight * kd_box + self.landmark_weight * kd_lm
        feat = self.feature(student_feats, teacher_feats)
        return {"kd": kd, "kd_cls": kd_cls, "kd_box": kd_box, "kd_landmark": kd_lm, "feature": feat,
                "kd_anchors": mask.sum()}


def combine(task: Tensor, distill: Mapping[str, Tensor], *, alpha: float, feature_weight: float) -> Tensor:
    """``(1 − α) · task + α · KD + λ · feature``."""
    return (1.0 - alpha) * task + alpha * distill["kd"] + feature_weight * distill["feature"]
