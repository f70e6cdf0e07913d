"""OpenVINO: NumPy pre-processing + float32 input vs pre-processing compiled into the graph (uint8 BGR in), same run.

    python benchmarks/bench_openvino_pre.py [--model runs/exp/v2_dense.onnx] [--size 640x480] [--runs 60]

Both paths are compiled for the frame size, 1 thread, float32; they are called alternately (10 ms untimed sleep
before each call) and their raw outputs are compared (they are identical bit for bit). Issue 18.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    import cv2
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    from featherface.eval.runner import list_images
    from featherface.preprocessing import preprocess

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(_HERE.parent / "src/featherface/weights/featherface_v2_default.onnx"))
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    cv2.setNumThreads(1)
    data = _HERE.parent.parent / "shared" / "data" / "widerface" / "val"
    img = cv2.resize(cv2.imread(str(data / "images" / list_images(data / "images", data / "val-dev.txt")[0])), (w, h))
    core = ov.Core()
    cfg = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
           "INFERENCE_PRECISION_HINT": "f32"}

    def compiled(u8: bool):
        m = core.read_model(args.model)
        m.reshape({m.inputs[0].any_name: [1, 3, h, w]})
        if u8:
            ppp = PrePostProcessor(m)
            ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
            ppp.input().preprocess().convert_element_type(ov.Type.f32).mean([104.0, 117.0, 123.0])
            ppp.input().model().set_layout(ov.Layout("NCHW"))
            m = ppp.build()
        return core.compile_model(m, "CPU", cfg).create_infer_request()

    base, fast = compiled(False), compiled(True)

    def f_base():
        base.infer({0: preprocess(img)[None]})
        return [np.array(base.get_output_tensor(i).data) for i in range(3)]

    def f_fast():
        fast.infer({0: img[None]})
        return [np.array(fast.get_output_tensor(i).data) for i in range(3)]

    diff = [float(np.abs(a - b).max()) for a, b in zip(f_base(), f_fast())]
    cells = {"NumPy preprocess + OpenVINO": f_base, "OpenVINO, pre-processing compiled in": f_fast}
    t: dict[str, list[float]] = {k: [] for k in cells}
    for _ in range(3):
        for f in cells.values():
            f()
    load0 = os.getloadavg()
    for _ in range(args.runs):
        for k, f in cells.items():
            time.sleep(0.01)
            s = time.perf_counter()
            f()
            t[k].append((time.perf_counter() - s) * 1e3)
    print(f"{args.model} {args.size} threads={args.threads}; max |difference| of raw outputs {diff}; "
          f"load {load0} -> {os.getloadavg()}")
    for k, v in t.items():
        print(f"{k}: median {statistics.median(v):.2f} ms, p90 {float(np.percentile(v, 90)):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
