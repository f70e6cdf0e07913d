"""Teacher pseudo-landmarks for boxes-only faces of a RetinaFace ``label.txt`` (``featherface data pseudo-label``).

For every image with at least one *boxes-only* face (no landmarks, not tagged ``ignore``, positive size) the
teacher runs once at the original image size; each such face takes the landmarks of the teacher detection that
overlaps it best (IoU >= ``iou``, detection score >= ``score``), one detection per face at most, pairs taken
greedily by decreasing IoU over *all* the image's faces (a detection that fits an annotated or ignored face
better is not handed to a neighbour). The face is rewritten as a 20-number line tagged ``pseudo`` (landmark
flags ``0.0``, score ``1.0``, the RetinaFace convention); every other line is copied unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featherface.errors import InputError
from featherface.geometry.boxes import box_iou_np

__all__ = ["match_pseudo_landmarks", "faces_needing_landmarks", "format_pseudo_line", "PseudoLabelStats",
           "pseudo_label_file"]


def match_pseudo_landmarks(face_boxes: np.ndarray, wanted: np.ndarray, det_boxes: np.ndarray,
                           det_scores: np.ndarray, det_landmarks: np.ndarray, *, iou_threshold: float = 0.5,
                           score_threshold: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Assign teacher landmarks to the ``wanted`` faces.

    ``face_boxes [G, 4]`` and ``det_boxes [D, 4]`` are ``x1 y1 x2 y2`` pixels, ``wanted [G]`` marks the faces that
    need landmarks (the others still compete for detections), ``det_scores [D]``, ``det_landmarks [D, 10]``.
    Pairs (face, detection) with IoU >= ``iou_threshold`` and score >= ``score_threshold`` are taken greedily
    by decreasing IoU (ties: the higher score, then the lower indices); each face and each detection is used
    at most once. Returns ``landmarks [G, 10]`` float32 (zeros where not assigned) and ``assigned [G]`` bool
    (only ever True for wanted faces).
    """
    face_boxes = np.asarray(face_boxes, np.float64).reshape(-1, 4)
    wanted = np.asarray(wanted, bool).reshape(-1)
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    det_landmarks = np.asarray(det_landmarks, np.float32).reshape(-1, 10)
    g, d = len(face_boxes), len(det_boxes)
    if len(wanted) != g or len(det_scores) != d or len(det_landmarks) != d:
        raise ValueError(f"shape mismatch: {g} faces, {len(wanted)} wanted flags, {d} boxes, "
                         f"{len(det_scores)} scores, {len(det_landmarks)} landmark rows")
    out = np.zeros((g, 10), np.float32)
    assigned = np.zeros(g, bool)
    if g == 0 or d == 0 or not wanted.any():
        return out, assigned
    iou = box_iou_np(face_boxes, det_boxes)
    ok = (iou >= iou_threshold) & (det_scores[None, :] >= score_threshold)
    fi, di = np.nonzero(ok)
    order = np.lexsort((di, fi, -det_scores[di], -iou[fi, di]))  # last key first: IoU desc, score desc, indices
    face_used = np.zeros(g, bool)
    det_used = np.zeros(d, bool)
    for k in order:
        f, j = fi[k], di[k]
        if face_used[f] or det_used[j]:
            continue
        face_used[f] = det_used[j] = True
        if wanted[f]:
            out[f] = det_landmarks[j]
            assigned[f] = True
    return out, assigned


def faces_needing_landmarks(boxes: np.ndarray, has_landmarks: np.ndarray, invalid: np.ndarray | None) -> np.ndarray:
    """Boxes-only faces of positive size that are not tagged ``ignore``."""
    pos = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    need = pos & ~np.asarray(has_landmarks, bool)
    if invalid is not None:
        need &= ~np.asarray(invalid, bool)
    return need


