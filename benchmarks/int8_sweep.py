"""INT8 recipe sweep: AP change and size of several quantisation settings of one fp32 ONNX file, side by side.

    python benchmarks/int8_sweep.py exports/v2.onnx --eval-images 80 -o benchmarks/results/int8_sweep.md

Each row: calibration method, number of calibration images, parts kept in float (``--keep-float`` groups), file
size, WIDER val-dev AP (original size, score 0.02, NMS 0.4) on ``--eval-images`` evenly spaced val-dev images, and
the change against the fp32 file evaluated on the same images in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "widerface"

SETTINGS = [  # (method, calibration images, float groups)
    ("minmax", 32, ()),
    ("percentile", 32, ()),
    ("entropy", 32, ()),
    ("minmax", 32, ("heads",)),
    ("minmax", 32, ("attention",)),
    ("minmax", 32, ("attention", "heads")),
    ("percentile", 32, ("attention", "heads")),
    ("minmax", 32, ("attention", "heads", "stem")),
    ("minmax", 32, ("stage1",)),
    ("minmax", 32, ("stage2",)),
    ("minmax", 32, ("stage3",)),
    ("minmax", 32, ("neck", "ssh", "attention", "heads")),
    ("minmax", 96, ("attention", "heads", "stem")),
    ("percentile", 32, ("attention", "heads", "stem")),
]


def _ap(model_path: Path, rels: list[str], threads: int) -> tuple[float, float, float]:
    from featherface.eval.protocols import OriginalSize
    from featherface.eval.runner import onnx_ap

    ap = onnx_ap(model_path, DATA / "val" / "images", DATA / "val", rels, OriginalSize(), threads)
    return ap["easy"], ap["medium"], ap["hard"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="fp32 raw ONNX export")
    p.add_argument("--eval-images", type=int, default=80)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", type=int, nargs="*", help="indices of SETTINGS to run")
    p.add_argument("-o", "--output", default=None, help="markdown table to write")
    args = p.parse_args(argv)

    from featherface.eval.runner import evenly_spaced, list_images
    from featherface.export.quantize import calibration_images, quantize_int8
    from featherface.fsutil import atomic_write_text

    fp32 = Path(args.model)
    rels = evenly_spaced(list_images(DATA / "val" / "images", DATA / "val" / "val-dev.txt"), args.eval_images)
    base = _ap(fp32, rels, args.threads)
    lines = [f"INT8 sweep of `{fp32}` ({fp32.stat().st_size:,} B): WIDER val-dev, {len(rels)} evenly spaced images, "
             f"original size; fp32 AP {base[0]:.4f} / {base[1]:.4f} / {base[2]:.4f}", "",
             "| # | method | calib imgs | kept float | bytes | size ratio | AP E / M / H | change (points) |",
             "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (method, n, keep) in enumerate(SETTINGS):
            if args.only and i not in args.only:
                continue
            out = Path(tmp) / f"q{i}.onnx"
            quantize_int8(fp32, out, calibration_images(DATA / "train" / "images", n), method=method, keep_float=keep)
            ap = _ap(out, rels, args.threads)
            d = [100 * (a - b) for a, b in zip(ap, base)]
            row = (f"| {i} | {method} | {n} | {', '.join(keep) or '-'} | {out.stat().st_size:,} | "
                   f"{fp32.stat().st_size / out.stat().st_size:.2f} | {ap[0]:.4f} / {ap[1]:.4f} / {ap[2]:.4f} | "
                   f"{d[0]:+.2f} / {d[1]:+.2f} / {d[2]:+.2f} |")
            lines.append(row)
            print(row, flush=True)
    if args.output:
        atomic_write_text(args.output, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
