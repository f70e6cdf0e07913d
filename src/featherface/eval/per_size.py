"""Recall per face size on the WIDER FACE ground truth: which face sizes a detector finds, at any score and at a fixed
raw score.

Definitions (one pass, vectorised numpy; per-image work only to index the boxes):

- faces: the ``gt_list`` faces of one setting (default ``hard``: every face that counts in the Hard AP); the faces
  that setting ignores are neither counted nor needed;
- face size: ``sqrt(w * h)`` of the ground-truth box (``x y w h`` of the ``.mat`` file, original image pixels, no
  "+1"), i.e. the side of the square of the same area (the COCO small/medium/large convention);
  ``size="max_side"`` uses ``max(w, h)`` instead;
- bins: ``[0, 16)``, ``[16, 32)``, ``[32, 64)``, ``[64, 128)``, ``[128, 256)``, ``[256, inf)`` pixels by default;
- a face is recalled at score ``t`` when at least one prediction of its image with *raw* score ``>= t`` has IoU
  ``>= 0.5`` with it, IoU with the "+1" pixel convention of the official evaluator. There is no one-to-one
  assignment (a prediction may recall two heavily overlapping faces), so "recall at any score" can exceed the
  official Hard recall at its lowest threshold by the few faces that the official greedy matching gives to a
  neighbour;
- scores are the raw scores of the prediction files, *not* the dataset-wide min-max normalised scores the official
  AP uses: ``score >= 0.5`` means the detector's own 0.5 (for detectors with probability scores).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featherface.eval.widerface import (
    GroundTruth,
    PathLike,
    index_predictions,
    load_ground_truth,
    overlap_pairs,
    read_predictions,
)
from featherface.fsutil import atomic_write

__all__ = ["DEFAULT_SIZE_BINS", "SIZE_MEASURES", "SizeRecall", "size_recall", "face_sizes", "save_size_recall_plot"]

DEFAULT_SIZE_BINS: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, 256.0)
SIZE_MEASURES = ("sqrt_area", "max_side")


def face_sizes(boxes_xywh: np.ndarray, size: str = "sqrt_area") -> np.ndarray:
    """Size in pixels of ``[K, 4]`` ``x y w h`` boxes: ``sqrt(w*h)`` (``sqrt_area``) or ``max(w, h)`` (``max_side``).
    Negative widths or heights count as 0."""
    b = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    w = np.maximum(b[:, 2], 0.0)
    h = np.maximum(b[:, 3], 0.0)
    if size == "sqrt_area":
        return np.sqrt(w * h)
    if size == "max_side":
        return np.maximum(w, h)
    raise ValueError(f"size must be one of {SIZE_MEASURES}, got {size!r}")


def _fmt_edge(v: float) -> str:
    return f"{v:g}"


def bin_labels(edges: Sequence[float]) -> list[str]:
    """``['<16', '16-32', ..., '>=256']`` for edges ``(16, 32, ..., 256)``."""
    e = [_fmt_edge(x) for x in edges]
    return [f"<{e[0]}"] + [f"{a}-{b}" for a, b in zip(e[:-1], e[1:])] + [f">={e[-1]}"]


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.divide(a, b, out=np.full(a.shape, np.nan), where=b > 0)


@dataclass
class SizeRecall:
    """Recall per face-size bin (see the module docstring for the definitions).

    ``edges``: the inner bin edges (bins ``[0, e0), [e0, e1), ..., [e_last, inf)``); per bin ``num_faces``,
    ``recalled_any`` (faces with a prediction at IoU >= ``iou_threshold``, any score) and ``recalled_at_threshold``
    (same, raw score >= ``score_threshold``). ``sizes`` / ``best_scores``: per counted face (in ground-truth order),
    its size and the highest raw score among the predictions matching it (``-inf`` when none)."""

    edges: tuple[float, ...]
    labels: list[str]
    num_faces: np.ndarray
    recalled_any: np.ndarray
    recalled_at_threshold: np.ndarray
    score_threshold: float
    iou_threshold: float
    setting: str
    size: str
    sizes: np.ndarray
    best_scores: np.ndarray

    @property
    def recall_any(self) -> np.ndarray:
        """Recall per bin at any score (NaN for an empty bin)."""
        return _ratio(self.recalled_any, self.num_faces)

    @property
    def recall_at_threshold(self) -> np.ndarray:
        """Recall per bin counting only predictions with raw score >= ``score_threshold`` (NaN for an empty bin)."""
        return _ratio(self.recalled_at_threshold, self.num_faces)

    def recall_at(self, score: float) -> np.ndarray:
        """Recall per bin at another raw score threshold (``>=``), from the stored per-face best scores."""
        idx = np.searchsorted(np.asarray(self.edges), self.sizes, side="right")
        found = np.bincount(idx[self.best_scores >= score], minlength=len(self.labels))
        return _ratio(found, self.num_faces)

    @property
    def total_faces(self) -> int:
        return int(self.num_faces.sum())

    def to_dict(self) -> dict:
        """JSON-ready table: one row per bin plus ``total``; an empty bin's recall is ``None``."""

        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        ra, rt = self.recall_any, self.recall_at_threshold
        lows = [0.0, *self.edges]
        highs = [*self.edges, None]
        rows = [
            {
                "bin": lab,
                "min_px": float(lo),
                "max_px": float(hi) if hi is not None else None,
                "num_faces": int(n),
                "recalled_any_score": int(a),
                "recalled_at_score_threshold": int(t),
                "recall_any_score": num(x),
                "recall_at_score_threshold": num(y),
            }
            for lab, lo, hi, n, a, t, x, y in zip(
                self.labels, lows, highs, self.num_faces, self.recalled_any, self.recalled_at_threshold, ra, rt
            )
        ]
        n = self.total_faces
        a, t = int(self.recalled_any.sum()), int(self.recalled_at_threshold.sum())
        return {
            "setting": self.setting,
            "size": "sqrt(w*h)" if self.size == "sqrt_area" else "max(w,h)",
            "size_units": "ground-truth box, original image pixels",
            "score_threshold": self.score_threshold,
            "score_kind": "raw prediction-file scores (not the min-max normalised scores of the AP)",
            "iou_threshold": self.iou_threshold,
            "match": "a face is recalled when some prediction of its image (score >= threshold) has IoU >= "
            f"{self.iou_threshold:g} with it ('+1' pixel convention); faces ignored in the setting are not counted",
            "bins": rows,
            "total": {
                "num_faces": n,
                "recalled_any_score": a,
                "recalled_at_score_threshold": t,
                "recall_any_score": a / n if n else None,
                "recall_at_score_threshold": t / n if n else None,
            },
        }

    def format_table(self) -> str:
        """Plain-text table (one line per bin and a total line) for the console."""
        thr = f"score>={self.score_threshold:g}"
        size = "sqrt(w*h)" if self.size == "sqrt_area" else "max(w,h)"
        head = (
            f"Recall per face size ({self.setting.capitalize()} faces, size = {size} of the GT box in original pixels, "
            f"IoU >= {self.iou_threshold:g}, raw scores):"
        )
        lines = [head, f"  {'size px':<9} {'faces':>6}  {'any score':>9}  {thr:>10}"]

        def pct(x: float) -> str:
            return f"{x:9.4f}" if math.isfinite(x) else f"{'-':>9}"

        for lab, n, x, y in zip(self.labels, self.num_faces, self.recall_any, self.recall_at_threshold):
            lines.append(f"  {lab:<9} {int(n):>6}  {pct(x)}  {pct(y):>10}")
        n = self.total_faces
        tx = self.recalled_any.sum() / n if n else float("nan")
        ty = self.recalled_at_threshold.sum() / n if n else float("nan")
        lines.append(f"  {'all':<9} {n:>6}  {pct(tx)}  {pct(ty):>10}")
        return "\n".join(lines)


