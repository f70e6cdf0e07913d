"""Training augmentation as pure functions with an injected ``np.random.Generator``.

Every function takes a :class:`Sample` (uint8 ``HxWx3`` BGR image, ``float32 [G,4]`` ``x1 y1 x2 y2`` boxes in
pixels, ``float32 [G,10]`` landmarks in pixels, ``bool [G]`` ``has_landmarks``, ``float32 [G]`` per-box
``weights``) and returns a *new* sample; inputs are never modified. All randomness comes from the ``rng``
argument, so the same generator state gives the same output.

Coordinates are continuous: pixel ``i`` covers ``[i, i+1)``, so a horizontal flip maps ``x -> W - x`` and an
image of width ``W`` holds boxes with ``0 <= x1 < x2 <= W``.

The RetinaFace policy (:class:`TrainTransform`) follows the upstream order:
square crop -> photometric distortion -> pad to square if the crop failed -> mirror -> resize -> normalise.
Deliberate differences from upstream, all documented here:

* a face whose landmarks are not all inside the crop (or CutMix region) keeps its box but loses its landmarks
  (``has_landmarks`` False) instead of having its points clipped to the border;
* an image with no face is cropped on the first try (upstream cannot handle it at all, defect T7;
  codes in docs/upstream-defects.md);
* faces smaller than ``min_face_size`` output pixels are dropped after resize; the default 0 keeps every
  box of positive size, as upstream does (T6); set e.g. 2.0 to drop sub-2-pixel faces;
* landmarks of faces without landmarks are always zeros (use ``has_landmarks``).

MixUp / CutMix are *detection-aware* (unlike upstream V2, D5): boxes of both images are kept with per-box
weights (MixUp: ``lambda`` for the first image's faces and ``1 - lambda`` for the second's; CutMix: the visible
area ratio of each kept face). The weights travel in the target dict as ``"weights"``; the project's
``MultiBoxLoss`` port ignores them (every kept face is a full positive, the usual practice for detection
MixUp), a loss may multiply per-face terms by them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from featherface.geometry.landmarks import mirror_points
from featherface.preprocessing import DEFAULT_PREPROCESSING, Preprocessing, preprocess

__all__ = [
    "Sample",
    "MEAN_BGR",
    "CROP_SCALES",
    "INTERPOLATIONS",
    "random_square_crop",
    "photometric_distort",
    "pad_to_square",
    "mirror",
    "random_mirror",
    "resize_square",
    "to_network_input",
    "filter_small",
    "mixup",
    "cutmix",
    "TrainTransform",
]

MEAN_BGR = DEFAULT_PREPROCESSING.fill_bgr  # the mean colour that padding is filled with (default preprocessing)
CROP_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)
INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # uint8 [H, W, 3] BGR
    boxes: np.ndarray  # float32 [G, 4] x1 y1 x2 y2 pixels
    landmarks: np.ndarray  # float32 [G, 10] pixels (zeros where has_landmarks is False)
    has_landmarks: np.ndarray  # bool [G]
    weights: np.ndarray | None = None  # float32 [G]; None means all ones
    ignore: np.ndarray | None = None  # bool [G]; True: an ignore region (neither face nor background); None: none

    def __post_init__(self) -> None:
        g = self.boxes.shape[0]
        object.__setattr__(self, "boxes", np.asarray(self.boxes, np.float32).reshape(g, 4))
        object.__setattr__(self, "landmarks", np.asarray(self.landmarks, np.float32).reshape(g, 10))
        object.__setattr__(self, "has_landmarks", np.asarray(self.has_landmarks, bool).reshape(g))
        w = np.ones(g, np.float32) if self.weights is None else np.asarray(self.weights, np.float32).reshape(g)
        object.__setattr__(self, "weights", w)
        ig = np.zeros(g, bool) if self.ignore is None else np.asarray(self.ignore, bool).reshape(g)
        object.__setattr__(self, "ignore", ig)

    @property
    def num_faces(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, keep: np.ndarray) -> Sample:
        return Sample(self.image.copy(), self.boxes[keep], self.landmarks[keep], self.has_landmarks[keep],
                      self.weights[keep], self.ignore[keep])

    def with_geometry(self, image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray,
                      has_landmarks: np.ndarray | None = None, keep: np.ndarray | None = None) -> Sample:
        """A new sample with ``image`` and the given per-face geometry; the per-face attributes that a geometric
        transform does not change (weights, ignore flags, and ``has_landmarks`` unless given) are carried over,
        restricted to ``keep`` (a mask or index array over this sample's faces) when given."""
        sel = slice(None) if keep is None else keep
        has = self.has_landmarks[sel] if has_landmarks is None else has_landmarks
        return Sample(image, boxes, landmarks, has, self.weights[sel].copy(), self.ignore[sel].copy())

    @staticmethod
    def create(image, boxes=None, landmarks=None, has_landmarks=None, weights=None, ignore=None) -> Sample:
        boxes = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
        g = boxes.shape[0]
        landmarks = np.zeros((g, 10), np.float32) if landmarks is None else landmarks
        has_landmarks = np.zeros(g, bool) if has_landmarks is None else has_landmarks
        return Sample(np.asarray(image), boxes, landmarks, has_landmarks, weights, ignore)


def _zero_missing(landmarks: np.ndarray, has: np.ndarray) -> np.ndarray:
    out = landmarks.copy()
    out[~has] = 0.0
    return out


def _landmarks_inside(landmarks: np.ndarray, rect) -> np.ndarray:
    x1, y1, x2, y2 = rect
    pts = landmarks.reshape(-1, 5, 2)
    inside = (pts[..., 0] >= x1) & (pts[..., 0] <= x2) & (pts[..., 1] >= y1) & (pts[..., 1] <= y2)
    return inside.all(axis=1)


# --------------------------------------------------------------------------------------------- crop
def random_square_crop(sample: Sample, rng: np.random.Generator, scales=CROP_SCALES,
                       max_tries: int = 250, fill=MEAN_BGR) -> tuple[Sample, bool]:
    """RetinaFace ``_crop``: up to ``max_tries`` square crops of side ``int(s * min(H, W))``, ``s`` drawn from
    ``scales``, at a random position. A try is accepted if at least one face (not an ignore region) lies fully
    inside; the crop keeps exactly the faces whose centre is strictly inside it, with boxes clipped to the crop.
    Returns ``(sample, True)`` on success and ``(copy of the input, False)`` when every try failed. An image with
    no face is cropped on the first try.

    Scales above 1 zoom out (SCRFD's sample redistribution): the square is larger than the image on at least one
    side, the image is placed at a random offset inside it and the rest is filled with ``fill`` (the mean colour),
    so faces come out smaller after the resize."""
    img = sample.image
    h, w = img.shape[:2]
    boxes = sample.boxes
    countable = ~sample.ignore
    for _ in range(max_tries):
        s = float(scales[int(rng.integers(len(scales)))])
        side = int(s * min(h, w))
        if side < 1:
            continue
        # left/top range over every position where the square covers the image as much as it can
        left = int(rng.integers(min(0, w - side), max(0, w - side) + 1))
        top = int(rng.integers(min(0, h - side), max(0, h - side) + 1))
        x1, y1, x2, y2 = left, top, left + side, top + side
        if countable.any():
            fully = ((boxes[:, 0] >= x1) & (boxes[:, 1] >= y1) & (boxes[:, 2] <= x2) & (boxes[:, 3] <= y2))
            if not (fully & countable).any():
                continue
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        keep = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
        if countable.any() and not (keep & countable).any():
            continue
        nb = boxes[keep].copy()
        nb[:, [0, 2]] = np.clip(nb[:, [0, 2]], max(x1, 0), min(x2, w)) - x1
        nb[:, [1, 3]] = np.clip(nb[:, [1, 3]], max(y1, 0), min(y2, h)) - y1
        lm = sample.landmarks[keep]
        has = sample.has_landmarks[keep] & _landmarks_inside(lm, (x1, y1, x2, y2))
        lm = lm.copy()
        lm[:, 0::2] -= x1
        lm[:, 1::2] -= y1
        lm = _zero_missing(lm, has)
        # centre strictly inside => positive size after clipping; guard against float rounding anyway
        ok = (nb[:, 2] > nb[:, 0]) & (nb[:, 3] > nb[:, 1])
        if x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h:
            crop = img[y1:y2, x1:x2].copy()
        else:
            crop = np.empty((side, side, 3), np.uint8)
            crop[:] = np.array(fill, np.float64).round().astype(np.uint8)
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
            crop[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = img[sy1:sy2, sx1:sx2]
        idx = np.flatnonzero(keep)[ok]
        return sample.with_geometry(crop, nb[ok], lm[ok], has[ok], keep=idx), True
    return sample.with_geometry(img.copy(), boxes.copy(), sample.landmarks.copy()), False


# --------------------------------------------------------------------------------------------- photometric
def photometric_distort(sample: Sample, rng: np.random.Generator, brightness: float = 32.0,
                        contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue: int = 18) -> Sample:
    """RetinaFace ``_distort``: each with probability 0.5, brightness ``+U(-32, 32)``, contrast ``xU(0.5, 1.5)``,
    saturation ``xU(0.5, 1.5)`` (HSV S), hue ``+randint(-18, 18) mod 180``; contrast first or last (50/50).
    Geometry is unchanged."""
    img = sample.image.astype(np.float32)

    def _contrast(im):
        if rng.random() < 0.5:
            im = im * rng.uniform(*contrast)
        return np.clip(im, 0, 255)

    if rng.random() < 0.5:
        img = np.clip(img + rng.uniform(-brightness, brightness), 0, 255)
    contrast_first = rng.random() < 0.5
    if contrast_first:
        img = _contrast(img)
    do_sat = rng.random() < 0.5
    sat = rng.uniform(*saturation) if do_sat else 1.0
    do_hue = rng.random() < 0.5
    dh = int(rng.integers(-hue, hue + 1)) if do_hue else 0
    if do_sat or do_hue:
        hsv = cv2.cvtColor(np.round(img).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.int32)
        if do_sat:
            hsv[..., 1] = np.clip(np.round(hsv[..., 1] * sat), 0, 255)
        if do_hue:
            hsv[..., 0] = (hsv[..., 0] + dh) % 180
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    if not contrast_first:
        img = _contrast(img)
    out = np.round(img).astype(np.uint8)
    return sample.with_geometry(out, sample.boxes.copy(), sample.landmarks.copy())


# --------------------------------------------------------------------------------------------- geometry
def pad_to_square(sample: Sample, fill=MEAN_BGR) -> Sample:
    """Pad to ``max(H, W)`` square with the mean colour, image at the top-left (boxes unchanged)."""
    h, w = sample.image.shape[:2]
    side = max(h, w)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = np.array(fill, np.float64).round().astype(np.uint8)
    out[:h, :w] = sample.image
    return sample.with_geometry(out, sample.boxes.copy(), sample.landmarks.copy())


def mirror(sample: Sample) -> Sample:
    """Horizontal flip: ``x -> W - x``; landmark points swapped left/right (eyes 0<->1, mouth corners 3<->4)."""
    w = sample.image.shape[1]
    img = sample.image[:, ::-1].copy()
    b = sample.boxes.astype(np.float64)
    nb = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], axis=1).astype(np.float32)
    pts = mirror_points(sample.landmarks.astype(np.float64), w)
    lm = _zero_missing(pts.astype(np.float32), sample.has_landmarks)
    return sample.with_geometry(img, nb, lm)


