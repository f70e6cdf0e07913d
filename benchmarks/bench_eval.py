"""Wall time of scoring WIDER FACE val from prediction files (read files + parse GT + easy/medium/hard).

    python benchmarks/bench_eval.py [--repeat 3] [--shared ../shared]

Each oracle prediction archive is unpacked into a temporary folder first (not timed). A timed run is one
``featherface.eval.evaluate(folder, gt_dir)`` call with the ground-truth cache cleared, so the four ``.mat`` files are
parsed inside the timing (module imports are done once beforehand and reported separately). The reference port needs
30-39 s per full-val set on the 2-core VM (oracle README). Running the detector is timed by ``featherface eval``
itself (``timing.detector_s`` in results.json), not here.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from pathlib import Path

T_IMPORT0 = time.perf_counter()
import scipy.io  # noqa: E402,F401  (the evaluator imports it lazily; counted in the import time below)

from featherface.eval import widerface  # noqa: E402

T_IMPORT = time.perf_counter() - T_IMPORT0

SETS = ["derronqi_yolov7-face", "MAhaitao999_Retinaface-PyTorch-onnx-trt", "thflgg133_RetinaFace-optimization"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per set (the minimum is reported)")
    args = ap.parse_args()
    wider = Path(args.shared) / "data" / "widerface"
    oracle = wider / "oracle"
    ref = json.loads((oracle / "reference_ap.json").read_text())
    gt_dir = wider / "val"
    print(f"imports (numpy, scipy.io, featherface.eval): {T_IMPORT:.2f} s")
    print(f"{'set':<42} {'best s':>7} {'runs':>18} {'ref s':>6}  AP easy / medium / hard (reference), max |diff|")
    worst_time, worst_diff = 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in SETS:
            dest = Path(tmp) / name
            with tarfile.open(oracle / "predictions" / f"{name}.tar.gz") as tf:
                tf.extractall(dest, filter="data")
            folder = dest / "widerface_txt"
            times = []
            for _ in range(args.repeat):
                widerface._GT_CACHE.clear()
                t0 = time.perf_counter()
                res = widerface.evaluate(folder, gt_dir)
                times.append(time.perf_counter() - t0)
            raw = ref["full_val"][name]["raw"]
            diff = max(abs(res.ap[s] - raw[s]) for s in widerface.SETTINGS)
            worst_time = max(worst_time, min(times))
            worst_diff = max(worst_diff, diff)
            aps = " / ".join(f"{res.ap[s]:.6f} ({raw[s]:.6f})" for s in widerface.SETTINGS)
            runs = ",".join(f"{t:.2f}" for t in times)
            print(f"{name:<42} {min(times):7.2f} {runs:>18} {ref['full_val'][name]['reference_wall_s']:6.1f}  {aps}, {diff:.1e}")
    print(f"slowest full-val set: {worst_time:.2f} s (target < 3 s); max |AP - reference| = {worst_diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
