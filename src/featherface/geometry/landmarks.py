"""The five-point landmark convention (RetinaFace annotation order) and its horizontal mirror. NumPy only."""

from __future__ import annotations

import numpy as np

__all__ = ["LANDMARK_NAMES", "LANDMARK_MIRROR", "mirror_points"]

#: Landmark order of the RetinaFace annotation. "left"/"right" are as seen in the image (image-left eye first),
#: which is the subject's right eye; horizontal mirroring swaps the pairs.
LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

#: Point order after a horizontal flip: left eye <-> right eye, nose stays, left mouth corner <-> right one.
LANDMARK_MIRROR: tuple[int, ...] = (1, 0, 2, 4, 3)


def mirror_points(points: np.ndarray, width: float) -> np.ndarray:
    """``[N, 10]`` landmarks of an image mirrored at ``x -> width - x`` (pairs swapped), in the input's dtype."""
    pts = np.asarray(points).reshape(-1, 5, 2)[:, list(LANDMARK_MIRROR)]  # fancy index: a copy
    pts[..., 0] = width - pts[..., 0]
    return pts.reshape(-1, 10)