def random_mirror(sample: Sample, rng: np.random.Generator, p: float = 0.5) -> Sample:
    if rng.random() < p:
        return mirror(sample)
    return sample.with_geometry(sample.image.copy(), sample.boxes.copy(), sample.landmarks.copy())


def resize_square(sample: Sample, rng: np.random.Generator | None = None, size: int = 640,
                  interpolation: int | None = None) -> Sample:
    """Resize to ``size x size``; the interpolation is drawn uniformly from :data:`INTERPOLATIONS` by ``rng``
    unless given. Boxes and landmarks scale with the image (x and y separately if it was not square)."""
    h, w = sample.image.shape[:2]
    if interpolation is None:
        interpolation = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))] if rng is not None else cv2.INTER_LINEAR
    img = cv2.resize(sample.image, (size, size), interpolation=interpolation)
    sx, sy = size / w, size / h
    nb = (sample.boxes.astype(np.float64) * [sx, sy, sx, sy]).astype(np.float32)
    nb = np.clip(nb, 0, size)
    lm = (sample.landmarks.astype(np.float64) * np.tile([sx, sy], 5)).astype(np.float32)
    return sample.with_geometry(img, nb, _zero_missing(lm, sample.has_landmarks))


def filter_small(sample: Sample, min_face_size: float = 0.0, *, as_ignore: bool = False) -> Sample:
    """Keep faces with positive width and height and ``min(w, h) >= min_face_size`` pixels. With ``as_ignore``
    the faces below ``min_face_size`` (of positive size) are kept as ignore regions instead of being dropped."""
    b = sample.boxes
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    positive_size = (bw > 0) & (bh > 0)
    big = np.minimum(bw, bh) >= min_face_size
    if not as_ignore:
        return sample.select(positive_size & big)
    out = sample.select(positive_size)
    ignore = out.ignore | ~big[positive_size]
    return Sample(out.image, out.boxes, out.landmarks, out.has_landmarks, out.weights, ignore)


