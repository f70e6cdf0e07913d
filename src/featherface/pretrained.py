"""The default weights bundled inside the package, checked by SHA-256 before use."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from featherface.errors import CheckpointError, FeatherFaceError

__all__ = ["WeightsInfo", "default_weights_info", "default_weights_path", "sha256_of"]

_MANIFEST = "default.json"


@dataclass(frozen=True)
class WeightsInfo:
    """Manifest of a bundled weights file: file name, sha256, model name, parameter count and provenance."""

    file: str
    sha256: str
    model_name: str
    params: int
    notes: str = ""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _weights_dir() -> Path:
    return Path(str(resources.files("featherface"))) / "weights"  # data folder, not this module


def default_weights_info() -> WeightsInfo:
    manifest = _weights_dir() / _MANIFEST
    if not manifest.exists():
        raise FeatherFaceError("no default weights are bundled with this featherface build yet; pass a checkpoint, "
                               "e.g. FaceDetector('featherface_train_mobilenet0.25_Final.pth') or "
                               "`featherface detect IMAGE --model CHECKPOINT`")
    data = json.loads(manifest.read_text())
    return WeightsInfo(**data)


def default_weights_path() -> Path:
    """Path of the bundled default weights after verifying their SHA-256."""
    info = default_weights_info()
    path = _weights_dir() / info.file
    if not path.exists():
        raise CheckpointError(f"{path}: bundled default weights are missing from the installation")
    digest = sha256_of(path)
    if digest != info.sha256:
        raise CheckpointError(f"{path}: SHA-256 {digest[:16]}… does not match the manifest ({info.sha256[:16]}…); "
                              "the bundled weights are corrupt, reinstall featherface")
    return path
