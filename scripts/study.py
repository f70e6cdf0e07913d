"""Shared machinery of the ablation and sensitivity runners (``scripts/ablation.py``, ``scripts/sensitivity.py``).

Every arm of both studies is the shipping recipe ``configs/ship_v2_640.toml`` (V2 on the teacher's frozen shared
backbone, 640-px crops with the upstream crop policy, ignore regions, teacher on every ``teacher_every``-th batch, the
``.cache/wider_extra`` training data) with **one budget for all arms**: the same training images (an evenly spaced
subset of the label file, written once to ``<study>/train_labels_<N>.txt``), the same number of epochs, batch,
crop size, warm-up + cosine schedule and seed (42; the baseline also 43). Only the arm's switch differs.

The budget is planned over the **whole study** (the union of both runners' arms, 10 distinct runs: the two baseline
runs are shared), so that it is the same whichever runner runs first and the shared baseline arms serve both tables:
``--hours`` of wall time at ``--images-per-s`` training images/s (the rate measured on the shipping run), minus the
estimated precise-BN and val-dev evaluation of each arm, gives the images each arm may see; ``--max-images`` /
``--epochs`` set it explicitly instead. The plan and its estimated time are printed (and saved as
``<study>/plan.json``) before anything starts.

Per arm, in ``<study>/<arm>/``: the trainer's run folder (``last.pth`` with mid-epoch checkpoints every
``checkpoint_every`` iterations, ``metrics.jsonl``, ``config.json``); ``arm.json`` (the arm's training configuration
and its fingerprint: a rerun with another configuration is refused instead of mixing budgets); after training,
``final_precise_bn.pth`` (a copy of the last weights with the trainable BNs re-estimated, the frozen backbone's
untouched), ``valdev/`` (official prediction files, ``results.json``, PR and per-size plots) and ``result.json``.
A stopped arm resumes from its ``last.pth``; an arm whose ``result.json`` matches its configuration and evaluation
settings is skipped; a finished training whose evaluation settings changed is re-evaluated without retraining.

Run on a shared CPU with ``OMP_WAIT_POLICY=PASSIVE`` (the runners set it when it is unset, before torch starts):
torch's default spinning OpenMP threads slow a 2-thread step several-fold next to another CPU-bound process.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

RECIPE = REPO / "configs" / "ship_v2_640.toml"
DEFAULT_STUDY_DIR = REPO / "runs" / "study_ship640"

# Measured rate of the shipping recipe on the 2-core development machine (checkpoints/ship_v2_640.log, 2026-12-03:
# 4.4-4.9 s per batch of 16 at 640 px with teacher_every = 2, 2 threads, OMP_WAIT_POLICY=PASSIVE, under load):
# 3.2 training images/s. Override with --images-per-s when the cores are free.
DEFAULT_IMAGES_PER_S = 3.2
# Original-size val-dev inference (seconds per image, detection + scoring) -- an estimate: the smoke runs measured
# 2.3-2.7 s with 1 thread at nice 19 next to the 2-thread shipping run; 2 free threads should need less. Every arm
# reports its measured eval_s_per_image: pass it here for the next plan.
DEFAULT_EVAL_S_PER_IMAGE = 1.5
# A precise-BN pass (forward only, train mode) costs about a third of a training step per image (assumption).
BN_PASS_COST = 1.0 / 3.0
# The env variable the runners set (when unset) before torch is imported.
OMP_ENV = "OMP_WAIT_POLICY"

VALDEV_IMAGES = 385


# ------------------------------------------------------------------------------------------------ arms
@dataclass(frozen=True)
class Arm:
    """One training run of a study. ``model_config``: V2 switches; ``feature_weight`` None keeps the recipe's."""

    name: str
    label: str
    seed: int = 42
    model_config: tuple[tuple[str, Any], ...] = ()
    alpha: float = 0.7
    temperature: float = 4.0
    feature_weight: float | None = None
    baseline: bool = False

    @property
    def switch(self) -> str:
        return ", ".join(f'{k}="{v}"' for k, v in self.model_config) or "—"

    @property
    def distilled(self) -> bool:
        return not (self.alpha == 0 and self.feature_weight == 0)


BASE_S42 = Arm("T4_a0.7_s42", "V2 baseline (α 0.7, T 4), seed 42", baseline=True)
BASE_S43 = Arm("T4_a0.7_s43", "V2 baseline (α 0.7, T 4), seed 43", seed=43, baseline=True)

ABLATION_ARMS: tuple[Arm, ...] = (
    BASE_S42,
    BASE_S43,
    Arm("bifpn_v1_s42", "V2 + V1 BiFPN", model_config=(("neck", "bifpn_v1"),)),
    Arm("ssh_v1_s42", "V2 + V1 SSH (deformable)", model_config=(("ssh", "v1"),)),
    Arm("cbam_v1_s42", "V2 + V1 CBAM", model_config=(("attention", "cbam_v1"),)),
)

