"""The training loop: data, model, optional teacher, AdamW + per-iteration schedule, checkpoints, metrics, resume.

Run folder ``<output_dir>/<name>/``:

* ``last.pth`` — written atomically at the end of **every** epoch (killing the process loses at most the current
  epoch). It is an ordinary featherface checkpoint (``load_model`` / ``FaceDetector`` read it for inference); the
  training state lives in ``extra``: optimizer, scheduler, completed ``epoch``, ``global_step``, RNG states
  (torch, numpy, python, CUDA), the config dict, the per-epoch metrics, the distillation adapters and the best AP;
* ``best.pth`` — the same, for the epoch with the best mean val AP (only when periodic eval is on);
* ``metrics.jsonl`` — one JSON object per epoch (``"kind": "epoch"``), per eval, and every ``log_every`` steps;
* ``curve.png`` — loss parts, LR and val AP against epochs.

**Exact resume.** The data order and the augmentation depend only on ``(seed, epoch)``: the sampler is a
``DistributedSampler(seed=seed)`` with ``set_epoch(epoch)`` (also with one process) and every sample draws from
``np.random.default_rng([seed, epoch, index])`` (``WiderFaceDataset``). The only other randomness (DropBlock inside
V2, DataLoader worker seeds) comes from the global torch RNG, saved at the end of each epoch and restored on resume.
So ``N`` epochs straight and ``N − k`` epochs + resume give identical weights (``tests/test_trainer.py``).

**Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised (gloo on CPU, nccl on
GPU), the student (+ distillation adapters) is wrapped in ``DistributedDataParallel``, every rank sees its shard
of each epoch, and only rank 0 writes files and prints.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from featherface.checkpoint import (
    atomic_save,
    load_model,
    load_state_dict_strict,
    model_to_checkpoint,
    read_checkpoint,
    read_state_dict,
)
from featherface.devices import torch_threads
from featherface.errors import FeatherFaceError
from featherface.fsutil import plain
from featherface.models.fused_norm import fuse_batchnorm_activation
from featherface.models.registry import build_model
from featherface.train.config import TrainConfig, config_from_dict, config_to_dict
from featherface.train.distill import DistillationLoss, combine, init_backbone_from, prepare_teacher, teacher_forward
from featherface.train.freeze import freeze_module
from featherface.train.loss import DetectionLoss
from featherface.train.schedule import build_scheduler

__all__ = ["Trainer", "TrainStep", "train", "read_training_state", "config_of_checkpoint", "rng_state", "set_rng_state",
           "plot_curve"]

log = logging.getLogger(__name__)

_LOSS_KEYS = ("total", "task", "box", "cls", "landmark", "kd", "kd_cls", "kd_box", "kd_landmark", "feature")


# ------------------------------------------------------------------------------------------------ RNG state
def rng_state() -> dict[str, Any]:
    """Global RNG states of torch (CPU, CUDA), numpy and python, as ``weights_only``-loadable objects."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------ the step
