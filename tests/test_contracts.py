"""One change, every path: the pre-processing record, the anchor spec and the NMS convention are each defined once
and followed by the API, the eval protocols, training, checkpoints, the ONNX export (metadata, ONNX Runtime backend,
in-graph post-processing) and the browser page's pre-processing.

Each test changes one contract in one place (a model's ``preprocessing`` record, its config's anchor fields, the
module constant ``NMS_PIXEL_OFFSET``) and checks that every path sees the change.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from featherface.api import FaceDetector
from featherface.checkpoint import load_model, save_checkpoint
from featherface.geometry import DEFAULT_ANCHORS, AnchorSpec, make_anchors, postprocess
from featherface.models import build_model
from featherface.preprocessing import DEFAULT_PREPROCESSING, Preprocessing, preprocess

from helpers import assert_same_detections_as_sets

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'featherface[onnx]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'featherface[onnx]')")

JS = Path(__file__).resolve().parents[1] / "src" / "featherface" / "web_static" / "featherface.js"
ODD_PRE = Preprocessing(color_order="RGB", mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
ODD_ANCHORS = {"min_sizes": ((12, 24), (48, 96), (192, 384)), "variances": (0.15, 0.25)}


def _v2(**config):
    torch.manual_seed(0)
    m = build_model("featherface_v2", **config).eval()
    with torch.no_grad():  # spread the random scores so a few faces pass a 0.5 threshold
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_var.uniform_(0.5, 1.5)
    return m


class _Recorder(torch.nn.Module):
    """Wraps a model and keeps the last input it was given."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config
        self.preprocessing = model.preprocessing
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        return self.model(x)


