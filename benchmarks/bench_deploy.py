"""Deployment benchmark: size, parameters, MACs, peak memory and end-to-end latency, FeatherFace vs peers.

    python benchmarks/bench_deploy.py --v2 src/featherface/weights/featherface_v2_default.pth   # -> benchmarks/results/deploy.md

A repository script (not part of the installed package): the peer adapters are the modules of ``benchmarks/peers/``
next to it, and the data defaults are this repository's ``../shared`` layout.

Protocol (written into the report):

* one WIDER FACE val-dev image (or ``--image``) resized with ``cv2.resize`` to exactly W×H for each size; every
  detector receives that uint8 BGR frame and does its own pre-processing, forward, decoding and NMS (its reference
  pipeline, see ``benchmarks/peers/*.py``); FeatherFace runs at the frame's own size (``FaceDetector.detect_arrays``,
  score 0.5, NMS 0.4);
* latency = wall time of that whole call (``time.perf_counter``), after ``--warmup`` calls; the detectors are timed
  round-robin (one call each, repeated ``--runs`` times) so load drift on a shared machine hits all of them alike;
  median and p90 are reported per size and thread count;
* threads: PyTorch ``torch.set_num_threads(n)``; ONNX Runtime ``intra_op_num_threads = n`` (one session per n),
  inter-op 1, sequential, ``ORT_ENABLE_ALL``; OpenVINO (V2 only, when ``openvino`` is installed)
  ``FaceDetector(backend="openvino")`` on the same fp32 file, ``INFERENCE_NUM_THREADS = n``, compiled per frame size;
* peak memory: each detector in a fresh subprocess (10 calls at the largest size, 1 thread); peak RSS
  (``VmHWM``) and its increase over the same process just before the model was loaded;
* INT8: the V2 fp32 export quantised with :func:`featherface.export.quantize.quantize_int8` on ``--calib-n``
  training images, twice: everything int8, and the default recipe (backbone stage 1 left in float).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from featherface.cliargs import frame_size, non_negative_int, positive_int

__all__ = ["configure", "run"]

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
from machine import paused  # noqa: E402

_REPO = _HERE.parent
_DATA = _REPO.parent / "shared" / "data" / "widerface"
_V1_TEACHER = _REPO.parent / "shared" / "peers" / "featherface" / "featherface_train_mobilenet0.25_Final.pth"
_PEERS = _HERE / "peers"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--v2", default="featherface_v2",
                   help="V2 checkpoint (default: untrained featherface_v2 with quietened class heads, see "
                        "_quiet_untrained: the forward cost does not depend on the weights)")
    p.add_argument("--v1", default=None, help=f"also benchmark V1 (e.g. {_V1_TEACHER})")
    p.add_argument("--sizes", type=frame_size, nargs="+", default=[(480, 640), (640, 640)], help="WxH frames (640x480 ...)")
    p.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=positive_int, default=30)
    p.add_argument("--warmup", type=non_negative_int, default=3)
    p.add_argument("--image", default=None, help="test frame (default: first val-dev image)")
    p.add_argument("--calib-images", default=str(_DATA / "train" / "images"))
    p.add_argument("--calib-n", type=positive_int, default=8)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--pause", type=int, default=None, metavar="PID",
                   help="SIGSTOP this process and its children (a training run) while timing, SIGCONT after")
    p.add_argument("--no-stages", action="store_true",
                   help="skip the per-stage breakdown of V2 (benchmarks/bench_stages.py: pre-processing / forward / "
                        "decode / NMS, side by side with YuNet)")
    p.add_argument("--workdir", default=None, help="where the exported / quantised files go (default: temp)")
    p.add_argument("-o", "--output", default=str(_HERE / "results" / "deploy.md"), help="markdown report")
    p.add_argument("--json", default=str(_HERE / "results" / "deploy.json"), help="also write the raw figures as JSON")


# ---------------------------------------------------------------------------------------------------------- entries
class _Entry:
    def __init__(self, name: str, runtime: str, detect: Callable, *, files: list[Path], params: int,
                 params_thop: int | None, macs: Callable[[int, int], int], protocol: str, spec: dict) -> None:
        self.name, self.runtime, self.detect = name, runtime, detect
        self.files, self.params, self.params_thop, self.macs, self.protocol, self.spec = (
            files, params, params_thop, macs, protocol, spec)


def _featherface_entries(args, workdir: Path) -> list[_Entry]:
    import torch

    from featherface.api import FaceDetector
    from featherface.checkpoint import load_any_model
    from featherface.export.onnx_export import export_onnx
    from featherface.export.quantize import DEFAULT_FLOAT_GROUPS, calibration_images, quantize_int8
    from featherface.models.stats import count_macs, count_parameters, thop_convention_params

    out = []
    models = [("FeatherFace V2", args.v2)] + ([("FeatherFace V1", args.v1)] if args.v1 else [])
    for label, spec in models:
        model = load_any_model(spec)
        if not Path(str(spec)).exists():
            _quiet_untrained(model)
        tag = "v2" if "V2" in label else "v1"
        fp32 = workdir / f"{tag}_fp32.onnx"
        export_onnx(model, fp32, check=False)
        params, thop = count_parameters(model), thop_convention_params(model, (64, 64))
        macs = (lambda m: (lambda h, w: count_macs(m, (h, w))["total"]))(model)
        ckpt = workdir / f"{tag}.pth"
        from featherface.checkpoint import save_checkpoint

        save_checkpoint(ckpt, model)
        files = {"torch": ckpt, "ort": fp32}
        variants = [("PyTorch fp32", "torch", ckpt), ("ORT fp32", "onnxruntime", fp32)]
        from featherface.export.openvino_backend import openvino_available

        if openvino_available():  # the optional backend: the same file, compiled per frame size (docs/deployment.md)
            variants.append(("OpenVINO fp32", "openvino", fp32))
        if tag == "v2":
            calib = calibration_images(args.calib_images, args.calib_n)
            int8_all = workdir / f"{tag}_int8_all.onnx"
            quantize_int8(fp32, int8_all, calib, calib_size=640)
            variants.append(("ORT int8 (all)", "onnxruntime", int8_all))
            int8 = workdir / f"{tag}_int8.onnx"
            quantize_int8(fp32, int8, calib, calib_size=640, keep_float=DEFAULT_FLOAT_GROUPS)
            variants.append(("ORT int8 (stage 1 float)", "onnxruntime", int8))
        for runtime, backend, path in variants:
            dets: dict[int, Any] = {}

            def detect(img, threads, _b=backend, _p=path, _d=dets, _m=model):
                if _b == "torch":
                    torch.set_num_threads(threads)
                    if "t" not in _d:
                        _d["t"] = FaceDetector(_m, score_threshold=0.5, nms_threshold=0.4)
                    return _d["t"].detect_arrays(img)
                if threads not in _d:
                    _d[threads] = FaceDetector(_p, backend=_b, num_threads=threads, score_threshold=0.5,
                                               nms_threshold=0.4)
                return _d[threads].detect_arrays(img)

            out.append(_Entry(label, runtime, detect, files=[path], params=params, params_thop=thop, macs=macs,
                              protocol="BGR - (104,117,123), frame at its own size, score 0.5, NMS 0.4 ('+1')",
                              spec={"kind": "featherface", "backend": backend, "path": str(path)}))
        del files
    return out


def _quiet_untrained(model) -> None:
    """Make an untrained network behave like a trained one on a frame with few faces.

    Random heads put ~85 % of the anchors above a 0.5 face score, so NMS over ~10,000 boxes would dominate the
    timing. The class heads' weights are scaled by 0.01 and their biases set to (background +4, face −4) per anchor:
    the forward cost is unchanged, and decoding / NMS see the few candidates a real detector yields.
    """
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cls_head" in name or "ClassHead" in name:
                if name.endswith("weight"):
                    p.mul_(0.01)
                else:
                    p.copy_(torch.tensor([4.0, -4.0]).repeat(p.numel() // 2))


def _load_peer_module(name: str):
    if str(_PEERS) not in sys.path:  # the peer adapters import their helpers (common.py) by plain name
        sys.path.insert(0, str(_PEERS))
    return importlib.import_module(name)


def _peer_objects() -> list[tuple[Any, dict]]:
    objs = []
    for mod_name, cls_name, kwargs in (("yunet", "YuNet", {}), ("scrfd", "SCRFD", {}), ("ulfd", "ULFD", {}),
                                       ("retinaface", "RetinaFacePeer", {"runtime": "torch"}),
                                       ("retinaface", "RetinaFacePeer", {"runtime": "onnxruntime fp32"})):
        mod = _load_peer_module(mod_name)
        obj = getattr(mod, cls_name)(**kwargs)
        objs.append((obj, {"kind": "peer", "module": mod_name, "cls": cls_name, "kwargs": kwargs}))
    return objs


def _peer_entries(args) -> tuple[list[_Entry], list[str]]:
    out, skipped = [], []
    for obj, spec in _peer_objects():
        if not obj.available():
            skipped.append(f"{obj.name}: model file missing")
            continue
        out.append(_Entry(obj.name, obj.runtime, obj.detect, files=obj.files, params=obj.params, params_thop=None,
                          macs=obj.macs, protocol=obj.protocol, spec=spec))
    return out, skipped


# ----------------------------------------------------------------------------------------------------------- memory
def _mem_child(spec_json: str) -> None:
    """Subprocess body: build one detector from ``spec``, run it, print peak RSS figures (KiB) as JSON."""
    import cv2

    def hwm_kib() -> int:  # VmHWM of this process; ru_maxrss would include the parent's RSS at fork time
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    spec = json.loads(spec_json)
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401  (import cost is part of the baseline, not the model)

    img = cv2.resize(cv2.imread(spec["image"]), (spec["w"], spec["h"]))
    base = hwm_kib()
    if spec["kind"] == "featherface":
        from featherface.api import FaceDetector
        from featherface.checkpoint import load_model

        if spec["backend"] == "torch":
            torch.set_num_threads(1)
            det = FaceDetector(load_model(spec["path"]), score_threshold=0.5)
        else:
            det = FaceDetector(spec["path"], backend=spec["backend"], num_threads=1, score_threshold=0.5)
        call = det.detect_arrays
    else:
        mod = _load_peer_module(spec["module"])
        obj = getattr(mod, spec["cls"])(**spec["kwargs"])

        def call(im):
            return obj.detect(im, 1)
    for _ in range(10):
        call(img)
    peak = hwm_kib()
    print(json.dumps({"base_kib": base, "peak_kib": peak}))


def _memory(entry: _Entry, image: str, h: int, w: int) -> dict[str, float] | None:
    spec = dict(entry.spec, image=image, h=h, w=w)
    if spec["kind"] == "featherface" and spec["backend"] == "torch":
        spec["path"] = str(Path(spec["path"]).with_suffix(".pth")) if spec["path"].endswith(".onnx") else spec["path"]
    try:
        res = subprocess.run([sys.executable, __file__, "--mem-child", json.dumps(spec)], capture_output=True, text=True,
                             timeout=600)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1]
        d = json.loads(line)
        return {"peak_mb": d["peak_kib"] / 1024, "model_mb": (d["peak_kib"] - d["base_kib"]) / 1024}
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------------------- report
def _machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def _fmt_int(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _load_average() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def _stages(args: argparse.Namespace) -> str:
    """The per-stage table of the shipped V2 (ORT, and OpenVINO when installed) next to YuNet, in its own
    round-robin run right after the main one (``benchmarks/bench_stages.py``)."""
    sys.path.insert(0, str(_HERE))
    import bench_stages

    from featherface.export.openvino_backend import openvino_available

    variants = ["shipped"] + (["openvino"] if openvino_available() else [])
    out = Path(args.output).with_name(Path(args.output).stem + "_stages.md")
    argv = ["--sizes", *[f"{w}x{h}" for h, w in args.sizes], "--threads", *map(str, args.threads),
            "--variants", *variants, "--runs", str(args.runs), "-o", str(out)]
    if args.image:
        argv += ["--image", args.image]
    bench_stages.main(argv)
    return out.read_text()


def _markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    sizes = res["sizes"]
    threads = res["threads"]
    lines = ["# FeatherFace deployment benchmark", "",
             f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['os']}; Python {m['python']}, "
             f"torch {m['torch']}, onnxruntime {m['onnxruntime']}. Load average at start "
             f"{tuple(round(x, 2) for x in m['load_average_start'] or ())}, at end "
             f"{tuple(round(x, 2) for x in res['load_average_end'] or ())} (shared machine: absolute figures are noisy; "
             "ratios within one run are the meaningful output).", "",
             "Protocol: " + res["protocol"], "",
             f"Frame: `{res['image']}` resized to each W×H. Runs: {res['runs']} per cell after {res['warmup']} warm-up "
             "calls, round-robin over detectors. Latency in ms, end to end (pre-processing + forward + decoding + NMS), "
             "`median / p90`.", ""]
    head = ["detector", "runtime", "params (true)", "params (thop)", "MACs @640×480", "file", "peak RSS (+model) MB"]
    for (h, w) in sizes:
        for t in threads:
            head.append(f"{w}×{h} {t}T")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for e in res["entries"]:
        mem = e.get("memory")
        row = [e["name"], e["runtime"], _fmt_int(e["params"]), _fmt_int(e["params_thop"]),
               f"{e['macs_640x480'] / 1e6:.0f} M" if e.get("macs_640x480") else "—",
               f"{e['bytes'] / 1024:.0f} KiB", f"{mem['peak_mb']:.0f} (+{mem['model_mb']:.0f})" if mem else "—"]
        for (h, w) in sizes:
            for t in threads:
                c = e["latency"][f"{w}x{h}_{t}"]
                row.append(f"{c['median_ms']:.1f} / {c['p90_ms']:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Input protocol per detector:", ""]
    seen = set()
    for e in res["entries"]:
        if e["name"] not in seen:
            seen.add(e["name"])
            lines.append(f"- **{e['name']}**: {e['protocol']}")
    if res.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(res["skipped"])]
    if res.get("targets"):
        lines += ["", "Speed targets (640×480, median end to end, same run):", ""]
        for k, v in res["targets"].items():
            lines.append(f"- {k}: {v}")
    if res.get("stages_markdown"):
        body = res["stages_markdown"].split("\n", 2)[2]  # drop bench_stages' own title
        lines += ["", "## Per-stage breakdown of V2, side by side with YuNet (second round-robin run)", "", body]
    lines.append("")
    return "\n".join(lines)


def _targets(res: dict[str, Any]) -> dict[str, str]:
    """Issue 18's goals: V2 / YuNet end to end at 640×480 ≤ 0.75 (fp32) and ≤ 0.6 (INT8), per thread count."""
    by = {(e["name"], e["runtime"]): e for e in res["entries"]}
    yunet = next((e for (n, r), e in by.items() if n.startswith("YuNet")), None)
    out: dict[str, str] = {}
    if yunet is None:
        return out
    for threads in (1, 2):
        key = f"640x480_{threads}"
        if key not in yunet["latency"]:
            continue
        y = yunet["latency"][key]["median_ms"]
        for rt, goal in (("ORT fp32", 0.75), ("OpenVINO fp32", 0.75), ("ORT int8 (all)", 0.6),
                         ("ORT int8 (stage 1 float)", 0.6)):
            e = by.get(("FeatherFace V2", rt))
            if e and key in e["latency"]:
                r = e["latency"][key]["median_ms"] / y
                out[f"{threads} thread(s): V2 {rt} / YuNet"] = f"{r:.2f} (goal ≤ {goal}: {'met' if r <= goal else 'not met'})"
    return out


