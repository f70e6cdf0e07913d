"""WIDER FACE validation protocol: ground truth, prediction files and the official AP.

The algorithm is the official WIDER FACE evaluation as implemented by the widely used Python port
(``evaluation.py`` of wondervictor/WiderFace-Evaluation, copied into biubug6/Pytorch_Retinaface and FeatherFace),
re-written from its specification (the official MATLAB / Python evaluation code) as vectorised numpy:

1. every box of every prediction loaded is min-max normalised with one dataset-wide range; as in the reference the
   running minimum starts at 1 and the running maximum at 0, i.e. ``lo = min(1, min(scores))``,
   ``hi = max(0, max(scores))`` and ``s' = (s - lo) / (hi - lo)``. When ``hi == lo`` (the reference divides by zero)
   every normalised score is 1;
2. per image the boxes are sorted by descending normalised score with a *stable* sort (files that are already sorted,
   as every upstream writer produces them, are processed exactly in file order like the reference);
3. each prediction looks at its single best-overlapping ground-truth face (IoU with the "+1" pixel convention, first
   index on ties); with IoU >= 0.5 it is dropped from the proposal count when that face is outside the setting's
   ``gt_list`` (an ignored face), it is a true positive when the face counts and has not been found yet, otherwise
   (duplicate or IoU < 0.5) a false positive;
4. for the 1,000 thresholds ``1 - (t + 1) / 1000`` (``>=``), precision = sum TP / sum proposals and recall =
   sum TP / number of ``gt_list`` faces (every image counts in the denominator, also those without predictions);
   thresholds with no proposal at all get precision 0 (the reference produces NaN there, which only ever sits where
   recall is 0 and therefore does not change its AP);
5. AP is the VOC all-point area (sentinels recall 0 -> 1, precision 0 at the end, right-to-left envelope).

Differences from the port, all on inputs where it crashes or is wrong: a GT image without a prediction file has no
detections (the port raises ``KeyError``), the image key drops a real image suffix (not ``rstrip('.jpg')``), both
``/`` and ``\\`` separate path parts, stray files (``.DS_Store``) and non-``.txt`` files are ignored, blank lines are
skipped and lines with more than five fields use the first five (a line with fewer fields, or a field that is not a
finite number, is an error naming ``file:line``). With score-sorted files the results equal the reference's to the
last bit (same double-precision operations in the same order).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from featherface.errors import InputError
from featherface.imageio import IMAGE_SUFFIXES

if TYPE_CHECKING:  # pragma: no cover
    from featherface.eval.per_size import SizeRecall

__all__ = [
    "SETTINGS",
    "GT_FILES",
    "GroundTruth",
    "SettingResult",
    "WiderResult",
    "load_ground_truth",
    "save_ground_truth",
    "read_prediction_file",
    "read_predictions",
    "write_prediction_file",
    "write_predictions",
    "normalise_key",
    "read_image_list",
    "evaluate",
    "voc_ap",
]

SETTINGS: tuple[str, ...] = ("easy", "medium", "hard")
GT_FILES: dict[str, str] = {
    "all": "wider_face_val.mat",
    "easy": "wider_easy_val.mat",
    "medium": "wider_medium_val.mat",
    "hard": "wider_hard_val.mat",
}

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------------------------------------
# keys and image lists


def normalise_key(key: str) -> str:
    """``event/name`` form of an image reference: ``\\`` -> ``/``, no leading ``/`` or ``./``, no image suffix.

    >>> normalise_key('\\\\0--Parade\\\\0_Parade_marchingband_1_465.jpg')
    '0--Parade/0_Parade_marchingband_1_465'
    """
    k = str(key).strip().replace("\\", "/")
    while k.startswith("./"):
        k = k[2:]
    k = k.strip("/")
    low = k.lower()
    for suf in IMAGE_SUFFIXES:
        if low.endswith(suf) and len(k) > len(suf):
            k = k[: -len(suf)]
            break
    return k


def _basename(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def read_image_list(path: PathLike) -> list[str]:
    """Image paths of a list file (``val-dev.txt``, biubug6 ``wider_val.txt`` with leading ``/``, or RetinaFace
    ``label.txt`` lines starting with ``#``): relative paths with their suffix, in file order, without duplicates."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image list not found: {p}")
    out: list[str] = []
    seen: set[str] = set()
    with open(p, encoding="utf-8-sig") as f:
        label_style = None
        for line in f:
            s = line.strip()
            if not s:
                continue
            if label_style is None:
                label_style = s.startswith("#")
            if label_style:
                if not s.startswith("#"):
                    continue
                s = s[1:].strip()
            s = s.replace("\\", "/").lstrip("/")
            if s not in seen:
                seen.add(s)
                out.append(s)
    if not out:
        raise InputError(f"image list is empty: {p}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# ground truth


@dataclass
class GroundTruth:
    """Evaluation ground truth, one entry per image in the order of ``wider_face_val.mat``.

    ``boxes[i]``: float64 [K, 4] ``x, y, w, h``; ``keep[setting][i]``: int64 0-based indices of the faces that count
    in that setting (the ``gt_list`` minus one); all other faces of the image are ignored in that setting.
    """

    events: list[str]
    names: list[str]
    boxes: list[np.ndarray]
    keep: dict[str, list[np.ndarray]]
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(self.events) != n or len(self.boxes) != n or any(len(v) != n for v in self.keep.values()):
            raise ValueError("GroundTruth: events, names, boxes and keep lists must have one entry per image")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def keys(self) -> list[str]:
        return [f"{e}/{n}" for e, n in zip(self.events, self.names)]

    def num_faces(self, setting: str | None = None) -> int:
        if setting is None:
            return int(sum(len(b) for b in self.boxes))
        return int(sum(len(k) for k in self.keep[setting]))

    def subset(self, images: Iterable[str]) -> GroundTruth:
        """The images named in ``images`` (``event/name[.jpg]`` or ``name``), kept in ground-truth order.

        Unknown names raise :class:`InputError`; this is how an image list (val-dev) restricts the evaluation, and it
        gives the same result as ground-truth files cut down to the list."""
        wanted: set[str] = set()
        for im in images:
            wanted.add(normalise_key(im))
        full = {f"{e}/{n}": i for i, (e, n) in enumerate(zip(self.events, self.names))}
        base: dict[str, int] = {}
        for i, n in enumerate(self.names):
            base[n] = -1 if n in base else i
        idx: set[int] = set()
        for w in wanted:
            if w in full:
                idx.add(full[w])
            elif "/" not in w and base.get(w, -1) >= 0:
                idx.add(base[w])
            else:
                raise InputError(f"image '{w}' is not in the ground truth {self.source or ''}".rstrip())
        order = sorted(idx)
        return GroundTruth(
            events=[self.events[i] for i in order],
            names=[self.names[i] for i in order],
            boxes=[self.boxes[i] for i in order],
            keep={s: [v[i] for i in order] for s, v in self.keep.items()},
            source=f"{self.source} (subset of {len(order)} images)",
        )


_GT_CACHE: dict[tuple, GroundTruth] = {}


def _cell_str(x) -> str:
    a = np.asarray(x)
    while a.dtype == object and a.size == 1:
        a = np.asarray(a.reshape(-1)[0])
    if a.size != 1:
        return "".join(str(c) for c in a.reshape(-1))
    return str(a.reshape(-1)[0])


def _cells(x) -> list:
    """Elements of a MATLAB cell array (N x 1 or 1 x N object array) as a flat list."""
    a = np.asarray(x)
    return list(a.reshape(-1)) if a.dtype == object else [a]


def load_ground_truth(gt_dir: PathLike) -> GroundTruth:
    """Read ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` from ``gt_dir``.

    Parsed once per process (cached by resolved path, size and modification time of the four files)."""
    import scipy.io as sio

    d = Path(gt_dir)
    if not d.is_dir():
        raise InputError(f"ground-truth folder not found: {d}")
    paths = {k: d / v for k, v in GT_FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise InputError(f"ground-truth folder {d} lacks {', '.join(missing)}")
    stamp = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values())
    cached = _GT_CACHE.get(stamp)
    if cached is not None:
        return cached

    def _load(p: Path, names: list[str]) -> dict:
        try:
            m = sio.loadmat(str(p), variable_names=names)
        except Exception as e:  # noqa: BLE001 - scipy raises many kinds for corrupt files
            raise InputError(f"cannot read ground-truth file {p}: {e}") from None
        absent = [n for n in names if n not in m]
        if absent:
            raise InputError(f"ground-truth file {p} has no variable {', '.join(absent)}")
        return m

    main = _load(paths["all"], ["event_list", "file_list", "face_bbx_list"])
    ev_cells = _cells(main["event_list"])
    file_cells = _cells(main["file_list"])
    box_cells = _cells(main["face_bbx_list"])
    if not (len(ev_cells) == len(file_cells) == len(box_cells)):
        raise InputError(f"ground-truth file {paths['all']}: event_list, file_list and face_bbx_list differ in length")
    events: list[str] = []
    names: list[str] = []
    boxes: list[np.ndarray] = []
    per_event_counts: list[int] = []
    for ev, files, bxs in zip(ev_cells, file_cells, box_cells):
        ev_name = _cell_str(ev)
        fl = _cells(files)
        bl = _cells(bxs)
        if len(fl) != len(bl):
            raise InputError(f"ground-truth file {paths['all']}: event {ev_name} has {len(fl)} files, {len(bl)} box sets")
        per_event_counts.append(len(fl))
        for fn, b in zip(fl, bl):
            events.append(ev_name)
            names.append(normalise_key(_cell_str(fn)))
            arr = np.asarray(b)
            if arr.dtype == object:
                arr = np.asarray(arr.reshape(-1)[0]) if arr.size == 1 else np.zeros((0, 4))
            boxes.append(arr.astype(np.float64).reshape(-1, 4) if arr.size else np.zeros((0, 4), np.float64))

    keep: dict[str, list[np.ndarray]] = {}
    for s in SETTINGS:
        m = _load(paths[s], ["gt_list"])
        ev_lists = _cells(m["gt_list"])
        if len(ev_lists) != len(per_event_counts):
            raise InputError(f"ground-truth file {paths[s]}: gt_list has {len(ev_lists)} events, expected {len(per_event_counts)}")
        out: list[np.ndarray] = []
        for e, (cell, cnt) in enumerate(zip(ev_lists, per_event_counts)):
            imgs = _cells(cell)
            if len(imgs) != cnt:
                raise InputError(f"ground-truth file {paths[s]}: event {e + 1} lists {len(imgs)} images, expected {cnt}")
            for k in imgs:
                a = np.asarray(k)
                if a.dtype == object:
                    a = np.asarray(a.reshape(-1)[0]) if a.size == 1 else np.zeros(0)
                # 1-based MATLAB indices; cast before subtracting (gt_list is often uint8/uint16)
                out.append(a.reshape(-1).astype(np.int64) - 1)
        for i, k in enumerate(out):
            if k.size and (k.min() < 0 or k.max() >= len(boxes[i])):
                raise InputError(f"ground-truth file {paths[s]}: gt_list of image {names[i]} indexes a missing face")
        keep[s] = out

    gt = GroundTruth(events=events, names=names, boxes=boxes, keep=keep, source=str(d))
    _GT_CACHE[stamp] = gt
    return gt


def save_ground_truth(gt: GroundTruth, gt_dir: PathLike) -> None:
    """Write ``gt`` as the four official ``.mat`` files (same variables and cell layout as the official ones:
    ``event_list``, ``file_list``, ``face_bbx_list`` and, in the setting files, ``gt_list``). Used for tests and for
    ground-truth subsets."""
    import scipy.io as sio

    d = Path(gt_dir)
    d.mkdir(parents=True, exist_ok=True)
    order: list[str] = []
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(gt.events):
        if e not in groups:
            groups[e] = []
            order.append(e)
        groups[e].append(i)

    def cell(items: list) -> np.ndarray:
        c = np.empty((len(items), 1), dtype=object)
        for j, it in enumerate(items):
            c[j, 0] = it
        return c

    event_list = cell([np.array([e]) for e in order])
    file_list = cell([cell([np.array([gt.names[i]]) for i in groups[e]]) for e in order])
    bbx = cell([cell([np.asarray(gt.boxes[i]).reshape(-1, 4).astype(np.int32) for i in groups[e]]) for e in order])
    base = {"event_list": event_list, "file_list": file_list, "face_bbx_list": bbx}
    sio.savemat(str(d / GT_FILES["all"]), base, do_compression=True)
    for s in SETTINGS:
        gl = cell(
            [cell([(np.asarray(gt.keep[s][i], np.int64) + 1).astype(np.uint16).reshape(-1, 1) for i in groups[e]]) for e in order]
        )
        sio.savemat(str(d / GT_FILES[s]), {**base, "gt_list": gl}, do_compression=True)


# ----------------------------------------------------------------------------------------------------------------
# prediction files


def _key_from_header(header: str, fallback: str) -> str:
    h = header.strip()
    if not h:
        return normalise_key(fallback)
    return normalise_key(_basename(h.replace("\\", "/")))


def _parse_rows_slow(lines: list[tuple[int, str]], path: Path) -> np.ndarray:
    rows = []
    for lineno, line in lines:
        parts = line.split()
        if len(parts) < 5:
            raise InputError(f"{path}:{lineno}: expected 'x y w h score', got {line.strip()!r}")
        try:
            vals = [float(v) for v in parts[:5]]
        except ValueError:
            raise InputError(f"{path}:{lineno}: not a number in {line.strip()!r}") from None
        if not all(math.isfinite(v) for v in vals):
            raise InputError(f"{path}:{lineno}: non-finite value in {line.strip()!r}")
        rows.append(vals)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def _read_lines(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8-sig", errors="replace").splitlines()
    except OSError as e:
        raise InputError(f"cannot read prediction file {path}: {e.strerror}") from None


def _body(lines: list[str]) -> list[tuple[int, str]]:
    # line 2 is the box count; like the reference we trust the rows, not the count
    return [(i + 3, ln) for i, ln in enumerate(lines[2:]) if ln.strip()]


def read_prediction_file(path: PathLike) -> tuple[str, np.ndarray]:
    """One official prediction file -> (image name, float64 [N, 5] ``x y w h score``)."""
    p = Path(path)
    lines = _read_lines(p)
    name = _key_from_header(lines[0] if lines else "", p.stem)
    return name, _parse_rows_slow(_body(lines), p)


def _list_prediction_files(root: Path) -> list[tuple[str, Path]]:
    """(event folder relative to root in posix form, path) of every visible ``*.txt`` file, sorted."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root).as_posix()
        ev = "" if rel == "." else rel
        for fn in sorted(filenames):
            if not fn.startswith(".") and fn.lower().endswith(".txt"):
                found.append((ev, Path(dirpath) / fn))
    return found


def read_predictions(folder: PathLike) -> dict[str, np.ndarray]:
    """All ``*.txt`` prediction files below ``folder`` (normally ``<folder>/<event>/<image>.txt``).

    Keys are ``event/name`` (event = the file's folder relative to ``folder``, name = first line of the file without
    path or image suffix, or the file name when the first line is empty; a file directly in ``folder`` gives just
    ``name``). Hidden files and other suffixes are ignored."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"prediction folder not found: {root}")
    files = _list_prediction_files(root)
    if not files:
        raise InputError(f"prediction folder {root} has no .txt prediction files")
    keys: list[str] = []
    contents: list[list[str]] = []
    all_lines: list[str] = []
    for ev, p in files:
        lines = _read_lines(p)
        name = _key_from_header(lines[0] if lines else "", p.stem)
        keys.append(f"{ev}/{name}" if ev else name)
        contents.append(lines)
        all_lines.extend(lines[2:])
    counts = [max(len(c) - 2, 0) for c in contents]
    data = None
    if all_lines:
        try:
            data = np.loadtxt(all_lines, dtype=np.float64, usecols=(0, 1, 2, 3, 4), ndmin=2, comments=None)
        except ValueError:
            data = None
        if data is not None and data.shape[0] != len(all_lines):
            # blank lines somewhere (loadtxt skips them): count the non-blank rows per file
            counts = [len(_body(c)) for c in contents]
            if data.shape[0] != sum(counts):
                data = None
        if data is not None and not np.isfinite(data).all():
            data = None
        if data is None:  # locate the bad line (raises InputError with file:line)
            for (_, p), c in zip(files, contents):
                _parse_rows_slow(_body(c), p)
            raise InputError(f"cannot parse the prediction files in {root}")  # pragma: no cover
    out: dict[str, np.ndarray] = {}
    start = 0
    for (_, p), k, n in zip(files, keys, counts):
        arr = data[start : start + n] if n else np.zeros((0, 5), np.float64)
        start += n
        if k in out:
            raise InputError(f"prediction file {p} repeats image '{k}'")
        out[k] = arr
    return out


def _fmt(v: float) -> str:
    r = repr(float(v))
    return r[:-2] if r.endswith(".0") else r


def write_prediction_file(path: PathLike, name: str, dets: np.ndarray) -> None:
    """Write one official prediction file: image name, count, then ``x y w h score`` per line with float values
    (shortest text that reads back as the same double)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
    lines = [name, str(len(arr))]
    lines.extend(" ".join(_fmt(v) for v in row) for row in arr.tolist())
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_predictions(predictions: Mapping[str, np.ndarray], folder: PathLike) -> list[Path]:
    """Write ``{'event/name': [N, 5] x y w h score}`` as ``folder/event/name.txt`` files; returns the paths."""
    root = Path(folder)
    written = []
    for key, dets in predictions.items():
        k = normalise_key(key)
        name = _basename(k)
        p = root.joinpath(*k.split("/")).with_name(name + ".txt")
        write_prediction_file(p, name, dets)
        written.append(p)
    return written


# ----------------------------------------------------------------------------------------------------------------
# evaluation


@dataclass
class SettingResult:
    """One setting: AP, the 1,000-point curve (threshold order: descending normalised score) and counts."""

    name: str
    ap: float
    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    true_positives: np.ndarray
    proposals: np.ndarray
    num_faces: int

    def to_dict(self, curves: bool = False) -> dict:
        d = {
            "ap": self.ap,
            "num_faces": self.num_faces,
            "true_positives_at_lowest_threshold": int(self.true_positives[-1]) if len(self.true_positives) else 0,
            "proposals_at_lowest_threshold": int(self.proposals[-1]) if len(self.proposals) else 0,
        }
        if curves:
            d["precision"] = self.precision.tolist()
            d["recall"] = self.recall.tolist()
            d["thresholds"] = self.thresholds.tolist()
        return d


@dataclass
class WiderResult:
    """Result of :func:`evaluate`. ``ap`` maps ``easy``/``medium``/``hard`` to AP in [0, 1]."""

    settings: dict[str, SettingResult]
    num_images: int
    num_images_with_predictions: int
    num_prediction_files: int
    num_boxes: int
    score_range: tuple[float, float]
    iou_threshold: float
    thresh_num: int
    ground_truth: str = ""
    extra: dict = field(default_factory=dict)
    size_recall: SizeRecall | None = None  # set by the runner (featherface.eval.per_size); not in to_dict()
    #: ground-truth images with a prediction entry (a file), even an empty one; None when not counted
    num_images_with_prediction_files: int | None = None

    @property
    def ap(self) -> dict[str, float]:
        return {k: v.ap for k, v in self.settings.items()}

    @property
    def easy(self) -> float:
        return self.settings["easy"].ap

    @property
    def medium(self) -> float:
        return self.settings["medium"].ap

    @property
    def hard(self) -> float:
        return self.settings["hard"].ap

    def to_dict(self, curves: bool = False) -> dict:
        return {
            "ap": self.ap,
            "settings": {k: v.to_dict(curves) for k, v in self.settings.items()},
            "num_images": self.num_images,
            "num_images_with_predictions": self.num_images_with_predictions,
            "num_images_without_predictions": self.num_images - self.num_images_with_predictions,
            "num_prediction_files": self.num_prediction_files,
            **({} if self.num_images_with_prediction_files is None else {
                "num_images_without_prediction_file": self.num_images - self.num_images_with_prediction_files}),
            "num_boxes": self.num_boxes,
            "score_range": list(self.score_range),
            "iou_threshold": self.iou_threshold,
            "thresh_num": self.thresh_num,
            "ground_truth": self.ground_truth,
            "algorithm": "official WIDER FACE (dataset-wide min-max score normalisation, per-image stable sort, "
            f"IoU >= {self.iou_threshold:g} with +1 convention, ignored faces excluded, {int(self.thresh_num)} "
            "thresholds, VOC all-point AP)",
            **self.extra,
        }

    def summary(self) -> str:
        return "\n".join(f"{k.capitalize():<6} Val AP: {v.ap:.6f}" for k, v in self.settings.items())


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP with sentinels (recall 0 -> 1, precision 0 at the end) and the right-to-left envelope."""
    mrec = np.concatenate(([0.0], np.asarray(recall, np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, np.float64), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _best_matches(pred_xywh: np.ndarray, gt_xywh: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For each prediction: index of its best-overlapping GT face (first on ties) and whether IoU >= threshold.

    Same double-precision operations, in the same order, as the reference ``bbox_overlaps`` ("+1" convention) where
    both overlaps are positive, and 0 elsewhere (clipping the overlap widths to 0 gives exactly that)."""
    px1 = pred_xywh[:, 0:1]
    py1 = pred_xywh[:, 1:2]
    px2 = pred_xywh[:, 2:3] + px1
    py2 = pred_xywh[:, 3:4] + py1
    gx1 = gt_xywh[:, 0]
    gy1 = gt_xywh[:, 1]
    gx2 = gt_xywh[:, 2] + gx1
    gy2 = gt_xywh[:, 3] + gy1
    g_area = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
    p_area = (px2 - px1 + 1) * (py2 - py1 + 1)
    iw = np.minimum(px2, gx2)
    iw -= np.maximum(px1, gx1)
    iw += 1
    np.maximum(iw, 0.0, out=iw)
    ih = np.minimum(py2, gy2)
    ih -= np.maximum(py1, gy1)
    ih += 1
    np.maximum(ih, 0.0, out=ih)
    iw *= ih  # intersection
    ua = p_area + g_area
    ua -= iw
    iw /= ua  # IoU
    if (p_area <= 0).any() or (g_area <= 0).any():  # degenerate boxes: 0/0 must not win the argmax
        np.nan_to_num(iw, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    best = iw.argmax(axis=1)
    best_ov = iw[np.arange(len(best)), best]
    return best, best_ov >= iou_threshold


def overlap_pairs(
    preds: list[np.ndarray], gts: list[np.ndarray], iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (prediction, face) pair of the same image with IoU >= ``iou_threshold`` ("+1" convention), over all
    images at once, computing IoU only where it can reach the threshold.

    ``preds[i]`` [N_i, >=4] (x, y, w, h), ``gts[i]`` [K_i, 4]. Returns (row of the prediction in the concatenated
    ``preds``, row of the face in the concatenated ``gts``, IoU), grouped by prediction row ascending. 2-D IoU never
    exceeds the 1-D IoU along x, which bounds where the left edge of a matching face can be
    (``px1 - c1*Lp <= gx1 <= px1 + c2*Lp``, ``Lp`` = width + 1); the candidates in that window get the exact IoU of
    the reference (same double-precision operations)."""
    if not (0.0 < iou_threshold <= 1.0):
        raise ValueError("iou_threshold must be in (0, 1]")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    n_total = int(sum(len(p) for p in preds))
    if n_total == 0:
        return empty
    r = iou_threshold / (1.0 + iou_threshold)
    c1 = (1.0 - 2.0 * r) / r
    c2 = (1.0 - 2.0 * r) / (1.0 - r)
    pad = 1.0
    lo_l, hi_l, gsort_l = [], [], []
    pos = 0
    for p, gb in zip(preds, gts):
        gorder = np.argsort(gb[:, 0], kind="stable")
        gx1 = gb[gorder, 0]
        lp = p[:, 2] + 1.0
        lo_l.append(np.searchsorted(gx1, p[:, 0] - c1 * lp - pad, side="left") + pos)
        hi_l.append(np.searchsorted(gx1, p[:, 0] + c2 * lp + pad, side="right") + pos)
        gsort_l.append(gorder + pos)
        pos += len(gb)
    p_all = np.concatenate(preds)
    g_all = np.concatenate(gts)
    lo = np.concatenate(lo_l)
    hi = np.concatenate(hi_l)
    gsorted = np.concatenate(gsort_l)  # position in the x1-sorted faces -> row of g_all
    cnt = np.maximum(hi - lo, 0)
    m = int(cnt.sum())
    if m == 0:
        return empty
    pid = np.repeat(np.arange(n_total), cnt)
    starts = np.cumsum(cnt) - cnt
    gid = gsorted[np.arange(m) - np.repeat(starts - lo, cnt)]
    px1 = p_all[pid, 0]
    py1 = p_all[pid, 1]
    px2 = p_all[pid, 2] + px1
    py2 = p_all[pid, 3] + py1
    gx1 = g_all[gid, 0]
    gy1 = g_all[gid, 1]
    gx2 = g_all[gid, 2] + gx1
    gy2 = g_all[gid, 3] + gy1
    iw = np.minimum(px2, gx2) - np.maximum(px1, gx1) + 1
    ih = np.minimum(py2, gy2) - np.maximum(py1, gy1) + 1
    keep = np.flatnonzero((iw > 0) & (ih > 0))
    if keep.size == 0:
        return empty
    iw, ih, pid, gid = iw[keep], ih[keep], pid[keep], gid[keep]
    px1, py1, px2, py2 = px1[keep], py1[keep], px2[keep], py2[keep]
    gx1, gy1, gx2, gy2 = gx1[keep], gy1[keep], gx2[keep], gy2[keep]
    g_area = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
    p_area = (px2 - px1 + 1) * (py2 - py1 + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ov = iw * ih / (p_area + g_area - iw * ih)
    hit = np.flatnonzero(ov >= iou_threshold)
    return pid[hit], gid[hit], ov[hit]


def _match_all(
    preds: list[np.ndarray], gts: list[np.ndarray], offsets: list[int], iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Best GT face of every prediction, over all images at once (pairs from :func:`overlap_pairs`).

    ``preds[i]`` [N_i, >=4] (x, y, w, h, in processing order), ``gts[i]`` [K_i, 4], ``offsets[i]`` the global index
    of the first face of image i. Returns (global face index of the best match, -1 when none; whether IoU >= the
    threshold) for the concatenated predictions. Same result as the dense :func:`_best_matches` per image: among the
    faces reaching the threshold the highest IoU wins, the lowest face index on ties."""
    n_total = int(sum(len(p) for p in preds))
    best = np.full(n_total, -1, np.int64)
    valid = np.zeros(n_total, bool)
    pid, gid, ov = overlap_pairs(preds, gts, iou_threshold)
    if pid.size == 0:
        return best, valid
    gglob = np.concatenate([np.arange(off, off + len(gb)) for gb, off in zip(gts, offsets)])  # row -> global index
    o = np.lexsort((gid, -ov, pid))
    pid, gid = pid[o], gid[o]
    first = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
    best[pid[first]] = gglob[gid[first]]
    valid[pid[first]] = True
    return best, valid


def index_predictions(preds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    full: dict[str, np.ndarray] = {}
    base: dict[str, np.ndarray | None] = {}
    for k, v in preds.items():
        nk = normalise_key(k)
        arr = np.asarray(v, dtype=np.float64)
        if arr.size == 0:
            arr = np.zeros((0, 5), np.float64)
        if arr.ndim != 2 or arr.shape[1] < 5:
            raise InputError(f"predictions for '{k}' must be an [N, 5] array of x, y, w, h, score; got shape {arr.shape}")
        arr = arr[:, :5]
        if not np.isfinite(arr).all():
            raise InputError(f"predictions for '{k}' contain non-finite values")
        full[nk] = arr
        b = _basename(nk)
        base[b] = None if b in base else arr
    return full, {k: v for k, v in base.items() if v is not None}


def evaluate(
    predictions: PathLike | Mapping[str, np.ndarray],
    gt: PathLike | GroundTruth,
    *,
    image_list: Iterable[str] | None = None,
    iou_threshold: float = 0.5,
    thresh_num: int = 1000,
) -> WiderResult:
    """Official WIDER FACE AP of ``predictions`` against ``gt`` for the easy, medium and hard settings.

    ``predictions``: a folder of official prediction files, or a mapping ``'event/name'`` (or ``'name'``) ->
    array [N, 5] ``x, y, w, h, score`` in pixels. ``gt``: a folder with the four official ``.mat`` files, or a
    :class:`GroundTruth`. ``image_list``: restrict both the ground truth and the predictions (hence the score
    normalisation range) to these images, as if the folders held only them (how the val-dev figures are made).

    Scores are normalised over every prediction given (also images outside the ground truth), as the reference
    does for the folder it is given. A ground-truth image without predictions has no detections."""
    from_folder = not isinstance(predictions, Mapping)
    preds = read_predictions(predictions) if from_folder else predictions
    if not from_folder and len(preds) == 0:
        raise InputError("no predictions given (empty mapping)")
    g = gt if isinstance(gt, GroundTruth) else load_ground_truth(gt)
    full, base = index_predictions(preds)

    if image_list is not None:
        image_list = list(image_list)
        g = g.subset(image_list)
        wanted_full = {normalise_key(x) for x in image_list}
        wanted_base = {_basename(x) for x in wanted_full}
        full = {k: v for k, v in full.items() if k in wanted_full or _basename(k) in wanted_base}
        base = {k: v for k, v in base.items() if k in wanted_base}

    # dataset-wide min-max normalisation; running min starts at 1, max at 0 (as the reference)
    nonempty = [v[:, 4] for v in full.values() if len(v)]
    lo, hi = 1.0, 0.0
    if nonempty:
        allscores = np.concatenate(nonempty)
        lo = min(float(allscores.min()), 1.0)
        hi = max(float(allscores.max()), 0.0)
    diff = hi - lo
    num_boxes = int(sum(len(v) for v in full.values()))

    # per image: stable descending sort of the normalised scores, then the best GT match of every prediction
    # (independent of the setting, so done once for the three settings)
    n_gt_offsets = np.zeros(len(g) + 1, np.int64)
    np.cumsum([len(b) for b in g.boxes], out=n_gt_offsets[1:])
    scores_l: list[np.ndarray] = []
    preds_l: list[np.ndarray] = []
    gts_l: list[np.ndarray] = []
    offs_l: list[int] = []
    with_pred = with_entry = 0
    for i, (ev, name, boxes) in enumerate(zip(g.events, g.names, g.boxes)):
        p = full.get(f"{ev}/{name}")
        if p is None:
            p = base.get(name)
        if p is not None:
            with_entry += 1
        if p is None or len(p) == 0:
            continue
        with_pred += 1
        if len(boxes) == 0:
            continue
        s = (p[:, 4] - lo) / diff if diff > 0 else np.ones(len(p))
        order = np.argsort(-s, kind="stable")
        scores_l.append(s[order])
        preds_l.append(p[order])
        gts_l.append(boxes)
        offs_l.append(int(n_gt_offsets[i]))
    scores = np.concatenate(scores_l) if scores_l else np.zeros(0)
    best_g, valid = _match_all(preds_l, gts_l, offs_l, iou_threshold)

    thresholds = 1 - np.arange(1, thresh_num + 1, dtype=np.float64) / thresh_num

    def count_ge(values: np.ndarray) -> np.ndarray:
        v = np.sort(values)
        return (len(v) - np.searchsorted(v, thresholds, side="left")).astype(np.float64)

    results: dict[str, SettingResult] = {}
    for setting in SETTINGS:
        in_set = np.zeros(int(n_gt_offsets[-1]), bool)
        for i, k in enumerate(g.keep[setting]):
            if len(k):
                in_set[n_gt_offsets[i] + k] = True
        num_faces = int(in_set.sum())
        hit_counted = valid.copy()
        hit_counted[valid] = in_set[best_g[valid]]
        counted = ~(valid & ~hit_counted)  # a hit on an ignored face is not a proposal
        cand = np.flatnonzero(hit_counted)
        _, first = np.unique(best_g[cand], return_index=True)
        tp_idx = cand[first]
        tp = count_ge(scores[tp_idx])
        prop = count_ge(scores[counted])
        precision = np.divide(tp, prop, out=np.zeros_like(tp), where=prop > 0)
        if num_faces > 0:
            recall = tp / num_faces
            ap = voc_ap(recall, precision)
        else:
            recall = np.zeros_like(tp)
            ap = float("nan")
        results[setting] = SettingResult(setting, ap, precision, recall, thresholds, tp, prop, num_faces)

    return WiderResult(
        settings=results,
        num_images=len(g),
        num_images_with_predictions=with_pred,
        num_images_with_prediction_files=with_entry,
        num_prediction_files=len(full),
        num_boxes=num_boxes,
        score_range=(lo, hi),
        iou_threshold=iou_threshold,
        thresh_num=thresh_num,
        ground_truth=g.source,
    )
