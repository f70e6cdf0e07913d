"""Run a detector over WIDER FACE images, write official prediction files, score them and report.

Outputs under ``output_dir``:

- ``predictions/<event>/<image>.txt`` -- official format, float coordinates (``x y w h score``);
- ``results.json`` -- AP per setting, counts, the protocol (name and all settings), timings, inputs;
- ``pr_curve.png`` -- precision-recall curves of the three settings;
- ``size_recall.png`` -- recall per face-size bin of the Hard faces, at any score and at raw score >= 0.5 (the same
  table is ``size_recall`` in ``results.json``; definitions in :mod:`featherface.eval.per_size`).

Detector time (image decoding + all passes + NMS) and scoring time are measured separately.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featherface.errors import InputError
from featherface.eval.per_size import save_size_recall_plot, size_recall
from featherface.eval.protocols import OriginalSize, TestProtocol
from featherface.eval.widerface import (
    GroundTruth,
    WiderResult,
    evaluate,
    load_ground_truth,
    normalise_key,
    read_image_list,
    read_predictions,
    write_prediction_file,
)
from featherface.fsutil import plain
from featherface.imageio import IMAGE_SUFFIXES

__all__ = [
    "list_images",
    "evenly_spaced",
    "read_image",
    "run_detector",
    "save_pr_curve",
    "write_report",
    "evaluate_detector",
    "score_prediction_folder",
    "onnx_ap",
]

IMAGE_EXTS = IMAGE_SUFFIXES  # the one list of featherface.imageio


def list_images(images_root: str | os.PathLike, image_list: str | os.PathLike | Sequence[str] | None = None) -> list[str]:
    """Relative image paths (posix, with suffix) under ``images_root``: those of ``image_list`` (a list file or a
    sequence of paths) in its order, or every image found, sorted. Listed images that do not exist are an error."""
    root = Path(images_root)
    if not root.is_dir():
        raise InputError(f"image folder not found: {root}")
    if image_list is not None:
        rels = read_image_list(image_list) if isinstance(image_list, (str, os.PathLike)) else [
            str(x).replace("\\", "/").lstrip("/") for x in image_list
        ]
        for r in rels:
            if not (root / r).is_file():
                raise InputError(f"listed image not found: {root / r}")
        return rels
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTS):
                found.append((Path(dirpath) / fn).relative_to(root).as_posix())
    if not found:
        raise InputError(f"image folder {root} has no images")
    return found


def evenly_spaced(items: Sequence[str], n: int | None) -> list[str]:
    """``n`` items spread evenly over ``items`` (first and last included), in order; all of them when ``n`` is None."""
    if n is None or n >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 BGR HxWx3 image, upright by its EXIF orientation (as :class:`featherface.api.FaceDetector` reads files:
    decoded from bytes so any OS path works, damaged JPEGs refused, the 100 MP decode budget)."""
    from featherface.imageio import load_image

    return load_image(path)


def _key(rel: str) -> str:
    return normalise_key(rel)


