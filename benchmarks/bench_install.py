"""Light install vs full install, measured side by side in one run.

    python benchmarks/bench_install.py [--light-venv .cache/bench-venv-light] [--repeats 5]

* venv size on disk: a fresh venv with ``pip install .`` (the core install: no torch) against this environment
  (``.[dev]``: torch, the extras, the test tools);
* cold start: a new process that imports featherface and detects faces in the bundled photo with the default
  detector (light: ONNX Runtime; full: the same call, plus the PyTorch backend that was the default before);
* ``featherface --help`` in a new process;
* the default path's detection latency in one process (bundled photo, original size, 1 thread): ONNX Runtime
  against PyTorch.

Pause any training run first (``kill -STOP``): timings on a shared machine mean nothing. Medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "src" / "featherface" / "assets" / "grace_hopper.jpg"
COLD = ("import time, sys; t = time.perf_counter(); from featherface import FaceDetector; "
        "faces = FaceDetector({args}).detect(sys.argv[1]); "
        "print(f'{{time.perf_counter() - t:.4f}} {{len(faces)}} {{\"torch\" in sys.modules}}')")


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def _ensure_light_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} (pip install . : the core install)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    # reinstall the current tree every time (non-editable), so the weights and code measured are these ones
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", str(ROOT)],
                   check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], check=True)
    has_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0
    if has_torch:
        raise SystemExit(f"{venv} has torch installed: not a light install")
    return python


def _time_process(cmd: list[str], repeats: int, env: dict) -> tuple[float, str]:
    walls, last = [], ""
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/tmp")
        walls.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:3])}...: failed: {proc.stderr.strip().splitlines()[-1:]}")
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return statistics.median(walls), last


def _latency(repeats: int) -> dict[str, float]:
    from featherface import FaceDetector

    out = {}
    for backend in ("onnxruntime", "torch"):
        det = FaceDetector(backend=backend, num_threads=1)
        image = det.load(PHOTO).image
        det.detect_arrays(image)  # warm-up
        times = []
        for _ in range(max(repeats * 4, 20)):
            t = time.perf_counter()
            det.detect_arrays(image)
            times.append(time.perf_counter() - t)
        out[backend] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--light-venv", type=Path, default=ROOT / ".cache" / "bench-venv-light")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    light_python = _ensure_light_venv(args.light_venv.resolve())
    full_python = Path(sys.executable)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    full_prefix = Path(sys.prefix)

    rows = []
    size_light, size_full = _du(args.light_venv), _du(full_prefix)
    rows.append(("venv size on disk", f"{size_light / 1e6:.0f} MB", f"{size_full / 1e6:.0f} MB",
                 f"{size_light / size_full:.2f}"))
    cold_light, out_light = _time_process([str(light_python), "-c", COLD.format(args=""), str(PHOTO)], args.repeats, env)
    cold_full_ort, _ = _time_process([str(full_python), "-c", COLD.format(args=""), str(PHOTO)], args.repeats, env)
    cold_full_torch, out_torch = _time_process(
        [str(full_python), "-c", COLD.format(args="backend='torch'"), str(PHOTO)], args.repeats, env)
    rows.append(("cold start: import + first detection (process wall)", f"{cold_light:.2f} s",
                 f"{cold_full_torch:.2f} s (PyTorch backend)", f"{cold_light / cold_full_torch:.2f}"))
    rows.append(("  same, default detector in the full install", "", f"{cold_full_ort:.2f} s (ONNX Runtime)",
                 f"{cold_light / cold_full_ort:.2f}"))
    light_cli = args.light_venv.resolve() / "bin" / "featherface"
    full_cli = full_prefix / "bin" / "featherface"
    help_light, _ = _time_process([str(light_cli), "--help"], args.repeats, env)
    help_full, _ = _time_process([str(full_cli), "--help"], args.repeats, env)
    rows.append(("featherface --help (process wall)", f"{help_light:.2f} s", f"{help_full:.2f} s",
                 f"{help_light / help_full:.2f}"))
    lat = _latency(args.repeats)
    rows.append(("detection latency, bundled photo (original size), 1 thread", f"{lat['onnxruntime'] * 1e3:.1f} ms"
                 " (ONNX Runtime, default)", f"{lat['torch'] * 1e3:.1f} ms (PyTorch)",
                 f"{lat['onnxruntime'] / lat['torch']:.2f}"))
    print(f"in-process cold start reported by the light process: {out_light} (seconds, faces, torch imported); "
          f"PyTorch backend: {out_torch}")
    widths = [max(len(r[i]) for r in rows + [("", "light install", "full install", "light / full")])
              for i in range(4)]
    header = ("", "light install", "full install", "light / full")
    for row in (header, *rows):
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