def size_recall(
    predictions: PathLike | Mapping[str, np.ndarray],
    gt: PathLike | GroundTruth,
    *,
    bins: Sequence[float] = DEFAULT_SIZE_BINS,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    setting: str = "hard",
    size: str = "sqrt_area",
    image_list: Iterable[str] | None = None,
) -> SizeRecall:
    """Recall per face-size bin of ``predictions`` on the ``setting`` faces of ``gt`` (module docstring).

    ``predictions``: a folder of official prediction files or a mapping ``'event/name'`` (or ``'name'``) -> [N, 5]
    ``x y w h score``, looked up per ground-truth image as :func:`~featherface.eval.widerface.evaluate` does (images
    without predictions recall nothing). ``bins``: increasing inner edges in pixels. ``score_threshold`` applies to
    the raw scores (``>=``). ``image_list`` restricts the ground truth to those images."""
    edges = tuple(float(e) for e in bins)
    if not edges or any(not math.isfinite(e) or e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bins must be increasing positive pixel edges, got {bins!r}")
    if size not in SIZE_MEASURES:
        raise ValueError(f"size must be one of {SIZE_MEASURES}, got {size!r}")
    preds = read_predictions(predictions) if not isinstance(predictions, Mapping) else predictions
    g = gt if isinstance(gt, GroundTruth) else load_ground_truth(gt)
    if setting not in g.keep:
        raise ValueError(f"setting must be one of {sorted(g.keep)}, got {setting!r}")
    if image_list is not None:
        g = g.subset(list(image_list))
    full, base = index_predictions(preds)

    # counted faces of every image (ground-truth order) and the predictions of the images that have both
    faces_l: list[np.ndarray] = []
    preds_l: list[np.ndarray] = []
    gts_l: list[np.ndarray] = []
    face_offsets_l: list[int] = []
    n_faces = 0
    for ev, name, boxes, keep in zip(g.events, g.names, g.boxes, g.keep[setting]):
        if len(keep) == 0:
            continue
        fb = boxes[keep]
        faces_l.append(fb)
        p = full.get(f"{ev}/{name}")
        if p is None:
            p = base.get(name)
        if p is not None and len(p):
            preds_l.append(p)
            gts_l.append(fb)
            face_offsets_l.append(n_faces)
        n_faces += len(fb)
    faces = np.concatenate(faces_l) if faces_l else np.zeros((0, 4), np.float64)
    sizes = face_sizes(faces, size)
    best = np.full(n_faces, -np.inf)
    if preds_l:
        pid, row, _ = overlap_pairs(preds_l, gts_l, iou_threshold)
        if pid.size:
            # row of the concatenated gts_l -> index among all counted faces
            to_face = np.concatenate([np.arange(o, o + len(fb)) for fb, o in zip(gts_l, face_offsets_l)])
            scores = np.concatenate(preds_l)[:, 4]
            np.maximum.at(best, to_face[row], scores[pid])
    idx = np.searchsorted(np.asarray(edges), sizes, side="right")  # edge value belongs to the upper bin
    nb = len(edges) + 1
    return SizeRecall(
        edges=edges,
        labels=bin_labels(edges),
        num_faces=np.bincount(idx, minlength=nb),
        recalled_any=np.bincount(idx[np.isfinite(best)], minlength=nb),
        recalled_at_threshold=np.bincount(idx[best >= score_threshold], minlength=nb),
        score_threshold=float(score_threshold),
        iou_threshold=float(iou_threshold),
        setting=setting,
        size=size,
        sizes=sizes,
        best_scores=best,
    )


def save_size_recall_plot(sr: SizeRecall, path: str | os.PathLike, title: str = "") -> Path:
    """Bar chart of recall per size bin, two series (any score, raw score >= threshold), face counts under the bins
    (matplotlib, Agg backend). Written to a temporary file in the same folder and renamed into place."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    x = np.arange(len(sr.labels))
    ra = np.nan_to_num(sr.recall_any, nan=0.0)
    rt = np.nan_to_num(sr.recall_at_threshold, nan=0.0)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    w = 0.38
    b1 = ax.bar(x - w / 2, ra, w, color="tab:blue", label="any score")
    b2 = ax.bar(x + w / 2, rt, w, color="tab:orange", label=f"raw score >= {sr.score_threshold:g}")
    for bars, vals, n in ((b1, ra, sr.num_faces), (b2, rt, sr.num_faces)):
        for bar, v, k in zip(bars, vals, n):
            if k:
                ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{lab}\nn={int(n)}" for lab, n in zip(sr.labels, sr.num_faces)])
    size = "sqrt(w*h)" if sr.size == "sqrt_area" else "max(w,h)"
    ax.set_xlabel(f"face size {size} (px, original image)")
    ax.set_ylabel(f"recall (IoU >= {sr.iou_threshold:g})")
    ax.set_ylim(0, 1.2)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncol=2, frameon=False)
    ax.set_title(title or f"Recall per face size, {sr.setting.capitalize()} faces", fontsize=9)
    fig.tight_layout()
    try:
        atomic_write(p, lambda fh: fig.savefig(fh, format="png"))
    finally:
        plt.close(fig)
    return p
