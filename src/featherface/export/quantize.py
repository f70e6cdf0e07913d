"""INT8 static quantisation of an exported FeatherFace ONNX file with ``onnxruntime.quantization``.

Recipe: ``quant_pre_process`` (shape inference + ORT graph optimisation, so BatchNorm is folded into the convs before
the quantisation nodes are placed), then ``quantize_static`` in QDQ format, per-channel int8 weights, uint8
activations (the U8S8 combination ORT's x86 kernels are built for), MinMax calibration on N training images that
are pre-processed exactly like inference (BGR − mean, longest side ``calib_size``).

:func:`quantize_report` adds the file-size ratio, latency (fp32 vs int8, same protocol as the benchmark) and,
optionally, the AP change measured by a caller-supplied function (``featherface quantize --eval-images`` uses
:func:`featherface.eval.runner.onnx_ap` on WIDER val-dev or a subset of it).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featherface.errors import FeatherFaceError
from featherface.preprocessing import DEFAULT_PREPROCESSING, Preprocessing

__all__ = ["FLOAT_GROUPS", "DEFAULT_FLOAT_GROUPS", "float_nodes", "quantize_int8", "calibration_images",
           "quantize_report"]


def calibration_images(folder: str | os.PathLike, n: int, seed: int = 0) -> list[Path]:
    """``n`` image paths from ``folder`` (recursive), chosen with a fixed seed."""
    root = Path(folder)
    if not root.is_dir():
        raise FeatherFaceError(f"calibration folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if not paths:
        raise FeatherFaceError(f"no images under {root}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(paths))[: max(1, int(n))]
    return [paths[i] for i in sorted(idx)]


def _prepare(image: Any, calib_size: int | None, square: bool = False,
             preprocessing: Preprocessing = DEFAULT_PREPROCESSING) -> np.ndarray:
    """``[1, 3, h, w]`` network input; ``square``: zero-padded (= mean colour) to ``calib_size``² at bottom/right,
    because ORT's histogram calibrators stack the activations of all calibration inputs and need one shape."""
    import cv2

    from featherface.preprocessing import preprocess

    img = cv2.imread(str(image)) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
    if img is None:
        raise FeatherFaceError(f"cannot read calibration image {image}")
    scale = 1.0 if calib_size is None else float(calib_size) / max(img.shape[:2])
    x = preprocess(img, scale, preprocessing=preprocessing)[None]
    if square:
        if calib_size is None:
            raise FeatherFaceError("histogram calibration needs a fixed --calib-size")
        pad = np.zeros((1, 3, calib_size, calib_size), dtype=x.dtype)
        h, w = min(x.shape[2], calib_size), min(x.shape[3], calib_size)
        pad[:, :, :h, :w] = x[:, :, :h, :w]
        x = pad
    return x


#: Parts of the network that ``keep_float`` can leave in float32, by the module path in the exported node names.
FLOAT_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("cbam_manager", "/model/cbam", "ChannelGate", "SpatialGate"),  # sigmoid gates (V2 / V1 names)
    "heads": ("shared_heads", "ClassHead", "BboxHead", "LandmarkHead"),
    "neck": ("/model/bifpn",),
    "ssh": ("/model/ssh",),
    "stem": ("/model/body/stage1/stage1.0/",),  # the first 3×3 conv sees raw mean-subtracted pixels
    "stage1": ("/model/body/stage1/",),
    "stage2": ("/model/body/stage2/",),
    "stage3": ("/model/body/stage3/",),
}


#: The recipe measured best on V2 (benchmarks/results/int8_sweep.md): the high-resolution stage 1 of the backbone in
#: float, everything else int8.
DEFAULT_FLOAT_GROUPS: tuple[str, ...] = ("stage1",)