def run(args: argparse.Namespace) -> int:
    import cv2

    from featherface.eval.runner import list_images

    if args.image:
        image = str(args.image)
    else:
        root = _DATA / "val" / "images"
        image = str(root / list_images(root, _DATA / "val" / "val-dev.txt")[0])
    src = cv2.imread(image)
    if src is None:
        from featherface.errors import FeatherFaceError

        raise FeatherFaceError(f"cannot read benchmark image {image}")
    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"machine": _machine(), "image": image, "runs": args.runs, "warmup": args.warmup,
                           "sizes": [list(s) for s in args.sizes], "threads": list(args.threads),
                           "protocol": " ".join((__doc__ or "").split("Protocol (written into the report):", 1)[1].split())}
    print("preparing FeatherFace exports / int8 ...", file=sys.stderr)
    entries = _featherface_entries(args, workdir)
    skipped: list[str] = []
    if not args.no_peers:
        peers, skipped = _peer_entries(args)
        entries += peers
    res["skipped"] = skipped
    frames = {(h, w): cv2.resize(src, (w, h)) for (h, w) in args.sizes}
    lat: dict[int, dict[str, list[float]]] = {i: {} for i in range(len(entries))}
    with paused(args.pause):
        res["machine"]["load_average_start"] = _load_average()
        for t in args.threads:
            for (h, w), img in frames.items():
                key = f"{w}x{h}_{t}"
                print(f"timing {key} ...", file=sys.stderr)
                for i, e in enumerate(entries):
                    for _ in range(args.warmup):
                        e.detect(img, t)
                    lat[i][key] = []
                for _ in range(args.runs):
                    for i, e in enumerate(entries):
                        t0 = time.perf_counter()
                        e.detect(img, t)
                        lat[i][key].append(time.perf_counter() - t0)
        res["load_average_end"] = _load_average()
    res["entries"] = []
    big = max(args.sizes, key=lambda s: s[0] * s[1])
    for i, e in enumerate(entries):
        item = {"name": e.name, "runtime": e.runtime, "params": int(e.params),
                "params_thop": None if e.params_thop is None else int(e.params_thop),
                "bytes": int(sum(Path(f).stat().st_size for f in e.files)), "protocol": e.protocol,
                "latency": {k: {"median_ms": float(np.median(v) * 1e3), "p90_ms": float(np.percentile(v, 90) * 1e3)}
                            for k, v in lat[i].items()}}
        try:
            item["macs_640x480"] = int(e.macs(480, 640))
        except Exception:
            item["macs_640x480"] = None
        if not args.no_memory:
            print(f"memory {e.name} {e.runtime} ...", file=sys.stderr)
            item["memory"] = _memory(e, image, *big)
        res["entries"].append(item)
    res["targets"] = _targets(res)
    if not args.no_stages:
        with paused(args.pause):
            res["stages_markdown"] = _stages(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(_markdown(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(_markdown(res))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--mem-child"]:
        _mem_child(sys.argv[2])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    sys.exit(run(parser.parse_args()))
