"""Checkpoints: one self-describing format, atomic writes, strict loading, and a converter for upstream files.

Format (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {"format": "featherface", "format_version": 1, "featherface_version": "0.1.0",
     "model_name": "featherface_v2", "model_config": {...}, "state_dict": {...},
     "preprocessing": {"color_order": "BGR", "mean": [104, 117, 123], "std": [1, 1, 1]},
     "extra": {...}}                      # optional: training state, metrics, provenance

``preprocessing`` is :meth:`featherface.preprocessing.Preprocessing.to_dict` of the model's record and is read back
by :func:`load_model` (``model.preprocessing``), so the API feeds a model the input it was trained on.

Upstream FeatherFace / RetinaFace files are raw state dicts (sometimes wrapped in ``state_dict`` or
``model_state_dict``, sometimes with ``module.`` prefixes and thop's ``total_ops`` / ``total_params`` buffers);
:func:`convert_upstream` normalises them and says what it did (:class:`ConvertedStateDict`), and the model is then
loaded **strictly**. :func:`read_state_dict` is the public "any checkpoint file → plain state dict" loader.

**One resolver.** A model argument is resolved in one place, :func:`featherface.resolve.resolve_model_source`
(re-exported here; torch-free): nothing → the default pretrained model; an existing file → a checkpoint
(``.onnx``: an ONNX export); a shipped name → its pretrained weights (``pretrained=False``: an untrained network);
anything else → a one-line error. :func:`load_any_model` builds the PyTorch model of such a source; the API, the
CLI commands (detect, eval, export, info, prune, data pseudo-label) and the pruning code use it.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featherface.errors import CheckpointError, FeatherFaceError
from featherface.fsutil import atomic_write, plain
from featherface.models.registry import build_model, config_from_dict
from featherface.preprocessing import DEFAULT_PREPROCESSING, Preprocessing
from featherface.resolve import ModelSource, resolve_model_source
from featherface.version import __version__

__all__ = [
    "FORMAT", "FORMAT_VERSION", "PREPROCESSING", "atomic_save", "save_checkpoint", "read_checkpoint",
    "ConvertedStateDict", "convert_upstream", "convert_upstream_state_dict", "read_state_dict", "detect_architecture",
    "KeyMismatch", "state_dict_mismatch", "load_state_dict_strict", "load_model", "model_to_checkpoint",
    "ModelSource", "resolve_model_source", "load_any_model",
]

FORMAT = "featherface"
FORMAT_VERSION = 1
PREPROCESSING = DEFAULT_PREPROCESSING.to_dict()  # what checkpoints of default-preprocessing models store
_THOP_SUFFIXES = ("total_ops", "total_params")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves a half file."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def model_to_checkpoint(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint dict of a registry-built model (``model.model_name`` / ``model.config`` set by build_model)."""
    name = getattr(model, "model_name", None)
    config = getattr(model, "config", None)
    if name is None or config is None:
        raise CheckpointError("model was not built with featherface.models.build_model: name/config unknown")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "featherface_version": __version__,
        "model_name": name,
        "model_config": plain(dataclasses.asdict(config)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "preprocessing": getattr(model, "preprocessing", DEFAULT_PREPROCESSING).to_dict(),
        "extra": dict(extra or {}),
    }