def format_pseudo_line(box_tokens: list[str], landmarks: np.ndarray) -> str:
    """``x y w h`` (the original tokens) + 5 ``lx ly 0.0`` + ``1.0`` + ``pseudo``."""
    pts = " ".join(f"{float(landmarks[2 * k]):.3f} {float(landmarks[2 * k + 1]):.3f} 0.0" for k in range(5))
    return f"{' '.join(box_tokens[:4])} {pts} 1.0 pseudo"


@dataclass
class PseudoLabelStats:
    images: int = 0  # images written
    teacher_images: int = 0  # images the teacher ran on
    copied_images: int = 0  # images copied unchanged: nothing to fill
    skipped_images: int = 0  # images left unchanged past --max-images
    unreadable_images: int = 0  # images with faces to fill that are missing or do not decode (copied unchanged)
    boxes_only_faces: int = 0  # faces needing landmarks in the images the teacher ran on
    pseudo_faces: int = 0  # of those, faces that got teacher landmarks
    problems: int = 0  # problems reported by the parser (their lines are copied unchanged)

    def summary(self) -> str:
        pct = 100.0 * self.pseudo_faces / self.boxes_only_faces if self.boxes_only_faces else 0.0
        return (f"{self.teacher_images} images, {self.boxes_only_faces} boxes-only faces, {self.pseudo_faces} got "
                f"pseudo-landmarks ({pct:.1f} %)")


def pseudo_label_file(labels: str | Path, detector, output: str | Path, *, images_root: str | Path | None = None,
                      iou_threshold: float = 0.5, score_threshold: float = 0.8, max_images: int | None = None,
                      progress: bool = True) -> PseudoLabelStats:
    """Write ``output``: ``labels`` with teacher landmarks filled in (see the module docstring).

    ``detector`` has ``detect_arrays(image_bgr) -> (boxes, scores, landmarks)`` in original pixels (a
    :class:`featherface.api.FaceDetector` at ``resize="original"``). ``max_images`` caps the images the teacher
    runs on (the first ones, in file order, that need it); the other images are copied unchanged, so the output
    is always a complete label file. Written atomically.
    """
    import cv2
    from tqdm import tqdm

    from featherface.data.readers import default_images_root, detect_format, parse_retinaface_labels
    from featherface.fsutil import atomic_write_text

    labels = Path(labels)
    if detect_format(labels) != "retinaface":
        raise InputError(f"{labels} is not a RetinaFace label.txt (pseudo-labelling needs that format; "
                         "convert an official bbx_gt with scripts/build_train_labels.py)")
    root = Path(images_root) if images_root is not None else default_images_root(labels)
    res = parse_retinaface_labels(labels, root)
    lines = labels.read_text(encoding="utf-8").splitlines()
    stats = PseudoLabelStats(images=len(res.annotations), problems=len(res.problems))
    todo = []
    for a in res.annotations:
        need = faces_needing_landmarks(a.boxes, a.has_landmarks, a.invalid)
        if not need.any():
            stats.copied_images += 1
        elif max_images is not None and len(todo) >= max_images:
            stats.skipped_images += 1
        else:
            todo.append((a, need))
    for a, need in tqdm(todo, desc="pseudo-label", unit="img", disable=not progress, dynamic_ncols=True):
        img = cv2.imread(str(a.image_path), cv2.IMREAD_COLOR)
        if img is None:
            stats.unreadable_images += 1
            continue
        stats.teacher_images += 1
        stats.boxes_only_faces += int(need.sum())
        boxes, scores, lms = detector.detect_arrays(img)
        got, assigned = match_pseudo_landmarks(a.boxes, need, boxes, scores, lms, iou_threshold=iou_threshold,
                                               score_threshold=score_threshold)
        stats.pseudo_faces += int(assigned.sum())
        for f in np.flatnonzero(assigned):
            ln = a.face_lines[f] - 1
            lines[ln] = format_pseudo_line(lines[ln].split(), got[f])
    atomic_write_text(output, "".join(f"{ln}\n" for ln in lines))
    return stats
