"""Structured channel pruning of V2 (SSH, BiFPN, heads) — NOT IMPLEMENTED YET.

Planned (issue 6, item 5): torch-pruning's ``MetaPruner`` with an L1 importance on V2, restricted to the SSH,
BiFPN and head convolutions (the MobileNet body and CBAM gates ignored), 20 % of their channels, then a short
fine-tune and a parameter / MACs / AP report; the pruned model must save (its pruned widths recorded in the
checkpoint), load, export and run. It was not started within this work's timebox: torch-pruning has not been
checked against torch 2.13 and V2's custom blocks (grouped SSH convolutions, channel shuffle, BiFPN fusion
weights), and ``save_checkpoint``/``load_model`` rebuild models from their config, which cannot express
per-layer pruned widths without a change to the checkpoint format (not owned here).
"""

from __future__ import annotations

from typing import Any

from featherface.errors import FeatherFaceError

__all__ = ["prune_cli"]


def prune_cli(args: Any) -> dict:
    raise FeatherFaceError("featherface prune is not implemented yet (see featherface/export/prune.py for the plan "
                           "and why); export, quantize and benchmark are available")
