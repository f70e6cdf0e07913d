"""Prune a checkpoint, save it, optionally fine-tune it with a training recipe and save it again (keyword API)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from featherface.prune.channels import prune_v2

__all__ = ["prune_checkpoint"]

log = logging.getLogger(__name__)


def prune_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, *, ratio: float = 0.2,
                     finetune: Any = None, finetune_epochs: int | None = None, finetune_label: str | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Prune ``checkpoint`` (a V2 checkpoint or model name, see :func:`featherface.checkpoint.resolve_model_source`)
    by ``ratio``, save it to ``output`` and return the summary.

    ``finetune``: a :class:`~featherface.train.config.TrainConfig` recipe; its model widths are replaced by the pruned
    ones, it starts from the pruned weights and its best (else last) weights are saved to ``output`` again, with
    the fine-tune report in ``summary["finetune"]``. ``finetune_epochs`` overrides the recipe's epoch count;
    ``finetune_label`` names the recipe in the report (e.g. its file; default: the run name).
    """
    from featherface.checkpoint import load_any_model, save_checkpoint

    model = load_any_model(checkpoint)
    pruned, summary = prune_v2(model, ratio)
    out = Path(output)
    summary["source"] = str(checkpoint)
    save_checkpoint(out, pruned, extra={"pruning": summary})
    log.info("pruned: %s -> %s parameters (-%s%%), MACs at 640x640 %.3f G -> %.3f G; written %s",
             f"{summary['params_before']:,}", f"{summary['params_after']:,}", summary["params_removed_pct"],
             summary["macs_640_before"] / 1e9, summary["macs_640_after"] / 1e9, out)
    if finetune is not None:
        summary["finetune"] = _finetune(finetune, pruned, out, summary, epochs=finetune_epochs, progress=progress,
                                        label=finetune_label or finetune.name)
    summary["output"] = str(out)
    return summary


def _finetune(recipe: Any, pruned: nn.Module, out: Path, summary: dict, *, epochs: int | None,
              progress: bool, label: str) -> dict:
    """Train the pruned weights with a training config (its model is replaced by the pruned widths)."""
    from featherface.checkpoint import load_state_dict_strict, read_state_dict, save_checkpoint
    from featherface.train.config import config_from_dict, config_to_dict
    from featherface.train.trainer import train

    values = config_to_dict(recipe)
    values["model"] = "featherface_v2"
    values["init_weights"] = str(out)
    values["model_config"] = {k: (list(v) if isinstance(v, tuple) else v)
                              for k, v in dataclasses.asdict(pruned.config).items()}
    if epochs:
        values["epochs"] = int(epochs)
    cfg = config_from_dict(values)
    result = train(cfg, progress=progress)
    run_dir = Path(result["run_dir"])
    best = run_dir / "best.pth" if (run_dir / "best.pth").exists() else run_dir / "last.pth"
    load_state_dict_strict(pruned, read_state_dict(best), str(best))
    pruned.eval()
    records = [r for r in result["records"] if r.get("kind") == "epoch"]
    report = {"config": label, "epochs": cfg.epochs, "weights": str(best),
              "best_ap_mean": result.get("best_ap_mean"), "epoch_records": records}
    save_checkpoint(out, pruned, extra={"pruning": {**summary, "finetune": json.loads(json.dumps(report, default=str))}})
    return report
