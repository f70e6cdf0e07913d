"""The model zoo shipped in the package: records, SHA-256 checks, the ONNX files that the default path runs, and
their agreement with the PyTorch checkpoints they were generated from."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featherface import pretrained
from featherface.api import FaceDetector
from featherface.errors import CheckpointError, FeatherFaceError
from featherface.models.stats import count_parameters

ASSET = Path(__file__).resolve().parents[1] / "src" / "featherface" / "assets" / "grace_hopper.jpg"
VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface" / "val"
MB = 1024 * 1024


def test_every_shipped_file_is_small_and_matches_the_manifest():
    records = pretrained.list_weights()
    assert [r.name for r in records][:1] == [pretrained.default_model_name()] == ["featherface_v2"]
    assert {r.name for r in records} == {"featherface_v2", "featherface_v1"}
    for r in records:
        for kind, file in (("pth", r.file), ("onnx", r.onnx_file), ("web", r.web_onnx_file)):
            if not file:
                continue
            path = pretrained.weights_file(r.name, kind)  # raises on a digest mismatch
            assert path.stat().st_size < 1.5 * MB, path
        assert r.licence.startswith("MIT") and r.source and r.preprocessing["color_order"] == "BGR"
        assert r.macs["640x480"] > 0
    assert pretrained.weights_record("featherface_v2").params == 256_156
    assert pretrained.weights_record("featherface_v1").params == 592_371
    assert pretrained.weights_record("featherface_v1").storage_dtype == "float16"


def test_records_carry_the_parameter_count_of_their_checkpoint():
    from featherface.checkpoint import load_model

    for r in pretrained.list_weights():
        model = load_model(pretrained.weights_file(r.name))
        assert count_parameters(model) == r.params and model.model_name == r.model_name
        assert model.preprocessing.to_dict() == r.preprocessing


def test_default_detector_runs_the_shipped_onnx_and_finds_the_bundled_face():
    det = FaceDetector()
    assert det.backend == "onnxruntime" and det.model_name == "featherface_v2"
    assert det.source.kind == "pretrained" and det.source.onnx_path.name == "featherface_v2_default.onnx"
    faces = det.detect(ASSET)
    assert len(faces) == 1 and faces[0].score > 0.9
    x1, y1, x2, y2 = faces[0].box
    assert 150 < x1 < 220 and 90 < y1 < 150 and 300 < x2 < 380 and 300 < y2 < 370  # the teacher: 174,114,350,333


def test_models_by_name_and_untrained_only_when_asked():
    v1 = FaceDetector("featherface_v1")
    assert v1.model_name == "featherface_v1" and v1.backend == "onnxruntime"
    assert len(v1.detect(ASSET)) == 1
    v2_torch = FaceDetector("featherface_v2", backend="torch")
    assert v2_torch.backend == "torch" and count_parameters(v2_torch.model) == 256_156
    with _no_warning():  # explicit: no 'untrained' warning
        untrained = FaceDetector("featherface_v2", pretrained=False)
    assert untrained.backend == "torch" and untrained.source.kind == "name"
    with pytest.raises(FeatherFaceError, match="unknown model 'featherface_v3'"):
        FaceDetector("featherface_v3")


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _val_dev_images(n: int) -> list[Path]:
    if not (VAL / "val-dev.txt").is_file():
        pytest.skip(f"needs the WIDER val-dev images in {VAL} (../shared is absent)")
    names = [line.strip() for line in (VAL / "val-dev.txt").read_text().splitlines() if line.strip()]
    step = max(1, len(names) // n)
    return [VAL / "images" / name for name in names[::step][:n]]


def _worst_backend_difference(name: str, images: list[Path], resize) -> tuple[float, float, int]:
    """Largest box (px) and score differences between the ONNX Runtime and PyTorch forms of zoo model ``name`` over
    ``images``, faces paired by nearest box; faces with a score within 1e-3 of the threshold are left out (one
    runtime may keep them and the other not). Also returns the number of faces compared."""
    ort = FaceDetector(name, backend="onnxruntime", score_threshold=0.3, resize=resize)
    pth = FaceDetector(name, backend="torch", score_threshold=0.3, resize=resize)
    worst_box = worst_score = 0.0
    compared = 0
    for path in images:
        picture = ort.load(path).image
        a, b = ort.detect_arrays(picture), pth.detect_arrays(picture)
        assert abs(len(a.scores) - len(b.scores)) <= 1, path
        for box, score in zip(a.boxes, a.scores):
            if len(b.boxes) == 0 or abs(score - 0.3) < 1e-3:
                continue
            k = int(np.argmin(np.abs(b.boxes - box).max(axis=1)))
            if abs(b.scores[k] - 0.3) < 1e-3:
                continue
            worst_box = max(worst_box, float(np.abs(b.boxes[k] - box).max()))
            worst_score = max(worst_score, float(abs(b.scores[k] - score)))
            compared += 1
    return worst_box, worst_score, compared


@pytest.mark.parametrize("name", ["featherface_v2", "featherface_v1"])
def test_shipped_onnx_gives_the_checkpoints_detections_on_val_dev(name):
    """The two shipped forms of a model cannot drift apart: the same faces (boxes within 1e-3 px, scores within
    1e-4) from ONNX Runtime and PyTorch on val-dev images (a few here; all 385 in the slow test below)."""
    images = _val_dev_images(6 if name == "featherface_v2" else 3)
    worst_box, worst_score, compared = _worst_backend_difference(name, images, 640)
    assert compared > 10 and worst_box <= 1e-3 and worst_score <= 1e-4, (worst_box, worst_score)


@pytest.mark.slow
def test_default_onnx_and_checkpoint_agree_on_all_val_dev_images_at_original_size():
    worst_box, worst_score, compared = _worst_backend_difference("featherface_v2", _val_dev_images(385), None)
    print(f"\n385 val-dev images, original size: {compared} faces, max |box diff| {worst_box:.2e} px, "
          f"max |score diff| {worst_score:.2e}")
    assert worst_box <= 1e-3 and worst_score <= 1e-4


def test_a_corrupted_copy_is_refused(tmp_path, monkeypatch):
    src = pretrained._weights_dir()
    for path in src.iterdir():
        shutil.copy(path, tmp_path / path.name)
    manifest = json.loads((tmp_path / pretrained.MANIFEST).read_text())
    target = tmp_path / manifest["models"]["featherface_v2"]["onnx_file"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "_weights_dir", lambda: tmp_path)
    pretrained.default_weights_path()  # the .pth is intact
    with pytest.raises(CheckpointError, match="SHA-256"):
        pretrained.weights_file("featherface_v2", "onnx")
    with pytest.raises(CheckpointError, match="SHA-256"):
        FaceDetector()


def test_half_precision_v1_matches_the_upstream_float32_teacher():
    """featherface_v1 is the upstream teacher with float16-stored weights: on a real photo its scores stay within
    0.01 of the float32 file and it finds the same faces (its val-dev AP is recorded in the manifest)."""
    teacher = VAL.parents[2] / "peers" / "featherface" / "featherface_train_mobilenet0.25_Final.pth"
    if not teacher.is_file():
        pytest.skip(f"needs the upstream teacher {teacher} (../shared is absent)")
    image = _val_dev_images(40)[-1]
    full = FaceDetector(teacher, score_threshold=0.3)
    half = FaceDetector("featherface_v1", backend="torch", score_threshold=0.3)
    onnx = FaceDetector("featherface_v1", score_threshold=0.3)
    picture = full.load(image).image
    a, b, c = (d.detect_arrays(picture) for d in (full, half, onnx))
    assert len(a.scores) > 3 and abs(len(a.scores) - len(b.scores)) <= 1 and len(b.scores) == len(c.scores)
    n = min(len(a.scores), len(b.scores))
    assert np.abs(a.scores[:n] - b.scores[:n]).max() < 0.01
    assert np.abs(b.scores - c.scores).max() < 1e-4
