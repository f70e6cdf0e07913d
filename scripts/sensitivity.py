"""Sensitivity of the distillation, measured on the shipping recipe: temperature, weight, and no distillation at all.

Planned by the V2 write-up; its projected figures are quoted in docs/ablation.md.

    OMP_WAIT_POLICY=PASSIVE python scripts/sensitivity.py --plan-only  # the budget per arm and its estimated time
    OMP_WAIT_POLICY=PASSIVE python scripts/sensitivity.py              # run (resumable: rerun the same command)
    python scripts/sensitivity.py --max-images 8 --epochs 1 --image-size 160 --eval-max-images 5 \\
        --study-dir /tmp/study_smoke                                   # smoke run (numbers mean nothing)

Arms, all V2 on the teacher's frozen shared backbone: T ∈ {2, 4, 6} at α 0.7; α ∈ {0.5, 0.7, 0.9} at T 4; and
``a0_nodistill_s42``: α = 0 with the feature term off too (``feature_weight = 0``), i.e. no distillation, same
frozen backbone and budget (the trainer then skips the teacher's forward). The baseline (α 0.7, T 4) runs with seeds
42 and 43 (the noise level) and is shared with ``scripts/ablation.py`` (same study folder, same budget).

Same machinery as the ablation (``scripts/study.py``): one budget for all arms, one folder per arm, resume, skip,
precise-BN, val-dev AP at original size on all 385 images, Hard recall by face size. Writes
``sensitivity_temperature.{md,json,png}`` and ``sensitivity_alpha.{md,json,png}`` into the study folder. Nothing is
projected.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study  # noqa: E402

study.set_omp_env()


def _fw(a: study.Arm) -> str:
    return "recipe's (0.1)" if a.feature_weight is None else f"{a.feature_weight:g}"


TABLES = [
    {"stem": "sensitivity_temperature", "title": "Distillation temperature T (α 0.7), measured",
     "arms": ["T2_a0.7_s42", "T4_a0.7_s42", "T4_a0.7_s43", "T6_a0.7_s42"],
     "cols": [("T", lambda a: f"{a.temperature:g}"), ("α", lambda a: f"{a.alpha:g}")]},
    {"stem": "sensitivity_alpha", "title": "Distillation weight α (T 4), and no distillation, measured",
     "arms": ["a0_nodistill_s42", "T4_a0.5_s42", "T4_a0.7_s42", "T4_a0.7_s43", "T4_a0.9_s42"],
     "cols": [("α", lambda a: f"{a.alpha:g}"), ("T", lambda a: f"{a.temperature:g}" if a.distilled else "—"),
              ("Feature weight", _fw)],
     "intro": "α = 0 with feature weight 0 is no distillation: the teacher only provides the frozen backbone "
              "(its forward is skipped); every other setting and the budget are the baseline's."},
]


def main(argv: list[str] | None = None) -> int:
    return study.run_study("sensitivity", study.SENSITIVITY_ARMS, TABLES, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
