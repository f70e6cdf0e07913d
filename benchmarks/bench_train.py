"""Training throughput on this machine: images/s of V1 and V2 (fwd + loss + bwd + AdamW step) at 640×640 with the
real data pipeline, the share of the time spent waiting for data, and the data pipeline's own rate.

    python benchmarks/bench_train.py                         # V1 and V2, 640, batch 8, 3 timed steps
    python benchmarks/bench_train.py --models featherface_v2 --image-size 640 --batch-size 16 --steps 5 --workers 2
    python benchmarks/bench_train.py --teacher ../shared/peers/featherface/featherface_train_mobilenet0.25_Final.pth
    python benchmarks/bench_train.py --models featherface_v2 --compare-channels-last    # NCHW vs NHWC, same run
    python benchmarks/bench_train.py --models featherface_v2 --channels-last --compare-fused-bn   # BN+act fusion
    python benchmarks/bench_train.py --models featherface_v2 --channels-last --compare-ddp 2     # 1 vs 2 processes
    python benchmarks/bench_train.py --models featherface_v2 --channels-last --compare-compile   # torch.compile
    python benchmarks/bench_train.py --models featherface_v2 --channels-last --compare-compile --model-only  # ceiling
    python benchmarks/bench_train.py --models featherface_v2 --batch-size 16 --steps 8 --teacher TEACHER \
        --compare-frozen 1 2 4      # end-to-end distilled step vs the frozen shared-backbone step, teacher every k

``--compare-ddp N`` runs the same global batch once in this process (``--threads`` threads) and once as N
DistributedDataParallel processes (``torchrun``, gloo, ``batch / N`` images and ``cpus / N`` threads each) and
prints both rates and their ratio. Under ``torchrun`` the script measures the DDP step itself (rank 0 prints).

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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from featherface.train.config import config_from_dict  # noqa: E402
from featherface.train.trainer import Trainer, prepare_student  # noqa: E402

DEFAULT_LABELS = REPO.parent / "shared" / "data" / "widerface" / "train" / "label.txt"


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def bench_model(name: str, args: argparse.Namespace, out_dir: str, channels_last: bool = False,
                fused_bn: bool = True, compile_model: bool = False, freeze_backbone: bool = False,
                teacher_every: int = 1) -> dict:
    world = _world()
    n_img = (args.warmup + args.steps) * args.batch_size * world
    cfg = config_from_dict({
        "model": name, "name": f"bench_{name}", "output_dir": out_dir, "epochs": 1, "seed": 0,
        "data": {"train_labels": str(args.labels), "image_size": args.image_size, "batch_size": args.batch_size,
                 "num_workers": args.workers, "max_images": n_img},
        "distill": {"teacher": args.teacher, "teacher_every": teacher_every} if args.teacher else {},
        "schedule": {"name": "constant"},
        "freeze_backbone": bool(freeze_backbone),
        "channels_last": bool(channels_last),
        "fused_bn": bool(fused_bn),
        "compile": bool(compile_model),
    })
    tr = Trainer(cfg, progress=False)
    tr.base_dataset.set_epoch(0)
    tr.sampler.set_epoch(0)
    tr.model.train()
    if world > 1:
        torch.distributed.barrier()
    it = iter(tr.loader)
    wait = step = 0.0
    timed_images = 0
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        images, targets = next(it)
        images = images.contiguous(memory_format=tr.memory_format)
        t1 = time.perf_counter()
        tr.train_step(images, targets)  # the trainer's own step: frozen backbone, teacher every k-th, loss, AdamW
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
    if world > 1:  # every rank's images over the slowest rank's time
        t = torch.tensor([total, step, loader_s], dtype=torch.float64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        total, step, loader_s = (float(v) for v in t)
        wait = total - step
        timed_images *= world
        n *= world
    tr.close()
    return {
        "model": name, "channels_last": bool(channels_last), "fused_bn": bool(fused_bn),
        "compile": bool(compile_model), "teacher": bool(args.teacher),
        "freeze_backbone": bool(freeze_backbone), "teacher_every": int(teacher_every),
        "image_size": args.image_size, "batch_size": args.batch_size, "processes": world,
        "workers": args.workers, "threads": torch.get_num_threads(), "timed_steps": args.steps,
        "train_images_per_s": timed_images / total, "compute_images_per_s": timed_images / step,
        "data_wait_share": wait / total, "loader_alone_images_per_s": n / loader_s,
        "step_s": total / args.steps,
    }


def bench_model_only(name: str, args: argparse.Namespace, channels_last: bool, fused_bn: bool,
                     compile_model: bool) -> dict:
    """The student alone on a synthetic batch (forward + Σ output² + backward + AdamW): the ceiling of the step rate
    with no data pipeline, no matching and no detection loss."""
    from featherface.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(name).train()
    fmt = prepare_student(model, fused_bn=fused_bn, compile_model=compile_model, channels_last=channels_last)
    forward = torch.compile(model, dynamic=False) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size).contiguous(memory_format=fmt)

    def train_step() -> None:
        loss = sum(t.float().pow(2).mean() for t in forward(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        train_step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                train_step()
        print(f"torch.profiler, {name} {_variant(compile_model, fused_bn)}, 2 steps, by self CPU time:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))
    return {"model": name, "model_only": True, "channels_last": bool(channels_last), "fused_bn": bool(fused_bn),
            "compile": bool(compile_model), "image_size": args.image_size, "batch_size": args.batch_size,
            "threads": torch.get_num_threads(), "timed_steps": args.steps, "step_s": step,
            "train_images_per_s": args.batch_size / step}


def _variant(compile_model: bool, fused_bn: bool) -> str:
    return "compiled" if compile_model else ("fused-BN" if fused_bn else "plain-BN")


def _print_result(r: dict) -> None:
    bn = _variant(r["compile"], r["fused_bn"])
    if r.get("model_only"):
        print(f"{r['model']:16s} {'NHWC' if r['channels_last'] else 'NCHW'} {bn} {r['image_size']}x{r['image_size']} "
              f"batch {r['batch_size']}, {r['threads']} threads, MODEL ALONE (synthetic batch, no data/matching/loss): "
              f"{r['train_images_per_s']:.2f} img/s ({r['step_s']:.2f} s/step, median)", flush=True)
        return
    procs = f"{r['processes']} processes x " if r["processes"] > 1 else ""
    frozen = (f"(frozen shared backbone, teacher every {r['teacher_every']}) " if r.get("freeze_backbone")
              else "(end to end) " if r["teacher"] else "")
    print(f"{r['model']:16s} {'NHWC' if r['channels_last'] else 'NCHW'} {bn} "
          f"{'(+teacher) ' if r['teacher'] else ''}{frozen}"
          f"{r['image_size']}x{r['image_size']} {procs}batch {r['batch_size']}, {r['workers']} workers, "
          f"{r['threads']} threads: {r['train_images_per_s']:.2f} img/s training ({r['step_s']:.2f} s/step), "
          f"compute only {r['compute_images_per_s']:.2f} img/s, data wait {100 * r['data_wait_share']:.1f} %, "
          f"loader alone {r['loader_alone_images_per_s']:.1f} img/s", flush=True)


def _ddp_run(args: argparse.Namespace, name: str, nproc: int, tmp: str) -> dict:
    """The same measurement as ``nproc`` DDP processes (torchrun), each with batch / nproc and cpus / nproc threads."""
    if args.batch_size % nproc:
        raise SystemExit(f"--batch-size {args.batch_size} is not divisible by --compare-ddp {nproc}")
    out = Path(tmp) / f"ddp_{name}.json"
    threads = max(1, (args.threads or os.cpu_count() or nproc) // nproc)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__,
           "--models", name, "--labels", str(args.labels), "--image-size", str(args.image_size),
           "--batch-size", str(args.batch_size // nproc), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--workers", str(args.workers), "--threads", str(threads), "--json", str(out)]
    if args.teacher:
        cmd += ["--teacher", args.teacher]
    if args.channels_last:
        cmd.append("--channels-last")
    if args.no_fused_bn:
        cmd.append("--no-fused-bn")
    if args.compile:
        cmd.append("--compile")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["results"][0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["featherface_v1", "featherface_v2"])
    p.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    p.add_argument("--image-size", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=8, help="images per step (per process under torchrun)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--teacher", default=None, help="also run the teacher forward + distillation loss")
    p.add_argument("--channels-last", action="store_true", help="NHWC model and batches (config channels_last)")
    p.add_argument("--no-fused-bn", action="store_true", help="plain BatchNorm2d + activation (config fused_bn false)")
    p.add_argument("--compile", action="store_true", help="torch.compile the student (config compile true)")
    p.add_argument("--compare-channels-last", action="store_true",
                   help="run each model in NCHW and in NHWC, one after the other, and print the ratio")
    p.add_argument("--compare-fused-bn", action="store_true",
                   help="run each model with plain and with fused BatchNorm + activation and print the ratio")
    p.add_argument("--compare-compile", action="store_true",
                   help="run each model eager (fused BN) and torch.compile'd and print the ratio (the warm-up "
                        "steps include the compilation, which is not timed)")
    p.add_argument("--compare-ddp", type=int, default=0, metavar="N",
                   help="also run the same global batch as N DDP processes and print the ratio")
    p.add_argument("--model-only", action="store_true",
                   help="time the student alone on a synthetic batch (the ceiling of the training step rate)")
    p.add_argument("--profile", action="store_true", help="with --model-only: print a torch.profiler op table")
    p.add_argument("--rounds", type=int, default=1, help="repeat each comparison, alternating (noisy machines)")
    p.add_argument("--compare-frozen", type=int, nargs="+", default=None, metavar="K",
                   help="with --teacher: the end-to-end distilled step against the frozen shared-backbone step with "
                        "the teacher every K-th batch, for each K given (e.g. 1 2 4), in one run")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.compare_frozen and not args.teacher:
        p.error("--compare-frozen needs --teacher")
    if args.compare_ddp and args.model_only:
        p.error("--compare-ddp measures the trainer; it cannot be combined with --model-only")
    if not args.labels.exists() and not args.model_only:
        print(f"label file not found: {args.labels}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        fused, comp = not args.no_fused_bn, args.compile
        frozen = {}  # label -> (freeze_backbone, teacher_every)
        if args.compare_frozen:
            variants = [("end to end", args.channels_last, fused, comp)]
            frozen["end to end"] = (False, 1)
            for k in args.compare_frozen:
                variants.append((f"frozen k={k}", args.channels_last, fused, comp))
                frozen[f"frozen k={k}"] = (True, k)
        elif args.compare_channels_last:
            variants = [("NCHW", False, fused, comp), ("NHWC", True, fused, comp)]
        elif args.compare_fused_bn:
            variants = [("plain BN", args.channels_last, False, False), ("fused BN", args.channels_last, True, False)]
        elif args.compare_compile:
            variants = [("eager", args.channels_last, fused, False), ("compiled", args.channels_last, fused, True)]
        else:
            variants = [("run", args.channels_last, fused, comp)]
        for name in args.models:
            rates: dict[str, list[float]] = {}
            for _ in range(max(1, args.rounds)):
                for label, cl, fb, cm in variants:
                    if args.model_only:
                        r = bench_model_only(name, args, channels_last=cl, fused_bn=fb, compile_model=cm)
                    else:
                        fz, k = frozen.get(label, (False, 1))
                        r = bench_model(name, args, tmp, channels_last=cl, fused_bn=fb, compile_model=cm,
                                        freeze_backbone=fz, teacher_every=k)
                    results.append(r)
                    rates.setdefault(label, []).append(r["train_images_per_s"])
                    if main_rank:
                        _print_result(r)
                if args.compare_ddp > 1 and _world() == 1:
                    r = _ddp_run(args, name, args.compare_ddp, tmp)
                    results.append(r)
                    rates.setdefault(f"{args.compare_ddp} processes", []).append(r["train_images_per_s"])
                    _print_result(r)
            if len(rates) > 1 and main_rank:
                medians = {k: statistics.median(v) for k, v in rates.items()}
                base_label = next(iter(medians))
                summary = ", ".join(f"{k} {v:.2f}" for k, v in medians.items())
                ratios = ", ".join(f"{k} / {base_label} {v / medians[base_label]:.3f}"
                                   for k, v in medians.items() if k != base_label)
                print(f"{name:16s} median training images/s over {max(1, args.rounds)} round(s): {summary}; "
                      f"{ratios}", flush=True)
    if not main_rank:
        return 0
    info = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "torch": torch.__version__, "results": results}
    print(f"cpus {info['cpus']}, load average {', '.join(f'{x:.1f}' for x in info['load_average'])} "
          "(other processes share these cores)")
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
