"""Which parts of V2 are worth quantising? INT8 forward latency per recipe and per group, side by side with fp32.

    python benchmarks/bench_int8_groups.py src/featherface/weights/featherface_v2_default.onnx \
        -o benchmarks/results/int8_groups.md [--eval-images 385]

One run, one process, ONNX Runtime CPU, 640×480 input, 1 thread (``--threads``). Recipes, all calibrated on the
same 8 training images (MinMax, longest side 640):

* ``fp32``: the file itself;
* ``QDQ all`` / ``QDQ default (stage 1 float)``: the QDQ recipes of ``featherface quantize``;
* ``QOperator all`` / ``QOperator default``: the same in ORT's QOperator format (QLinearConv etc., no Q/DQ pairs
  left for the graph optimiser to fuse);
* ``only <group> int8``: only the nodes of one group of :data:`featherface.export.quantize.FLOAT_GROUPS` are
  quantised, everything else stays float. Its latency minus fp32's is what quantising that group costs or saves,
  Q/DQ pairs at its borders included;
* ``paying groups``: only the groups whose "only" row was faster than fp32 (skipped when none was; then every
  recipe is timed again together and that second pass is reported).

Timing: sessions built first, then round robin over all recipes (one forward each, start rotated every
repetition), median of ``--runs``. ``--eval-images N`` also gives WIDER val-dev AP (original size) of fp32, of the
two "default" recipes and of every recipe faster than fp32, on N evenly spaced val-dev images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "widerface"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import load_average as _load  # noqa: E402
from machine import paused as _paused  # noqa: E402

GROUPS = ("stem", "stage1", "stage2", "stage3", "attention", "neck", "ssh", "heads")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="fp32 raw ONNX export (e.g. the shipped featherface_v2_default.onnx)")
    p.add_argument("--calib", default=str(DATA / "train" / "images"), help="calibration image folder")
    p.add_argument("--calib-images", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--eval-images", type=int, default=0, help="val-dev images for AP (0: no AP)")
    p.add_argument("--pause", type=int, default=None, metavar="PID",
                   help="SIGSTOP this process and its children (a training run) while timing, SIGCONT after")
    p.add_argument("-o", "--output", default=None, help="markdown table to write")
    args = p.parse_args(argv)

    from featherface.export.ort_backend import make_session
    from featherface.export.quantize import DEFAULT_FLOAT_GROUPS, calibration_images, quantize_int8
    from featherface.fsutil import atomic_write_text

    fp32 = Path(args.model)
    images = calibration_images(args.calib, args.calib_images)
    tmp = Path(tempfile.mkdtemp(prefix="int8_groups_"))
    recipes: dict[str, Path] = {"fp32": fp32}

    def build(name: str, **kw) -> None:
        out = tmp / (name.replace(" ", "_").replace("(", "").replace(")", "") + ".onnx")
        t = time.perf_counter()
        quantize_int8(fp32, out, images, calib_size=640, **kw)
        print(f"built {name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        recipes[name] = out

    build("QDQ all")
    build("QDQ default (stage 1 float)", keep_float=DEFAULT_FLOAT_GROUPS)
    build("QOperator all", quant_format="qoperator")
    build("QOperator default (stage 1 float)", quant_format="qoperator", keep_float=DEFAULT_FLOAT_GROUPS)
    for g in GROUPS:
        build(f"only {g} int8", only=(g,))

    x = np.random.default_rng(0).normal(0, 50, (1, 3, 480, 640)).astype(np.float32)

    def time_all(paths: dict[str, Path]) -> dict[str, float]:
        sessions = {k: make_session(v, num_threads=args.threads) for k, v in paths.items()}
        for s in sessions.values():
            for _ in range(3):
                s.run(None, {"input": x})
        names = list(sessions)
        times: dict[str, list[float]] = {k: [] for k in names}
        for r in range(args.runs):
            for k in names[r % len(names):] + names[: r % len(names)]:
                t = time.perf_counter()
                sessions[k].run(None, {"input": x})
                times[k].append(time.perf_counter() - t)
        return {k: float(np.median(v) * 1e3) for k, v in times.items()}

    with _paused(args.pause):
        load_before = _load()
        ms = time_all(recipes)
        load_after = _load()
    paying = [g for g in GROUPS if ms[f"only {g} int8"] < ms["fp32"]]
    if paying:
        build("paying groups (" + "+".join(paying) + ")", only=tuple(paying))
        with _paused(args.pause):
            load_before = _load()
            ms = time_all(recipes)  # a second pass with every recipe, so all figures come from one side-by-side run
            load_after = _load()

    ap: dict[str, tuple[float, float, float]] = {}
    if args.eval_images:
        from featherface.eval.protocols import OriginalSize
        from featherface.eval.runner import evenly_spaced, list_images, onnx_ap

        rels = evenly_spaced(list_images(DATA / "val" / "images", DATA / "val" / "val-dev.txt"), args.eval_images)
        for k in recipes:
            if k == "fp32" or "default" in k or ms[k] < ms["fp32"]:
                r = onnx_ap(recipes[k], DATA / "val" / "images", DATA / "val", rels, OriginalSize(), args.threads)
                ap[k] = (r["easy"], r["medium"], r["hard"])

    lines = [f"`python benchmarks/bench_int8_groups.py {fp32}` — ONNX Runtime, 640×480, {args.threads} thread(s), "
             f"median of {args.runs} interleaved forwards; calibration {len(images)} training images; "
             f"load average {load_before} → {load_after}" + (f"; AP on {args.eval_images} val-dev images, original "
                                                             "size" if ap else ""),
             "", "| recipe | bytes | forward ms | / fp32 |" + (" AP E / M / H |" if ap else ""),
             "|---|---:|---:|---:|" + ("---|" if ap else "")]
    for k, path in recipes.items():
        row = f"| {k} | {path.stat().st_size:,} | {ms[k]:.2f} | {ms[k] / ms['fp32']:.3f} |"
        if ap:
            row += (" " + " / ".join(f"{v:.4f}" for v in ap[k]) + " |") if k in ap else " |"
        lines.append(row)
    lines += ["", "groups whose int8 forward beat fp32: " + (", ".join(paying) if paying else "none")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        atomic_write_text(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
