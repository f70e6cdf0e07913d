"""The raw network output shared by every FeatherFace model."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["DetectionOutput"]


class DetectionOutput(NamedTuple):
    """Raw head outputs, one row per anchor in :func:`featherface.geometry.make_anchors` order.

    boxes: ``[B, A, 4]`` box regressions (encoded against the anchors, variances 0.1 / 0.2).
    logits: ``[B, A, 2]`` background / face logits (softmax column 1 = face probability).
    landmarks: ``[B, A, 10]`` five (x, y) landmark regressions, encoded like the box centre.
    """

    boxes: Tensor
    logits: Tensor
    landmarks: Tensor
