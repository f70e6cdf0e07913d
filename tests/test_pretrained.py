"""The bundled default V2 weights: SHA-256 checked at load, used by FaceDetector() with no argument."""

import json
import shutil
from pathlib import Path

import pytest

from featherface import pretrained
from featherface.api import FaceDetector
from featherface.errors import CheckpointError
from featherface.models.stats import count_parameters

ASSET = Path(__file__).resolve().parents[1] / "src" / "featherface" / "assets" / "grace_hopper.jpg"


def test_default_weights_are_small_and_verified():
    path = pretrained.default_weights_path()
    info = pretrained.default_weights_info()
    assert path.stat().st_size < 1.5 * 1024 * 1024
    assert pretrained.sha256_of(path) == info.sha256
    assert info.model_name == "featherface_v2" and info.params == 256_156


def test_face_detector_uses_the_default_weights_and_finds_the_bundled_face():
    det = FaceDetector()
    assert det.model_name == "featherface_v2" and count_parameters(det.model) == 256_156
    faces = det.detect(ASSET)
    assert len(faces) == 1 and faces[0].score > 0.9
    x1, y1, x2, y2 = faces[0].box
    assert 150 < x1 < 220 and 90 < y1 < 150 and 300 < x2 < 380 and 300 < y2 < 370  # the teacher: 174,114,350,333


def test_a_corrupted_copy_is_refused(tmp_path, monkeypatch):
    src = pretrained._weights_dir()
    for name in ("default.json", json.loads((src / "default.json").read_text())["file"]):
        shutil.copy(src / name, tmp_path / name)
    target = tmp_path / json.loads((tmp_path / "default.json").read_text())["file"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "_weights_dir", lambda: tmp_path)
    with pytest.raises(CheckpointError, match="SHA-256"):
        pretrained.default_weights_path()