def run_detector(
    detector: Any,
    images_root: str | os.PathLike,
    *,
    image_list: str | os.PathLike | Sequence[str] | None = None,
    protocol: TestProtocol | None = None,
    predictions_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Detect faces on every image with ``protocol`` (default :class:`OriginalSize`).

    ``detector`` needs ``predict_raw(image_bgr, *, scale, flip, score_threshold) -> (boxes x1y1x2y2, scores, landms)``.
    Returns (``{'event/name': [N, 5] x, y, w, h, score}``, timing dict) and, with ``predictions_dir``, writes the
    official files as it goes."""
    from tqdm import tqdm

    proto = protocol or OriginalSize()
    root = Path(images_root)
    rels = list_images(root, image_list)
    out_dir = Path(predictions_dir) if predictions_dir is not None else None
    preds: dict[str, np.ndarray] = {}
    t_detect = 0.0
    t_read = 0.0
    t0 = time.perf_counter()
    for rel in tqdm(rels, desc=f"detect [{proto.name}]", unit="img", disable=not progress, dynamic_ncols=True):
        ta = time.perf_counter()
        img = read_image(root / rel)
        tb = time.perf_counter()
        dets = proto.detect(detector, img)
        tc = time.perf_counter()
        t_read += tb - ta
        t_detect += tc - tb
        xywh = np.empty((len(dets), 5), np.float64)
        xywh[:, 0:2] = dets[:, 0:2]
        xywh[:, 2:4] = dets[:, 2:4] - dets[:, 0:2]
        xywh[:, 4] = dets[:, 4]
        key = _key(rel)
        preds[key] = xywh
        if out_dir is not None:
            name = key.rsplit("/", 1)[-1]
            write_prediction_file(out_dir.joinpath(*key.split("/")).with_name(name + ".txt"), name, xywh)
    n = max(len(rels), 1)
    timing = {
        "images": len(rels),
        "detector_s": t_detect,
        "detector_s_per_image": t_detect / n,
        "image_read_s": t_read,
        "total_s": time.perf_counter() - t0,
    }
    return preds, timing


def save_pr_curve(result: WiderResult, path: str | os.PathLike, title: str = "") -> Path:
    """Precision-recall curves of the three settings (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    for (name, sr), color in zip(result.settings.items(), ("tab:green", "tab:blue", "tab:red")):
        m = sr.proposals > 0  # thresholds above every score have no precision
        ax.plot(sr.recall[m], sr.precision[m], color=color, lw=1.6, label=f"{name.capitalize()}  AP {sr.ap:.4f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(p)
    plt.close(fig)
    return p


def _versions() -> dict[str, str]:
    import sys

    v = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("scipy", "torch", "cv2"):
        m = sys.modules.get(mod)
        if m is not None:
            v[mod] = getattr(m, "__version__", "?")
    try:
        from importlib.metadata import version

        v["featherface"] = version("featherface")
    except Exception:  # noqa: BLE001
        pass
    return v


def write_report(
    result: WiderResult,
    output_dir: str | os.PathLike,
    *,
    protocol: Mapping[str, Any] | None,
    inputs: Mapping[str, Any],
    timing: Mapping[str, Any],
    plot: bool = True,
) -> dict[str, Any]:
    """Write ``results.json`` (and ``pr_curve.png``, and ``size_recall.png`` when ``result.size_recall`` is set) into
    ``output_dir``; returns the JSON content."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "ap": result.ap,
        "protocol": dict(protocol) if protocol is not None else None,
        "evaluation": result.to_dict(curves=False),
        "inputs": dict(inputs),
        "timing": dict(timing),
        "versions": _versions(),
    }
    if plot:
        title = protocol.get("label", protocol.get("name", "")) if protocol else ""
        save_pr_curve(result, out / "pr_curve.png", title=title)
        report["pr_curve"] = str(out / "pr_curve.png")
    if result.size_recall is not None:
        report["size_recall"] = result.size_recall.to_dict()
        if plot:
            report["size_recall_plot"] = str(save_size_recall_plot(result.size_recall, out / "size_recall.png"))
    curves = {k: {"recall": v.recall.tolist(), "precision": v.precision.tolist()} for k, v in result.settings.items()}
    report["curves"] = curves
    text = json.dumps(plain(report, finite=True), indent=1,  # NaN AP (no easy faces) -> null
                       default=_json_default, allow_nan=False)
    (out / "results.json").write_text(text + "\n", encoding="utf-8")
    return report


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _restrict(gt: GroundTruth, rels: Iterable[str] | None) -> GroundTruth:
    return gt.subset(rels) if rels is not None else gt


def evaluate_detector(
    detector: Any,
    images_root: str | os.PathLike,
    gt_dir: str | os.PathLike | GroundTruth,
    *,
    output_dir: str | os.PathLike,
    image_list: str | os.PathLike | Sequence[str] | None = None,
    protocol: TestProtocol | None = None,
    model_info: Mapping[str, Any] | None = None,
    progress: bool = True,
    plot: bool = True,
) -> tuple[WiderResult, dict[str, Any]]:
    """Detector pass over the images, official files under ``output_dir/predictions``, AP, recall per face size,
    JSON and plots.

    With ``image_list`` the ground truth is restricted to the listed images (as the val-dev figures are made);
    without, every ground-truth image counts and those not under ``images_root`` have no detections."""
    proto = protocol or OriginalSize()
    gt = gt_dir if isinstance(gt_dir, GroundTruth) else load_ground_truth(gt_dir)  # fail early on a bad GT dir
    rels = list_images(images_root, image_list)
    out = Path(output_dir)
    preds, timing = run_detector(
        detector, images_root, image_list=rels, protocol=proto, predictions_dir=out / "predictions", progress=progress
    )
    t0 = time.perf_counter()
    gt_used = _restrict(gt, rels if image_list is not None else None)
    result = evaluate(preds, gt_used)
    result.size_recall = size_recall(preds, gt_used)
    timing = {**timing, "scoring_s": time.perf_counter() - t0}
    inputs = {
        "images": str(images_root),
        "image_list": str(image_list) if isinstance(image_list, (str, os.PathLike)) else (len(rels) if image_list else None),
        "ground_truth": str(gt_dir) if not isinstance(gt_dir, GroundTruth) else gt.source,
        "predictions_dir": str(out / "predictions"),
        **({"model": dict(model_info)} if model_info else {}),
    }
    report = write_report(result, out, protocol=proto.describe(), inputs=inputs, timing=timing, plot=plot)
    return result, report


def score_prediction_folder(
    predictions_dir: str | os.PathLike,
    gt_dir: str | os.PathLike | GroundTruth,
    *,
    output_dir: str | os.PathLike | None = None,
    image_list: str | os.PathLike | Sequence[str] | None = None,
    plot: bool = True,
) -> tuple[WiderResult, dict[str, Any] | None]:
    """Score an existing folder of official prediction files (any detector's). With ``image_list`` both the ground
    truth and the predictions are restricted to the listed images (the same as a folder holding only them)."""
    t0 = time.perf_counter()
    gt = gt_dir if isinstance(gt_dir, GroundTruth) else load_ground_truth(gt_dir)
    preds = read_predictions(predictions_dir)
    t1 = time.perf_counter()
    names = read_image_list(image_list) if isinstance(image_list, (str, os.PathLike)) else image_list
    result = evaluate(preds, gt, image_list=names)
    result.size_recall = size_recall(preds, gt, image_list=names)
    t2 = time.perf_counter()
    timing = {"read_s": t1 - t0, "scoring_s": t2 - t1, "total_s": t2 - t0}
    result.extra["timing"] = timing
    report = None
    if output_dir is not None:
        inputs = {
            "predictions_dir": str(predictions_dir),
            "ground_truth": str(gt_dir) if not isinstance(gt_dir, GroundTruth) else gt.source,
            "image_list": str(image_list) if isinstance(image_list, (str, os.PathLike)) else None,
        }
        protocol = {"name": "external", "label": "external prediction files (test protocol set by whoever made them)"}
        report = write_report(result, output_dir, protocol=protocol, inputs=inputs, timing=timing, plot=plot)
    return result, report


def onnx_ap(path: str | os.PathLike, images_root: str | os.PathLike, gt_dir: str | os.PathLike,
            image_list: Sequence[str], protocol: TestProtocol, threads: int) -> dict[str, Any]:
    """WIDER AP (easy / medium / hard) of a raw ONNX export run through ``FaceDetector`` (ONNX Runtime backend)."""
    import tempfile

    from featherface.api import FaceDetector

    det = FaceDetector(path, backend="onnxruntime", num_threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        result, _ = evaluate_detector(det, images_root, gt_dir, output_dir=tmp, image_list=image_list,
                                      protocol=protocol, progress=False, plot=False)
    return {k: float(getattr(result, k)) for k in ("easy", "medium", "hard")} | {"images": len(image_list),
                                                                                  "protocol": protocol.name}
