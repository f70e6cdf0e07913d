"""Ablation, measured on the shipping recipe: V2 with one of its blocks swapped back for V1's.

Planned by the V2 write-up; its projected table is quoted in docs/ablation.md.

    OMP_WAIT_POLICY=PASSIVE python scripts/ablation.py --plan-only     # the budget per arm and its estimated time
    OMP_WAIT_POLICY=PASSIVE python scripts/ablation.py                 # run (resumable: rerun the same command)
    python scripts/ablation.py --max-images 8 --epochs 1 --image-size 160 --eval-max-images 5 \\
        --study-dir /tmp/study_smoke                                   # smoke run (numbers mean nothing)

Arms (the V2 config switches; every arm distilled from the V1 teacher at α 0.7, T 4 as the shipping recipe):
``T4_a0.7_s42`` / ``T4_a0.7_s43`` — V2, the baseline, with two seeds (the noise level, shared with
``scripts/sensitivity.py``); ``bifpn_v1_s42`` — V2 + V1's BiFPN cell (``neck="bifpn_v1"``); ``ssh_v1_s42`` — V2 +
V1's deformable SSH (``ssh="v1"``); ``cbam_v1_s42`` — V2 + V1's CBAM (``attention="cbam_v1"``).

Every arm: ``configs/ship_v2_640.toml`` (frozen shared teacher backbone, 640-px crops, ignore regions,
``teacher_every``, the ``.cache/wider_extra`` data) with one budget for all (see ``scripts/study.py``: same images,
epochs, schedule and seed), one folder per arm under ``--study-dir`` (default ``runs/study_ship640/``; resumed from
its ``last.pth`` after a stop, skipped once its ``result.json`` exists), precise-BN on a copy of the weights, AP on
all 385 val-dev images at original size, Hard recall by face size. Writes ``ablation.md`` / ``ablation.json`` /
``ablation.png`` (with the command that produced them) into the study folder (``--out`` to change). Nothing is
projected or copied from the report.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study  # noqa: E402

study.set_omp_env()

TABLES = [{
    "stem": "ablation",
    "title": "Ablation (the V2 write-up's plan, docs/ablation.md), measured",
    "arms": [a.name for a in study.ABLATION_ARMS],
    "cols": [("Switch", lambda a: a.switch)],
    "intro": "V2 against V2 with one block swapped back for V1's, each distilled from the V1 teacher (α 0.7, T 4).",
}]


def main(argv: list[str] | None = None) -> int:
    return study.run_study("ablation", study.ABLATION_ARMS, TABLES, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