class TrainStep(nn.Module):
    """Student + (optional) distillation adapters in one module, so that DDP synchronises every trainable parameter.

    ``forward(images, targets, anchors, teacher_outputs=None)`` returns the named loss parts; ``"total"`` is the
    value to back-propagate."""

    def __init__(self, model: nn.Module, criterion: DetectionLoss, distill: DistillationLoss | None = None, *,
                 alpha: float = 0.7, feature_weight: float = 0.1, compile_model: bool = False) -> None:
        super().__init__()
        self.model = model
        # torch.compile of the student's forward only: the loss has data-dependent shapes (faces per image).
        self._compiled_forward = torch.compile(model.forward_with_features, dynamic=False) if compile_model else None
        self.criterion = criterion
        self.distill = distill
        self.alpha = float(alpha)
        self.feature_weight = float(feature_weight)

    def forward(self, images: Tensor | None, targets: list[dict[str, Tensor]], anchors: Tensor,
                teacher_outputs: tuple[Any, list[Tensor]] | None = None,
                backbone_features: list[Tensor] | None = None) -> dict[str, Tensor]:
        """``backbone_features``: the (frozen, shared) backbone's maps of ``images``; when given, the student runs
        from them (``forward_from_backbone``) and ``images`` is not used."""
        if backbone_features is not None:
            out, feats = self.model.forward_from_backbone(backbone_features)
        else:
            forward = self._compiled_forward or self.model.forward_with_features
            out, feats = forward(images)
        assignment = self.criterion.assign(anchors, targets)
        task = self.criterion(out.boxes, out.logits, out.landmarks, anchors, targets, assignment=assignment)
        parts = {"task": task["total"], "box": task["box"], "cls": task["cls"], "landmark": task["landmark"],
                 "num_positives": task["num_positives"]}
        if self.distill is not None and teacher_outputs is not None:
            t_out, t_feats = teacher_outputs
            d = self.distill(out, feats, t_out, t_feats, assignment.positive, assignment.ignore)
            parts.update({k: d[k] for k in ("kd", "kd_cls", "kd_box", "kd_landmark", "feature")})
            parts["total"] = combine(task["total"], d, alpha=self.alpha, feature_weight=self.feature_weight)
        elif self.distill is not None:  # a batch without the teacher (distill.teacher_every > 1)
            parts["total"] = (1.0 - self.alpha) * task["total"]
        else:
            parts["total"] = task["total"]
        return parts


# ------------------------------------------------------------------------------------------------ helpers
def _check_compiler(device: str) -> None:
    """TorchInductor builds C++ kernels on CPU: refuse ``compile = true`` up front when no compiler is on PATH."""
    if device.startswith("cuda"):
        return
    import shutil

    candidates = [os.environ.get("CXX"), "g++", "clang++", "c++"]
    if not any(c and shutil.which(c) for c in candidates):
        raise FeatherFaceError("compile = true needs a C++ compiler (g++ or clang++, or $CXX) for TorchInductor on "
                               "CPU; install one or set compile = false")


