"""Structured channel pruning of FeatherFace V2 (:mod:`featherface.prune.channels`) and the prune → save →
fine-tune → save workflow (:func:`prune_checkpoint`, used by ``featherface prune``).

Pruning sits next to training (it fine-tunes with :mod:`featherface.train`); the exporters do not depend on it.
"""

from featherface.prune.channels import PrunePlan, plan_pruning, prune_v2
from featherface.prune.workflow import prune_checkpoint

__all__ = ["PrunePlan", "plan_pruning", "prune_v2", "prune_checkpoint"]
