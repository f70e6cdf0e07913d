"""What each inference-path optimisation buys, measured side by side in one run (issue 6, item 7).

    python benchmarks/bench_inference_path.py [--model exports/v2.onnx] [--size 640x480] [--threads 2]

Rows (median of ``--runs`` interleaved calls, milliseconds):

* pre-processing: the previous ``astype → subtract → transpose copy`` against the current per-plane
  ``cv2.split`` + ``np.subtract(out=...)`` (identical output, asserted);
* post-processing: decode every anchor then threshold (previous) against threshold then decode the candidates
  (current ``featherface.geometry.postprocess``; identical detections, asserted);
* ORT session: ``ORT_ENABLE_EXTENDED`` (no NCHWc layout transformer) against ``ORT_ENABLE_ALL`` (what the backend
  has always used), forward only: what the layout optimisation is worth;
* end to end ``FaceDetector.detect_arrays`` with the ONNX Runtime backend, for scale.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAME = ROOT.parent / "shared" / "data" / "widerface" / "val" / "images" / "0--Parade" / "0_Parade_marchingband_1_465.jpg"


def _preprocess_previous(img: np.ndarray) -> np.ndarray:
    from featherface.preprocessing import MEAN_BGR

    x = img.astype(np.float32)
    x -= np.asarray(MEAN_BGR, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _postprocess_previous(loc, logits, landmarks, anchors, size, score_threshold, nms_threshold):
    import torch

    from featherface.geometry.boxes import decode_boxes, decode_landmarks
    from featherface.geometry.nms import nms_np

    h, w = size
    boxes = decode_boxes(loc, anchors, (0.1, 0.2)) * torch.tensor([w, h, w, h], dtype=loc.dtype)
    points = decode_landmarks(landmarks, anchors, (0.1, 0.2)) * torch.tensor([w, h] * 5, dtype=loc.dtype)
    scores = torch.softmax(logits, dim=-1)[:, 1]
    b, p, s = boxes.numpy(), points.numpy(), scores.numpy()
    inds = np.where(s > score_threshold)[0]
    b, p, s = b[inds], p[inds], s[inds]
    order = s.argsort()[::-1]
    b, p, s = b[order], p[order], s[order]
    keep = nms_np(b, s, nms_threshold, pixel_offset=1.0)
    return b[keep], s[keep], p[keep]


def _time(fns: dict, runs: int) -> dict[str, float]:
    for f in fns.values():
        f()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t)
    return {k: float(np.median(v) * 1e3) for k, v in ts.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="raw V2 ONNX export (default: export the bundled weights to a temp file)")
    p.add_argument("--size", default="640x480", help="WxH of the frame")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args(argv)

    import tempfile

    import cv2
    import onnxruntime as ort
    import torch

    from featherface.api import FaceDetector
    from featherface.export.ort_backend import make_session
    from featherface.geometry import DEFAULT_ANCHORS, make_anchors
    from featherface.geometry.postprocess import postprocess
    from featherface.preprocessing import preprocess

    w, h = (int(v) for v in args.size.lower().split("x"))
    img = cv2.imread(str(FRAME))
    if img is None:
        print(f"{FRAME}: not found (needs ../shared)", file=sys.stderr)
        return 2
    img = cv2.resize(img, (w, h))
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from featherface.checkpoint import load_model
            from featherface.export.onnx_export import export_onnx
            from featherface.pretrained import default_weights_path

            model = str(export_onnx(load_model(default_weights_path()), Path(tmp) / "v2.onnx"))
        rows = []
        assert np.array_equal(_preprocess_previous(img), preprocess(img))
        t = _time({"previous": lambda: _preprocess_previous(img), "current": lambda: preprocess(img)}, args.runs)
        rows.append(("pre-processing", t["previous"], t["current"]))

        sess = make_session(model, num_threads=args.threads)
        x = preprocess(img)[None]
        loc, logits, lms = (torch.from_numpy(o[0]) for o in sess.run(None, {"input": x}))
        anchors = make_anchors((h, w))
        prev = _postprocess_previous(loc, logits, lms, anchors, (h, w), 0.5, 0.4)
        v = DEFAULT_ANCHORS.variances
        cur = postprocess(loc, logits, lms, anchors, (h, w), variances=v, score_threshold=0.5, nms_threshold=0.4)
        assert np.allclose(prev[0], cur.boxes) and np.allclose(prev[1], cur.scores)
        t = _time({"previous": lambda: _postprocess_previous(loc, logits, lms, anchors, (h, w), 0.5, 0.4),
                   "current": lambda: postprocess(loc, logits, lms, anchors, (h, w), variances=v,
                                                  score_threshold=0.5, nms_threshold=0.4)}, args.runs)
        rows.append((f"post-processing ({len(cur.scores)} faces)", t["previous"], t["current"]))

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ext = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        t = _time({"previous": lambda: ext.run(None, {"input": x}), "current": lambda: sess.run(None, {"input": x})},
                  args.runs)
        rows.append(("ORT forward: ORT_ENABLE_EXTENDED vs ORT_ENABLE_ALL (used since the first release)", t["previous"],
                     t["current"]))

        det = FaceDetector(model, backend="onnxruntime", num_threads=args.threads, score_threshold=0.5)
        e2e = _time({"e2e": lambda: det.detect_arrays(img)}, args.runs)["e2e"]
    print(f"frame {w}x{h}, {args.threads} threads, median of {args.runs} interleaved calls (ms)")
    print("| step | previous | current | current / previous |\n|---|---:|---:|---:|")
    for name, a, b in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    print(f"| end to end FaceDetector (ORT fp32), current | | {e2e:.2f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