SENSITIVITY_ARMS: tuple[Arm, ...] = (
    BASE_S42,
    BASE_S43,
    Arm("T2_a0.7_s42", "T 2, α 0.7", temperature=2.0),
    Arm("T6_a0.7_s42", "T 6, α 0.7", temperature=6.0),
    Arm("T4_a0.5_s42", "T 4, α 0.5", alpha=0.5),
    Arm("T4_a0.9_s42", "T 4, α 0.9", alpha=0.9),
    # no distillation at all: KD and feature terms off (the trainer then skips the teacher's forward); the teacher
    # still provides the frozen shared backbone, so the budget and everything else are the baseline's
    Arm("a0_nodistill_s42", "α 0 (no distillation)", alpha=0.0, feature_weight=0.0),
)


def study_arms() -> list[Arm]:
    """The distinct runs of both studies (the baseline arms once)."""
    seen: dict[str, Arm] = {}
    for a in (*ABLATION_ARMS, *SENSITIVITY_ARMS):
        if a.name in seen and seen[a.name] != a:  # pragma: no cover - a programming error
            raise RuntimeError(f"two different arms named {a.name}")
        seen.setdefault(a.name, a)
    return list(seen.values())


def select_arms(arms: Sequence[Arm], names: Sequence[str] | None) -> list[Arm]:
    if not names:
        return list(arms)
    by_name = {a.name: a for a in arms}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; this runner's arms: {list(by_name)}")
    return [by_name[n] for n in names]