def save_checkpoint(path: str | os.PathLike, model: nn.Module, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (weights + config + featherface version) atomically to ``path``."""
    return atomic_save(model_to_checkpoint(model, extra), path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for missing, empty, truncated or corrupt files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    if not callable(map_location) and not isinstance(map_location, dict):
        from featherface.devices import check_device

        problem = check_device(str(map_location))
        if problem:
            raise FeatherFaceError(f"cannot load {path}: {problem}")
    try:
        with warnings.catch_warnings():  # a pickle of another protocol is judged below, not warned about
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        foreign = _foreign_globals(path)
        if foreign or ("weights only load failed" in str(exc).lower() and _REFUSED_CODE.search(_refusal_detail(exc))):
            what = f"refers to {', '.join(foreign[:3])}" if foreign else _refusal_detail(exc)
            raise CheckpointError(f"{path}: not a safe checkpoint (it contains code or objects we refuse to load): "
                                  f"{what}") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                              f"{_refusal_detail(exc)}") from None
    except Exception as exc:  # torch raises many types for bad files (RuntimeError, UnpicklingError, EOFError...)
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {_first_line(exc)}") from None


# What torch's weights-only unpickler says when a pickle names a callable or class it will not import / call (the way
# a malicious file runs code); other complaints ("Unsupported operand 0") mean a damaged or non-pickle file.
_REFUSED_CODE = re.compile(r"global|reduce|\bbuild\b|\bclass\b|\binst\b|\bobj\b|persistent|setstate", re.IGNORECASE)


_SAFE_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset", "builtins.bytearray",
                 "builtins.slice", "builtins.complex", "_codecs.encode")


def _foreign_globals(path: Path) -> list[str]:
    """Names of the callables / classes a checkpoint's pickle refers to that a plain tensor checkpoint never does
    (``os.system``, ``builtins.eval``, ``__main__.Evil``...), found by reading its opcodes without running them."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return []
                data = z.read(name)
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return []
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
    except Exception:  # noqa: BLE001 - not a pickle (or cut short): judged by torch's message instead
        pass
    return [g for g in dict.fromkeys(found) if not g.startswith(_SAFE_GLOBALS)]


def _first_line(exc: BaseException) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return reason[:200]


def _refusal_detail(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused (e.g. ``unsupported GLOBAL posix.system``), without its advice to
    retry with ``weights_only=False`` (which would run the file's code)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "weights_only" not in ln and "torch.load" not in ln
              and not ln.lower().startswith("weights only load failed")]
    detail = useful[0] if useful else "refused by the weights-only unpickler"
    detail = re.sub(r"^(Trying to load |WeightsUnpickler error: )", "", detail)
    detail = detail.split(". ")[0].rstrip(".")  # the first sentence: later ones advise how to load it anyway
    return detail[:200]


@dataclass
class ConvertedStateDict:
    """A normalised state dict and what was done to get it.

    state_dict: plain ``{key: tensor}``, ready for a strict load.
    layout: one line per normalisation step, in order (``featherface checkpoint v1, model featherface_v2``,
        ``wrapped in 'state_dict'``, ``'module.' prefixes stripped (DataParallel)``, ``N thop profiler buffers
        dropped (total_ops/total_params)``, ``N non-tensor entries ignored``; ``plain state dict, N keys`` when
        nothing was needed).
    model_name / model_config: what a featherface-format checkpoint says it holds (``None`` for upstream files).
    """

    state_dict: dict[str, torch.Tensor]
    layout: list[str] = field(default_factory=list)
    model_name: str | None = None
    model_config: dict[str, Any] | None = None


def convert_upstream(obj: Any) -> ConvertedStateDict:
    """Normalise a checkpoint object (ours or upstream) to a plain state dict: unwrap, strip ``module.``, drop thop
    buffers; the result says which of these it did (:class:`ConvertedStateDict`)."""
    layout: list[str] = []
    name = config = None
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        name, config = obj.get("model_name"), obj.get("model_config")
        layout.append(f"featherface checkpoint v{obj.get('format_version')}, model {name}")
        obj = obj["state_dict"]
    raw_keys = len(obj) if isinstance(obj, Mapping) else 0
    while isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
        key = next((k for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if key is None:
            break
        layout.append(f"wrapped in {key!r}")
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    out: dict[str, torch.Tensor] = {}
    prefixed = thop = other = 0
    for key, value in obj.items():
        if not torch.is_tensor(value):
            other += 1
            continue
        if key.endswith(_THOP_SUFFIXES):
            thop += 1
            continue
        if key.startswith("module."):
            prefixed += 1
            key = key[len("module."):]
        out[key] = value
    if not out:
        raise CheckpointError("checkpoint holds no tensors")
    if prefixed:
        layout.append("'module.' prefixes stripped (DataParallel)")
    if thop:
        layout.append(f"{thop} thop profiler buffers dropped (total_ops/total_params)")
    if other:
        layout.append(f"{other} non-tensor entries ignored")
    if not layout:
        layout.append(f"plain state dict, {raw_keys} keys")
    return ConvertedStateDict(out, layout, name, dict(config) if isinstance(config, Mapping) else None)


def convert_upstream_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """:func:`convert_upstream`'s state dict alone."""
    return convert_upstream(obj).state_dict


def read_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The plain state dict of any checkpoint file (ours or upstream), read with ``weights_only=True``."""
    return convert_upstream(read_checkpoint(path, map_location)).state_dict


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the architecture a state dict belongs to, from its keys.

    Returns ``featherface_v1``, ``featherface_v2``, ``retinaface_fpn`` (biubug6 RetinaFace with an FPN neck) or
    ``unknown``.
    """
    keys = set(state_dict)
    if any(k.startswith("backbone_cbam_manager.") for k in keys) or any(k.startswith("shared_heads.") for k in keys):
        return "featherface_v2"
    if "bifpn.0.p5_down_channel_2.0.conv.weight" in keys or any(k.startswith("bacbkbone_0_cbam.") for k in keys):
        return "featherface_v1"
    if any(k.startswith("fpn.") for k in keys) and any(k.startswith("ssh1.") for k in keys):
        return "retinaface_fpn"
    return "unknown"


@dataclass(frozen=True)
class KeyMismatch:
    """How a state dict differs from a model's: keys it lacks, keys the model lacks, keys of another shape."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)


def state_dict_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> KeyMismatch:
    """Compare ``state_dict`` with ``model.state_dict()`` by key and shape (nothing is loaded)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    return KeyMismatch(missing, unexpected, mismatched)


def _summarise(label: str, items: list[str], limit: int = 8) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:limit]) + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
    return f"{len(items)} {label} [{shown}]"


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load with exact key and shape matching; the error lists missing, unexpected and mis-shaped keys."""
    diff = state_dict_mismatch(model, state_dict)
    if diff:
        parts = [p for p in (_summarise("missing keys", diff.missing), _summarise("unexpected keys", diff.unexpected),
                             _summarise("shape mismatches", diff.mismatched)) if p]
        raise CheckpointError(f"{source} does not match {getattr(model, 'model_name', type(model).__name__)}: "
                              + "; ".join(parts))
    model.load_state_dict(dict(state_dict), strict=True)


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
               model_name: str | None = None) -> nn.Module:
    """Build and strictly load the model stored in ``path`` (our format or an upstream state dict), in eval mode."""
    obj = read_checkpoint(path, map_location)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {version} is not supported (expected {FORMAT_VERSION})")
        name = obj["model_name"]
        model = build_model(name, config_from_dict(name, obj.get("model_config", {})))
        load_state_dict_strict(model, obj["state_dict"], str(path))
        try:
            setattr(model, "preprocessing", Preprocessing.from_dict(obj.get("preprocessing")))  # noqa: B010
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: invalid preprocessing record: {exc}") from None
    else:
        state_dict = convert_upstream_state_dict(obj)
        name = model_name or detect_architecture(state_dict)
        if name == "retinaface_fpn":
            raise CheckpointError(f"{path}: this is a RetinaFace (FPN neck) checkpoint, not FeatherFace; "
                                  "it cannot be loaded into featherface_v1/v2")
        if name == "unknown":
            raise CheckpointError(f"{path}: state dict of an unknown architecture "
                                  f"({len(state_dict)} tensors, first key {next(iter(state_dict))!r})")
        model = build_model(name)
        load_state_dict_strict(model, state_dict, str(path))
    model.eval()
    return model


# ------------------------------------------------------------------------------------------------- the resolver
def load_any_model(spec: str | os.PathLike | ModelSource | None, *, map_location: str | torch.device = "cpu",
                   overrides: Mapping[str, Any] | None = None, pretrained: bool = True) -> nn.Module:
    """The PyTorch model of a model argument (:func:`featherface.resolve.resolve_model_source`), in eval mode.

    ``overrides``: config fields of an untrained named network (an error otherwise). ``pretrained=False``: a name
    builds an untrained network. An ONNX file is refused here (run it with ``FaceDetector(path)``, which uses ONNX
    Runtime for ``.onnx`` files).
    """
    source = spec if isinstance(spec, ModelSource) else resolve_model_source(spec, pretrained=pretrained)
    if overrides and source.kind != "name":
        raise FeatherFaceError(f"config overrides apply to an untrained model name, not to {source}")
    if source.kind == "name":
        assert source.name is not None
        return build_model(source.name, **dict(overrides or {})).eval()
    if source.kind == "onnx":
        raise FeatherFaceError(f"{source.path}: an ONNX export, not a PyTorch checkpoint (FaceDetector runs it with "
                               "ONNX Runtime; `featherface export` makes one from a checkpoint)")
    assert source.path is not None
    return load_model(source.path, map_location=map_location)
