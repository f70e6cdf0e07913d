"""Training throughput on this machine: images/s of V1 and V2 (fwd + loss + bwd + AdamW step) at 640×640 with the
real data pipeline, the share of the time spent waiting for data, and the data pipeline's own rate.

    python benchmarks/bench_train.py                         # V1 and V2, 640, batch 8, 3 timed steps
    python benchmarks/bench_train.py --models featherface_v2 --image-size 640 --batch-size 16 --steps 5 --workers 2
    python benchmarks/bench_train.py --teacher ../shared/peers/featherface/featherface_train_mobilenet0.25_Final.pth
    python benchmarks/bench_train.py --models featherface_v2 --compare-channels-last    # NCHW vs NHWC, same run

It uses the trainer itself (``featherface.train.trainer.Trainer``), so the figures are those of ``featherface
train``. The first ``--warmup`` steps are not timed. "data wait" is the time the loop blocks in ``next(loader)``;
"loader alone" iterates the same DataLoader without a model (what the pipeline could deliver). The pipeline is
not the bottleneck when the loader alone is faster than the training step rate and the wait share is small.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from featherface.train.config import config_from_dict  # noqa: E402
from featherface.train.distill import teacher_forward  # noqa: E402
from featherface.train.trainer import Trainer  # noqa: E402

DEFAULT_LABELS = REPO.parent / "shared" / "data" / "widerface" / "train" / "label.txt"


def bench_model(name: str, args: argparse.Namespace, out_dir: str, channels_last: bool = False) -> dict:
    n_img = (args.warmup + args.steps) * args.batch_size
    cfg = config_from_dict({
        "model": name, "name": f"bench_{name}", "output_dir": out_dir, "epochs": 1, "seed": 0,
        "threads": args.threads,
        "data": {"train_labels": str(args.labels), "image_size": args.image_size, "batch_size": args.batch_size,
                 "num_workers": args.workers, "max_images": n_img},
        "distill": {"teacher": args.teacher} if args.teacher else {},
        "schedule": {"name": "constant"},
        "channels_last": bool(channels_last),
    })
    tr = Trainer(cfg, progress=False)
    tr.base_dataset.set_epoch(0)
    tr.sampler.set_epoch(0)
    tr.model.train()
    it = iter(tr.loader)
    wait = step = 0.0
    timed_images = 0
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        images, targets = next(it)
        images = images.contiguous(memory_format=tr.memory_format)
        t1 = time.perf_counter()
        t_out = teacher_forward(tr.teacher, images) if tr.teacher is not None else None
        parts = tr.step_module(images, targets, tr.anchors, t_out)
        tr.optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        tr.optimizer.step()
        t2 = time.perf_counter()
        if i >= args.warmup:
            wait += t1 - t0
            step += t2 - t1
            timed_images += images.shape[0]
    del it
    # the loader alone over the same images
    t0 = time.perf_counter()
    n = 0
    for images, _ in tr.loader:
        n += images.shape[0]
    loader_s = time.perf_counter() - t0
    total = wait + step
    return {
        "model": name, "channels_last": bool(channels_last), "teacher": bool(args.teacher), "image_size": args.image_size, "batch_size": args.batch_size,
        "workers": args.workers, "threads": torch.get_num_threads(), "timed_steps": args.steps,
        "train_images_per_s": timed_images / total, "compute_images_per_s": timed_images / step,
        "data_wait_share": wait / total, "loader_alone_images_per_s": n / loader_s,
        "step_s": total / args.steps,
    }


def _print_result(r: dict) -> None:
    print(f"{r['model']:16s} {'NHWC' if r['channels_last'] else 'NCHW'} {'(+teacher) ' if r['teacher'] else ''}"
          f"{r['image_size']}x{r['image_size']} batch {r['batch_size']}, {r['workers']} workers, "
          f"{r['threads']} threads: {r['train_images_per_s']:.2f} img/s training ({r['step_s']:.2f} s/step), "
          f"compute only {r['compute_images_per_s']:.2f} img/s, data wait {100 * r['data_wait_share']:.1f} %, "
          f"loader alone {r['loader_alone_images_per_s']:.1f} img/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["featherface_v1", "featherface_v2"])
    p.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    p.add_argument("--image-size", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--teacher", default=None, help="also run the teacher forward + distillation loss")
    p.add_argument("--channels-last", action="store_true", help="NHWC model and batches (config channels_last)")
    p.add_argument("--compare-channels-last", action="store_true",
                   help="run each model in NCHW and in NHWC, one after the other, and print the ratio")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if not args.labels.exists():
        print(f"label file not found: {args.labels}", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = [False, True] if args.compare_channels_last else [args.channels_last]
        for name in args.models:
            for cl in variants:
                r = bench_model(name, args, tmp, channels_last=cl)
                results.append(r)
                _print_result(r)
            if args.compare_channels_last:
                a, b = results[-2:]
                print(f"{name:16s} NHWC / NCHW training images/s: "
                      f"{b['train_images_per_s'] / a['train_images_per_s']:.3f}", flush=True)
    info = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "torch": torch.__version__, "results": results}
    print(f"cpus {info['cpus']}, load average {', '.join(f'{x:.1f}' for x in info['load_average'])} "
          "(other processes share these cores)")
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
