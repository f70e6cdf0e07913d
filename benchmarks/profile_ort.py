"""ONNX Runtime profile of a raw FeatherFace export: where the forward time goes, per op type and per model block.

    python benchmarks/profile_ort.py [--model src/featherface/weights/featherface_v2_default.onnx] [--size 640x480]

Runs ``--runs`` forwards with ``enable_profiling`` (1 thread unless ``--threads``) on random input of the size and
sums the ``kernel_time`` events by op type and by the first component of the node name (``/backbone/...``).
Node names are those after ORT's graph optimisation (fused nodes keep the name of their first node).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))


def main(argv=None) -> int:
    from bench_stages import _session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(_HERE.parent / "src/featherface/weights/featherface_v2_default.onnx"))
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--level", default="all")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    prefix = f"/tmp/ffprof_{os.getpid()}"
    sess = _session(Path(args.model), args.threads, level=args.level, profile=prefix)
    x = (np.random.default_rng(0).standard_normal((1, 3, h, w)) * 50).astype(np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x})
    prof = sess.end_profiling()  # warm-up events are dropped below by run count
    events = json.loads(Path(prof).read_text())
    Path(prof).unlink()
    sess = _session(Path(args.model), args.threads, level=args.level, profile=prefix)
    for _ in range(args.runs):
        sess.run(None, {name: x})
    prof = sess.end_profiling()
    events = json.loads(Path(prof).read_text())
    Path(prof).unlink()
    by_op, by_block, by_node = defaultdict(float), defaultdict(float), defaultdict(float)
    model_run = [e["dur"] for e in events if e.get("name") == "model_run"]
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op = e["args"].get("op_name", "?")
        node = e["name"][: -len("_kernel_time")]
        parts = [p for p in node.split("/") if p]
        block = "/".join(parts[:2]) if len(parts) > 2 else (parts[0] if parts else node)
        by_op[op] += e["dur"]
        by_block[block] += e["dur"]
        by_node[f"{node} ({op})"] += e["dur"]
    total = sum(by_op.values())
    n = len(model_run) or args.runs
    print(f"{args.model} {args.size} threads={args.threads} level={args.level}: model_run median "
          f"{np.median(model_run) / 1e3:.2f} ms; kernels {total / n / 1e3:.2f} ms per run; load {os.getloadavg()}")
    for title, d in (("op type", by_op), ("block", by_block), ("node", by_node)):
        print(f"\n| {title} | ms per run | share |\n|---|---|---|")
        for k, v in sorted(d.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"| {k} | {v / n / 1e3:.3f} | {100 * v / total:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
