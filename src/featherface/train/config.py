"""Training configuration: frozen dataclasses loaded from a TOML recipe.

A recipe has top-level run keys and one table per part::

    model = "featherface_v2"      # registry name
    name = "v2_baseline"          # run folder: <output_dir>/<name>/
    epochs = 400
    seed = 42
    [model_config]                # overrides of the model's config dataclass (e.g. dropblock_prob = 0.1)
    [data]      -> DataConfig
    [optim]     -> OptimConfig
    [schedule]  -> ScheduleConfig
    [distill]   -> DistillConfig   (teacher = "path" enables distillation)
    [eval]      -> EvalConfig      (every = N enables periodic val AP)

Unknown keys anywhere raise :class:`~featherface.errors.FeatherFaceError` naming the key and the known ones.
Relative paths are kept as written and resolved against the working directory at run time. Data paths have no
default here (``None``: not given; the trainer says which one it needs); ``featherface train`` fills the ones a
recipe leaves out with this repository's ``../shared`` layout (:data:`featherface.train.cli.DEFAULT_PATHS`).
CLI overrides are applied with :func:`apply_overrides` (``{"data.batch_size": 8, "epochs": None, ...}``); a value
of ``None`` means "not given" and never overrides the recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from featherface.errors import FeatherFaceError

__all__ = [
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "DistillConfig",
    "EvalConfig",
    "TrainConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
]


@dataclass(frozen=True)
class DataConfig:
    """Training data and augmentation.

    ``batch_size`` is per process (with ``torchrun --nproc_per_node=K`` the global batch is ``K * batch_size``).
    ``max_images`` keeps the first N images of the label file (tiny runs, tests). ``mixup_prob`` / ``cutmix_prob``
    are the per-sample rates of the detection-aware MixUp / CutMix of :class:`featherface.data.TrainTransform`.
    ``crop_scales``: the square-crop sides as fractions of the image's short side (upstream 0.3–1.0, drawn
    uniformly from the list); values above 1 zoom out (pad with the mean colour, then resize). ``ignore_invalid``:
    faces flagged invalid in the labels (bbx_gt flag or ``ignore`` tag) become ignore regions instead of being
    dropped. ``small_faces_ignored``: faces under ``min_face_size`` output pixels become ignore regions instead
    of being dropped. ``use_pseudo_landmarks``: use landmarks tagged ``pseudo`` (teacher-predicted).
    """

    train_labels: str | None = None
    train_images: str | None = None
    image_size: int = 640
    batch_size: int = 32
    num_workers: int = 2
    max_images: int | None = None
    mixup_prob: float = 0.0
    mixup_alpha: float = 0.2
    cutmix_prob: float = 0.0
    min_face_size: float = 0.0
    distort: bool = True
    drop_last: bool = False
    crop_scales: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0)
    ignore_invalid: bool = False
    small_faces_ignored: bool = False
    use_pseudo_landmarks: bool = True


@dataclass(frozen=True)
class OptimConfig:
    """AdamW. ``grad_clip`` (max global L2 norm) is off when None."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule, stepped every iteration.

    ``warmup_cosine`` (the V2 recipe's schedule, per iteration): linear warm-up over ``warmup_epochs`` from
    ``warmup_start_factor * lr`` to ``lr``, then cosine to ``min_lr``. ``onecycle`` (paper / V1 ``train.py``):
    ``torch.optim.lr_scheduler.OneCycleLR`` with ``pct_start``, ``div_factor``, ``final_div_factor`` (the upstream
    defaults). ``constant``: fixed ``lr``.
    """

    name: str = "warmup_cosine"
    warmup_epochs: float = 5.0
    warmup_start_factor: float = 0.0
    min_lr: float = 1e-6
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from a teacher checkpoint (off when ``teacher`` is None).

    Loss = ``(1 - alpha) * task + alpha * KD + feature_weight * feature`` with
    ``KD = KL_T + box_weight * box + landmark_weight * landmark`` (see :mod:`featherface.train.distill`).
    ``teacher_positive_threshold``: teacher face probability (at T = 1) from which an anchor is a teacher positive.
    ``init_backbone``: copy the teacher's ``body.*`` (MobileNet) weights into the student before training.
    ``teacher_every``: run the teacher (its neck and heads, on the shared frozen backbone) on every k-th batch
    only; the other batches train on the task loss alone, weighted ``1 - alpha`` as in the distilled batches.
    """

    teacher: str | None = None
    alpha: float = 0.7
    temperature: float = 4.0
    feature_weight: float = 0.1
    box_weight: float = 1.0
    landmark_weight: float = 1.0
    teacher_positive_threshold: float = 0.5
    neg_pos_ratio: float = 7.0
    init_backbone: bool = True
    teacher_every: int = 1


@dataclass(frozen=True)
class EvalConfig:
    """Periodic WIDER AP on a val subset (off when ``every`` is 0) and the choice of ``best.pth``.

    ``images`` (the val image folder) and ``gt`` (the folder of ``.mat`` files) are needed when ``every > 0``.
    ``max_images`` images are taken evenly spaced from ``image_list`` (all images when None). ``protocol`` is a
    :func:`featherface.eval.parse_protocol` name; ``longest-side-640`` is much cheaper than ``original-size``.
    """

    every: int = 0
    images: str | None = None
    image_list: str | None = None
    gt: str | None = None
    max_images: int | None = 100
    protocol: str = "longest-side-640"
    score_threshold: float = 0.02
    nms_threshold: float = 0.4


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``init_backbone``: a checkpoint whose ``body.*`` weights initialise the model's backbone
    (our format or upstream; with a teacher and ``distill.init_backbone`` the teacher is used when this is None).
    ``init_weights``: a checkpoint whose whole state dict initialises the model, loaded strictly (fine-tuning, e.g.
    a pruned model; ``model_config`` must describe its widths); it takes precedence over both backbone sources.
    ``threads``: ``torch.set_num_threads`` (None leaves torch's default). ``channels_last``: NHWC memory format for
    the student and its input batches (faster convolutions and BatchNorm on many CPUs; same results up to float
    rounding; ``python benchmarks/bench_train.py --compare-channels-last`` measures it). ``fused_bn``: train with
    :class:`~featherface.models.fused_norm.BatchNormAct2d` (BN + following ReLU/LeakyReLU as one autograd node with
    a faster CPU backward; same parameters, checkpoints and results up to float rounding; ``--compare-fused-bn``
    measures it). ``compile``: ``torch.compile`` the student's forward for training (TorchInductor fuses
    BatchNorm, activations and the other element-wise work; the first steps compile for minutes on a small CPU and
    need a C++ compiler; takes precedence over ``fused_bn``; ``--compare-compile`` measures it). ``log_every``: iterations between
    ``"kind": "step"`` lines in ``metrics.jsonl`` (0: epoch lines only).
    ``freeze_backbone``: the model's MobileNet backbone (``body``), initialised from the teacher (or
    ``init_backbone``), stays frozen: eval mode (BN statistics fixed), no gradients, not in the optimizer. With a
    teacher its features are computed once per batch and feed both the student's and the teacher's necks.
    ``backbone_lr_scale``: with ``freeze_backbone``, a value > 0 makes the optional last phase of the frozen-backbone
    recipe: the backbone's weights train at ``lr * backbone_lr_scale`` (a second optimizer group, same schedule)
    while its BatchNorms stay in eval mode (statistics fixed, also after every ``model.train()``); the teacher then
    runs its own backbone (the features are no longer shared). 0 keeps the backbone frozen.
    ``checkpoint_every``: also write ``last.pth`` every N iterations inside an epoch (0: at epoch ends only); a
    resume from such a checkpoint continues the epoch at the next batch, exactly."""

    model: str = "featherface_v2"
    name: str = "run"
    output_dir: str = "runs"
    epochs: int = 400
    seed: int = 42
    device: str = "cpu"
    threads: int | None = None
    init_backbone: str | None = None
    init_weights: str | None = None
    channels_last: bool = False
    fused_bn: bool = True
    compile: bool = False
    log_every: int = 0
    freeze_backbone: bool = False
    backbone_lr_scale: float = 0.0
    checkpoint_every: int = 0
    model_config: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise FeatherFaceError(f"epochs must be >= 1, got {self.epochs}")
        if self.data.batch_size < 1 or self.data.image_size < 32:
            raise FeatherFaceError("data.batch_size must be >= 1 and data.image_size >= 32")
        if self.schedule.name not in ("warmup_cosine", "onecycle", "constant"):
            raise FeatherFaceError(f"schedule.name must be warmup_cosine, onecycle or constant, got {self.schedule.name!r}")
        if self.optim.name != "adamw":
            raise FeatherFaceError(f"optim.name must be 'adamw', got {self.optim.name!r}")
        if not 0.0 <= self.distill.alpha <= 1.0:
            raise FeatherFaceError(f"distill.alpha must be in [0, 1], got {self.distill.alpha}")
        if self.distill.temperature <= 0:
            raise FeatherFaceError(f"distill.temperature must be > 0, got {self.distill.temperature}")
        if self.distill.teacher_every < 1:
            raise FeatherFaceError(f"distill.teacher_every must be >= 1, got {self.distill.teacher_every}")
        if not self.data.crop_scales or any(float(c) <= 0 for c in self.data.crop_scales):
            raise FeatherFaceError(f"data.crop_scales must be positive numbers, got {self.data.crop_scales}")
        if self.backbone_lr_scale < 0 or (self.backbone_lr_scale > 0 and not self.freeze_backbone):
            raise FeatherFaceError(f"backbone_lr_scale must be >= 0 and needs freeze_backbone = true (it trains the "
                                   f"frozen-BN backbone at a lower LR), got {self.backbone_lr_scale}")
        if self.checkpoint_every < 0:
            raise FeatherFaceError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig, "distill": DistillConfig,
             "eval": EvalConfig}


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(values, Mapping):
        raise FeatherFaceError(f"[{where}] must be a table, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FeatherFaceError(f"unknown key(s) in [{where}]: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for k, v in values.items():
        if isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a nested dict (TOML content or :func:`config_to_dict` output)."""
    values = dict(values)
    top_known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - top_known)
    if unknown:
        raise FeatherFaceError(f"unknown top-level key(s): {', '.join(unknown)}; known: {', '.join(sorted(top_known))}")
    kwargs: dict[str, Any] = {}
    for k, v in values.items():
        if k in _SECTIONS:
            kwargs[k] = _build(_SECTIONS[k], v, k)
        elif k == "model_config":
            if not isinstance(v, Mapping):
                raise FeatherFaceError("[model_config] must be a table")
            kwargs[k] = dict(v)
        else:
            kwargs[k] = v
    cfg = TrainConfig(**kwargs)
    # Validate the model overrides against the model's own config dataclass now, not at step 0.
    from featherface.models.registry import config_from_dict as model_config_from_dict

    model_config_from_dict(cfg.model, cfg.model_config)
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (lists, no tuples) suitable for JSON, TOML-like logging and checkpoints."""
    from featherface.fsutil import plain

    return plain(dataclasses.asdict(cfg))


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML recipe (unknown keys rejected)."""
    path = Path(path)
    if not path.is_file():
        raise FeatherFaceError(f"training recipe not found: {path}")
    try:
        with path.open("rb") as fh:
            values = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise FeatherFaceError(f"{path}: invalid TOML: {exc}") from None
    return config_from_dict(values)


def apply_overrides(cfg: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """Replace fields by dotted name (``"epochs"``, ``"data.batch_size"``, ``"model_config.dropblock_prob"``).

    Entries whose value is None are ignored (a CLI option that was not given)."""
    values = config_to_dict(cfg)
    for dotted, value in overrides.items():
        if value is None:
            continue
        parts = dotted.split(".")
        if len(parts) == 1:
            if parts[0] not in values or parts[0] in _SECTIONS or parts[0] == "model_config":
                raise FeatherFaceError(f"cannot override {dotted!r}: not a top-level field")
            values[parts[0]] = value
        elif len(parts) == 2 and (parts[0] in _SECTIONS or parts[0] == "model_config"):
            section = values[parts[0]]
            if parts[0] in _SECTIONS and parts[1] not in section:
                raise FeatherFaceError(f"unknown key {parts[1]!r} in [{parts[0]}]; known: {', '.join(sorted(section))}")
            section[parts[1]] = value
        else:
            raise FeatherFaceError(f"cannot override {dotted!r}: use 'key' or 'section.key'")
    return config_from_dict(values)
