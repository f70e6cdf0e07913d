"""``featherface data check``, ``featherface data preview`` and ``featherface data pseudo-label`` (wired into the
main CLI elsewhere)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from featherface.cliargs import device, positive_int, probability
from featherface.errors import InputError
from featherface.fsutil import atomic_write_bytes

__all__ = ["configure_check_parser", "run_check", "configure_preview_parser", "run_preview",
           "configure_pseudo_label_parser", "run_pseudo_label", "write_atomic"]


def write_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"output folder does not exist: {path.parent}")
    atomic_write_bytes(path, data)


def _labels_path(p: str) -> Path:
    path = Path(p)
    if not path.exists():
        raise InputError(f"annotation file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the label.txt or wider_face_*_bbx_gt.txt file")
    return path


def configure_check_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Check a RetinaFace label.txt or an official wider_face_*_bbx_gt.txt: every bad line "
                          "(file:line) and every unreadable image is reported, with counts.")
    parser.add_argument("path", help="label.txt or wider_face_*_bbx_gt.txt")
    parser.add_argument("--images", default=None, help="images root (default: images/ next to PATH)")
    parser.add_argument("--format", choices=("auto", "retinaface", "bbx_gt"), default="auto")
    parser.add_argument("--no-images", action="store_true", help="check the annotation lines only")
    return parser


def run_check(args: argparse.Namespace) -> int:
    """Print the report; return 0 when no problem was found, 1 otherwise."""
    from featherface.data.readers import check_dataset

    path = _labels_path(args.path)
    images = getattr(args, "images", None)
    if images is not None and not Path(images).is_dir():
        raise InputError(f"images folder not found: {images}")
    report = check_dataset(path, images, getattr(args, "format", "auto"),
                           check_images=not getattr(args, "no_images", False))
    print(report.format_text())
    return 0 if report.ok else 1


def configure_preview_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Write a PNG grid of augmented training samples with their boxes and landmarks."
    parser.add_argument("labels", help="label.txt or wider_face_*_bbx_gt.txt")
    parser.add_argument("-o", "--output", default="batch.png", help="PNG file to write")
    parser.add_argument("--images", default=None, help="images root (default: images/ next to LABELS)")
    parser.add_argument("--n", type=positive_int, default=8, help="number of samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=positive_int, default=640, help="training image size")
    parser.add_argument("--cell", type=positive_int, default=320, help="size of one grid cell in the PNG")
    parser.add_argument("--mixup-prob", type=probability, default=0.0)
    parser.add_argument("--cutmix-prob", type=probability, default=0.0)
    return parser


# BGR colours: left-side points green, right-side red, nose blue (eyeball the mirror swap)
_POINT_COLOURS = [(0, 255, 0), (0, 0, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)]


def draw_sample(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, has_landmarks: np.ndarray,
                label: str = "") -> np.ndarray:
    import cv2

    img = image.copy()
    for b, lm, has in zip(boxes, landmarks, has_landmarks):
        x1, y1, x2, y2 = (int(round(float(v))) for v in b)
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 255, 255) if has else (255, 255, 0), 1)
        if has:
            for k in range(5):
                cv2.circle(img, (int(round(float(lm[2 * k]))), int(round(float(lm[2 * k + 1])))), 2,
                           _POINT_COLOURS[k], -1)
    if label:
        cv2.putText(img, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def run_preview(args: argparse.Namespace) -> int:
    import cv2

    from featherface.data.dataset import WiderFaceDataset
    from featherface.data.transforms import TrainTransform

    labels = _labels_path(args.labels)
    if args.n < 1:
        raise InputError("--n must be at least 1")
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise InputError(f"output must be a .png file, got {out}")
    try:
        transform = TrainTransform(image_size=args.size, mixup_prob=args.mixup_prob, cutmix_prob=args.cutmix_prob)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    ds = WiderFaceDataset(labels, args.images, transform, seed=args.seed, skip_missing_images=True)
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(ds), size=min(args.n, len(ds)), replace=False) if args.n <= len(ds) else \
        rng.integers(len(ds), size=args.n)
    cells = []
    for i in idx:
        s, mode = ds.augmented(int(i))
        k = args.cell / s.image.shape[1]
        small = cv2.resize(s.image, (args.cell, args.cell), interpolation=cv2.INTER_AREA)
        cells.append(draw_sample(small, s.boxes * k, s.landmarks * k, s.has_landmarks,
                                 f"#{int(i)} {s.num_faces} faces" + (f" {mode}" if mode else "")))
    cols = min(4, len(cells))
    rows = math.ceil(len(cells) / cols)
    grid = np.zeros((rows * args.cell, cols * args.cell, 3), np.uint8)
    for k, c in enumerate(cells):
        r, q = divmod(k, cols)
        grid[r * args.cell:(r + 1) * args.cell, q * args.cell:(q + 1) * args.cell] = c
    ok, buf = cv2.imencode(".png", grid)
    if not ok:
        raise InputError("PNG encoding failed")
    write_atomic(out, buf.tobytes())
    print(f"wrote {out} ({len(cells)} samples, seed {args.seed})")
    return 0


def configure_pseudo_label_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Fill the landmarks of boxes-only faces of a RetinaFace label.txt from a teacher: one "
                          "teacher run per image at original size, best-IoU detection per face (greedy), faces "
                          "written as 20-number lines tagged 'pseudo'. Fully annotated images are copied "
                          "unchanged.")
    parser.add_argument("labels", help="RetinaFace label.txt")
    parser.add_argument("--teacher", required=True, help="checkpoint loadable by featherface (the teacher)")
    parser.add_argument("-o", "--output", required=True, help="label file to write (atomically)")
    parser.add_argument("--images", default=None, help="images root (default: images/ next to LABELS)")
    parser.add_argument("--iou", type=probability, default=0.5, help="minimum IoU between a face and a detection")
    parser.add_argument("--score", type=probability, default=0.8, help="minimum teacher detection score")
    parser.add_argument("--max-images", type=positive_int, default=None,
                        help="run the teacher on at most N images (the first that need it); the others are "
                             "copied unchanged")
    parser.add_argument("--device", type=device, default="cpu", help="torch device for the teacher")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_pseudo_label(args: argparse.Namespace) -> int:
    import time

    from featherface.api import FaceDetector
    from featherface.data.pseudo_label import pseudo_label_file

    labels = _labels_path(args.labels)
    if args.images is not None and not Path(args.images).is_dir():
        raise InputError(f"images folder not found: {args.images}")
    if not Path(args.teacher).is_file():
        raise InputError(f"teacher checkpoint not found: {args.teacher}")
    if not 0.0 < args.iou <= 1.0:
        raise InputError(f"--iou must be in (0, 1], got {args.iou}")
    if not 0.0 <= args.score <= 1.0:
        raise InputError(f"--score must be in [0, 1], got {args.score}")
    if args.max_images is not None and args.max_images < 0:
        raise InputError(f"--max-images must be >= 0, got {args.max_images}")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise InputError(f"output folder does not exist: {out.parent}")
    t0 = time.perf_counter()
    detector = FaceDetector(args.teacher, device=args.device, score_threshold=args.score, resize="original")
    stats = pseudo_label_file(labels, detector, out, images_root=args.images, iou_threshold=args.iou,
                              score_threshold=args.score, max_images=args.max_images,
                              progress=not args.no_progress)
    print(f"wrote {out}: {stats.images} images ({stats.teacher_images} run through the teacher, "
          f"{stats.copied_images} fully annotated copied unchanged, {stats.skipped_images} left unchanged past "
          f"--max-images, {stats.unreadable_images} missing or unreadable; {stats.problems} parser problems, "
          f"their lines copied unchanged) in {time.perf_counter() - t0:.1f} s")
    print(stats.summary())
    return 0
