"""Test-time protocols for WIDER FACE evaluation.

A protocol says at which scales (and flips) the detector looks at each image and how the candidates are merged:
every pass gives decoded boxes in original-image pixels, flips undone (``FaceDetector.predict_raw``, i.e.
:func:`featherface.geometry.postprocess.decode_detections`), all passes are pooled and go through the one
post-processing step of the API, :func:`featherface.geometry.postprocess.select_detections` (sort, optional
``top_k``, greedy NMS with the "+1" pixel convention, optional ``keep_top_k``). The defaults are the paper's / upstream ``test_widerface.py`` post-processing: score > 0.02,
NMS IoU 0.4, no top-k cut.

- :class:`OriginalSize` -- the paper's protocol: one pass at the original size.
- :class:`LongestSide` -- one pass with the longest side resized to ``size`` pixels (up or down).
- :class:`MultiScaleFlip` -- RetinaFace-style pyramid: a base scale puts the short side at ``target_size`` (capped so
  that the long side stays within ``max_size``), the test sizes ``scales`` are taken relative to ``target_size``
  (scale = size / target_size * base), and each scale is also run on the horizontally flipped image.

Every protocol has a ``name`` (e.g. ``original-size``, ``longest-side-1024``,
``multiscale-flip-500-800-1100-1400-1700``) and :meth:`describe` gives the full settings for result files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from typing import Protocol as _Protocol

import numpy as np

from featherface.geometry.postprocess import select_detections

__all__ = ["TestProtocol", "OriginalSize", "LongestSide", "MultiScaleFlip", "parse_protocol"]


class _RawDetector(_Protocol):  # pragma: no cover - typing only
    def predict_raw(
        self, image_bgr: np.ndarray, *, scale: float = 1.0, flip: bool = False, score_threshold: float = 0.02
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, kw_only=True)
class TestProtocol:
    """Base: post-processing shared by all protocols (keyword-only). Subclasses define :meth:`passes` and :attr:`name`."""

    score_threshold: float = 0.02
    nms_threshold: float = 0.4
    top_k: int | None = None
    keep_top_k: int | None = None

    __test__ = False  # not a pytest test class

    @property
    def name(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def passes(self, height: int, width: int) -> list[tuple[float, bool]]:  # pragma: no cover - overridden
        """(scale, flip) pairs to run on an image of this size."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        d = {"name": self.name, "kind": type(self).__name__, **asdict(self)}
        d["label"] = self.label
        return d

    @property
    def label(self) -> str:
        post = f"score > {self.score_threshold:g}, NMS IoU {self.nms_threshold:g}"
        post += f", top-k {self.top_k}" if self.top_k is not None else ", no top-k"
        post += f", keep {self.keep_top_k}" if self.keep_top_k is not None else ""
        return f"{self.name} ({post})"

    def detect(self, detector: _RawDetector, image_bgr: np.ndarray) -> np.ndarray:
        """Run the protocol: [N, 5] ``x1, y1, x2, y2, score`` in original-image pixels, descending score."""
        h, w = image_bgr.shape[:2]
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for scale, flip in self.passes(h, w):
            boxes, scores, landmarks = detector.predict_raw(
                image_bgr, scale=float(scale), flip=bool(flip), score_threshold=self.score_threshold
            )
            parts.append((np.asarray(boxes).reshape(-1, 4), np.asarray(scores).reshape(-1),
                          np.asarray(landmarks).reshape(-1, 10)))
        single = len(parts) == 1
        boxes, scores, landmarks = parts[0] if single else (np.concatenate([p[i] for p in parts]) for i in range(3))
        det = select_detections(
            boxes,
            scores,
            landmarks,
            nms_threshold=self.nms_threshold,
            top_k=self.top_k,
            keep_top_k=self.keep_top_k,
            # one pass is already by descending score (a re-sort could reorder equal scores)
            presorted=single and bool(np.all(scores[:-1] >= scores[1:])),
        )
        return np.concatenate([det.boxes.astype(np.float64), det.scores[:, None].astype(np.float64)], axis=1)


@dataclass(frozen=True)
class OriginalSize(TestProtocol):
    """The paper's protocol: the image at its original size, one pass."""

    @property
    def name(self) -> str:
        return "original-size"

    def passes(self, height: int, width: int) -> list[tuple[float, bool]]:
        return [(1.0, False)]


