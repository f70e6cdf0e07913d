"""Batch throughput: one process vs ``featherface detect-batch`` on Ray with 1 and 2 actors, in one run, same images.

    python benchmarks/bench_batch.py                     # all 385 val-dev images, writes benchmarks/results/batch.md
    python benchmarks/bench_batch.py --images 10 --output /tmp/batch.md     # a quick check that it runs

Rows (all ONNX Runtime, the same raw ONNX export of the model, 1 intra-op thread per worker unless said):

* ``loop``: one process, ``FaceDetector(model.onnx, backend="onnxruntime", num_threads=1)``, decode + detect each
  image in turn (what ``featherface detect --no-images`` does per image, on ORT) -- the single-process baseline;
* ``loop, 2 threads``: the same process with 2 intra-op threads (the other way to use 2 cores), for reference;
* ``ray, 1 actor`` / ``ray, 2 actors``: :func:`featherface.batch.detect_batch` on a local Ray with ``--num-cpus`` CPUs
  (default 2) into a fresh Parquet output.

Two rates per row: ``job`` = images / wall time of the whole run (Ray: dataset execution incl. actor start-up and
model load; loop: detector construction + loop); ``steady`` = the rate without start-up (loop: the loop alone; Ray:
``(N - m) / (T_N - T_m)`` with a second, short run of the first m images, which pays the same start-up). The
figures to report: the scaling 1 -> 2 actors, 2 actors over the loop, and Ray's overhead over the loop (1 actor vs
loop, time per image). Goals of issue 16: 2 actors >= 1.7x the
loop on 2 cores, overhead < 10 %. Run it on an otherwise idle machine: every figure is a wall-clock rate.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VAL = SHARED / "data" / "widerface" / "val"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _images(args) -> list[Path]:
    names = [ln.strip() for ln in Path(args.image_list).read_text().splitlines() if ln.strip()]
    files = [Path(args.image_dir) / n for n in names][: args.images]
    missing = [f for f in files if not f.is_file()]
    if missing:
        sys.exit(f"bench_batch: {len(missing)} image(s) missing, e.g. {missing[0]}")
    return files


def _loop(onnx: Path, files: list[Path], threads: int) -> dict:
    from featherface.api import FaceDetector

    t0 = time.perf_counter()
    det = FaceDetector(onnx, backend="onnxruntime", num_threads=threads)
    t1 = time.perf_counter()
    faces = errors = 0
    for f in files:
        try:
            faces += len(det.detect_decoded(det.load(f)))
        except Exception:  # noqa: BLE001 - counted like detect-batch's error rows
            errors += 1
    t2 = time.perf_counter()
    n = len(files)
    return {"seconds": t2 - t0, "job": n / (t2 - t0), "steady": n / (t2 - t1), "faces": faces, "errors": errors}


def _ray_once(onnx: Path, folder: Path, workers: int, batch_size: int, out: Path, limit: int | None):
    from featherface.batch import detect_batch

    shutil.rmtree(out, ignore_errors=True)
    return detect_batch(folder, out, model=onnx, workers=workers, batch_size=batch_size, progress=False, quiet=True,
                        rows_per_file=1_000_000, limit=limit)


def _ray(onnx: Path, folder: Path, n_images: int, workers: int, batch_size: int, work: Path) -> dict:
    """The full run, and a short run of ``m`` images with the same start-up: steady = (N - m) / (T_N - T_m)."""
    m = min(max(2 * workers * batch_size, n_images // 5), n_images // 2)
    short = _ray_once(onnx, folder, workers, batch_size, work / f"short_{workers}", m)
    full = _ray_once(onnx, folder, workers, batch_size, work / f"out_{workers}", None)
    span = full.seconds - short.seconds
    steady = (full.processed - short.processed) / span if span > 0 and m > 0 else None  # too few images
    return {"seconds": full.seconds, "job": full.images_per_second, "steady": steady, "faces": full.faces,
            "errors": full.errors, "workers": full.workers, "short": (short.processed, short.seconds)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=385, help="first N images of the list (default 385: all val-dev)")
    p.add_argument("--image-dir", default=str(VAL / "images"))
    p.add_argument("--image-list", default=str(VAL / "val-dev.txt"))
    p.add_argument("--model", default=None, help="checkpoint or raw .onnx (default: the bundled weights)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "batch.md"),
                   help="markdown report (default benchmarks/results/batch.md; '-' = none)")
    args = p.parse_args(argv)

    import ray

    from featherface.batch import resolve_onnx

    files = _images(args)
    # at least 4 batches per actor, so a small --images still keeps 2 actors busy
    args.batch_size = max(1, min(args.batch_size, len(files) // 8))
    onnx, ident = resolve_onnx(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        folder = work / "images"  # the same files for every row, as one folder (symlinks: no copy)
        folder.mkdir()
        for i, f in enumerate(files):
            (folder / f"{i:05d}_{f.name}").symlink_to(f.resolve())
        for f in files:  # page cache warm for every row alike
            f.read_bytes()
        rows: dict[str, dict] = {}
        print(f"bench_batch: {len(files)} images, model {ident['model']}, {os.cpu_count()} CPUs visible", flush=True)
        rows["loop"] = _loop(onnx, files, 1)
        print(f"  loop (1 process, 1 thread): {rows['loop']['steady']:.2f} images/s", flush=True)
        rows["loop, 2 threads"] = _loop(onnx, files, 2)
        print(f"  loop (1 process, 2 threads): {rows['loop, 2 threads']['steady']:.2f} images/s", flush=True)
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, logging_level="WARNING")
        try:
            for n in (1, 2):
                rows[f"ray, {n} actor{'s' if n > 1 else ''}"] = r = _ray(onnx, folder, len(files), n, args.batch_size,
                                                                          work)
                steady = "n/a" if r["steady"] is None else f"{r['steady']:.2f}"
                print(f"  ray, {n} actor(s): {steady} images/s steady, {r['job']:.2f} job", flush=True)
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ratio(a, b):
        return a / b if a and b else None

    def fx(v, spec=".2f", suffix=""):
        return "n/a" if v is None else f"{v:{spec}}{suffix}"

    faces = {k: (v["faces"], v["errors"]) for k, v in rows.items()}
    same = len(set(faces.values())) == 1
    loop, one, two = rows["loop"], rows["ray, 1 actor"], rows["ray, 2 actors"]
    scaling, scaling_job = ratio(two["steady"], one["steady"]), ratio(two["job"], one["job"])
    over_loop, over_loop_job = ratio(two["steady"], loop["steady"]), ratio(two["job"], loop["job"])
    overhead = None if ratio(loop["steady"], one["steady"]) is None else (loop["steady"] / one["steady"] - 1) * 100
    overhead_job = None if ratio(loop["job"], one["job"]) is None else (loop["job"] / one["job"] - 1) * 100

    lines = [
        "# Batch throughput: one process vs Ray Data actors",
        "",
        f"`python benchmarks/bench_batch.py {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"- {_dt.date.today().isoformat()}, {_cpu_model()}, {os.cpu_count()} CPUs visible, local Ray with "
        f"{args.num_cpus} CPUs, Python {platform.python_version()}",
        f"- {len(files)} WIDER FACE val-dev images at their original size, model {ident['model']} "
        f"(sha256 {ident['model_sha256'][:12]}), raw ONNX on ONNX Runtime, 1 intra-op thread per worker, "
        f"batch size {args.batch_size}",
        f"- same faces in every row: {'yes' if same else 'NO: ' + json.dumps(faces)} "
        f"({loop['faces']} faces, {loop['errors']} errors)",
        "",
        "| run | workers | seconds | images/s (job) | images/s (steady) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        w = r.get("workers", 1)
        lines.append(f"| {name} | {w} | {r['seconds']:.2f} | {fx(r['job'])} | {fx(r['steady'])} |")
    lines += [
        "",
        f"- scaling 1 -> 2 actors: **{fx(scaling, '.2f', 'x')}** steady ({fx(scaling_job, '.2f', 'x')} job)",
        f"- 2 actors over the one-process loop: **{fx(over_loop, '.2f', 'x')}** steady "
        f"({fx(over_loop_job, '.2f', 'x')} job); goal >= 1.7x",
        f"- Ray's overhead over the loop (1 actor vs loop, time per image): **{fx(overhead, '+.1f', ' %')}** steady "
        f"({fx(overhead_job, '+.1f', ' %')} job, actor start-up included); goal < 10 %",
        "",
        "job = images / wall time of the run (Ray: dataset execution incl. actor start-up and model load; loop: "
        "detector construction + loop). steady: loop = the loop alone; Ray = (N - m) / (T_N - T_m), where T_m is a "
        "run of the first m images with the same start-up ("
        + ", ".join(f"{k}: m = {v['short'][0]}, T_m = {v['short'][1]:.2f} s" for k, v in rows.items() if "short" in v)
        + ").",
    ]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.output != "-":
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"written to {args.output}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
