"""``featherface train``: train V1 or V2 from a TOML recipe, optionally distilled from a teacher.

    featherface train --config configs/train_v2.toml
    featherface train --config configs/train_v2.toml --teacher featherface_train_mobilenet0.25_Final.pth
    featherface train --model featherface_v2 --epochs 3 --image-size 320 --batch-size 8 --name quick
    featherface train --resume runs/quick/last.pth            # continues exactly (config from the checkpoint)
    torchrun --nproc_per_node=2 -m featherface train --config configs/train_v2.toml   # DDP, gloo on CPU

Options left out do not override the recipe; ``--set section.key=value`` overrides any field (value parsed as TOML,
strings may be bare).
"""

from __future__ import annotations

import argparse
import sys

from featherface import cliargs

__all__ = ["DEFAULT_PATHS", "configure_parser", "run", "build_config", "with_default_paths", "main"]

#: Data paths used when a recipe (or a resumed run's config) leaves them unset: this repository's ../shared layout.
#: The library (:mod:`featherface.train.config`) has no data defaults; the command line supplies these.
DEFAULT_PATHS = {
    "data.train_labels": "../shared/data/widerface/train/label.txt",
    "eval.images": "../shared/data/widerface/val/images",
    "eval.image_list": "../shared/data/widerface/val/val-dev.txt",
    "eval.gt": "../shared/data/widerface/oracle/gt_val_dev",
}

# option dest -> dotted config field
_OVERRIDES = {
    "model": "model", "name": "name", "output_dir": "output_dir", "epochs": "epochs", "seed": "seed",
    "device": "device", "threads": "threads", "compile": "compile", "init_backbone": "init_backbone", "log_every": "log_every",
    "train_labels": "data.train_labels", "train_images": "data.train_images", "image_size": "data.image_size",
    "batch_size": "data.batch_size", "workers": "data.num_workers", "max_images": "data.max_images",
    "lr": "optim.lr", "weight_decay": "optim.weight_decay", "schedule": "schedule.name",
    "warmup_epochs": "schedule.warmup_epochs",
    "teacher": "distill.teacher", "alpha": "distill.alpha", "temperature": "distill.temperature",
    "feature_weight": "distill.feature_weight",
    "eval_every": "eval.every", "val_images": "eval.images", "val_list": "eval.image_list", "val_gt": "eval.gt",
    "eval_max_images": "eval.max_images", "eval_protocol": "eval.protocol",
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="TOML", help="training recipe (e.g. configs/train_v2.toml)")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="continue a run from its last.pth (config from the checkpoint unless --config is given)")
    g = parser.add_argument_group("run")
    g.add_argument("--model", help="featherface_v1 or featherface_v2")
    g.add_argument("--name", help="run name: files go to OUTPUT_DIR/NAME/")
    g.add_argument("--output-dir", help="parent folder of runs (default runs)")
    g.add_argument("--epochs", type=cliargs.positive_int)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", type=cliargs.device, help="cpu, cuda, cuda:1 ...")
    g.add_argument("--threads", type=cliargs.positive_int, help="torch intra-op threads")
    g.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the student's forward (faster steps after minutes of compiling; needs g++)")
    g.add_argument("--init-backbone", metavar="CHECKPOINT", help="initialise the backbone (body.*) from this file")
    g.add_argument("--log-every", type=cliargs.non_negative_int, help="write a metrics line every N iterations")
    d = parser.add_argument_group("data")
    d.add_argument("--train-labels", metavar="LABEL_TXT")
    d.add_argument("--train-images", metavar="DIR")
    d.add_argument("--image-size", type=cliargs.positive_int)
    d.add_argument("--batch-size", type=cliargs.positive_int, help="per process")
    d.add_argument("--workers", type=cliargs.non_negative_int, help="DataLoader workers")
    d.add_argument("--max-images", type=cliargs.positive_int, help="train on the first N images only")
    o = parser.add_argument_group("optimisation")
    o.add_argument("--lr", type=cliargs.positive_float)
    o.add_argument("--weight-decay", type=cliargs.non_negative_float)
    o.add_argument("--schedule", choices=("warmup_cosine", "onecycle", "constant"))
    o.add_argument("--warmup-epochs", type=float)
    k = parser.add_argument_group("distillation")
    k.add_argument("--teacher", metavar="CHECKPOINT", help="teacher checkpoint (ours or upstream V1): enables KD")
    k.add_argument("--alpha", type=float)
    k.add_argument("--temperature", type=float)
    k.add_argument("--feature-weight", type=float)
    k.add_argument("--no-teacher-backbone", action="store_true",
                   help="do not initialise the student backbone from the teacher's")
    e = parser.add_argument_group("periodic evaluation")
    e.add_argument("--eval-every", type=int, help="val AP every N epochs (0: off)")
    e.add_argument("--val-images", metavar="DIR")
    e.add_argument("--val-list", metavar="FILE")
    e.add_argument("--val-gt", metavar="GT_DIR")
    e.add_argument("--eval-max-images", type=int)
    e.add_argument("--eval-protocol")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any recipe field, e.g. --set model_config.dropblock_prob=0.1")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def with_default_paths(cfg):
    """``cfg`` with the :data:`DEFAULT_PATHS` filled in where it has none (``None``)."""
    from featherface.train.config import apply_overrides, config_to_dict

    values = config_to_dict(cfg)
    fill = {}
    for dotted, path in DEFAULT_PATHS.items():
        section, key = dotted.split(".")
        if values[section].get(key) is None:
            fill[dotted] = path
    return apply_overrides(cfg, fill) if fill else cfg


def build_config(args: argparse.Namespace):
    """The resolved :class:`~featherface.train.config.TrainConfig` (recipe / checkpoint, then options)."""
    from featherface.train.config import TrainConfig, apply_overrides, load_config
    from featherface.train.trainer import config_of_checkpoint

    if getattr(args, "config", None):
        cfg = load_config(args.config)
    elif getattr(args, "resume", None):
        cfg = config_of_checkpoint(args.resume)
    else:
        cfg = TrainConfig()
    cfg = with_default_paths(cfg)
    overrides = {field: getattr(args, dest, None) for dest, field in _OVERRIDES.items()}
    if getattr(args, "no_teacher_backbone", False):
        overrides["distill.init_backbone"] = False
    overrides.update(cliargs.set_overrides(getattr(args, "set", None), "SECTION.KEY"))
    return apply_overrides(cfg, overrides)


def run(args: argparse.Namespace) -> int:
    import json
    import os

    from featherface.train.config import config_to_dict
    from featherface.train.trainer import train

    cfg = build_config(args)
    if getattr(args, "print_config", False):
        print(json.dumps(config_to_dict(cfg), indent=2))
        return 0
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    last = summary["last"]
    if last is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {summary['run_dir']} (last.pth, metrics.jsonl, curve.png)"
              + (f"; best mean val AP {summary['best_ap_mean']:.4f}" if summary["best_ap_mean"] is not None else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m featherface.train.cli ...`` = ``featherface train ...`` (one parse / error path: featherface.cli)."""
    from featherface.cli import main as featherface_main

    return featherface_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
