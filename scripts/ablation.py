"""Ablation of the seed report §6.1, measured: V2 with one of its blocks swapped back for V1's.

    python scripts/ablation.py                       # tiny default budget (minutes on a CPU): a smoke test, not a result
    python scripts/ablation.py --full                # full budget: configs/distill_v2.toml (400 epochs, 640 px,
                                                     #   every training image), AP on all of val-dev at original size
    python scripts/ablation.py --no-teacher          # train every variant without distillation
    python scripts/ablation.py --epochs 20 --image-size 480 --max-images 2000 --eval-max-images 385

Variants (config switches of ``featherface_v2``): ``V2 complete``; ``− BiFPN-Light`` (``neck="bifpn_v1"``);
``− grouped SSH`` (``ssh="v1"``, V1's deformable SSH); ``− CBAM-Plus`` (``attention="cbam_v1"``); optionally
``V1`` itself (``--with-v1``). Every variant is trained with the same recipe, seed, images and epochs, then
evaluated on val-dev; the script writes ``<out>/ablation.md`` (a markdown table of the **measured** Easy / Medium /
Hard AP and the parameter count) and ``<out>/ablation.json``. Nothing is projected or copied from the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

TEACHER = REPO.parent / "shared" / "peers" / "featherface" / "featherface_train_mobilenet0.25_Final.pth"

VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("V2 complete", "featherface_v2", {}),
    ("− BiFPN-Light (V1 BiFPN cell)", "featherface_v2", {"neck": "bifpn_v1"}),
    ("− grouped SSH (V1 deformable SSH)", "featherface_v2", {"ssh": "v1"}),
    ("− CBAM-Plus (V1 CBAM)", "featherface_v2", {"attention": "cbam_v1"}),
]
V1_VARIANT = ("V1 (teacher architecture)", "featherface_v1", {})

# tiny default budget: runs in minutes on 2 CPU cores; change it with the flags
TINY = {"epochs": 1, "image_size": 160, "batch_size": 4, "max_images": 16, "eval_max_images": 20,
        "eval_protocol": "longest-side-320"}
FULL = {"epochs": None, "image_size": None, "batch_size": None, "max_images": None, "eval_max_images": None,
        "eval_protocol": "original-size"}


def add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", type=Path, default=REPO / "configs" / "distill_v2.toml",
                   help="base recipe (default configs/distill_v2.toml)")
    p.add_argument("--full", action="store_true", help="the recipe's own budget and all of val-dev at original size")
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-images", type=int, help="training images (first N of the label file)")
    p.add_argument("--eval-max-images", type=int, help="val-dev images for the AP (evenly spaced); 0 = all")
    p.add_argument("--eval-protocol")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--teacher", default=str(TEACHER), help="teacher checkpoint (default: the upstream V1)")
    p.add_argument("--no-teacher", action="store_true", help="train without distillation")
    p.add_argument("--output", "-o", type=Path, default=None, help="output folder")
    p.add_argument("--progress", action="store_true", help="show the training progress bars")


def budget(args: argparse.Namespace) -> dict[str, Any]:
    b = dict(FULL if args.full else TINY)
    for k in ("epochs", "image_size", "batch_size", "max_images", "eval_max_images", "eval_protocol"):
        v = getattr(args, k)
        if v is not None:
            b[k] = v
    if b["eval_max_images"] == 0:
        b["eval_max_images"] = None
    return b


def train_and_eval(args: argparse.Namespace, name: str, model: str, model_config: dict[str, Any],
                   distill: dict[str, Any] | None, out: Path) -> dict[str, Any]:
    """Train one configuration with the budget of ``args``; returns params, AP and timing (all measured)."""
    from featherface.models import build_model
    from featherface.train.config import apply_overrides, config_from_dict, config_to_dict, load_config
    from featherface.train.trainer import train

    base = config_to_dict(load_config(args.recipe))
    b = budget(args)
    base["model"] = model
    mc = dict(base.get("model_config", {})) if model == "featherface_v2" else {}
    mc.update(model_config)
    base["model_config"] = mc
    base["name"] = name
    base["output_dir"] = str(out / "runs")
    base["seed"] = args.seed
    if args.threads is not None:
        base["threads"] = args.threads
    base["distill"] = {**base["distill"], **(distill or {})}
    if distill is None or args.no_teacher:
        base["distill"]["teacher"] = None
    cfg = config_from_dict(base)
    epochs = b["epochs"] or cfg.epochs
    cfg = apply_overrides(cfg, {
        "epochs": epochs, "data.image_size": b["image_size"], "data.batch_size": b["batch_size"],
        "data.max_images": b["max_images"], "data.num_workers": args.workers, "eval.every": epochs,
        "eval.protocol": b["eval_protocol"],
    })
    values = config_to_dict(cfg)
    values["eval"]["max_images"] = b["eval_max_images"]
    cfg = config_from_dict(values)
    params = sum(p.numel() for p in build_model(model, **mc).parameters())
    t0 = time.perf_counter()
    summary = train(cfg, progress=args.progress)
    ev = [r for r in summary["records"] if r.get("kind") == "eval"][-1]
    last = summary["last"]
    return {
        "name": name, "model": model, "model_config": mc, "params": params,
        "teacher": cfg.distill.teacher, "alpha": cfg.distill.alpha, "temperature": cfg.distill.temperature,
        "ap_easy": ev["ap_easy"], "ap_medium": ev["ap_medium"], "ap_hard": ev["ap_hard"],
        "eval_images": ev["eval_images"], "eval_protocol": ev["eval_protocol"],
        "epochs": cfg.epochs, "image_size": cfg.data.image_size, "train_images": last["images"],
        "final_loss": last["loss_total"], "train_s": time.perf_counter() - t0,
        "run_dir": summary["run_dir"],
    }


def setup_line(rows: list[dict[str, Any]]) -> str:
    r = rows[0]
    return (f"Measured on this machine: {r['epochs']} epoch(s) at {r['image_size']} px on {r['train_images']} "
            f"training images per epoch, seed fixed; AP on {r['eval_images']} val-dev images, protocol "
            f"`{r['eval_protocol']}`. Teacher: {r['teacher'] or 'none'}.")


def fmt_ap(x: float) -> str:
    return f"{100 * x:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_args(p)
    p.add_argument("--with-v1", action="store_true", help="also train the V1 architecture with the same budget")
    args = p.parse_args(argv)
    out = args.output or (REPO / "runs" / ("ablation_full" if args.full else "ablation_tiny"))
    out.mkdir(parents=True, exist_ok=True)
    variants = list(VARIANTS) + ([V1_VARIANT] if args.with_v1 else [])
    rows = []
    for label, model, mc in variants:
        slug = "ablation_" + (model if not mc else "_".join(f"{k}-{v}" for k, v in mc.items()))
        # V1 as its own student makes no sense: train it without a teacher
        distill = None if model == "featherface_v1" else {}
        r = train_and_eval(args, slug, model, mc, distill, out)
        r["label"] = label
        rows.append(r)
        print(f"{label}: params {r['params']:,}, AP {fmt_ap(r['ap_easy'])} / {fmt_ap(r['ap_medium'])} / "
              f"{fmt_ap(r['ap_hard'])} ({r['train_s']:.0f} s)", flush=True)
    lines = ["# Ablation (seed report §6.1), measured", "", setup_line(rows), "",
             "| Configuration | Switch | Params | Easy AP | Medium AP | Hard AP | Final train loss |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        switch = ", ".join(f"`{k}=\"{v}\"`" for k, v in r["model_config"].items()
                           if k in ("neck", "ssh", "attention")) or "—"
        lines.append(f"| {r['label']} | {switch} | {r['params']:,} | {fmt_ap(r['ap_easy'])} | {fmt_ap(r['ap_medium'])} "
                     f"| {fmt_ap(r['ap_hard'])} | {r['final_loss']:.3f} |")
    lines += ["", "AP in %. Parameters: `sum(p.numel() for p in model.parameters())`.",
              "With the default tiny budget these numbers only show that the pipeline runs; use `--full` "
              "(or larger flags) for a real comparison."]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    (out / "ablation.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(f"wrote {out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
