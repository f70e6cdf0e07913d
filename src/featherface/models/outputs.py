"""The raw network output shared by every FeatherFace model."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from featherface.geometry.anchors import AnchorSpec

__all__ = ["DetectionOutput", "check_anchor_layout"]


class DetectionOutput(NamedTuple):
    """Raw head outputs, one row per anchor in :func:`featherface.geometry.make_anchors` order.

    boxes: ``[B, A, 4]`` box regressions (encoded against the anchors with the variances of the model's
        :class:`~featherface.geometry.anchors.AnchorSpec`).
    logits: ``[B, A, 2]`` background / face logits (softmax column 1 = face probability).
    landmarks: ``[B, A, 10]`` five (x, y) landmark regressions, encoded like the box centre.
    """

    boxes: Tensor
    logits: Tensor
    landmarks: Tensor


def check_anchor_layout(spec: AnchorSpec, owner: str) -> None:
    """The FeatherFace heads predict the same number of anchors on each of three levels (strides of the backbone's
    three outputs); a spec that does not fit raises ``ValueError`` naming ``owner``."""
    if len(spec.steps) != 3:
        raise ValueError(f"{owner}: the anchor spec needs 3 levels (one per backbone output), got steps {spec.steps}")
    if len(set(spec.anchors_per_cell)) != 1:
        raise ValueError(f"{owner}: every level needs the same number of anchor sizes (the heads are shared in "
                         f"shape), got min_sizes {spec.min_sizes}")