def float_nodes(path: str | os.PathLike, groups: Iterable[str]) -> list[str]:
    """Names of the nodes of ``path`` that belong to the ``groups`` of :data:`FLOAT_GROUPS`."""
    import onnx

    unknown = sorted(set(groups) - set(FLOAT_GROUPS))
    if unknown:
        raise FeatherFaceError(f"unknown --keep-float group(s) {', '.join(unknown)}; known: {', '.join(FLOAT_GROUPS)}")
    keys = [k for g in groups for k in FLOAT_GROUPS[g]]
    return sorted(n.name for n in onnx.load(str(path)).graph.node if n.name and any(k in n.name for k in keys))


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, images: Sequence[Any], *,
                  calib_size: int | None = 640, per_channel: bool = True, method: str = "minmax",
                  keep_float: Iterable[str] = (), percentile: float = 99.999, quant_format: str = "qdq",
                  only: Iterable[str] = ()) -> Path:
    """Write the INT8 model of ``fp32_path`` to ``out_path``, calibrated on ``images`` (paths or BGR arrays).

    ``keep_float``: groups of :data:`FLOAT_GROUPS` left in float32. ``only``: if given, quantise only the nodes of
    these groups (everything else float). ``percentile``: the clipping percentile of the ``percentile`` calibration
    method. ``quant_format``: ``"qdq"`` (QuantizeLinear/DequantizeLinear pairs, fused by ORT) or ``"qoperator"``
    (QLinearConv and friends).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise FeatherFaceError(f"unknown calibration method {method!r}; known: {', '.join(methods)}")
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if quant_format not in formats:
        raise FeatherFaceError(f"unknown quantization format {quant_format!r}; known: {', '.join(formats)}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pre = _file_preprocessing(fp32_path)
    batches = [_prepare(im, calib_size, square=(method != "minmax"), preprocessing=pre) for im in images]
    if not batches:
        raise FeatherFaceError("quantization needs at least one calibration image")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"input": x}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        except Exception:  # ORT's symbolic shape inference gives up on V1's GridSample / dynamic pads
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        keep_float = tuple(keep_float)
        exclude = sorted(set(_sampling_path_nodes(pre)) | set(float_nodes(pre, keep_float)))
        only = tuple(only)
        include = sorted(set(float_nodes(pre, only)) - set(exclude)) if only else None
        if only and not include:
            raise FeatherFaceError(f"no node of {fp32_path} belongs to group(s) {', '.join(only)}")
        quantize_static(str(pre), str(out_path), _Reader(), quant_format=formats[quant_format],
                        per_channel=per_channel, nodes_to_exclude=exclude, nodes_to_quantize=include,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method],
                        extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False,
                                       "CalibPercentile": float(percentile)})
    label = "int8 " + ("QDQ" if quant_format == "qdq" else "QOperator") + (", per-channel" if per_channel else "")
    _copy_metadata(fp32_path, out_path, {"quantization": label, "only_groups": ",".join(only),
                                         "calibration_images": str(len(batches)), "calibration_method": method,
                                         "float_groups": ",".join(keep_float)})
    return out_path


def _file_preprocessing(path: Path) -> Preprocessing:
    """The ``preprocessing`` metadata of an exported file (the default for files without it)."""
    import json

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    try:
        return Preprocessing.from_dict(json.loads(meta.get("preprocessing", "{}") or "{}"))
    except (TypeError, ValueError) as exc:
        raise FeatherFaceError(f"{path}: invalid preprocessing metadata: {exc}") from None


def _sampling_path_nodes(path: Path) -> list[str]:
    """Nodes computing V1's GridSample sampling grids (offset convs and the position arithmetic), kept in float.

    8-bit grids are far too coarse: a uint8 grid over [-1, 1] is an 8-pixel step on a 1024-pixel image. Walk back
    from every GridSample's grid input, stopping at (and including) the Conv that predicts the offsets.
    """
    import onnx

    g = onnx.load(str(path)).graph
    producer = {o: n for n in g.node for o in n.output}
    out: set[str] = set()
    stack = [n.input[1] for n in g.node if n.op_type == "GridSample"]
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        node = producer[t]
        if node.op_type == "Shape":  # sizes, not values: do not walk into the feature map
            continue
        out.add(node.name)
        if node.op_type != "Conv":
            stack.extend(node.input)
    return sorted(n for n in out if n)


def compact_names(proto: Any) -> Any:
    """Shorten every internal tensor name and drop node names / value_info (in place).

    A QDQ graph has ~800 nodes whose exporter-generated names (``/model/bifpn/bifpn.0/conv4_up/...``) repeat in
    every Q/DQ node and tensor; for a 256k-parameter model they weigh more than the int8 weights themselves.
    Graph inputs and outputs keep their names.
    """
    g = proto.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in mapping:
            n, out = len(mapping), ""
            while True:
                n, r = divmod(n, 36)
                out = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + out
                if n == 0:
                    break
            mapping[name] = "t" + out
        return mapping[name]

    for init in g.initializer:
        init.name = short(init.name)
    for node in g.node:
        node.name = ""
        node.doc_string = ""
        for i, v in enumerate(node.input):
            node.input[i] = short(v)
        for i, v in enumerate(node.output):
            node.output[i] = short(v)
    del g.value_info[:]
    return proto


def _copy_metadata(src: Path, dst: Path, extra: dict[str, str]) -> None:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    meta.update(extra)
    proto = compact_names(onnx.load(str(dst)))
    del proto.metadata_props[:]
    for k, v in meta.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, str(dst))


def _latency(path: Path, size: tuple[int, int], threads: int, runs: int = 30) -> dict[str, float]:
    from featherface.export.ort_backend import make_session

    sess = make_session(path, num_threads=threads)
    x = np.random.default_rng(0).normal(0, 50, (1, 3, *size)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {"input": x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        ts.append(time.perf_counter() - t)
    return {"median_ms": float(np.median(ts) * 1e3), "p90_ms": float(np.percentile(ts, 90) * 1e3)}


def quantize_report(model: str | os.PathLike, output: str | os.PathLike, *, calib_images: str | os.PathLike,
                    num_images: int = 32, calib_size: int | None = 640, per_channel: bool = True,
                    method: str = "minmax", percentile: float = 99.999,
                    keep_float: Iterable[str] = DEFAULT_FLOAT_GROUPS, only: Iterable[str] = (),
                    quant_format: str = "qdq", threads: int = 2,
                    evaluate: Callable[[Path], dict[str, Any]] | None = None,
                    report_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Quantise ``model`` (an fp32 raw ONNX export) to ``output`` and report size, latency and (optionally) AP.

    Calibration: ``num_images`` images of ``calib_images`` at longest side ``calib_size`` (:func:`quantize_int8`).
    ``evaluate``: called with each file (fp32, then int8) and returning ``{"easy", "medium", "hard", ...}``
    (``featherface quantize --eval-images`` passes :func:`featherface.eval.runner.onnx_ap`); the report then holds
    both and the change in AP points. ``report_path``: also write the report there as JSON.
    """
    fp32 = Path(model)
    out = Path(output)
    images = calibration_images(calib_images, num_images)
    t = time.perf_counter()
    keep = tuple(keep_float or ())
    quantize_int8(fp32, out, images, calib_size=calib_size, per_channel=per_channel, method=method,
                  keep_float=keep, percentile=percentile, only=tuple(only), quant_format=quant_format)
    report: dict[str, Any] = {
        "fp32": str(fp32), "int8": str(out), "calibration": {"folder": str(calib_images), "images": len(images),
                                                           "longest_side": calib_size, "method": method},
        "float_groups": list(keep), "only_groups": list(only), "format": quant_format,
        "quantize_s": round(time.perf_counter() - t, 1),
        "bytes_fp32": fp32.stat().st_size, "bytes_int8": out.stat().st_size,
        "size_ratio": round(fp32.stat().st_size / out.stat().st_size, 2),
    }
    lat: dict[str, Any] = {}
    for name, p in (("fp32", fp32), ("int8", out)):
        lat[name] = _latency(p, (480, 640), int(threads))
    lat["int8_over_fp32"] = round(lat["int8"]["median_ms"] / lat["fp32"]["median_ms"], 3)
    report["forward_latency_640x480"] = {"threads": int(threads), **lat}
    if evaluate is not None:
        ap_fp32, ap_int8 = evaluate(fp32), evaluate(out)
        report["ap"] = {"fp32": ap_fp32, "int8": ap_int8,
                        "change_points": {k: round(100 * (ap_int8[k] - ap_fp32[k]), 2) for k in ("easy", "medium", "hard")}}
    if report_path is not None:
        import json

        Path(report_path).write_text(json.dumps(report, indent=2))
    return report