def _image(h=48, w=72, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _expected_input(img, pre):
    x = img[..., ::-1] if pre.color_order == "RGB" else img
    return ((x.astype(np.float32) - np.float32(pre.mean)) / np.float32(pre.std)).transpose(2, 0, 1)


# ----------------------------------------------------------------------------------------------- pre-processing
def test_preprocessing_record_is_followed_by_every_path(tmp_path):
    from featherface.data.transforms import Sample, TrainTransform
    from featherface.export.onnx_export import export_onnx
    from featherface.export.ort_backend import OrtModel

    model = _v2()
    model.preprocessing = ODD_PRE
    img = _image()
    want = _expected_input(img, ODD_PRE)
    # the one function
    np.testing.assert_allclose(preprocess(img, preprocessing=ODD_PRE), want, rtol=0, atol=1e-6)
    # the API (and so every eval protocol, which runs FaceDetector.predict_raw)
    rec = _Recorder(model)
    FaceDetector(rec).predict_raw(img)
    np.testing.assert_allclose(rec.seen[0].numpy(), want, rtol=0, atol=1e-6)
    # checkpoints store the record and load_model reads it back
    ckpt = save_checkpoint(tmp_path / "m.pth", model)
    assert load_model(ckpt).preprocessing == ODD_PRE
    # training: the transform's network input is the same function with the same record
    t = TrainTransform(image_size=48, crop_scales=(1.0,), distort=False, mirror_prob=0.0, preprocessing=ODD_PRE)
    x, _ = t.finalize(Sample.create(img[:, :48]))
    np.testing.assert_allclose(x, _expected_input(img[:, :48], ODD_PRE), rtol=0, atol=1e-6)
    # ONNX metadata and the ONNX Runtime backend
    path = export_onnx(model, tmp_path / "m.onnx", check=False)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert {k: v for k, v in json.loads(meta["preprocessing"]).items() if k in ODD_PRE.to_dict()} == ODD_PRE.to_dict()
    ort_model = OrtModel(path)
    assert ort_model.preprocessing == ODD_PRE
    ref = FaceDetector(model, score_threshold=0.3, nms_threshold=1.0).detect_arrays(img)
    got = FaceDetector(path, backend="onnxruntime", score_threshold=0.3, nms_threshold=1.0).detect_arrays(img)
    assert_same_detections_as_sets(ref, got)  # a random network: tied scores, see the helper
    # the browser page reads the same record from the ONNX metadata
    _check_browser_preprocessing(img, meta["preprocessing"], want)


def test_trainer_feeds_the_models_preprocessing(tmp_path):
    from featherface.train.trainer import Trainer

    from test_trainer import make_tiny_dataset, tiny_config

    cfg = tiny_config(tmp_path, make_tiny_dataset(tmp_path / "data", n=2), epochs=1)
    trainer = Trainer(cfg, progress=False)
    try:
        assert trainer.base_dataset.transform.preprocessing is trainer.model.preprocessing
        assert trainer.criterion.variances == trainer.model.config.anchor_spec.variances
        assert torch.equal(trainer.anchors, trainer.model.config.anchor_spec.anchors((64, 64)))
    finally:
        trainer.close()


def _check_browser_preprocessing(img, metadata_json, want):
    node = shutil.which("node")
    if node is None:
        return  # the browser test (tests/test_web.py) covers the page itself where Chromium exists
    h, w = img.shape[:2]
    rgba = np.concatenate([img[..., ::-1], np.full((h, w, 1), 255, np.uint8)], axis=2)  # canvases give RGBA
    script = (f"import {{ preprocess, parsePreprocessing }} from {json.dumps(JS.as_uri())};\n"
              f"const data = Uint8ClampedArray.from({json.dumps(rgba.reshape(-1).tolist())});\n"
              f"const out = preprocess({{ data, width: {w}, height: {h} }}, parsePreprocessing({json.dumps(metadata_json)}));\n"
              "process.stdout.write(JSON.stringify(Array.from(out)));\n")
    res = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = np.asarray(json.loads(res.stdout), np.float32).reshape(3, h, w)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_browser_default_preprocessing_matches_python():
    img = _image(20, 30, seed=1)
    _check_browser_preprocessing(img, json.dumps(DEFAULT_PREPROCESSING.to_dict()), preprocess(img))


# ------------------------------------------------------------------------------------------------------ anchors
def test_anchor_spec_in_the_model_config_is_followed_by_every_path(tmp_path):
    from featherface.export.onnx_export import export_onnx
    from featherface.export.ort_backend import OrtModel
    from featherface.export.postprocess_graph import PostprocessWrapper
    from featherface.train.loss import DetectionLoss  # noqa: F401  (the trainer builds it from the spec, see above)

    model = _v2(**ODD_ANCHORS)
    spec = model.config.anchor_spec
    assert spec != DEFAULT_ANCHORS and spec.variances == (0.15, 0.25)
    img = _image()
    h, w = img.shape[:2]
    # the API decodes with the model's spec
    det = FaceDetector(model, score_threshold=0.3)
    assert det.anchor_spec == spec
    with torch.no_grad():
        out = model(torch.from_numpy(preprocess(img))[None])
    lib = postprocess(out.boxes[0], out.logits[0], out.landmarks[0], spec.anchors((h, w)), (h, w),
                      variances=spec.variances, score_threshold=0.3, top_k=5000, keep_top_k=750)
    api = det.detect_arrays(img)
    for a, b in zip(lib, api):
        np.testing.assert_array_equal(a, b)
    default = postprocess(out.boxes[0], out.logits[0], out.landmarks[0], make_anchors((h, w)), (h, w),
                          variances=DEFAULT_ANCHORS.variances, score_threshold=0.3)
    assert not np.array_equal(default.boxes, lib.boxes)  # the spec really changes the boxes
    # checkpoints keep it (it is part of the model config)
    assert load_model(save_checkpoint(tmp_path / "m.pth", model)).config.anchor_spec == spec
    # ONNX metadata, the ONNX Runtime backend and the in-graph post-processing
    raw = export_onnx(model, tmp_path / "raw.onnx", check=False)
    meta = {p.key: p.value for p in onnx.load(str(raw)).metadata_props}
    assert AnchorSpec.from_dict(json.loads(meta["anchors"])) == spec
    assert OrtModel(raw).anchor_spec == spec
    got = FaceDetector(raw, backend="onnxruntime", score_threshold=0.3, nms_threshold=1.0).detect_arrays(img)
    assert_same_detections_as_sets(got, FaceDetector(model, score_threshold=0.3, nms_threshold=1.0).detect_arrays(img))
    assert PostprocessWrapper(model).anchor_spec == spec
    pp = export_onnx(model, tmp_path / "pp.onnx", with_postprocess=True, check=False)
    from featherface.export.ort_backend import make_session

    x = preprocess(img)[None]
    # IoU threshold 1 suppresses nothing: the graph's decoded candidates must be the Python ones (a random network
    # ties many scores, so NMS tie order would otherwise decide which duplicates survive)
    boxes, scores, lms, _ = make_session(pp).run(None, {"input": x, "score_threshold": np.array([0.3], np.float32),
                                                        "iou_threshold": np.array([1.0], np.float32)})
    every = postprocess(out.boxes[0], out.logits[0], out.landmarks[0], spec.anchors((h, w)), (h, w),
                        variances=spec.variances, score_threshold=0.3, nms_threshold=1.0)
    assert len(scores) == len(every.scores) > 0
    key = np.lexsort(np.concatenate([boxes, lms], 1).T)
    want = np.lexsort(np.concatenate([every.boxes, every.landmarks], 1).T)
    np.testing.assert_allclose(boxes[key], every.boxes[want], atol=1e-3)
    np.testing.assert_allclose(lms[key], every.landmarks[want], atol=1e-3)


def test_anchor_clip_reaches_the_graph():
    from featherface.export.postprocess_graph import graph_anchors

    spec = AnchorSpec(clip=True)
    assert torch.equal(graph_anchors(40, 56, spec.steps, spec.min_sizes, spec.clip), spec.anchors((40, 56)))
    model = _v2(clip=True)
    assert model.config.anchor_spec.clip and FaceDetector(model).anchor_spec.clip


def test_a_model_without_anchor_spec_is_refused():
    from featherface.errors import FeatherFaceError

    class Bare(torch.nn.Module):
        def forward(self, x):  # pragma: no cover - never called
            return x

    with pytest.raises(FeatherFaceError, match="no anchor spec"):
        FaceDetector(Bare())
    bare = Bare()
    bare.anchor_spec = DEFAULT_ANCHORS
    assert FaceDetector(bare).anchor_spec == DEFAULT_ANCHORS


# ---------------------------------------------------------------------------------------------- NMS convention
def test_nms_convention_is_one_constant(monkeypatch, tmp_path):
    """Boxes that overlap with IoU just under the threshold in the "+1" convention but above it in the continuous
    one: switching the one constant changes the API, the eval protocols and the in-graph NMS alike."""
    import sys

    from featherface.eval.protocols import OriginalSize
    from featherface.geometry.postprocess import select_detections

    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10]], np.float32)  # IoU 6/14 = 0.43 continuous, 7/15 = 0.47 "+1"
    scores = np.array([0.9, 0.8], np.float32)
    lms = np.zeros((2, 10), np.float32)

    class Fixed:
        def predict_raw(self, image_bgr, *, scale=1.0, flip=False, score_threshold=0.02):
            return boxes, scores, lms

    img = np.zeros((20, 20, 3), np.uint8)
    assert len(select_detections(boxes, scores, lms, nms_threshold=0.45).scores) == 1  # "+1": 0.47 > 0.45
    assert len(OriginalSize(nms_threshold=0.45).detect(Fixed(), img)) == 1
    # the module (``featherface.geometry.postprocess`` as an attribute is the function of the same name)
    monkeypatch.setattr(sys.modules["featherface.geometry.postprocess"], "NMS_PIXEL_OFFSET", 0.0)
    assert len(select_detections(boxes, scores, lms, nms_threshold=0.45).scores) == 2  # continuous: 0.43
    assert len(OriginalSize(nms_threshold=0.45).detect(Fixed(), img)) == 2
    from featherface.export.postprocess_graph import _nms_offset

    assert _nms_offset() == 0.0
