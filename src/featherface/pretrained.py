"""The model zoo: pretrained weights shipped inside the package, chosen by name and SHA-256 checked before use.

``weights/models.json`` lists each record (:class:`WeightsRecord`): the PyTorch checkpoint, the raw-output ONNX file
that the default ONNX Runtime path runs, an ONNX file with in-graph post-processing for the browser page, their
SHA-256 digests, and what timm's / torchvision's weight records carry (val-dev AP with its protocol, parameters,
MACs, pre-processing, source, licence). ``scripts/build_model_zoo.py`` writes the files and the manifest; nothing here
imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from featherface.errors import CheckpointError, FeatherFaceError

__all__ = ["WeightsRecord", "WeightsInfo", "MANIFEST", "weights_dir", "list_weights", "weights_record", "weights_file",
           "default_model_name", "default_weights_info", "default_weights_path", "sha256_of", "example_photo_path"]

MANIFEST = "models.json"
#: What :func:`weights_file` can return for a record: the checkpoint, the raw ONNX file, the browser ONNX file.
FILE_KINDS = ("pth", "onnx", "web")


@dataclass(frozen=True)
class WeightsRecord:
    """One pretrained model shipped in the package.

    name: the zoo name (``FaceDetector(name)``); model_name: the architecture (``featherface.models`` registry).
    file / sha256: the PyTorch checkpoint; onnx_file / onnx_sha256: the raw-output ONNX export (dynamic H/W);
    web_onnx_file / web_onnx_sha256: the export with in-graph post-processing (browser page).
    storage_dtype: how the weights are stored (``float16`` files are computed in float32).
    params: parameters; macs: multiply-accumulates per input size (``"640x480"``: W x H).
    val_dev_ap: ``{"easy", "medium", "hard", "protocol", "images", "command"}`` measured on WIDER FACE val-dev.
    preprocessing: :meth:`featherface.preprocessing.Preprocessing.to_dict` of the input the model expects.
    source / licence / notes: provenance.
    """

    name: str
    model_name: str
    file: str
    sha256: str
    params: int
    onnx_file: str = ""
    onnx_sha256: str = ""
    web_onnx_file: str = ""
    web_onnx_sha256: str = ""
    storage_dtype: str = "float32"
    macs: dict[str, int] = field(default_factory=dict)
    val_dev_ap: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    licence: str = ""
    notes: str = ""

    @classmethod
    def from_dict(cls, name: str, values: dict[str, Any]) -> WeightsRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{"name": name, **{k: v for k, v in values.items() if k in known and k != "name"}})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values.pop("name")
        return values


#: The name of earlier versions (the default weights' record).
WeightsInfo = WeightsRecord


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_dir() -> Path:
    """The package's ``weights`` folder (a data folder, not this module)."""
    return _weights_dir()


def _weights_dir() -> Path:
    return Path(str(resources.files("featherface"))) / "weights"


def _manifest() -> dict[str, Any]:
    path = _weights_dir() / MANIFEST
    if not path.exists():
        raise FeatherFaceError("no pretrained weights are bundled with this featherface build; pass a checkpoint, "
                               "e.g. FaceDetector('featherface_train_mobilenet0.25_Final.pth') or "
                               "`featherface detect IMAGE --model CHECKPOINT`")
    return json.loads(path.read_text())


def list_weights() -> list[WeightsRecord]:
    """Every shipped record, the default first."""
    data = _manifest()
    default = data.get("default")
    names = sorted(data["models"], key=lambda n: (n != default, n))
    return [WeightsRecord.from_dict(n, data["models"][n]) for n in names]


def default_model_name() -> str:
    """Zoo name of the default model (``FaceDetector()`` with no argument)."""
    return str(_manifest()["default"])


def weights_record(name: str) -> WeightsRecord:
    """The record of zoo model ``name`` (a one-line error naming the known ones otherwise)."""
    models = _manifest()["models"]
    if name not in models:
        raise FeatherFaceError(f"no pretrained weights named {name!r}; shipped: {', '.join(sorted(models))}")
    return WeightsRecord.from_dict(name, models[name])


def weights_file(name: str, kind: str = "pth") -> Path:
    """Path of a shipped file of zoo model ``name`` (``kind``: ``pth``, ``onnx`` or ``web``) after checking its
    SHA-256 against the manifest."""
    if kind not in FILE_KINDS:
        raise ValueError(f"kind must be one of {FILE_KINDS}, got {kind!r}")
    record = weights_record(name)
    file, digest = {"pth": (record.file, record.sha256), "onnx": (record.onnx_file, record.onnx_sha256),
                    "web": (record.web_onnx_file, record.web_onnx_sha256)}[kind]
    if not file:
        raise FeatherFaceError(f"{name}: no {kind} file is shipped for this model")
    path = _weights_dir() / file
    if not path.exists():
        raise CheckpointError(f"{path}: bundled weights are missing from the installation")
    actual = sha256_of(path)
    if actual != digest:
        raise CheckpointError(f"{path}: SHA-256 {actual[:16]}… does not match the manifest ({digest[:16]}…); "
                              "the bundled weights are corrupt, reinstall featherface")
    return path


def default_weights_info() -> WeightsRecord:
    """The record of the default model."""
    return weights_record(default_model_name())


def default_weights_path() -> Path:
    """Path of the default model's checkpoint after verifying its SHA-256."""
    return weights_file(default_model_name(), "pth")


def example_photo_path() -> Path:
    """The bundled example photo (``assets/grace_hopper.jpg``, public domain; source in the README): the quick
    start's input, the browser page's example and the real-image input of the export parity checks."""
    return Path(str(resources.files("featherface"))) / "assets" / "grace_hopper.jpg"
