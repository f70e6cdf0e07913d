"""Per-stage latency of FeatherFace V2 (ONNX Runtime) next to YuNet, in one round-robin run (issue 18).

    python benchmarks/bench_stages.py                                   # -> benchmarks/results/stages.md
    python benchmarks/bench_stages.py --sizes 640x480 --threads 1 --variants shipped slim ext nospin

A repository script (not part of the installed package). Every cell of a run is timed round-robin: per repetition,
each (variant, size, threads) cell is called once, starting one cell later each repetition (the first call after the
previous repetition's last one measurably pays for colder caches), so load drift on the shared machine hits them all
alike; the
ratios to YuNet (same size, same threads, same repetitions) are the meaningful figures. Machine load
(``os.getloadavg``) is printed at start and end.

Stages of ``FaceDetector.detect_arrays`` on a uint8 BGR frame of exactly W×H (no resize):

* ``pre``: :func:`featherface.preprocessing.preprocess` (BGR − mean into a float32 CHW array);
* ``fwd``: ``InferenceSession.run`` (raw boxes / logits / landmarks);
* ``dec``: :func:`~featherface.geometry.postprocess.decode_detections` (softmax, score cut 0.5, decode, sort);
* ``nms``: :func:`~featherface.geometry.postprocess.select_detections` (greedy NMS 0.4, "+1" convention);
* ``e2e``: the whole ``detect_arrays`` call, timed separately (not the sum of the stages).

YuNet (OpenCV zoo 2023mar, ``benchmarks/peers/yunet.py``): ``e2e`` is the adapter's ``detect`` (letterbox to 640×640,
forward, decode, NMS 0.3); ``fwd`` its ``InferenceSession.run`` on the 640×640 canvas alone.

Variants of the V2 session (``--variants``):

* ``shipped``: ``src/featherface/weights/featherface_v2_default.onnx`` with :func:`make_session` as the library does;
* ``slim``: the same file after :func:`featherface.export.onnx_export.simplify_onnx` (onnxslim);
* ``ext``: shipped file, ``ORT_ENABLE_EXTENDED`` instead of ``ORT_ENABLE_ALL`` (no NCHWc layout transformer);
* ``nospin``: shipped file, ``session.intra_op.allow_spinning = 0``;
* ``daz``: shipped file, ``session.set_denormal_as_zero = 1``;
* ``base``: shipped file and session, but the candidate selection as before issue 18 (softmax over every anchor,
  then the score cut): what ``dec`` and ``e2e`` gained from the logit pre-selection;
* ``openvino``: ``FaceDetector(backend="openvino")`` (the shipped file, compiled for the frame size by OpenVINO, with
  the pre-processing compiled in: its ``pre`` is ~0 and ``fwd`` includes it);
* ``file:PATH``: any other raw V2 export (an INT8 file of :func:`featherface.export.quantize.quantize_int8`, ...),
  ONNX Runtime with the library's session options; ``ov:PATH``: the same file with the OpenVINO backend.

``--gap-ms`` sleeps (untimed) before every timed call, so worker threads of the previous cell's runtime, still
spinning for work, do not steal the core from the next cell (with 2 threads on 2 cores they otherwise do).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
_WEIGHTS = _REPO / "src" / "featherface" / "weights"
_DATA = _REPO.parent / "shared" / "data" / "widerface"


def _frame(path: str | None) -> tuple[np.ndarray, str]:
    import cv2

    if path is None:  # the frame of bench_deploy.py: the first val-dev image
        from featherface.eval.runner import list_images

        root = _DATA / "val" / "images"
        path = str(root / list_images(root, _DATA / "val" / "val-dev.txt")[0])
    img = cv2.imread(path)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return img, path


def _session(path: Path, threads: int, *, level: str = "all", spin: bool | None = None, daz: bool = False,
             profile: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "ext": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    so.log_severity_level = 3
    if spin is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if daz:
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _old_keep(logits: np.ndarray, score_threshold: float):
    """The candidate selection before issue 18: softmax over every anchor, then the cut."""
    from featherface.geometry.postprocess import face_scores

    scores = face_scores(logits)
    rows = np.flatnonzero(scores > score_threshold)
    return rows, scores[rows]


class _V2Cell:
    """One FeatherFace configuration: a FaceDetector whose session is the variant's. ``base``: the candidate
    selection as it was before issue 18 (softmax over every anchor), same session."""

    def __init__(self, name: str, path: Path, threads: int, backend: str = "onnxruntime", base: bool = False,
                 **session_kw) -> None:
        from featherface.api import FaceDetector

        self.name, self.path, self.base = name, path, base
        self.det = FaceDetector(path, backend=backend, num_threads=threads, score_threshold=0.5, nms_threshold=0.4)
        if session_kw:
            self.det.model.session = _session(path, threads, **session_kw)

    def stages(self, img: np.ndarray) -> dict[str, float]:
        import featherface.geometry.postprocess  # noqa: F401  (the package re-exports a function of that name)

        postprocess = sys.modules["featherface.geometry.postprocess"]
        if not self.base:
            return self._stages(img)
        new_keep = postprocess._numpy_keep
        postprocess._numpy_keep = _old_keep
        try:
            return self._stages(img)
        finally:
            postprocess._numpy_keep = new_keep

    def _stages(self, img: np.ndarray) -> dict[str, float]:
        from featherface.api import _anchors
        from featherface.geometry.postprocess import decode_detections, select_detections
        from featherface.preprocessing import preprocess

        det, pc = self.det, time.perf_counter
        run_image = getattr(det.model, "run_image", None)
        t0 = pc()
        if run_image is None:
            x = preprocess(img, 1.0, preprocessing=det.preprocessing)[None]
        t1 = pc()
        # OpenVINO: the uint8 frame goes in, pre-processing is compiled into the graph (counted in fwd), as in
        # FaceDetector
        boxes, logits, lms = det.model.run_numpy(x) if run_image is None else run_image(img)
        t2 = pc()
        h, w = img.shape[:2]
        cand = decode_detections(boxes[0], logits[0], lms[0], _anchors(h, w, det.anchor_spec), (h, w),
                                 variances=det.anchor_spec.variances, score_threshold=0.5, scale=1.0)
        t3 = pc()
        select_detections(*cand, nms_threshold=0.4, top_k=det.top_k, keep_top_k=det.keep_top_k, presorted=True)
        t4 = pc()
        det.detect_arrays(img)
        t5 = pc()
        return {"pre": t1 - t0, "fwd": t2 - t1, "dec": t3 - t2, "nms": t4 - t3, "e2e": t5 - t4}


class _YuNetCell:
    name = "YuNet"

    def __init__(self, threads: int) -> None:
        sys.path.insert(0, str(_HERE / "peers"))
        from yunet import YuNet  # noqa: E402  (benchmarks/peers adapter)

        self.peer, self.threads = YuNet(), threads
        if not self.peer.available():
            raise SystemExit(f"YuNet model missing: {self.peer.model_path}")
        self.canvas = np.zeros((1, 3, 640, 640), np.float32)

    def stages(self, img: np.ndarray) -> dict[str, float]:
        pc = time.perf_counter
        sess = self.peer.session(self.threads)
        t0 = pc()
        sess.run(None, {"input": self.canvas})
        t1 = pc()
        self.peer.detect(img, self.threads)
        t2 = pc()
        return {"fwd": t1 - t0, "e2e": t2 - t1}


def _variant_path(v: str, workdir: Path) -> tuple[Path, dict]:
    shipped = _WEIGHTS / "featherface_v2_default.onnx"
    if v == "shipped":
        return shipped, {}
    if v == "ext":
        return shipped, {"level": "ext"}
    if v == "nospin":
        return shipped, {"spin": False}
    if v == "daz":
        return shipped, {"daz": True}
    if v == "base":
        return shipped, {"base": True}
    if v == "openvino":
        return shipped, {"backend": "openvino"}
    if v == "slim":
        import shutil

        from featherface.export.onnx_export import simplify_onnx

        out = workdir / "v2_slim.onnx"
        shutil.copy(shipped, out)
        simplify_onnx(out)
        return out, {}
    if v.startswith("file:"):
        return Path(v[5:]), {}
    if v.startswith("ov:"):
        return Path(v[3:]), {"backend": "openvino"}
    raise SystemExit(f"unknown variant {v!r}")


def _parse_size(s: str) -> tuple[int, int]:
    w, h = s.lower().split("x")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> int:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["640x480", "320x240"], help="WxH frames")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--variants", nargs="+", default=["shipped"])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--gap-ms", type=float, default=10.0, help="untimed sleep before each cell's call")
    ap.add_argument("--image", default=None)
    ap.add_argument("-o", "--output", default=str(_HERE / "results" / "stages.md"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import onnxruntime as ort

    cv2.setNumThreads(1)
    load0 = os.getloadavg()
    img0, img_path = _frame(args.image)
    frames = {s: cv2.resize(img0, _parse_size(s)[::-1]) for s in args.sizes}
    workdir = Path(tempfile.mkdtemp(prefix="bench_stages_"))
    cells: list[tuple[str, str, int, object]] = []  # (variant, size, threads, cell)
    for n in args.threads:
        # A decoy cell first in each thread group, timed like the others but not reported: in several runs the first
        # cell of a group paid 1.3-2.3 ms more in pre-processing at 640x480 than identical cells after it (cause
        # not found).
        cells.append(("decoy", args.sizes[0], n, _V2Cell("decoy", _WEIGHTS / "featherface_v2_default.onnx", n)))
        for v in args.variants:
            path, kw = _variant_path(v, workdir)
            for s in args.sizes:
                cells.append((v, s, n, _V2Cell(v, path, n, **kw)))
        yn = _YuNetCell(n)
        for s in args.sizes:
            cells.append(("YuNet", s, n, yn))
    times: dict[tuple[str, str, int], dict[str, list[float]]] = {}
    for _ in range(args.warmup):
        for _v, s, _n, c in cells:
            c.stages(frames[s])
    t_start = time.time()
    gap = args.gap_ms / 1e3
    for rep in range(args.runs):
        k = rep % len(cells)  # rotate the starting cell: the one after the last cell's call runs with colder caches
        for v, s, n, c in cells[k:] + cells[:k]:
            if gap:
                time.sleep(gap)
            for k, t in c.stages(frames[s]).items():
                times.setdefault((v, s, n), {}).setdefault(k, []).append(t * 1e3)
    wall = time.time() - t_start
    load1 = os.getloadavg()

    med = {key: {k: statistics.median(vals) for k, vals in d.items()} for key, d in times.items()}
    lines = [
        "# FeatherFace V2 per-stage latency vs YuNet (issue 18)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; Python "
        f"{platform.python_version()}, onnxruntime {ort.__version__}, OpenCV {cv2.__version__}. "
        f"Load average at start {tuple(round(x, 2) for x in load0)}, at end {tuple(round(x, 2) for x in load1)}; "
        f"{args.runs} round-robin repetitions after {args.warmup} warm-up, {args.gap_ms:g} ms gap before each call, "
        f"{wall:.0f} s. Command: `python benchmarks/bench_stages.py {' '.join(argv if argv is not None else sys.argv[1:])}`.",
        "",
        f"Frame: `{img_path}` resized to each W×H. Median ms per stage; `e2e` is a separate whole "
        "`detect_arrays` (YuNet: adapter `detect`) call. Ratio = V2 e2e / YuNet e2e (same size, threads, run).",
        "",
        "| variant | size | threads | pre | fwd | dec | nms | e2e | e2e p90 | fwd / YuNet fwd | e2e / YuNet e2e |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in args.threads:
        for s in args.sizes:
            y = med[("YuNet", s, n)]
            for v in [*args.variants, "YuNet"]:
                m = med[(v, s, n)]
                p90 = float(np.percentile(times[(v, s, n)]["e2e"], 90))
                def cell(k: str, m: dict = m) -> str:
                    return f"{m[k]:.2f}" if k in m else "—"

                lines.append(f"| {v} | {s} | {n} | {cell('pre')} | {cell('fwd')} | {cell('dec')} | {cell('nms')} | "
                             f"{m['e2e']:.2f} | {p90:.2f} | {m['fwd'] / y['fwd']:.2f} | {m['e2e'] / y['e2e']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"load": [load0, load1], "median_ms": {
            f"{v}|{s}|{n}": m for (v, s, n), m in med.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
