"""Mobile formats: file size, parity against PyTorch on val-dev images, and latency of the Python runtimes here.

    nice -n 19 python benchmarks/bench_mobile.py --out runs/mobile-bench      # -> runs/mobile-bench/mobile.{json,md}

A repository script (needs ``pip install 'featherface[mobile]'``; data defaults are this repository's ``../shared``
layout). Protocol (also written into the report):

* models: V2 = ``--v2`` (default: the bundled default weights); V1 = ``--v1`` (default: the upstream teacher in
  ``../shared/peers/featherface/``), skipped when absent;
* formats: onnx (dynamic sizes), ort (from that ONNX by ONNX Runtime's tool), tflite fp32 and fp16 (one export per
  size; fp16 = the fp32 file with float16 weights, :func:`featherface.export.mobile.tflite_to_fp16`), coreml fp16
  (one export per size; size and spec only: Core ML does not run on Linux);
* images: the first ``--limit`` (V2) / ``--limit-v1`` (V1) paths of ``val-dev.txt``, each resized with
  ``cv2.resize`` to exactly W×H, BGR − (104, 117, 123), NCHW (onnx / ort / PyTorch) or NHWC (tflite);
* parity: per format, the max over the images of the max abs difference against PyTorch float32 of the decoded boxes
  (x1 y1 x2 y2, network-input pixels, over the anchors whose PyTorch score is > 0.02) and of the scores
  (softmax face probability, all anchors); and ort against its onnx on raw outputs, the onnx run with the
  optimisations of the ORT conversion (:func:`featherface.export.mobile.onnx_session_like_ort_conversion`);
* latency: network forward only (no resize / decoding), 1 thread everywhere (PyTorch ``set_num_threads(1)``, ONNX
  Runtime intra-op 1, LiteRT ``num_threads=1`` with its default XNNPACK delegate), one fixed val-dev input per size,
  ``--warmup`` calls, then ``--runs`` rounds in which every runtime is called once in turn (round-robin, so that load
  drift on a shared machine hits all alike); median per runtime, ratio = median / median of onnx at that size.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from featherface.checkpoint import load_any_model
from featherface.cliargs import frame_size
from featherface.export import mobile
from featherface.export.onnx_export import export_onnx
from featherface.export.ort_backend import make_session
from featherface.fsutil import atomic_write_text
from featherface.preprocessing import DEFAULT_PREPROCESSING
from featherface.pretrained import default_weights_path

_DATA = Path("..") / "shared" / "data" / "widerface" / "val"
_V1 = Path("..") / "shared" / "peers" / "featherface" / "featherface_train_mobilenet0.25_Final.pth"
RUNTIMES = ("pytorch", "onnx", "ort", "tflite_fp32", "tflite_fp16")


def _network_input(path: Path, size: tuple[int, int]) -> np.ndarray:
    """``float32 [1, 3, H, W]``: the image resized to ``size`` (height, width), BGR minus the mean."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"{path}: cannot read the image")
    h, w = size
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x = (resized - np.array(DEFAULT_PREPROCESSING.mean, np.float32)) / np.array(DEFAULT_PREPROCESSING.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _runners(model, files: dict[str, Path], threads: int) -> dict[str, Callable[[np.ndarray], dict[str, np.ndarray]]]:
    """One ``run(x_nchw) -> {"boxes", "logits", "landmarks"}`` per runtime."""
    from ai_edge_litert.interpreter import Interpreter

    def torch_run(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(x))
        return {"boxes": out.boxes.numpy(), "logits": out.logits.numpy(), "landmarks": out.landmarks.numpy()}

    def ort_runner(path: Path):
        sess = make_session(path, num_threads=threads)
        names = [o.name for o in sess.get_outputs()]
        return lambda x: dict(zip(names, sess.run(names, {"input": x})))

    def litert_runner(path: Path):
        runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner()
        return lambda x: runner(input=np.ascontiguousarray(x.transpose(0, 2, 3, 1)))

    return {"pytorch": torch_run, "onnx": ort_runner(files["onnx"]), "ort": ort_runner(files["ort"]),
            "tflite_fp32": litert_runner(files["tflite_fp32"]), "tflite_fp16": litert_runner(files["tflite_fp16"])}


def _bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _export_all(model, name: str, sizes: list[tuple[int, int]], out: Path, log) -> dict[str, Any]:
    """Every format of ``model``; returns ``{"onnx": path, "ort": path, "<h>x<w>": {"tflite_fp32": path, ...}}``."""
    files: dict[str, Any] = {"onnx": export_onnx(model, out / f"{name}.onnx")}
    files["ort"] = mobile.export_ort(model, out / f"{name}.ort")[0]
    for h, w in sizes:
        per: dict[str, Any] = {}
        t = time.perf_counter()
        try:
            per["tflite_fp32"] = mobile.export_tflite(model, out / f"{name}_{w}x{h}.tflite", size=(h, w))[0]
            per["tflite_fp16"] = mobile.tflite_to_fp16(per["tflite_fp32"], out / f"{name}_{w}x{h}_fp16.tflite")[0]
        except Exception as exc:  # noqa: BLE001 - reported in the table
            per["tflite_error"] = str(exc).splitlines()[0]
        log(f"{name} {w}x{h}: tflite {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        try:
            per["coreml"] = mobile.export_coreml(model, out / f"{name}_{w}x{h}.mlpackage", size=(h, w))
        except Exception as exc:  # noqa: BLE001
            per["coreml_error"] = str(exc).splitlines()[0]
        log(f"{name} {w}x{h}: coreml {time.perf_counter() - t:.0f} s")
        files[f"{h}x{w}"] = per
    return files


def _parity(model, runners, images: list[Path], size: tuple[int, int], onnx_like_ort) -> dict[str, Any]:
    """Max abs differences against PyTorch (decoded, see the protocol) per runtime, plus ``_ort_vs_onnx_raw``: the
    raw outputs of the .ort against its .onnx run with the conversion's optimisations (``onnx_like_ort``)."""
    worst = {k: {"boxes_px": 0.0, "scores": 0.0} for k in runners if k != "pytorch"}
    ort_vs_onnx = 0.0
    candidates = 0
    for path in images:
        x = _network_input(path, size)
        ref = runners["pytorch"](x)
        rb, rs = mobile.decoded_boxes_scores(ref["boxes"], ref["logits"], size, model)
        keep = rs > mobile.CANDIDATE_SCORE
        candidates += int(keep.sum())
        raw = {}
        for name, run in runners.items():
            if name == "pytorch":
                continue
            got = raw[name] = run(x)
            gb, gs = mobile.decoded_boxes_scores(got["boxes"], got["logits"], size, model)
            if keep.any():
                worst[name]["boxes_px"] = max(worst[name]["boxes_px"], float(np.abs(gb - rb)[keep].max()))
            worst[name]["scores"] = max(worst[name]["scores"], float(np.abs(gs - rs).max()))
        names = [o.name for o in onnx_like_ort.get_outputs()]
        mirrored = dict(zip(names, onnx_like_ort.run(names, {"input": x})))
        ort_vs_onnx = max([ort_vs_onnx] + [float(np.abs(raw["ort"][k] - mirrored[k]).max()) for k in names])
    return {**worst, "_candidates": {"count": candidates, "images": len(images)}, "_ort_vs_onnx_raw": ort_vs_onnx}


def _latency(calls: dict[tuple[str, str], Callable[[], Any]], warmup: int, runs: int) -> dict[str, dict[str, float]]:
    """Median ms of every ``(size, runtime)`` call; each round calls all of them once, in turn."""
    times: dict[tuple[str, str], list[float]] = {k: [] for k in calls}
    for _ in range(warmup):
        for call in calls.values():
            call()
    for _ in range(runs):
        for key, call in calls.items():
            t = time.perf_counter()
            call()
            times[key].append((time.perf_counter() - t) * 1000.0)
    result: dict[str, dict[str, float]] = {}
    for (size, runtime), values in times.items():
        result.setdefault(size, {})[runtime] = statistics.median(values)
    return result


def _markdown(results: dict[str, Any], sizes: list[tuple[int, int]]) -> str:
    lines = []
    for name, res in results["models"].items():
        lines += [f"### {name} ({res['checkpoint']}; parity on {res['parity_images']} val-dev images)", ""]
        head = "| format | size | file | parity: boxes (px) | parity: scores |"
        head += "".join(f" {w}x{h} ms (× onnx) |" for h, w in sizes)
        lines += [head, "|" + "---|" * (5 + len(sizes))]
        for fmt in ("pytorch", "onnx", "ort", "tflite_fp32", "tflite_fp16", "coreml"):
            label = {"tflite_fp32": "tflite fp32", "tflite_fp16": "tflite fp16", "coreml": "coreml fp16"}.get(fmt, fmt)
            size_txt = ("-" if fmt == "pytorch" else "dynamic" if fmt in ("onnx", "ort")
                        else " / ".join(f"{w}x{h}" for h, w in sizes))
            byte_vals = res["bytes"].get(fmt) or {}
            if isinstance(byte_vals, dict):
                file_txt = " / ".join(f"{v / 1e6:.2f} MB" for v in byte_vals.values()) or "-"
            else:
                file_txt = f"{byte_vals / 1e6:.2f} MB"
            par = [res["parity"][f"{h}x{w}"].get(fmt) for h, w in sizes]
            if fmt == "pytorch":
                par_b = par_s = "reference"
            elif fmt == "coreml":
                par_b = par_s = "not run (no Core ML on Linux)"
            elif any(p is None for p in par):
                par_b = par_s = res["errors"].get(fmt, "failed")
            else:
                par_b = f"{max(p['boxes_px'] for p in par):.2g}"
                par_s = f"{max(p['scores'] for p in par):.2g}"
            row = f"| {label} | {size_txt} | {file_txt} | {par_b} | {par_s} |"
            for h, w in sizes:
                lat = res["latency_ms"].get(f"{h}x{w}", {})
                if fmt in lat:
                    row += f" {lat[fmt]:.1f} ({lat[fmt] / lat['onnx']:.2f}) |"
                else:
                    row += " - |"
            lines.append(row)
        ort_vs_onnx = max(p.get("_ort_vs_onnx_raw", 0.0) for p in res["parity"].values())
        lines += ["", f"ort vs its onnx (raw outputs, both in onnxruntime with the conversion's optimisations): "
                      f"max abs difference {ort_vs_onnx:.2g}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--v2", default=str(default_weights_path()), help="V2 checkpoint (default: bundled weights)")
    p.add_argument("--v1", default=str(_V1), help="V1 checkpoint (skipped when the file is absent; '' to skip)")
    p.add_argument("--images", default=str(_DATA / "images"))
    p.add_argument("--list", default=str(_DATA / "val-dev.txt"))
    p.add_argument("--limit", type=int, default=385, help="val-dev images for the V2 parity (default all 385)")
    p.add_argument("--limit-v1", type=int, default=50, help="val-dev images for the V1 parity (default 50)")
    p.add_argument("--sizes", type=frame_size, nargs="+", default=[(240, 320), (480, 640)], metavar="WxH")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=30, help="latency rounds (V2; V1 uses a third)")
    p.add_argument("--out", default="runs/mobile-bench", help="folder for the exports and mobile.{json,md}")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not Path(args.list).is_file():
        raise SystemExit(f"{args.list}: val-dev list not found (the ../shared data layout: ../shared/data/README.md)")
    rels = [line.strip() for line in Path(args.list).read_text().splitlines() if line.strip()]
    sizes = [tuple(s) for s in args.sizes]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    models = [("V2", args.v2, args.limit, args.runs)]
    if args.v1 and Path(args.v1).is_file():
        models.append(("V1", args.v1, args.limit_v1, max(1, args.runs // 3)))
    results: dict[str, Any] = {"protocol": __doc__, "sizes": [f"{w}x{h}" for h, w in sizes], "models": {},
                               "environment": _environment(args.threads)}
    for name, ckpt, limit, runs in models:
        model = load_any_model(ckpt)
        files = _export_all(model, name.lower(), sizes, out, log)
        res: dict[str, Any] = {"checkpoint": ckpt, "parity_images": min(limit, len(rels)), "bytes": {},
                               "parity": {}, "latency_ms": {}, "errors": {}}
        res["bytes"]["onnx"] = _bytes(files["onnx"])
        res["bytes"]["ort"] = _bytes(files["ort"])
        images = [Path(args.images) / r for r in rels[:limit]]
        for h, w in sizes:
            per = files[f"{h}x{w}"]
            for fmt in ("tflite_fp32", "tflite_fp16", "coreml"):
                if fmt in per:
                    res["bytes"].setdefault(fmt, {})[f"{w}x{h}"] = _bytes(per[fmt])
            for key in ("tflite_error", "coreml_error"):
                if key in per:
                    res["errors"][key.split("_")[0]] = per[key]
            if "tflite_fp32" not in per:
                res["parity"][f"{h}x{w}"] = {}
                continue
            runners = _runners(model, {**files, **per}, args.threads)
            t = time.perf_counter()
            onnx_like_ort = mobile.onnx_session_like_ort_conversion(files["onnx"], num_threads=args.threads)
            res["parity"][f"{h}x{w}"] = _parity(model, runners, images, (h, w), onnx_like_ort)
            log(f"{name} {w}x{h}: parity on {len(images)} images {time.perf_counter() - t:.0f} s "
                f"{json.dumps(res['parity'][f'{h}x{w}'])}")
        # latency: both sizes and every runtime in one round-robin
        calls: dict[tuple[str, str], Callable[[], Any]] = {}
        for h, w in sizes:
            per = files[f"{h}x{w}"]
            if "tflite_fp32" not in per:
                continue
            x = _network_input(images[0], (h, w))
            for runtime, run in _runners(model, {**files, **per}, args.threads).items():
                calls[(f"{h}x{w}", runtime)] = lambda run=run, x=x: run(x)
        t = time.perf_counter()
        res["latency_ms"] = _latency(calls, args.warmup, runs)
        log(f"{name}: latency ({runs} rounds, {time.perf_counter() - t:.0f} s) {json.dumps(res['latency_ms'])}")
        results["models"][name] = res
    md = _markdown(results, sizes)
    atomic_write_text(out / "mobile.json", json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(out / "mobile.md", md + "\n")
    print(md)
    return 0


def _environment(threads: int) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for dist in ("torch", "onnx", "onnxruntime", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "coremltools"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
            "threads": threads, "versions": versions}


if __name__ == "__main__":
    sys.exit(main())
