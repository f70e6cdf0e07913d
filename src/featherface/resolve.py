"""The one resolver of a model argument, shared by the API, every CLI command, the batch jobs and the tools.

Precedence: nothing → the default pretrained model; an existing file → a checkpoint (``.onnx``: an ONNX export); a
shipped model name (``featherface_v2``, ``featherface_v1``: see ``featherface models``) → its pretrained weights, or
with ``pretrained=False`` an untrained network of that architecture; anything else → a one-line error. This module
imports neither torch nor onnxruntime (registered names without shipped weights are looked up in the torch model
registry only when ``pretrained=False``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from featherface.errors import FeatherFaceError

__all__ = ["ModelSource", "resolve_model_source"]


@dataclass(frozen=True)
class ModelSource:
    """What a model argument names.

    kind: ``pretrained`` (a shipped model: ``name``; ``path`` its checked checkpoint, ``onnx_path`` its checked raw
    ONNX file or ``None``), ``checkpoint`` (``path``), ``onnx`` (``path``, an ONNX export) or ``name`` (``name``: a
    registered architecture with untrained weights).
    """

    kind: str
    path: Path | None = None
    name: str | None = None
    onnx_path: Path | None = None

    def __str__(self) -> str:
        return f"{self.name}" if self.kind in ("name", "pretrained") else f"{self.path}"


def _registered_names() -> list[str]:
    try:
        from featherface.models.registry import list_models
    except ImportError:  # the light install has no torch: only shipped names exist
        return []
    return list_models()


def _shipped_names() -> list[str]:
    from featherface.pretrained import list_weights

    try:
        return [r.name for r in list_weights()]
    except FeatherFaceError:  # a build without bundled weights
        return []


def _pretrained(name: str) -> ModelSource:
    from featherface.pretrained import weights_file, weights_record

    onnx = weights_file(name, "onnx") if weights_record(name).onnx_file else None
    return ModelSource("pretrained", path=weights_file(name, "pth"), name=name, onnx_path=onnx)


def resolve_model_source(spec: str | os.PathLike | None, *, pretrained: bool = True) -> ModelSource:
    """Resolve a model argument once, with one precedence for every caller (see the module docstring).

    ``pretrained=False`` turns a model name (or nothing: the default model's architecture) into an untrained network.
    A path that does not exist is a checkpoint (loading it then says "not found"), unless it looks like a model name
    (no folder, no suffix), which is a one-line "unknown model" error naming the known ones.
    """
    if spec is None or str(spec) == "":
        from featherface.pretrained import default_model_name, weights_record

        name = default_model_name()
        return _pretrained(name) if pretrained else ModelSource("name", name=weights_record(name).model_name)
    text = os.fspath(spec)
    path = Path(text)
    if path.is_file():
        return ModelSource("onnx" if path.suffix.lower() == ".onnx" else "checkpoint", path=path)
    looks_like_name = not path.suffix and os.sep not in text and "/" not in text
    if looks_like_name:
        shipped = _shipped_names()
        if text in shipped and pretrained:
            return _pretrained(text)
        registered = _registered_names()
        if text in registered or text in shipped:
            if pretrained:
                raise FeatherFaceError(f"no pretrained weights are shipped for {text!r} (shipped: {', '.join(shipped)});"
                                       " pretrained=False builds it with random weights")
            return ModelSource("name", name=text)
        if not path.exists():
            known = sorted(set(shipped) | set(registered))
            raise FeatherFaceError(f"unknown model {text!r}: not a model name ({', '.join(known)}) "
                                   "and no such checkpoint file")
    return ModelSource("onnx" if path.suffix.lower() == ".onnx" else "checkpoint", path=path)
