"""Draw detections on images (boxes, scores, five landmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from featherface.api import LANDMARK_NAMES, Face

__all__ = ["draw_faces"]

_POINT_COLOURS = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0))  # BGR per landmark


def draw_faces(image_bgr: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of ``image_bgr`` with each face's box, score and landmarks drawn (line width scales with the image)."""
    out = image_bgr.copy()
    thick = max(1, round(max(out.shape[:2]) / 600))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), thick)
        label = f"{face.score:.2f}"
        cv2.putText(out, label, (x1, max(0, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (255, 255, 255),
                    thick, cv2.LINE_AA)
        for colour, name in zip(_POINT_COLOURS, LANDMARK_NAMES):
            if name in face.landmarks:
                x, y = face.landmarks[name]
                cv2.circle(out, (int(round(x)), int(round(y))), 2 + thick, colour, -1)
    return out
