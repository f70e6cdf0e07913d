"""Checkpoint format, strict loading, upstream converter, teacher check and golden outputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from featherface.checkpoint import (
    ModelSource,
    convert_upstream,
    convert_upstream_state_dict,
    detect_architecture,
    load_any_model,
    load_model,
    read_checkpoint,
    read_state_dict,
    resolve_model_source,
    save_checkpoint,
    state_dict_mismatch,
)
from featherface.errors import CheckpointError
from featherface.models import build_model
from featherface.teacher_check import check_teacher

from helpers import GOLDEN, RETINAFACE, TEACHER, VAL_IMAGES, needs_golden, needs_retinaface, needs_teacher


def test_round_trip_is_self_describing(tmp_path):
    model = build_model("featherface_v2", bifpn_cells=3)
    path = save_checkpoint(tmp_path / "m.pth", model, extra={"epoch": 3})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "featherface" and raw["model_name"] == "featherface_v2"
    assert raw["model_config"]["bifpn_cells"] == 3 and "featherface_version" in raw
    loaded = load_model(path)
    assert loaded.config.bifpn_cells == 3
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_strict_loading_lists_missing_and_unexpected_keys(tmp_path):
    sd = build_model("featherface_v1").state_dict()
    sd.pop("ssh1.conv3X3.0.offset_conv.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad.pth")
    msg = str(err.value)
    assert "1 missing keys [ssh1.conv3X3.0.offset_conv.weight]" in msg
    assert "1 unexpected keys [extra.weight]" in msg


def test_converter_handles_wrappers_prefixes_and_thop_buffers():
    sd = build_model("featherface_v1").state_dict()
    messy = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    messy["state_dict"]["module.total_ops"] = torch.zeros(1, dtype=torch.float64)
    messy["state_dict"]["module.body.total_params"] = torch.zeros(1, dtype=torch.float64)
    clean = convert_upstream_state_dict(messy)
    assert set(clean) == set(sd)
    assert detect_architecture(clean) == "featherface_v1"
    # ... and says what it did, in order
    report = convert_upstream(messy)
    assert report.layout == ["wrapped in 'state_dict'", "'module.' prefixes stripped (DataParallel)",
                             "2 thop profiler buffers dropped (total_ops/total_params)"]
    assert report.model_name is None and set(report.state_dict) == set(sd)
    assert convert_upstream(dict(sd)).layout == [f"plain state dict, {len(sd)} keys"]


def test_featherface_checkpoints_report_their_model_and_the_public_loader(tmp_path):
    model = build_model("featherface_v2", bifpn_cells=1)
    path = save_checkpoint(tmp_path / "m.pth", model)
    report = convert_upstream(read_checkpoint(path))
    assert report.layout == ["featherface checkpoint v1, model featherface_v2"]
    assert report.model_name == "featherface_v2" and report.model_config["bifpn_cells"] == 1
    sd = read_state_dict(path)
    assert not state_dict_mismatch(model, sd)
    diff = state_dict_mismatch(build_model("featherface_v2"), sd)
    assert diff and diff.missing and not diff.unexpected


def test_one_resolver_for_names_files_onnx_and_the_default(tmp_path, monkeypatch):
    from featherface.errors import FeatherFaceError
    from featherface.pretrained import default_weights_path, weights_file

    default = ModelSource("pretrained", path=default_weights_path(), name="featherface_v2",
                          onnx_path=weights_file("featherface_v2", "onnx"))
    assert resolve_model_source(None) == default == resolve_model_source("featherface_v2")
    assert resolve_model_source("featherface_v1").path == weights_file("featherface_v1")
    assert resolve_model_source("featherface_v2", pretrained=False) == ModelSource("name", name="featherface_v2")
    assert resolve_model_source(None, pretrained=False) == ModelSource("name", name="featherface_v2")
    ckpt = save_checkpoint(tmp_path / "m.pth", build_model("featherface_v2"))
    assert resolve_model_source(ckpt) == ModelSource("checkpoint", path=ckpt)
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert resolve_model_source(tmp_path / "m.onnx").kind == "onnx"
    monkeypatch.chdir(tmp_path)  # an existing file wins over a model name of the same spelling
    (tmp_path / "featherface_v1").write_bytes(ckpt.read_bytes())
    assert resolve_model_source("featherface_v1") == ModelSource("checkpoint", path=Path("featherface_v1"))
    assert load_any_model("featherface_v1").model_name == "featherface_v2"
    with pytest.raises(FeatherFaceError, match="unknown model 'featherface_v9'"):
        resolve_model_source("featherface_v9")
    assert resolve_model_source("missing/x.pth").kind == "checkpoint"
    with pytest.raises(CheckpointError, match="not found"):
        load_any_model("missing/x.pth")
    with pytest.raises(FeatherFaceError, match="ONNX"):
        load_any_model(tmp_path / "m.onnx")
    assert load_any_model("featherface_v2", overrides={"bifpn_cells": 1},
                          pretrained=False).config.bifpn_cells == 1
    with pytest.raises(FeatherFaceError, match="overrides"):  # the shipped weights have their own config
        load_any_model("featherface_v2", overrides={"bifpn_cells": 1})
    with pytest.raises(FeatherFaceError, match="overrides"):
        load_any_model(ckpt, overrides={"bifpn_cells": 1})


@pytest.mark.parametrize("content,needle", [(b"", "empty"), (b"not a checkpoint at all", "not a readable checkpoint")])
def test_bad_files_give_one_line_errors(tmp_path, content, needle):
    p = tmp_path / "x.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle):
        read_checkpoint(p)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "m.pth", build_model("featherface_v2"))
    data = path.read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path / "t.pth")
    report = check_teacher(tmp_path / "t.pth")
    assert not report.ok and "cannot be read" in report.verdict


def test_check_teacher_rejects_a_v2_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "v2.pth", build_model("featherface_v2"))
    report = check_teacher(path)
    assert not report.ok and report.architecture == "featherface_v2" and "student" in report.verdict


@needs_retinaface
def test_check_teacher_rejects_retinaface():
    report = check_teacher(RETINAFACE)
    assert not report.ok and report.architecture == "retinaface_fpn"
    assert report.parameters == 426_608


@needs_teacher
def test_upstream_teacher_loads_strictly_and_passes_the_check():
    raw = torch.load(TEACHER, map_location="cpu", weights_only=True)
    assert sum(v.numel() for v in raw.values()) == 601_697
    report = check_teacher(TEACHER)
    assert report.ok, report.verdict
    assert report.parameters == 592_371
    assert report.output_shapes == [(1, 16800, 4), (1, 16800, 2), (1, 16800, 10)]


@needs_teacher
@needs_golden
@pytest.mark.parametrize("stem", sorted(p.stem for p in GOLDEN.glob("*.npz")) if GOLDEN.exists() else [])
def test_teacher_reproduces_golden_outputs(stem):
    from featherface.api import FaceDetector, preprocess
    from featherface.imageio import load_image

    golden = np.load(GOLDEN / f"{stem}.npz")
    image = load_image(VAL_IMAGES / str(golden["image"]))
    model = load_model(TEACHER)
    with torch.no_grad():
        out = model(torch.from_numpy(preprocess(image))[None])
    assert np.abs(out.boxes.numpy() - golden["loc"]).max() < 1e-4
    assert np.abs(torch.softmax(out.logits, -1).numpy() - golden["conf"]).max() < 1e-4
    assert np.abs(out.landmarks.numpy() - golden["landms"]).max() < 1e-4
    ref = np.asarray(json.loads((GOLDEN / f"{stem}.json").read_text())["detections"], dtype=np.float64)
    det = FaceDetector(model, score_threshold=0.02, top_k=None, keep_top_k=None)
    boxes, scores, lms = det.detect_arrays(image)
    got = np.concatenate([boxes, scores[:, None], lms], axis=1).astype(np.float64)
    assert abs(len(got) - len(ref)) <= max(2, len(ref) // 200)  # near-tie scores at the 0.02 cut may flip
    confident = ref[ref[:, 4] > 0.5]
    mine = got[got[:, 4] > 0.5]
    assert len(confident) == len(mine)
    order_r, order_m = np.lexsort(confident[:, :4].T), np.lexsort(mine[:, :4].T)
    assert np.abs(confident[order_r] - mine[order_m]).max() < 1e-2
