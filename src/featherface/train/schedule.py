"""Learning-rate schedules, stepped once per iteration (``scheduler.step()`` after every ``optimizer.step()``).

* ``warmup_cosine`` — the V2 recipe's schedule (docs/training.md) made per-iteration (upstream V2 changed the LR once per
  epoch): linear warm-up over ``warmup_epochs`` from ``warmup_start_factor * lr`` to ``lr``, then
  ``min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2`` with ``t`` going 0 → 1 over the remaining iterations;
* ``onecycle`` — ``torch.optim.lr_scheduler.OneCycleLR`` as V1's ``train.py`` uses it (max_lr = lr, pct_start 0.3,
  div_factor 25, final_div_factor 1e4, cosine annealing, beta1 cycled 0.95 ↔ 0.85);
* ``constant``.

All are built from the total iteration count, and their ``state_dict`` goes into every checkpoint, so a resumed
run continues the same curve (upstream restarted it, defect T1 in docs/upstream-defects.md).
"""

from __future__ import annotations

import math

import torch

from featherface.train.config import ScheduleConfig

__all__ = ["warmup_cosine_factor", "build_scheduler"]


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_factor: float,
                         start_factor: float = 0.0) -> float:
    """LR multiplier at iteration ``step`` (0-based; the LR used by the ``step``-th optimizer step).

    Warm-up: ``start_factor + (1 - start_factor) * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (so the
    first step already has a non-zero LR and the last warm-up step reaches 1); then cosine from 1 to
    ``min_factor`` at ``step = total_steps - 1``.
    """
    if total_steps <= 0:
        return 1.0
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps - 1, 1)
    t = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, lr: float, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-iteration scheduler for ``epochs * steps_per_epoch`` iterations."""
    total = max(int(steps_per_epoch) * int(epochs), 1)
    if cfg.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups], total_steps=total, pct_start=cfg.pct_start, div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor, anneal_strategy="cos",
        )
    if cfg.name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.name != "warmup_cosine":
        raise ValueError(f"unknown schedule {cfg.name!r}")
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, total - 1) if total > 1 else 0
    min_factor = cfg.min_lr / lr if lr > 0 else 0.0
    start = float(cfg.warmup_start_factor)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, total, warmup, min_factor, start)
    )