def to_network_input(image: np.ndarray, preprocessing: Preprocessing = DEFAULT_PREPROCESSING) -> np.ndarray:
    """uint8 HxWx3 BGR -> float32 3xHxW network input: :func:`featherface.preprocessing.preprocess` at scale 1, the
    same function (and record) as inference."""
    return preprocess(image, preprocessing=preprocessing)


# --------------------------------------------------------------------------------------------- mixing
def _check_same_size(a: Sample, b: Sample) -> None:
    if a.image.shape != b.image.shape:
        raise ValueError(f"mixing needs images of the same shape, got {a.image.shape} and {b.image.shape}")


def mixup(sample_a: Sample, sample_b: Sample, rng: np.random.Generator, alpha: float = 0.2) -> tuple[Sample, float]:
    """Detection MixUp: pixels ``lam * a + (1 - lam) * b`` with ``lam ~ Beta(alpha, alpha)``; the faces of both
    images are kept, with per-box weights ``lam`` (faces of a) and ``1 - lam`` (faces of b), multiplied into
    any existing weights. Returns ``(sample, lam)``."""
    _check_same_size(sample_a, sample_b)
    lam = float(rng.beta(alpha, alpha))
    img = lam * sample_a.image.astype(np.float32) + (1.0 - lam) * sample_b.image.astype(np.float32)
    out = Sample(
        np.clip(np.round(img), 0, 255).astype(np.uint8),
        np.concatenate([sample_a.boxes, sample_b.boxes]),
        np.concatenate([sample_a.landmarks, sample_b.landmarks]),
        np.concatenate([sample_a.has_landmarks, sample_b.has_landmarks]),
        np.concatenate([sample_a.weights * lam, sample_b.weights * (1.0 - lam)]),
        np.concatenate([sample_a.ignore, sample_b.ignore]),
    )
    return out, lam


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def cutmix(sample_a: Sample, sample_b: Sample, rng: np.random.Generator, beta: float = 1.0,
           keep_ratio: float = 0.5, patch: tuple[int, int, int, int] | None = None) -> tuple[Sample, tuple]:
    """Detection CutMix: paste the rectangle ``patch = (x1, y1, x2, y2)`` of ``b`` into ``a`` at the same place.
    By default the patch area is ``1 - lam`` of the image (``lam ~ Beta(beta, beta)``) with a uniformly drawn
    centre, clipped to the image (as in Yun et al.).

    * faces of a keep their box if their visible area (outside the patch) is ``>= keep_ratio`` of their area,
      and are removed otherwise (pasted over); a kept face loses its landmarks if a point is under the patch;
    * faces of b are clipped to the patch and kept if the clipped area is ``>= keep_ratio`` of their area; they
      lose their landmarks if a point falls outside the patch.

    Weights are multiplied by each face's visible ratio. Returns ``(sample, patch)``."""
    _check_same_size(sample_a, sample_b)
    h, w = sample_a.image.shape[:2]
    if patch is None:
        lam = float(rng.beta(beta, beta))
        cut = np.sqrt(1.0 - lam)
        cw, ch = int(round(w * cut)), int(round(h * cut))
        cx, cy = int(rng.integers(w)), int(rng.integers(h))
        patch = (int(np.clip(cx - cw // 2, 0, w)), int(np.clip(cy - ch // 2, 0, h)),
                 int(np.clip(cx + cw - cw // 2, 0, w)), int(np.clip(cy + ch - ch // 2, 0, h)))
    px1, py1, px2, py2 = patch
    img = sample_a.image.copy()
    if px2 > px1 and py2 > py1:
        img[py1:py2, px1:px2] = sample_b.image[py1:py2, px1:px2]
    else:
        patch = (px1, py1, px1, py1)
        px2, py2 = px1, py1
    prect = np.array([[px1, py1, px2, py2]], np.float32)

    # faces of a
    ba = sample_a.boxes
    inter_a = np.stack([np.maximum(ba[:, 0], px1), np.maximum(ba[:, 1], py1),
                        np.minimum(ba[:, 2], px2), np.minimum(ba[:, 3], py2)], axis=1)
    area_a = _area(ba)
    vis_a = np.where(area_a > 0, 1.0 - _area(inter_a) / np.maximum(area_a, 1e-12), 0.0)
    keep_a = (vis_a >= keep_ratio) & (vis_a > 0)
    pts_a = sample_a.landmarks.reshape(-1, 5, 2)
    under = ((pts_a[..., 0] >= px1) & (pts_a[..., 0] < px2) & (pts_a[..., 1] >= py1) & (pts_a[..., 1] < py2)).any(1)
    has_a = sample_a.has_landmarks & ~under

    # faces of b
    bb = sample_b.boxes
    cb = np.concatenate([np.clip(bb[:, [0]], px1, px2), np.clip(bb[:, [1]], py1, py2),
                         np.clip(bb[:, [2]], px1, px2), np.clip(bb[:, [3]], py1, py2)], axis=1)
    area_b = _area(bb)
    vis_b = np.where(area_b > 0, _area(cb) / np.maximum(area_b, 1e-12), 0.0)
    keep_b = (vis_b >= keep_ratio) & (vis_b > 0) & (cb[:, 2] > cb[:, 0]) & (cb[:, 3] > cb[:, 1])
    has_b = sample_b.has_landmarks & _landmarks_inside(sample_b.landmarks, prect[0])

    lm = np.concatenate([_zero_missing(sample_a.landmarks, has_a)[keep_a],
                         _zero_missing(sample_b.landmarks, has_b)[keep_b]])
    out = Sample(
        img,
        np.concatenate([ba[keep_a], cb[keep_b]]),
        lm,
        np.concatenate([has_a[keep_a], has_b[keep_b]]),
        np.concatenate([(sample_a.weights * vis_a)[keep_a], (sample_b.weights * vis_b)[keep_b]]),
        np.concatenate([sample_a.ignore[keep_a], sample_b.ignore[keep_b]]),
    )
    return out, patch


# --------------------------------------------------------------------------------------------- pipeline
@dataclass
class TrainTransform:
    """RetinaFace training policy, optionally followed by detection MixUp / CutMix.

    ``mixup_prob`` and ``cutmix_prob`` are the fractions of samples that are mixed (mutually exclusive:
    ``mixup_prob + cutmix_prob <= 1``; one uniform draw decides). Upstream V2's *effective* rates were 0.25
    and 0.125; the V2 write-up quotes CutMix probability 0.5. Both default to 0 (plain V1 policy).

    Use :meth:`augment` for one image (-> :class:`Sample` at ``image_size``, uint8, pixel coordinates),
    :meth:`mix_mode` / :meth:`mix` to combine two augmented samples, and :meth:`finalize` to get the network
    input and the target dict. ``__call__`` does augment + finalize (no mixing; the dataset handles mixing
    because it needs a second image)."""

    image_size: int = 640
    crop_scales: tuple[float, ...] = CROP_SCALES
    crop_tries: int = 250
    distort: bool = True
    mirror_prob: float = 0.5
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING
    min_face_size: float = 0.0
    small_faces_ignored: bool = False
    mixup_prob: float = 0.0
    mixup_alpha: float = 0.2
    cutmix_prob: float = 0.0
    cutmix_beta: float = 1.0
    cutmix_keep_ratio: float = 0.5
    interpolations: tuple[int, ...] = field(default=INTERPOLATIONS)

    def __post_init__(self) -> None:
        for name in ("mixup_prob", "cutmix_prob", "mirror_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.mixup_prob + self.cutmix_prob > 1.0 + 1e-9:
            raise ValueError("mixup_prob + cutmix_prob must not exceed 1 (one sample is mixed at most once)")
        if self.image_size < 1 or not self.crop_scales:
            raise ValueError("image_size must be >= 1 and crop_scales non-empty")

    def augment(self, sample: Sample, rng: np.random.Generator) -> Sample:
        s, ok = random_square_crop(sample, rng, self.crop_scales, self.crop_tries, fill=self.preprocessing.fill_bgr)
        if self.distort:
            s = photometric_distort(s, rng)
        if not ok:
            s = pad_to_square(s, self.preprocessing.fill_bgr)
        s = random_mirror(s, rng, self.mirror_prob)
        interp = self.interpolations[int(rng.integers(len(self.interpolations)))]
        s = resize_square(s, size=self.image_size, interpolation=interp)
        return filter_small(s, self.min_face_size, as_ignore=self.small_faces_ignored)

    def mix_mode(self, rng: np.random.Generator) -> str | None:
        """``"mixup"`` with probability ``mixup_prob``, ``"cutmix"`` with ``cutmix_prob``, else None."""
        if self.mixup_prob == 0.0 and self.cutmix_prob == 0.0:
            return None
        u = rng.random()
        if u < self.mixup_prob:
            return "mixup"
        if u < self.mixup_prob + self.cutmix_prob:
            return "cutmix"
        return None

    def mix(self, mode: str, a: Sample, b: Sample, rng: np.random.Generator) -> Sample:
        if mode == "mixup":
            return mixup(a, b, rng, self.mixup_alpha)[0]
        if mode == "cutmix":
            return filter_small(cutmix(a, b, rng, self.cutmix_beta, self.cutmix_keep_ratio)[0], self.min_face_size,
                                as_ignore=self.small_faces_ignored)
        raise ValueError(f"unknown mix mode {mode!r}")

    def finalize(self, sample: Sample) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Network input ``float32 [3, S, S]`` and the target dict: the faces (``boxes``, ``landmarks``,
        ``has_landmarks``, ``weights``; normalised ``xyxy``) and the ignore regions (``ignore_boxes [I, 4]``)."""
        h, w = sample.image.shape[:2]
        scale = np.array([w, h, w, h], np.float32)
        face = ~sample.ignore
        target = {
            "boxes": (sample.boxes[face] / scale).astype(np.float32),
            "landmarks": _zero_missing(sample.landmarks[face] / np.tile(scale[:2], 5),
                                       sample.has_landmarks[face]).astype(np.float32),
            "has_landmarks": sample.has_landmarks[face].copy(),
            "weights": sample.weights[face].copy(),
            "ignore_boxes": (sample.boxes[sample.ignore] / scale).astype(np.float32).reshape(-1, 4),
        }
        return to_network_input(sample.image, self.preprocessing), target

    def __call__(self, sample: Sample, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.finalize(self.augment(sample, rng))