# ------------------------------------------------------------------------------------------------ budget plan
def plan_budget(*, n_arms: int, dataset_images: int, batch_size: int, image_size: int,
                hours: float = 6.0, images_per_s: float = DEFAULT_IMAGES_PER_S,
                eval_images: int = VALDEV_IMAGES, eval_s_per_image: float = DEFAULT_EVAL_S_PER_IMAGE,
                bn_batches: int = 20, bn_batch_size: int | None = None,
                max_images: int | None = None, epochs: int | None = None,
                warmup_fraction: float = 0.05) -> dict[str, Any]:
    """The per-arm budget (same for every arm) and its estimated time.

    Without ``max_images`` the study's ``hours`` are split evenly over ``n_arms``; each arm's precise-BN
    (``bn_batches`` forward passes, :data:`BN_PASS_COST` of a training step per image) and val-dev evaluation
    (``eval_images`` × ``eval_s_per_image``) are subtracted, and the rest at ``images_per_s`` gives the images the
    arm sees. Epochs: ``epochs`` if given, else the fewest that keep the subset within the dataset. The subset
    (``max_images``) is rounded down to whole batches. ``warmup_fraction`` of the run is linear warm-up."""
    if n_arms < 1 or images_per_s <= 0 or dataset_images < 1 or batch_size < 1:
        raise ValueError("n_arms, images_per_s, dataset_images and batch_size must be positive")
    bn_bs = bn_batch_size or batch_size
    est_bn_s = bn_batches * bn_bs / images_per_s * BN_PASS_COST
    est_eval_s = eval_images * eval_s_per_image
    explicit = max_images is not None
    if explicit:
        max_images = min(int(max_images), dataset_images)
        epochs = int(epochs or 1)
    else:
        arm_s = hours * 3600.0 / n_arms
        train_s = arm_s - est_bn_s - est_eval_s
        if train_s <= 0:
            raise ValueError(f"{hours} h for {n_arms} arms leaves no training time after the evaluation "
                             f"({est_eval_s:.0f} s) and precise-BN ({est_bn_s:.0f} s) of each arm")
        seen = train_s * images_per_s
        epochs = int(epochs or max(1, math.ceil(seen / dataset_images)))
        max_images = min(dataset_images, int(seen // epochs))
    if max_images >= batch_size:
        max_images -= max_images % batch_size  # whole batches: every step sees batch_size images
    if max_images < 1:
        raise ValueError("the budget leaves no training image per arm")
    steps_per_epoch = math.ceil(max_images / batch_size)
    images_seen = max_images * epochs
    est_train_s = images_seen / images_per_s
    est_arm_s = est_train_s + est_bn_s + est_eval_s
    return {
        "explicit": explicit, "n_study_arms": n_arms, "hours": None if explicit else hours,
        "images_per_s": images_per_s, "eval_s_per_image": eval_s_per_image, "eval_images": eval_images,
        "bn_batches": bn_batches, "bn_batch_size": bn_bs, "dataset_images": dataset_images,
        "max_images": max_images, "epochs": epochs, "images_seen": images_seen, "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch, "steps": steps_per_epoch * epochs, "image_size": image_size,
        "warmup_fraction": warmup_fraction, "warmup_epochs": round(warmup_fraction * epochs, 6),
        "est_train_s": est_train_s, "est_bn_s": est_bn_s, "est_eval_s": est_eval_s, "est_arm_s": est_arm_s,
        "est_study_s": est_arm_s * n_arms,
    }


def _hms(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "—"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_plan(plan: dict[str, Any], runner_arms: Sequence[Arm], todo: Sequence[Arm] | None = None) -> str:
    p = plan
    how = ("explicit --max-images/--epochs" if p["explicit"] else
           f"{p['hours']:g} h for the whole study ({p['n_study_arms']} distinct arms of both runners)")
    lines = [
        f"Budget per arm ({how}), the same for every arm:",
        f"  {p['max_images']} training images (evenly spaced over the {p['dataset_images']} of the label file) x "
        f"{p['epochs']} epoch(s) = {p['images_seen']} images seen, {p['steps']} steps of {p['batch_size']} at "
        f"{p['image_size']} px, warm-up {p['warmup_epochs']:g} epoch then cosine",
        f"  precise-BN over {p['bn_batches']} batches of {p['bn_batch_size']}; val-dev AP on {p['eval_images']} "
        "images at original size",
        f"  estimate at {p['images_per_s']:g} training images/s and {p['eval_s_per_image']:g} s per eval image: "
        f"train {_hms(p['est_train_s'])} + precise-BN {_hms(p['est_bn_s'])} + eval {_hms(p['est_eval_s'])} "
        f"= {_hms(p['est_arm_s'])} per arm",
        f"  this runner: {len(runner_arms)} arms ({_hms(p['est_arm_s'] * len(runner_arms))}); whole study "
        f"({p['n_study_arms']} arms): {_hms(p['est_study_s'])}",
    ]
    if todo is not None:
        lines.append(f"  to run now: {len(todo)} arm(s) ({_hms(p['est_arm_s'] * len(todo))}): "
                     + (", ".join(a.name for a in todo) or "none"))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ configuration
_PATH_KEYS = (("data", "train_labels"), ("data", "train_images"), ("distill", "teacher"), ("eval", "images"),
              ("eval", "image_list"), ("eval", "gt"))
# settings that do not change what an arm computes: free to change between a stop and a resume
_RUNTIME_KEYS = ("threads", "log_every", "checkpoint_every", "output_dir", "name")
_RUNTIME_DATA_KEYS = ("num_workers",)
# trainer settings added after studies had started, left out of the fingerprint at their default (the value every
# earlier arm trained with), so that an arm folder stays resumable across the addition
_LATER_KEYS_AT_DEFAULT = {"backbone_lr_scale": 0.0}


def _abs(p: str | None) -> str | None:
    if p is None:
        return None
    q = Path(p)
    return str(q if q.is_absolute() else (REPO / q).resolve())


def count_label_images(labels: str | os.PathLike) -> int:
    with open(labels, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.startswith("#"))


def write_subset_labels(labels: str | os.PathLike, n: int, out: Path) -> Path:
    """Write the ``n`` evenly spaced images (``i * total // n``) of the RetinaFace label file ``labels`` to ``out``
    (whole image blocks, in file order). The file is written once; if it exists with other content (the source
    label file changed) this raises, since arms trained on the old subset would no longer share a budget."""
    from featherface.fsutil import atomic_write_text

    blocks: list[list[str]] = []
    with open(labels, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#"):
                blocks.append([])
            if blocks:
                blocks[-1].append(line if line.endswith("\n") else line + "\n")
    total = len(blocks)
    n = min(int(n), total)
    text = "".join("".join(blocks[(i * total) // n]) for i in range(n))
    if out.exists():
        if out.read_text(encoding="utf-8") != text:
            raise SystemExit(f"{out} exists with another content than the {n} evenly spaced images of {labels}: the "
                             "label file changed since the study started; use another --study-dir")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out


def arm_config_dict(recipe: dict[str, Any], arm: Arm, plan: dict[str, Any], *, study_dir: Path, train_labels: Path,
                    threads: int | None = None, workers: int | None = None,
                    teacher: str | None = None) -> dict[str, Any]:
    """The trainer configuration (a dict for ``config_from_dict``) of ``arm`` under ``plan``."""
    v = copy.deepcopy(recipe)
    for sec, key in _PATH_KEYS:
        v[sec][key] = _abs(v[sec].get(key))
    v["name"] = arm.name
    v["output_dir"] = str(study_dir)
    v["seed"] = arm.seed
    v["epochs"] = plan["epochs"]
    if threads is not None:
        v["threads"] = threads
    v["model_config"] = {**v.get("model_config", {}), **dict(arm.model_config)}
    d = v["data"]
    d.update(train_labels=str(train_labels), max_images=None, image_size=plan["image_size"],
             batch_size=plan["batch_size"])
    if workers is not None:
        d["num_workers"] = workers
    v["schedule"]["warmup_epochs"] = plan["warmup_epochs"]
    dist = v["distill"]
    if teacher is not None:
        dist["teacher"] = _abs(teacher)
    dist["alpha"] = arm.alpha
    dist["temperature"] = arm.temperature
    if arm.feature_weight is not None:
        dist["feature_weight"] = arm.feature_weight
    v["eval"]["every"] = 0  # the runner evaluates after precise-BN
    return v


def fingerprint(values: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """SHA-256 (16 hex) of what decides an arm's training: the config without run-time settings, plus ``extra``."""
    v = copy.deepcopy(values)
    for k in _RUNTIME_KEYS:
        v.pop(k, None)
    for k in _RUNTIME_DATA_KEYS:
        v.get("data", {}).pop(k, None)
    for k, default in _LATER_KEYS_AT_DEFAULT.items():
        if k in v and v[k] == default:
            del v[k]
    blob = json.dumps({"config": v, "extra": extra or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ one arm
@dataclass
class StudyContext:
    study_dir: Path
    plan: dict[str, Any]
    recipe: dict[str, Any]
    train_labels: Path
    eval_images_root: str
    eval_rels: list[str]
    eval_gt: str
    threads: int | None = None
    workers: int | None = None
    teacher: str | None = None
    progress: bool = False
    _gt: Any = field(default=None, repr=False)

    def config_dict(self, arm: Arm) -> dict[str, Any]:
        return arm_config_dict(self.recipe, arm, self.plan, study_dir=self.study_dir, train_labels=self.train_labels,
                               threads=self.threads, workers=self.workers, teacher=self.teacher)

    def eval_settings(self) -> dict[str, Any]:
        return {"images": len(self.eval_rels), "first": self.eval_rels[:1], "last": self.eval_rels[-1:],
                "protocol": "original-size", "bn_batches": self.plan["bn_batches"],
                "bn_batch_size": self.plan["bn_batch_size"]}

    def ground_truth(self):
        if self._gt is None:
            from featherface.eval.widerface import load_ground_truth

            self._gt = load_ground_truth(self.eval_gt).subset(self.eval_rels)
        return self._gt


def _sha_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _training_done(last: Path, epochs: int) -> bool:
    from featherface.train.trainer import read_training_state

    extra = read_training_state(last)["extra"]
    return int(extra["epoch"]) >= epochs and not extra.get("partial_epoch")


def run_arm(ctx: StudyContext, arm: Arm, *, log: Callable[[str], None] = print) -> tuple[dict[str, Any], bool]:
    """Train (or resume) ``arm``, then precise-BN on a copy and val-dev evaluation. Returns its result and whether
    anything ran (False: the stored result of an arm finished with the same configuration and evaluation settings)."""
    from featherface.fsutil import atomic_write_text
    from featherface.train.config import config_from_dict

    values = ctx.config_dict(arm)
    train_fp = fingerprint(values, {"train_labels_sha": _sha_file(ctx.train_labels)})
    eval_fp = fingerprint({}, {"train": train_fp, "eval": ctx.eval_settings()})
    run_dir = ctx.study_dir / arm.name
    result_path = run_dir / "result.json"
    if result_path.exists():
        old = json.loads(result_path.read_text())
        if old.get("eval_fingerprint") == eval_fp:
            log(f"[{arm.name}] finished ({result_path}): skipped")
            return old, False
    arm_json = run_dir / "arm.json"
    if arm_json.exists():
        old = json.loads(arm_json.read_text())
        if old.get("train_fingerprint") != train_fp:
            raise SystemExit(f"[{arm.name}] {run_dir} was started with another configuration (fingerprint "
                             f"{old.get('train_fingerprint')} vs {train_fp}); an arm keeps its budget: use another "
                             f"--study-dir or remove {run_dir}")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(arm_json, json.dumps({"arm": arm.name, "label": arm.label, "train_fingerprint": train_fp,
                                                "config": values}, indent=2, default=str) + "\n")
    cfg = config_from_dict(values)
    last = run_dir / "last.pth"
    if last.exists() and _training_done(last, cfg.epochs):
        log(f"[{arm.name}] training already finished ({last})")
    else:
        from featherface.train.trainer import train

        resume = last if last.exists() else None
        log(f"[{arm.name}] {'resuming from ' + str(last) if resume else 'training'}: {arm.label}")
        train(cfg, resume=resume, progress=ctx.progress)
    result = evaluate_arm(ctx, arm, cfg, last)
    result.update(train_fingerprint=train_fp, eval_fingerprint=eval_fp)
    atomic_write_text(result_path, json.dumps(result, indent=2, default=str) + "\n")
    log(f"[{arm.name}] AP {100 * result['ap_easy']:.2f} / {100 * result['ap_medium']:.2f} / "
        f"{100 * result['ap_hard']:.2f}, {result['train_images_per_s']:.2f} img/s, wall {_hms(result['wall_s'])}")
    return result, True


def evaluate_arm(ctx: StudyContext, arm: Arm, cfg, last: Path) -> dict[str, Any]:
    """Precise-BN on a copy of ``last``'s weights (trainable BNs only), then val-dev AP and Hard recall by size."""
    from featherface.api import FaceDetector
    from featherface.checkpoint import load_model, save_checkpoint
    from featherface.devices import torch_threads
    from featherface.eval.protocols import parse_protocol
    from featherface.eval.runner import evaluate_detector
    from featherface.models.stats import count_parameters
    from featherface.train.freeze import freeze_module, unfreeze_module
    from featherface.train.precise_bn import recompute_bn_stats, training_batches
    from featherface.train.trainer import read_training_state

    run_dir = ctx.study_dir / arm.name
    extra = read_training_state(last)["extra"]
    epochs = [r for r in extra.get("metrics", []) if r.get("kind") == "epoch"]
    images = sum(int(r["images"]) for r in epochs)
    train_s = sum(float(r["epoch_s"]) for r in epochs)
    model = load_model(last)  # a copy: last.pth is left as trained
    p = ctx.plan
    with torch_threads(cfg.threads):
        t0 = time.perf_counter()
        if cfg.freeze_backbone:
            freeze_module(model.body)
        used = recompute_bn_stats(model, training_batches(
            cfg.data.train_labels, cfg.data.train_images, image_size=cfg.data.image_size,
            crop_scales=cfg.data.crop_scales, n=p["bn_batches"], batch_size=p["bn_batch_size"]))
        if cfg.freeze_backbone:
            unfreeze_module(model.body)
        model.eval()
        bn_s = time.perf_counter() - t0
        save_checkpoint(run_dir / "final_precise_bn.pth", model,
                        extra={"provenance": {"source_checkpoint": str(last), "precise_bn_batches": used,
                                              "arm": arm.name}})
        t0 = time.perf_counter()
        res, report = evaluate_detector(
            FaceDetector(model, device="cpu"), ctx.eval_images_root, ctx.ground_truth(),
            output_dir=run_dir / "valdev", image_list=ctx.eval_rels, protocol=parse_protocol("original-size"),
            model_info={"arm": arm.name, "checkpoint": str(run_dir / "final_precise_bn.pth")},
            progress=ctx.progress)
        eval_s = time.perf_counter() - t0
    sr = res.size_recall
    last_epoch = epochs[-1] if epochs else {}
    return {
        "name": arm.name, "label": arm.label, "seed": arm.seed, "baseline": arm.baseline, "switch": arm.switch,
        "model_config": dict(arm.model_config), "alpha": arm.alpha, "temperature": arm.temperature,
        "feature_weight": cfg.distill.feature_weight, "distilled": arm.distilled,
        "params": count_parameters(model, trainable_only=False),
        "trained_params": sum(v.numel() for k, v in model.named_parameters() if not k.startswith("body.")),
        "ap_easy": res.easy, "ap_medium": res.medium, "ap_hard": res.hard,
        "hard_size_recall": {"bins": list(sr.labels), "num_faces": [int(x) for x in sr.num_faces],
                             "recall_any": [None if not math.isfinite(x) else float(x) for x in sr.recall_any],
                             "recall_at_0.5": [None if not math.isfinite(x) else float(x)
                                               for x in sr.recall_at_threshold],
                             "total_any": float(sr.recalled_any.sum() / max(sr.total_faces, 1)),
                             "total_at_0.5": float(sr.recalled_at_threshold.sum() / max(sr.total_faces, 1))},
        "eval_images": len(ctx.eval_rels), "eval_protocol": "original-size", "precise_bn_batches": used,
        "images_seen": images, "epochs": cfg.epochs, "image_size": cfg.data.image_size,
        "train_images_per_s": images / train_s if train_s > 0 else float("nan"),
        "final_task_loss": last_epoch.get("loss_task"), "train_s": train_s, "bn_s": bn_s, "eval_s": eval_s,
        "eval_s_per_image": eval_s / max(len(ctx.eval_rels), 1), "wall_s": train_s + bn_s + eval_s,
        "run_dir": str(run_dir),
    }


# ------------------------------------------------------------------------------------------------ tables
SETTINGS = ("easy", "medium", "hard")
#: What each Δ and its seed noise are computed for: the three AP settings and the Hard-set recall at any score
#: (all sizes). At a short budget the AP swings with the score calibration of a half-trained classifier while the
#: recall (which faces get a box at all) barely moves between seeds, so the recall separates arms that AP cannot.
METRICS = (*SETTINGS, "recall")


def metric_value(result: dict[str, Any], key: str) -> float:
    """An arm's value (0..1) of one of :data:`METRICS`."""
    return float(result["hard_size_recall"]["total_any"] if key == "recall" else result[f"ap_{key}"])


def noise_level(results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The baselines' mean per metric of :data:`METRICS` (``mean_easy``, ..., ``mean_recall``: the reference of every
    Δ) and the seed noise ``|value_42 - value_43|`` per metric (``easy``, ..., ``recall``; None until both baseline
    seeds are measured). None without any measured baseline."""
    base = [r for r in results if r.get("baseline")]
    if not base:
        return None
    out: dict[str, Any] = {"seeds": [r["seed"] for r in base]}
    for key in METRICS:
        vals = [metric_value(r, key) for r in base]
        out[key] = max(vals) - min(vals) if len(vals) >= 2 else None
        out[f"mean_{key}"] = sum(vals) / len(vals)
    return out


def delta_cell(value: float, key: str, noise: dict[str, Any] | None) -> str:
    """Δ (points) of ``value`` against the baselines' mean of metric ``key``, marked "within noise" when
    ``|Δ| <= |value_42 - value_43|`` and "noise unknown" while only one baseline seed is measured."""
    if noise is None:
        return "— (no baseline yet)"
    d = 100 * (value - noise[f"mean_{key}"])
    if noise[key] is None:
        return f"{d:+.2f} (noise unknown)"
    tag = " (within noise)" if abs(d) <= 100 * noise[key] + 1e-9 else ""
    return f"{d:+.2f}{tag}"


def _pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def table_markdown(title: str, arms: Sequence[Arm], results: dict[str, dict[str, Any]], plan: dict[str, Any],
                   command: str, extra_cols: Sequence[tuple[str, Callable[[Arm], str]]] = (),
                   noise: dict[str, Any] | None = None, intro: str = "") -> str:
    """One measured table (+ its Hard recall by face size) in markdown; arms without a result are listed as not yet
    measured."""
    p = plan
    lines = [f"## {title}", ""]
    if intro:
        lines += [intro, ""]
    lines += [
        f"Budget per arm (equal): {p['max_images']} training images × {p['epochs']} epoch(s) = {p['images_seen']} "
        f"images seen ({p['steps']} steps of {p['batch_size']} at {p['image_size']} px), warm-up "
        f"{p['warmup_epochs']:g} epoch + cosine, recipe `configs/ship_v2_640.toml` (frozen shared teacher backbone). "
        f"Precise-BN over {p['bn_batches']} batches of {p['bn_batch_size']}, then val-dev AP at original size.",
        "", "Produced by:", "", "```bash", command, "```", "",
    ]
    heads = [h for h, _ in extra_cols]
    lines.append("| Arm | " + " | ".join(heads + ["Seed", "Params", "Easy AP", "Medium AP", "Hard AP",
                                                     "Δ Easy", "Δ Medium", "Δ Hard", "Hard recall", "Δ recall",
                                                     "Train img/s", "Wall (train+BN+eval)"]) + " |")
    lines.append("|---|" + "---|" * len(heads) + "---:|" * 12)
    for a in arms:
        r = results.get(a.name)
        cols = [fn(a) for _, fn in extra_cols]
        if r is None:
            lines.append(f"| {a.label} | " + " | ".join(cols + [str(a.seed)] + ["not yet measured"] + [""] * 10) + " |")
            continue
        deltas = (["baseline"] * len(METRICS) if a.baseline
                  else [delta_cell(metric_value(r, k), k, noise) for k in METRICS])
        lines.append(f"| {a.label} | " + " | ".join(cols + [
            str(r["seed"]), f"{r['params']:,}", _pct(r["ap_easy"]), _pct(r["ap_medium"]), _pct(r["ap_hard"]),
            *deltas[:3], _pct(metric_value(r, "recall")), deltas[3], f"{r['train_images_per_s']:.2f}",
            _hms(r["wall_s"])]) + " |")
    lines += [""]
    if noise is None or noise["hard"] is None:
        lines.append("Seed noise: not measured yet (needs both baseline seeds). Δ: against the mean of the measured "
                     "baseline seeds.")
    else:
        lines.append("Seed noise (|seed 42 − seed 43| of the baseline, points): AP "
                     f"Easy {100 * noise['easy']:.2f}, Medium {100 * noise['medium']:.2f}, "
                     f"Hard {100 * noise['hard']:.2f}; Hard recall {100 * noise['recall']:.2f}. Δ is against the "
                     "mean of the two baseline seeds; a |Δ| not larger than the seed noise is reported \"within "
                     "noise\". Two seeds give a crude noise estimate.")
    lines += ["", "AP in %. Hard recall: % of the Hard faces of val-dev matched by a detection at any score (all "
              "sizes; per size below). Params: all parameters of the network (the frozen backbone included). "
              "Train img/s: training images per second of wall time over the arm's epochs (resumed segments "
              "summed).", ""]
    done = [(a, results[a.name]) for a in arms if a.name in results]
    if done:
        bins = done[0][1]["hard_size_recall"]["bins"]
        lines += ["### Hard-set recall by face size (any score / raw score ≥ 0.5)", "",
                  "| Arm | " + " | ".join(f"{b} px" for b in bins) + " | all |", "|---|" + "---:|" * (len(bins) + 1)]
        nf = done[0][1]["hard_size_recall"]["num_faces"]
        lines.append("| *faces* | " + " | ".join(str(n) for n in nf) + f" | {sum(nf)} |")
        for a, r in done:
            sr = r["hard_size_recall"]
            cells = [f"{_pct(x, 1)} / {_pct(y, 1)}" for x, y in zip(sr["recall_any"], sr["recall_at_0.5"])]
            cells.append(f"{_pct(sr['total_any'], 1)} / {_pct(sr['total_at_0.5'], 1)}")
            lines.append(f"| {a.label} | " + " | ".join(cells) + " |")
        lines += ["", "Recall in % of the Hard faces of each size bin (sqrt(w·h) of the ground-truth box, original "
                  "pixels; `featherface.eval.per_size`).", ""]
    return "\n".join(lines)


def bar_chart(path: Path, title: str, arms: Sequence[Arm], results: dict[str, dict[str, Any]],
              noise: dict[str, Any] | None) -> Path | None:
    """Grouped Easy / Medium / Hard AP and Hard recall bars of the measured arms; the baselines' mean ± seed noise
    as bands.
    Written atomically (``featherface.fsutil.atomic_write``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from featherface.fsutil import atomic_write

    done = [a for a in arms if a.name in results]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(done) + 2), 4.2))
    width = 0.2
    colours = {"easy": "tab:green", "medium": "tab:orange", "hard": "tab:red", "recall": "tab:gray"}
    names = {"easy": "Easy AP", "medium": "Medium AP", "hard": "Hard AP", "recall": "Hard recall (any score)"}
    for j, key in enumerate(METRICS):
        xs = [i + (j - 1.5) * width for i in range(len(done))]
        ax.bar(xs, [100 * metric_value(results[a.name], key) for a in done], width, label=names[key],
               color=colours[key])
        if noise is not None:
            m = 100 * noise[f"mean_{key}"]
            if noise[key] is not None:
                ax.axhspan(m - 100 * noise[key], m + 100 * noise[key], color=colours[key], alpha=0.12, lw=0)
            ax.axhline(m, color=colours[key], ls="--", lw=0.8)
    ax.set_xticks(range(len(done)))
    ax.set_xticklabels([a.label for a in done], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("val-dev AP / recall (%)")
    ax.set_ylim(bottom=0)
    note = "" if noise is None else ("\n(dashed: baseline mean" + ("; band: ± seed noise)" if noise["hard"] is not None
                                                                  else ")"))
    ax.set_title(title + note, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)
    return path


def write_table(out_dir: Path, stem: str, title: str, arms: Sequence[Arm], results: dict[str, dict[str, Any]],
                plan: dict[str, Any], command: str, extra_cols: Sequence[tuple[str, Callable[[Arm], str]]] = (),
                intro: str = "") -> dict[str, Path]:
    """``<stem>.md`` + ``<stem>.json`` + ``<stem>.png`` in ``out_dir``; returns their paths."""
    from featherface.fsutil import atomic_write_text

    noise = noise_level([results[a.name] for a in arms if a.name in results])
    md = table_markdown(title, arms, results, plan, command, extra_cols, noise, intro)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{stem}.md", "json": out_dir / f"{stem}.json"}
    atomic_write_text(paths["md"], md)
    data = {"title": title, "command": command, "plan": plan, "noise": noise,
            "arms": [{"name": a.name, "label": a.label, **{h: fn(a) for h, fn in extra_cols},
                      "result": results.get(a.name)} for a in arms]}
    atomic_write_text(paths["json"], json.dumps(data, indent=2, default=str) + "\n")
    png = bar_chart(out_dir / f"{stem}.png", title, arms, results, noise)
    if png is not None:
        paths["png"] = png
    return paths


# ------------------------------------------------------------------------------------------------ CLI
def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("budget (one for all arms of both runners)")
    g.add_argument("--hours", type=float, default=6.0, help="wall hours for the whole study (both runners)")
    g.add_argument("--images-per-s", type=float, default=DEFAULT_IMAGES_PER_S,
                   help=f"training rate for the plan (default {DEFAULT_IMAGES_PER_S}: measured on the shipping run)")
    g.add_argument("--eval-s-per-image", type=float, default=DEFAULT_EVAL_S_PER_IMAGE,
                   help="original-size inference seconds per val-dev image, for the plan")
    g.add_argument("--max-images", type=int, help="training images per epoch (explicit budget; overrides --hours)")
    g.add_argument("--epochs", type=int, help="epochs (with --max-images; otherwise the fewest that fit)")
    g.add_argument("--image-size", type=int, help="crop size (default: the recipe's 640; smaller only for smoke runs)")
    g.add_argument("--batch-size", type=int, help="batch (default: the recipe's 16)")
    g.add_argument("--warmup-fraction", type=float, default=0.05, help="linear warm-up share of the run")
    g.add_argument("--bn-batches", type=int, default=20, help="precise-BN training batches per arm")
    g.add_argument("--bn-batch-size", type=int, help="precise-BN batch (default: the training batch)")
    g.add_argument("--eval-max-images", type=int, default=0,
                   help="val-dev images for the AP, evenly spaced (0 = all 385)")
    p.add_argument("--recipe", type=Path, default=RECIPE, help="base recipe (default configs/ship_v2_640.toml)")
    p.add_argument("--study-dir", type=Path, default=DEFAULT_STUDY_DIR,
                   help="one folder per arm under it; shared by both runners (default runs/study_ship640)")
    p.add_argument("--out", type=Path, help="where the tables go (default: the study dir)")
    p.add_argument("--arms", nargs="+", help="run only these arms (names as printed by --plan-only)")
    p.add_argument("--teacher", help="teacher checkpoint (default: the recipe's)")
    p.add_argument("--threads", type=int, help="torch threads (default: the recipe's)")
    p.add_argument("--workers", type=int, help="data-loader workers (default: the recipe's)")
    p.add_argument("--plan-only", action="store_true", help="print the plan and exit")
    p.add_argument("--progress", action="store_true", help="progress bars")


def command_line(script: str, argv: Sequence[str]) -> str:
    env = os.environ.get(OMP_ENV)
    prefix = f"{OMP_ENV}={shlex.quote(env)} " if env else ""
    return prefix + "python " + " ".join(shlex.quote(a) for a in [script, *argv])


def run_study(runner: str, arms: Sequence[Arm], tables: Sequence[dict[str, Any]], argv: Sequence[str] | None,
              description: str) -> int:
    """The common main of both runners. ``tables``: dicts with ``stem``, ``title``, ``arms`` (names), optional
    ``cols`` (extra columns) and ``intro``."""
    p = argparse.ArgumentParser(description=description)
    add_args(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    command = command_line(f"scripts/{runner}.py", argv)

    from featherface.eval.runner import evenly_spaced, list_images
    from featherface.train.cli import with_default_paths
    from featherface.train.config import config_to_dict, load_config

    # the library has no data-path defaults; like `featherface train`, fill the recipe's unset ones (../shared)
    recipe = config_to_dict(with_default_paths(load_config(args.recipe)))
    labels = _abs(recipe["data"]["train_labels"])
    n_total = count_label_images(labels)
    batch = args.batch_size or int(recipe["data"]["batch_size"])
    ev = recipe["eval"]
    eval_rels = evenly_spaced(list_images(_abs(ev["images"]), _abs(ev["image_list"])), args.eval_max_images or None)
    plan = plan_budget(n_arms=len(study_arms()), dataset_images=n_total, batch_size=batch,
                       image_size=args.image_size or int(recipe["data"]["image_size"]), hours=args.hours,
                       images_per_s=args.images_per_s, eval_images=len(eval_rels),
                       eval_s_per_image=args.eval_s_per_image, bn_batches=args.bn_batches,
                       bn_batch_size=args.bn_batch_size, max_images=args.max_images, epochs=args.epochs,
                       warmup_fraction=args.warmup_fraction)
    todo = select_arms(arms, args.arms)
    study_dir = args.study_dir.resolve()
    pending = [a for a in todo if not (study_dir / a.name / "result.json").exists()]
    print(format_plan(plan, arms, pending), flush=True)
    env = os.environ.get(OMP_ENV)
    if env != "PASSIVE":
        print(f"warning: {OMP_ENV}={env!r}; use PASSIVE on a shared machine", file=sys.stderr)
    if args.plan_only:
        return 0
    from featherface.fsutil import atomic_write_text

    study_dir.mkdir(parents=True, exist_ok=True)
    subset = write_subset_labels(labels, plan["max_images"], study_dir / f"train_labels_{plan['max_images']}.txt")
    atomic_write_text(study_dir / f"plan_{runner}.json",
                      json.dumps({"command": command, "plan": plan, "arms": [a.name for a in todo]}, indent=2) + "\n")
    ctx = StudyContext(study_dir=study_dir, plan=plan, recipe=recipe, train_labels=subset,
                       eval_images_root=_abs(ev["images"]), eval_rels=eval_rels, eval_gt=_abs(ev["gt"]),
                       threads=args.threads, workers=args.workers, teacher=args.teacher, progress=args.progress)
    out = (args.out or study_dir).resolve()
    results: dict[str, dict[str, Any]] = {}
    for a in arms:  # results of arms finished earlier (also by the other runner) with this very budget
        rp = study_dir / a.name / "result.json"
        if rp.exists() and a not in todo:
            r = json.loads(rp.read_text())
            if r.get("eval_fingerprint") == fingerprint({}, {"train": fingerprint(
                    ctx.config_dict(a), {"train_labels_sha": _sha_file(subset)}), "eval": ctx.eval_settings()}):
                results[a.name] = r

    def write_all() -> None:
        for t in tables:
            by_name = {a.name: a for a in arms}
            t_arms = [by_name[n] for n in t["arms"]]
            paths = write_table(out, t["stem"], t["title"], t_arms, results, plan, command, t.get("cols", ()),
                                t.get("intro", ""))
            print("wrote " + ", ".join(str(v) for v in paths.values()), flush=True)

    for a in todo:
        t0 = time.perf_counter()
        results[a.name], ran = run_arm(ctx, a)
        if ran:
            print(f"[{a.name}] this session: {_hms(time.perf_counter() - t0)}", flush=True)
            write_all()  # partial tables while the study runs
    write_all()
    return 0


def set_omp_env() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the caller chose a value; must run before torch is imported."""
    if "torch" not in sys.modules:
        os.environ.setdefault(OMP_ENV, "PASSIVE")
