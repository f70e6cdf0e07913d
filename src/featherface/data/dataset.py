"""WIDER FACE training dataset (RetinaFace ``label.txt`` or official ``bbx_gt.txt``) and its collate function.

Randomness: every ``__getitem__(index)`` builds its own ``np.random.default_rng([seed, epoch, index])``, so a
sample depends only on ``(seed, epoch, index)`` — not on the worker that loads it nor on the order of loading.
Call :meth:`WiderFaceDataset.set_epoch` at the start of every epoch (with several ``DataLoader`` workers and
``persistent_workers=True`` the copies in the workers do not see it; create the iterator after setting it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from featherface.data.readers import Annotation, ParseResult, default_images_root, parse_annotations
from featherface.data.transforms import Sample, TrainTransform
from featherface.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["WiderFaceDataset", "detection_collate"]


class WiderFaceDataset(Dataset):
    """Faces from ``labels`` (a RetinaFace ``label.txt`` or an official ``wider_face_*_bbx_gt.txt``), images from
    ``images_root`` (default: ``images/`` next to the labels). Boxes-only faces have ``has_landmarks`` False.

    Cleaning, never silent (``self.stats`` holds the counts; they are printed unless ``verbose=False``):

    * lines that cannot be parsed are counted (``bad_lines``) and listed by ``featherface data check``;
    * boxes with zero or negative size are dropped (``dropped_degenerate``); boxes are clipped to the image when
      it is loaded, and any that become empty are dropped then (``dropped_outside``, counted as they happen);
    * faces flagged ``invalid`` (the official bbx_gt flag, or the ``ignore`` tag of a label.txt line) are dropped
      when ``drop_invalid`` (``dropped_invalid``), and otherwise kept as *ignore regions* (``ignore_faces``):
      neither faces nor background in training (see :func:`featherface.train.matching.match_anchors`);
    * landmarks tagged ``pseudo`` (predicted by a teacher, ``featherface data pseudo-label``) are used unless
      ``use_pseudo_landmarks`` is False (then the face is boxes-only; ``pseudo_landmarks`` counts them);
    * images missing on disk raise :class:`InputError` unless ``skip_missing_images`` (``skipped_images``).
      Images with zero faces are kept (they give pure background samples).
    """

    def __init__(self, labels: str | Path, images_root: str | Path | None = None,
                 transform: TrainTransform | None = None, seed: int = 0, format: str = "auto",
                 drop_invalid: bool = True, skip_missing_images: bool = False, verbose: bool = True,
                 use_pseudo_landmarks: bool = True):
        self.labels = Path(labels)
        self.images_root = Path(images_root) if images_root is not None else default_images_root(self.labels)
        if not self.images_root.is_dir():
            raise InputError(f"images folder not found: {self.images_root} (give it with --images)")
        self.transform = transform if transform is not None else TrainTransform()
        self.seed = int(seed)
        self.epoch = 0
        res: ParseResult = parse_annotations(self.labels, self.images_root, format)
        self.format = res.format
        stats = {"images": 0, "faces": 0, "faces_with_landmarks": 0, "bad_lines": 0,
                 "dropped_degenerate": 0, "dropped_invalid": 0, "dropped_outside": 0, "skipped_images": 0,
                 "empty_images": 0, "ignore_faces": 0, "pseudo_landmarks": 0}
        stats["bad_lines"] = sum(1 for p in res.problems if p.kind in ("columns", "number", "structure"))
        anns: list[Annotation] = []
        missing: list[Path] = []
        for a in res.annotations:
            if not a.image_path.is_file():
                missing.append(a.image_path)
                continue
            keep = (a.boxes[:, 2] > a.boxes[:, 0]) & (a.boxes[:, 3] > a.boxes[:, 1])
            stats["dropped_degenerate"] += int((~keep).sum())
            invalid = np.zeros(len(keep), bool) if a.invalid is None else np.asarray(a.invalid, bool)
            if drop_invalid:
                stats["dropped_invalid"] += int((keep & invalid).sum())
                keep &= ~invalid
            has = a.has_landmarks.copy()
            pseudo = getattr(a, "pseudo_landmarks", None)
            if pseudo is not None:
                pseudo = np.asarray(pseudo, bool) & has
                stats["pseudo_landmarks"] += int((keep & pseudo).sum())
                if not use_pseudo_landmarks:
                    has &= ~pseudo
            lms = np.where(has[:, None], a.landmarks, 0.0).astype(np.float32)
            stats["ignore_faces"] += int((keep & invalid).sum())
            a = Annotation(a.image_path, a.boxes[keep], lms[keep], has[keep], invalid[keep], a.line,
                           [ln for ln, k in zip(a.face_lines, keep) if k])
            anns.append(a)
        if missing and not skip_missing_images:
            raise InputError(f"{len(missing)} of {len(res.annotations)} images listed in {self.labels} are missing "
                             f"under {self.images_root} (first: {missing[0]}); pass skip_missing_images=True "
                             "to train on the others")
        stats["skipped_images"] = len(missing)
        if not anns:
            raise InputError(f"no usable image in {self.labels} (images root {self.images_root})")
        stats["images"] = len(anns)
        stats["faces"] = sum(a.num_faces for a in anns) - stats["ignore_faces"]
        stats["faces_with_landmarks"] = sum(int(a.has_landmarks.sum()) for a in anns)
        stats["empty_images"] = sum(1 for a in anns if a.num_faces == 0)
        self.annotations = anns
        self.stats = stats
        if verbose:
            log.info("%s", self.summary())

    def summary(self) -> str:
        s = self.stats
        return (f"{self.labels}: {s['images']} images ({s['empty_images']} without faces), {s['faces']} faces "
                f"({s['faces_with_landmarks']} with landmarks); skipped {s['skipped_images']} missing images, "
                f"{s['bad_lines']} unparseable lines, dropped {s['dropped_degenerate']} zero-size and "
                f"{s['dropped_invalid']} invalid-flagged boxes; {s['ignore_faces']} ignore regions, "
                f"{s['pseudo_landmarks']} faces with pseudo-landmarks")

    def __len__(self) -> int:
        return len(self.annotations)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng_for(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def load(self, index: int) -> Sample:
        """The raw image and its faces (boxes clipped to the image)."""
        a = self.annotations[index]
        img = cv2.imread(str(a.image_path), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"image cannot be decoded: {a.image_path}")
        h, w = img.shape[:2]
        boxes = a.boxes.copy()
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not keep.all():
            self.stats["dropped_outside"] += int((~keep).sum())
        ignore = np.zeros(len(boxes), bool) if a.invalid is None else a.invalid
        return Sample(img, boxes[keep], a.landmarks[keep], a.has_landmarks[keep], None, ignore[keep])

    def augmented(self, index: int) -> tuple[Sample, str | None]:
        """The augmented (and possibly mixed) sample at the output size, uint8, pixel coordinates."""
        rng = self.rng_for(index)
        t = self.transform
        s = t.augment(self.load(index), rng)
        mode = t.mix_mode(rng)
        if mode is not None:
            other = int(rng.integers(len(self)))
            s = t.mix(mode, s, t.augment(self.load(other), rng), rng)
        return s, mode

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        s, _ = self.augmented(index)
        return self.transform.finalize(s)


def detection_collate(batch) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """``[(image CHW float32, target dict of arrays), ...]`` -> ``(FloatTensor[B,3,S,S], [target dict of tensors])``."""
    images = torch.stack([torch.as_tensor(np.ascontiguousarray(img), dtype=torch.float32) for img, _ in batch])
    targets = []
    for _, t in batch:
        targets.append({
            "boxes": torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4),
            "landmarks": torch.as_tensor(t["landmarks"], dtype=torch.float32).reshape(-1, 10),
            "has_landmarks": torch.as_tensor(t["has_landmarks"], dtype=torch.bool).reshape(-1),
            "weights": torch.as_tensor(t.get("weights", np.ones(len(t["boxes"]), np.float32)),
                                       dtype=torch.float32).reshape(-1),
            "ignore_boxes": torch.as_tensor(t.get("ignore_boxes", np.zeros((0, 4), np.float32)),
                                            dtype=torch.float32).reshape(-1, 4),
        })
    return images, targets