def prepare_student(model: nn.Module, *, fused_bn: bool, compile_model: bool, channels_last: bool,
                    device: torch.device | str = "cpu") -> torch.memory_format:
    """Ready ``model`` for training in place (config ``fused_bn``, ``compile``, ``channels_last``): fuse BN +
    activation unless it will be compiled (TorchInductor fuses BatchNorm itself), move it to ``device`` and set its
    memory format. Returns the memory format its input batches must use."""
    if fused_bn and not compile_model:
        fuse_batchnorm_activation(model)
    model.to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model.to(memory_format=memory_format)
    return memory_format


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def read_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``extra`` training state of a ``last.pth`` / ``best.pth`` (raises if the file has none)."""
    obj = read_checkpoint(path)
    extra = obj.get("extra", {}) if isinstance(obj, dict) else {}
    if "optimizer" not in extra or "config" not in extra:
        raise FeatherFaceError(f"{path}: not a training checkpoint (no optimizer/config state); it can initialise "
                               "weights (--init-backbone) but not be resumed")
    return obj


def _check_paths(cfg: TrainConfig) -> None:
    """The data paths a run needs (no defaults in the library: ``featherface train`` fills them from ../shared)."""
    missing = [] if cfg.data.train_labels else ["data.train_labels"]
    if cfg.eval.every > 0:
        missing += [f"eval.{k}" for k in ("images", "gt") if not getattr(cfg.eval, k)]
    if missing:
        raise FeatherFaceError(f"the training config does not say where the data is: set {', '.join(missing)}")


class _Averager:
    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, parts: dict[str, float]) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


def plot_curve(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Training curve PNG from the epoch records (losses, LR, val AP)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r for r in records if r.get("kind") == "epoch"]
    if not ep:
        return
    x = [r["epoch"] for r in ep]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in _LOSS_KEYS:
        ys = [r.get(f"loss_{key}") for r in ep]
        if all(y is not None for y in ys):
            ax.plot(x, ys, marker="o" if len(x) < 30 else None, label=key, lw=2 if key == "total" else 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (epoch mean)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(title or "training loss")
    ev = [r for r in records if r.get("kind") == "eval"]
    if ev:
        for s in ("easy", "medium", "hard"):
            ax2.plot([r["epoch"] for r in ev], [r[f"ap_{s}"] for r in ev], marker="o", label=f"val AP {s}")
        ax2.set_ylabel("val AP")
        ax2.legend(fontsize=7, loc="upper left")
    ax3 = ax2.twinx()
    ax3.plot(x, [r["lr"] for r in ep], color="grey", ls="--", label="lr (end of epoch)")
    ax3.set_ylabel("lr")
    ax2.set_xlabel("epoch")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from featherface.fsutil import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------ trainer
class Trainer:
    """Build everything from a :class:`TrainConfig` and :meth:`fit`.

    Args:
        cfg: the run configuration.
        resume: a ``last.pth``/``best.pth`` of this run to continue from (weights, optimizer, scheduler, RNG, epoch).
        progress: show a progress bar (rank 0 only).
    """

    def __init__(self, cfg: TrainConfig, *, resume: str | os.PathLike | None = None, progress: bool = True) -> None:
        _check_paths(cfg)
        self.cfg = cfg
        self.world, self.rank, self.local_rank = _dist_env()
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self._init_distributed()
        self.device = self._device()
        seed_everything(cfg.seed)

        # model (+ backbone initialisation)
        self.model = build_model(cfg.model, **cfg.model_config)
        self.teacher = None
        if cfg.distill.teacher:
            self.teacher = prepare_teacher(load_model(cfg.distill.teacher).to(self.device))
        self.backbone_source = None
        if resume is None:
            if cfg.init_weights:
                load_state_dict_strict(self.model, read_state_dict(cfg.init_weights), str(cfg.init_weights))
                self.backbone_source = f"{cfg.init_weights} (whole model, strict)"
            elif cfg.init_backbone:
                n = init_backbone_from(self.model, read_state_dict(cfg.init_backbone))
                self.backbone_source = f"{cfg.init_backbone} ({n} tensors)"
            elif self.teacher is not None and cfg.distill.init_backbone:
                n = init_backbone_from(self.model, self.teacher)
                self.backbone_source = f"teacher {cfg.distill.teacher} ({n} tensors)"
        if cfg.compile:
            _check_compiler(cfg.device)
        self.memory_format = prepare_student(self.model, fused_bn=cfg.fused_bn, compile_model=cfg.compile,
                                             channels_last=cfg.channels_last, device=self.device)
        self.frozen_backbone = bool(cfg.freeze_backbone)
        # the optional last phase: backbone weights train (lower LR), its BNs stay in eval mode, nothing is shared
        self.backbone_trains = self.frozen_backbone and cfg.backbone_lr_scale > 0
        if self.frozen_backbone:
            if resume is None and self.backbone_source is None:
                raise FeatherFaceError("freeze_backbone = true needs a trained backbone: a teacher (distill.teacher "
                                       "with init_backbone), init_backbone or init_weights")
            # after prepare_student: fusing BN + activation builds new BN modules, which must be frozen too
            freeze_module(self.model.body, keep_gradients=self.backbone_trains)
            if self.teacher is not None and resume is None and not self.backbone_trains:
                t_body = self.teacher.body.state_dict()
                differ = [k for k, v in self.model.body.state_dict().items() if not torch.equal(v, t_body[k])]
                if differ:
                    raise FeatherFaceError(f"freeze_backbone with a teacher shares one backbone, but the student's "
                                           f"differs from the teacher's in {len(differ)} tensors ({differ[0]}, ...)")

        self.anchor_spec = self.model.config.anchor_spec  # the model's anchor contract: loss, anchors, eval
        self.criterion = DetectionLoss(variances=self.anchor_spec.variances)
        self.distill = None
        if self.teacher is not None:
            d = cfg.distill
            self.distill = DistillationLoss(
                student_channels=int(getattr(self.model.config, "feature_channels", self.model.config.channels)),
                teacher_channels=int(self.teacher.config.channels),
                temperature=d.temperature, box_weight=d.box_weight, landmark_weight=d.landmark_weight,
                teacher_positive_threshold=d.teacher_positive_threshold, neg_pos_ratio=d.neg_pos_ratio,
            ).to(self.device)
        self.step_module = TrainStep(self.model, self.criterion, self.distill, alpha=cfg.distill.alpha,
                                     feature_weight=cfg.distill.feature_weight, compile_model=cfg.compile)

        # data
        self.dataset, self.base_dataset = self._dataset()
        self.sampler = _ResumableSampler(self.dataset, num_replicas=self.world, rank=self.rank, shuffle=True,
                                         seed=cfg.seed, drop_last=False)
        self.loader = DataLoader(
            self.dataset, batch_size=cfg.data.batch_size, sampler=self.sampler, num_workers=cfg.data.num_workers,
            collate_fn=_collate(), drop_last=cfg.data.drop_last, pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise FeatherFaceError(f"no training batch: {len(self.dataset)} images for batch size "
                                   f"{cfg.data.batch_size} with drop_last")
        s = cfg.data.image_size
        self.anchors = self.anchor_spec.anchors((s, s), device=self.device)

        # optimisation
        o = cfg.optim
        body = {id(p) for p in self.model.body.parameters()} if self.backbone_trains else set()
        groups: list[dict[str, Any]] = [
            {"params": [p for p in self.step_module.parameters() if p.requires_grad and id(p) not in body]}]
        if self.backbone_trains:
            scale = float(cfg.backbone_lr_scale)
            groups.append({"params": list(self.model.body.parameters()), "lr": o.lr * scale, "lr_scale": scale})
        self.optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, lr=o.lr, steps_per_epoch=self.steps_per_epoch,
                                         epochs=cfg.epochs)
        self.start_epoch = 0
        self.global_step = 0
        self._partial: dict[str, Any] | None = None  # a mid-epoch checkpoint's epoch progress, consumed on resume
        self.records: list[dict[str, Any]] = []
        self.best: float | None = None
        self.run_dir = cfg.run_dir
        self.ddp = None
        if resume is not None:
            self._resume(resume)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DDP(self.step_module, device_ids=ids)
        self._val = None

    # -------------------------------------------------------------------------------------------- setup parts
    def _init_distributed(self) -> None:
        if self.world <= 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if self.cfg.device.startswith("cuda") and torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)

    def _device(self) -> torch.device:
        dev = self.cfg.device
        if dev.startswith("cuda"):
            if not torch.cuda.is_available():
                raise FeatherFaceError("device 'cuda' requested but CUDA is not available")
            if self.world > 1:
                torch.cuda.set_device(self.local_rank)
                return torch.device("cuda", self.local_rank)
        return torch.device(dev)

    def _dataset(self):
        from featherface.data.dataset import WiderFaceDataset
        from featherface.data.transforms import TrainTransform

        d = self.cfg.data
        transform = TrainTransform(image_size=d.image_size, crop_scales=tuple(float(c) for c in d.crop_scales),
                                   distort=d.distort, min_face_size=d.min_face_size,
                                   small_faces_ignored=d.small_faces_ignored, mixup_prob=d.mixup_prob,
                                   mixup_alpha=d.mixup_alpha, cutmix_prob=d.cutmix_prob,
                                   preprocessing=self.model.preprocessing)
        base = WiderFaceDataset(d.train_labels, d.train_images, transform=transform, seed=self.cfg.seed,
                                verbose=self.is_main, drop_invalid=not d.ignore_invalid,
                                use_pseudo_landmarks=d.use_pseudo_landmarks)
        ds = base if d.max_images is None or d.max_images >= len(base) else Subset(base, range(int(d.max_images)))
        return ds, base

    def _resume(self, path: str | os.PathLike) -> None:
        obj = read_training_state(path)
        extra = obj["extra"]
        if obj.get("model_name") != self.cfg.model:
            raise FeatherFaceError(f"{path}: checkpoint of {obj.get('model_name')}, config trains {self.cfg.model}")
        load_state_dict_strict(self.model, obj["state_dict"], str(path))
        if self.distill is not None:
            if extra.get("distill_state") is None:
                raise FeatherFaceError(f"{path}: no distillation adapters saved, but this run has a teacher")
            self.distill.load_state_dict(extra["distill_state"])
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        self.start_epoch = int(extra["epoch"])
        self.global_step = int(extra["global_step"])
        self.records = list(extra.get("metrics", []))
        self.best = extra.get("best_metric")
        set_rng_state(extra["rng"])
        self._partial = extra.get("partial_epoch")
        saved_epochs = extra.get("config", {}).get("epochs")
        if saved_epochs is not None and saved_epochs != self.cfg.epochs:
            raise FeatherFaceError(f"{path}: the run was planned for {saved_epochs} epochs; a resumed run keeps "
                                   f"its schedule (asked for {self.cfg.epochs}). Start a new run for a new length.")
        if self.is_main:
            self._truncate_metrics(self.start_epoch)
            where = (f", {self._partial['steps_done']} of {self.steps_per_epoch} iterations of epoch "
                     f"{self.start_epoch + 1}" if self._partial else "")
            log.info("resumed from %s: %d epochs done%s, step %d", path, self.start_epoch, where, self.global_step)

    def _truncate_metrics(self, epochs_done: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("epoch", 0) <= epochs_done or (rec.get("kind") == "step"
                                                        and rec.get("step", 0) <= self.global_step):
                keep.append(line)
        path.write_text("".join(k + "\n" for k in keep))

    # -------------------------------------------------------------------------------------------- writing
    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def training_state(self, epochs_done: int, partial_epoch: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``extra`` of a training checkpoint after ``epochs_done`` whole epochs (plus ``partial_epoch``: the
        progress inside the next one, for a mid-epoch checkpoint)."""
        return {
            "kind": "training_state",
            "epoch": epochs_done,
            "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "config": config_to_dict(self.cfg),
            "metrics": list(self.records),
            "distill_state": None if self.distill is None else
            {k: v.detach().cpu() for k, v in self.distill.state_dict().items()},
            "best_metric": self.best,
            "world_size": self.world,
            "backbone_init": self.backbone_source,
            "partial_epoch": partial_epoch,
        }

    def save(self, path: Path, epochs_done: int, partial_epoch: dict[str, Any] | None = None) -> None:
        atomic_save(model_to_checkpoint(self.model, extra=self.training_state(epochs_done, partial_epoch)), path)

    # -------------------------------------------------------------------------------------------- eval
    def evaluate(self) -> dict[str, float]:
        """Val AP (easy / medium / hard) of the current weights on the configured subset (rank 0)."""
        from featherface.api import FaceDetector
        from featherface.eval.protocols import parse_protocol
        from featherface.eval.runner import evenly_spaced, list_images, run_detector
        from featherface.eval.widerface import evaluate, load_ground_truth

        e = self.cfg.eval
        if self._val is None:
            rels = evenly_spaced(list_images(e.images, e.image_list), e.max_images)
            self._val = (rels, load_ground_truth(e.gt).subset(rels))
        rels, gt = self._val
        proto = parse_protocol(e.protocol, score_threshold=e.score_threshold, nms_threshold=e.nms_threshold)
        was_training = self.model.training
        try:
            det = FaceDetector(self.model, device=self.device)
            preds, timing = run_detector(det, e.images, image_list=rels, protocol=proto, progress=False)
            res = evaluate(preds, gt)
        finally:
            self.model.train(was_training)
        return {"ap_easy": res.easy, "ap_medium": res.medium, "ap_hard": res.hard,
                "ap_mean": (res.easy + res.medium + res.hard) / 3.0, "eval_images": len(rels),
                "eval_protocol": proto.name, "eval_s": timing["total_s"]}

    # -------------------------------------------------------------------------------------------- loop
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch (0-based ``epoch``) with ``cfg.threads`` torch threads; returns its ``"kind": "epoch"`` record."""
        with torch_threads(self.cfg.threads):
            return self._train_epoch(epoch)

    def train_step(self, images: Tensor, targets: list[dict[str, Tensor]], epoch: int = 0) -> dict[str, Tensor]:
        """One optimisation step on a batch (``images [B, 3, S, S]``, ``B`` target dicts): the frozen shared
        backbone once (``freeze_backbone``), the teacher on every ``distill.teacher_every``-th step, the student's
        loss, backward, optimizer and scheduler steps. Returns the loss parts (``"total"`` was minimised).

        With ``distill.alpha == 0`` and ``distill.feature_weight == 0`` the teacher's outputs would get zero weight:
        its forward is skipped (the teacher then only initialises, and shares, the backbone; the loss is the task
        loss, as it would be with the teacher run)."""
        cfg = self.cfg
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        backbone = None
        if self.backbone_trains:
            backbone = self.model.body(images)  # eval-mode BNs, gradients flow into the backbone's weights
        elif self.frozen_backbone:
            with torch.no_grad():
                backbone = self.model.body(images)
        teacher_out = None
        distilling = cfg.distill.alpha != 0 or cfg.distill.feature_weight != 0
        if self.teacher is not None and distilling and self.global_step % cfg.distill.teacher_every == 0:
            shared = None if self.backbone_trains else backbone  # a trained backbone is no longer the teacher's
            teacher_out = teacher_forward(self.teacher, images, backbone_features=shared)
        module = self.ddp if self.ddp is not None else self.step_module
        parts = module(images, targets, self.anchors, teacher_out, backbone)
        loss = parts["total"]
        if not torch.isfinite(loss):
            raise FeatherFaceError(f"non-finite loss {float(loss)} at epoch {epoch + 1}, step {self.global_step} "
                                   f"(parts: { {k: float(v) for k, v in parts.items()} })")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.step_module.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        return parts

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        from tqdm import tqdm

        cfg = self.cfg
        self.base_dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        partial, self._partial = self._partial, None
        steps_done = int(partial["steps_done"]) if partial else 0
        self.sampler.skip = steps_done * cfg.data.batch_size
        self.model.train()
        if self.distill is not None:
            self.distill.train()
        avg = _Averager()
        n_images = 0
        t_wait = 0.0
        elapsed_before = 0.0
        if partial:
            avg.sums, avg.n = dict(partial["loss_sums"]), int(partial["loss_count"])
            n_images, t_wait, elapsed_before = int(partial["images"]), float(partial["wait_s"]), float(partial["elapsed_s"])
        t0 = time.perf_counter()
        it = iter(self.loader)
        if partial:  # creating the iterator drew from the global RNG: continue from the checkpoint's state exactly
            set_rng_state(partial["rng"])
        bar = tqdm(total=self.steps_per_epoch, initial=steps_done, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="it",
                   disable=not self.progress, dynamic_ncols=True, leave=True)
        for step_in_epoch in range(steps_done, self.steps_per_epoch):
            tw = time.perf_counter()
            try:
                images, targets = next(it)
            except StopIteration:  # pragma: no cover - len(loader) is exact
                break
            t_wait += time.perf_counter() - tw
            parts = self.train_step(images, targets, epoch)
            values = {k_: float(v.detach()) for k_, v in parts.items() if k_ in _LOSS_KEYS}
            values["num_positives"] = float(parts["num_positives"])
            avg.add(values)
            n_images += len(targets) * self.world
            elapsed = elapsed_before + time.perf_counter() - t0
            if self.progress:
                short = {"loss": values["total"], "box": values["box"], "cls": values["cls"],
                         "lm": values["landmark"]}
                if "kd" in values:
                    short.update(kd=values["kd"], feat=values["feature"])
                bar.set_postfix({k_: f"{v:.3f}" for k_, v in short.items()} | {"img/s": f"{n_images / elapsed:.1f}"})
                bar.update(1)
            if cfg.log_every and self.global_step % cfg.log_every == 0:
                self._log({"kind": "step", "epoch": epoch + 1, "step": self.global_step,
                           "lr": self.optimizer.param_groups[0]["lr"], **{f"loss_{k_}": v for k_, v in values.items()}})
            done_in_epoch = step_in_epoch + 1
            if (cfg.checkpoint_every and done_in_epoch % cfg.checkpoint_every == 0
                    and done_in_epoch < self.steps_per_epoch and self.is_main):
                self.save(self.run_dir / "last.pth", epoch, partial_epoch={
                    "steps_done": done_in_epoch, "loss_sums": dict(avg.sums), "loss_count": avg.n,
                    "images": n_images, "wait_s": t_wait, "elapsed_s": elapsed, "rng": rng_state()})
        bar.close()
        self.sampler.skip = 0
        elapsed = elapsed_before + time.perf_counter() - t0
        means = avg.means()
        return {
            "kind": "epoch", "epoch": epoch + 1, "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            **{f"loss_{k_}": v for k_, v in means.items() if k_ != "num_positives"},
            "positives_per_batch": means.get("num_positives", 0.0),
            "images": n_images, "epoch_s": elapsed, "images_per_s": n_images / max(elapsed, 1e-9),
            "data_wait_share": t_wait / max(elapsed, 1e-9),
        }

    def fit(self) -> dict[str, Any]:
        """Train from ``start_epoch`` to ``cfg.epochs``; returns a summary (last epoch record, best AP, paths).

        ``cfg.threads`` applies for the duration of the call (and of :meth:`train_epoch`); torch's previous thread
        count is restored after."""
        with torch_threads(self.cfg.threads):
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.start_epoch == 0:
                (self.run_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
                (self.run_dir / "metrics.jsonl").write_text("")
                if self.backbone_source:
                    log.info("backbone initialised from %s", self.backbone_source)
        last = None
        for epoch in range(self.start_epoch, cfg.epochs):
            rec = self.train_epoch(epoch)
            self.records.append(rec)
            last = rec
            done = epoch + 1
            eval_now = cfg.eval.every > 0 and (done % cfg.eval.every == 0 or done == cfg.epochs)
            ev = None
            if eval_now and self.is_main:
                self.save(self.run_dir / "last.pth", done)  # the epoch is safe even if the evaluation fails
                ev = {"kind": "eval", "epoch": done, "step": self.global_step, **self.evaluate()}
                self.records.append(ev)
            is_best = ev is not None and (self.best is None or ev["ap_mean"] > self.best)
            if is_best:
                self.best = ev["ap_mean"]
            if self.is_main:
                self.save(self.run_dir / "last.pth", done)
                if is_best:
                    self.save(self.run_dir / "best.pth", done)
                self._log(rec)
                if ev is not None:
                    self._log(ev)
                msg = (f"epoch {done}/{cfg.epochs}: loss {rec['loss_total']:.4f} (box {rec['loss_box']:.4f}, "
                       f"cls {rec['loss_cls']:.4f}, lm {rec['loss_landmark']:.4f}"
                       + (f", kd {rec['loss_kd']:.4f}, feat {rec['loss_feature']:.4f}" if "loss_kd" in rec else "")
                       + f"), {rec['images_per_s']:.1f} img/s, data wait {100 * rec['data_wait_share']:.0f} %")
                if ev is not None:
                    msg += (f"; val AP easy {ev['ap_easy']:.4f} medium {ev['ap_medium']:.4f} "
                            f"hard {ev['ap_hard']:.4f} ({ev['eval_images']} images, {ev['eval_protocol']})")
                log.info("%s", msg)
                try:
                    plot_curve(self.records, self.run_dir / "curve.png", title=f"{cfg.name} ({cfg.model})")
                except Exception as exc:  # a plotting problem must never kill a run
                    log.warning("curve.png not written: %s", exc)
            if self.world > 1:
                import torch.distributed as dist

                dist.barrier()
        return {"run_dir": str(self.run_dir), "epochs": cfg.epochs, "last": last, "best_ap_mean": self.best,
                "records": self.records}

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


class _ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch after its first ``skip`` indices (a mid-epoch resume): the
    order is the one of the whole epoch, so the remaining batches are exactly those a straight run would see."""

    skip: int = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


def _collate():
    from featherface.data.dataset import detection_collate

    return detection_collate


def train(cfg: TrainConfig, *, resume: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Build a :class:`Trainer`, fit, clean up the process group; returns the summary."""
    trainer = Trainer(cfg, resume=resume, progress=progress)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def config_of_checkpoint(path: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` stored in a training checkpoint."""
    return config_from_dict(read_training_state(path)["extra"]["config"])

