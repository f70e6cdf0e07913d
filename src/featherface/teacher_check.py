"""Is this file a usable FeatherFace V1 teacher? A strict check, not a key-substring search.

The check reads the file (``weights_only=True``), normalises upstream layouts, names the architecture, loads it
strictly into V1, counts the true parameters and runs a forward pass whose output shapes must match the anchors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from featherface.checkpoint import convert_upstream, detect_architecture, read_checkpoint, state_dict_mismatch
from featherface.errors import CheckpointError
from featherface.models.registry import build_model, config_from_dict

__all__ = ["TeacherReport", "check_teacher"]

_ARCH_LABELS = {
    "featherface_v1": "FeatherFace V1 (teacher: MobileNetV1-0.25 + CBAM + BiFPN + deformable SSH)",
    "featherface_v2": "FeatherFace V2 (student)",
    "retinaface_fpn": "RetinaFace-MobileNet0.25 with an FPN neck (biubug6 layout)",
    "unknown": "unknown architecture",
}


@dataclass
class TeacherReport:
    path: str
    ok: bool = False
    verdict: str = ""
    architecture: str = "unknown"
    layout: list[str] = field(default_factory=list)
    parameters: int | None = None
    tensors: int | None = None
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    output_shapes: list[tuple] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"file:          {self.path}"]
        if self.layout:
            out.append(f"layout:        {'; '.join(self.layout)}")
        out.append(f"architecture:  {_ARCH_LABELS.get(self.architecture, self.architecture)}")
        if self.tensors is not None:
            out.append(f"tensors:       {self.tensors:,d} elements in the state dict")
        if self.parameters is not None:
            out.append(f"parameters:    {self.parameters:,d} trainable (numel of parameters, not buffers)")
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected), ("shape mismatch", self.mismatched)):
            if items:
                shown = ", ".join(items[:6]) + (f", ... (+{len(items) - 6} more)" if len(items) > 6 else "")
                out.append(f"{label + ':':15s}{len(items)} keys: {shown}")
        if self.output_shapes:
            out.append(f"forward 640x640: boxes {self.output_shapes[0]}, logits {self.output_shapes[1]}, "
                       f"landmarks {self.output_shapes[2]}")
        out.append(f"verdict:       {'OK' if self.ok else 'NOT USABLE'} — {self.verdict}")
        return out


def _param_count_from_state_dict(state_dict: dict) -> int:
    return sum(v.numel() for k, v in state_dict.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def check_teacher(path: str | os.PathLike) -> TeacherReport:
    """Run the teacher compatibility check on ``path``; never raises for a bad file, the report says why."""
    report = TeacherReport(path=str(path))
    try:
        obj = read_checkpoint(Path(path))
    except CheckpointError as exc:
        report.verdict = f"the file cannot be read: {str(exc).split(': ', 1)[-1]}"
        return report
    try:
        converted = convert_upstream(obj)
    except CheckpointError as exc:
        report.verdict = str(exc)
        return report
    report.layout = list(converted.layout)  # what the converter normalised, as it reports it
    state_dict, config = converted.state_dict, converted.model_config
    report.tensors = sum(v.numel() for v in state_dict.values())
    report.architecture = detect_architecture(state_dict)
    report.parameters = _param_count_from_state_dict(state_dict)
    if report.architecture == "featherface_v2":
        report.verdict = "this is a FeatherFace V2 student checkpoint; the teacher must be a FeatherFace V1 checkpoint"
        return report
    if report.architecture == "retinaface_fpn":
        report.verdict = ("this is a RetinaFace checkpoint (FPN neck, no BiFPN/CBAM/deformable SSH); it is not the "
                          "FeatherFace V1 teacher and cannot be loaded into it")
        return report
    if report.architecture == "unknown":
        report.verdict = "the keys match no known architecture (expected FeatherFace V1 keys such as bifpn.0.*, ssh1.*)"
        return report
    model = build_model("featherface_v1", config_from_dict("featherface_v1", config) if config else None)
    diff = state_dict_mismatch(model, state_dict)
    report.missing, report.unexpected, report.mismatched = diff.missing, diff.unexpected, diff.mismatched
    if report.missing or report.unexpected or report.mismatched:
        report.verdict = (f"keys do not match FeatherFace V1 exactly ({len(report.missing)} missing, "
                          f"{len(report.unexpected)} unexpected, {len(report.mismatched)} mis-shaped)")
        return report
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    report.parameters = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 640, 640, generator=torch.Generator().manual_seed(0)))
    report.output_shapes = [tuple(t.shape) for t in out]
    a = model.config.anchor_spec.num_anchors((640, 640))
    expected = [(1, a, 4), (1, a, 2), (1, a, 10)]
    if report.output_shapes != expected:
        report.verdict = f"output shapes {report.output_shapes} differ from the expected {expected}"
        return report
    if not all(torch.isfinite(t).all() for t in out):
        report.verdict = "the forward pass produced NaN or infinite values"
        return report
    report.ok = True
    report.verdict = (f"loads strictly into featherface_v1 ({report.parameters:,d} parameters) and its outputs match "
                      f"the {a:,d} anchors at 640x640; usable as the distillation teacher")
    return report