@dataclass(frozen=True)
class LongestSide(TestProtocol):
    """One pass with the longest image side resized to ``size`` pixels (aspect ratio kept)."""

    size: int = 1024

    def __post_init__(self) -> None:
        if int(self.size) <= 0:
            raise ValueError("LongestSide size must be positive")

    @property
    def name(self) -> str:
        return f"longest-side-{int(self.size)}"

    def passes(self, height: int, width: int) -> list[tuple[float, bool]]:
        return [(float(self.size) / float(max(height, width)), False)]


@dataclass(frozen=True)
class MultiScaleFlip(TestProtocol):
    """RetinaFace-style multi-scale + horizontal-flip testing.

    base = ``target_size`` / short side, reduced so that round(base * long side) <= ``max_size``; the passes are the
    scales ``s / target_size * base`` for ``s`` in ``scales``, each without and (``flip=True``) with a horizontal flip.
    ``max_pixels`` (optional) drops scales whose resized image would exceed that many pixels (a guard against running
    out of memory on large images; dropped scales are not recorded per image, so leave it None for published numbers).
    """

    scales: tuple[int, ...] = (500, 800, 1100, 1400, 1700)
    target_size: int = 800
    max_size: int = 1200
    flip: bool = True
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(int(s) for s in self.scales))
        if not self.scales or min(self.scales) <= 0:
            raise ValueError("MultiScaleFlip scales must be positive sizes")

    @property
    def name(self) -> str:
        n = "multiscale-flip" if self.flip else "multiscale"
        n += "-" + "-".join(str(s) for s in self.scales)
        if (self.target_size, self.max_size) != (800, 1200):
            n += f"-t{self.target_size}-m{self.max_size}"
        if self.max_pixels is not None:
            n += f"-px{self.max_pixels}"
        return n

    def base_scale(self, height: int, width: int) -> float:
        short, long_ = min(height, width), max(height, width)
        base = float(self.target_size) / float(short)
        if np.round(base * long_) > self.max_size:
            base = float(self.max_size) / float(long_)
        return base

    def passes(self, height: int, width: int) -> list[tuple[float, bool]]:
        base = self.base_scale(height, width)
        out: list[tuple[float, bool]] = []
        for s in self.scales:
            sc = float(s) / float(self.target_size) * base
            if self.max_pixels is not None and (height * sc) * (width * sc) > self.max_pixels:
                continue
            out.append((sc, False))
            if self.flip:
                out.append((sc, True))
        if not out:  # every scale too large: fall back to the smallest one
            sc = float(min(self.scales)) / float(self.target_size) * base
            out = [(sc, False)] + ([(sc, True)] if self.flip else [])
        return out


def parse_protocol(
    spec: str,
    *,
    score_threshold: float = 0.02,
    nms_threshold: float = 0.4,
    top_k: int | None = None,
    keep_top_k: int | None = None,
) -> TestProtocol:
    """Protocol from a short name: ``original`` / ``original-size``, ``longest-side-N`` (or ``longest:N``),
    ``multiscale-flip`` (RetinaFace scales) or ``multiscale-flip-500-800-1100`` (own scales), ``multiscale-...``
    without flip."""
    post = dict(score_threshold=score_threshold, nms_threshold=nms_threshold, top_k=top_k, keep_top_k=keep_top_k)
    s = spec.strip().lower().replace("_", "-").replace(":", "-").replace(",", "-")
    if s in ("original", "original-size", "origin", "origin-size"):
        return OriginalSize(**post)
    if s.startswith("longest-side-") or s.startswith("longest-"):
        num = s.rsplit("-", 1)[-1]
        if num.isdigit():
            return LongestSide(size=int(num), **post)
    if s.startswith("multiscale") or s.startswith("multi-scale"):
        s2 = s.replace("multi-scale", "multiscale")
        flip = s2.startswith("multiscale-flip")
        rest = s2[len("multiscale-flip") :] if flip else s2[len("multiscale") :]
        nums = [x for x in rest.split("-") if x]
        if all(x.isdigit() for x in nums):
            kw: dict[str, Any] = {"flip": flip}
            if nums:
                kw["scales"] = tuple(int(x) for x in nums)
            return MultiScaleFlip(**kw, **post)
    raise ValueError(
        f"unknown test protocol {spec!r}: use 'original-size', 'longest-side-N' or 'multiscale-flip[-S1-S2...]'"
    )
