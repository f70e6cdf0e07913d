"""Latency work of issue 18: every shortcut must give exactly (or within 1e-4) what the plain path gives.

* the pre-selection of candidates by logit difference (:func:`featherface.geometry.postprocess._numpy_keep`) gives
  the same anchors and bit-identical scores as a softmax over every anchor;
* the export with grouped convolutions made dense (:func:`featherface.export.onnx_export.densify_grouped_convs`,
  the default of raw exports) matches PyTorch on raw outputs (float32 rounding: :func:`_assert_raw_close`) and finds the same faces;
* the shipped ONNX file, run by ``FaceDetector()`` (ONNX Runtime, pre-selection), matches the PyTorch checkpoint on
  raw outputs (float32 rounding: :func:`_assert_raw_close`) and finds the same faces;
* the optional OpenVINO backend (skipped without ``openvino``) matches PyTorch the same way. Its tests run in a
  child pytest process (:func:`_in_child_process`): once OpenVINO's TBB thread pool lives in the runner, the later
  DDP test (``tests/test_trainer.py::test_ddp_two_gloo_processes``) crashed the whole runner with SIGSEGV.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featherface.geometry.postprocess import _numpy_keep, decode_detections, face_scores
from featherface.preprocessing import preprocess

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "src/featherface/assets/grace_hopper.jpg"
_CHILD_ENV = "FEATHERFACE_TEST_CHILD"
_NEEDS_OPENVINO = "the optional OpenVINO backend needs: pip install 'featherface[openvino]'"


def _in_child_process(request: pytest.FixtureRequest) -> bool:
    """Run the calling test again in a fresh pytest process and report its outcome here; True in the parent (the
    caller returns), False in the child (the caller runs its body)."""
    if os.environ.get(_CHILD_ENV) == "1":
        return False
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", request.node.nodeid],
                          cwd=REPO, env={**os.environ, _CHILD_ENV: "1"}, capture_output=True, text=True, timeout=900)
    if proc.returncode == 0 and " skipped" in proc.stdout and " passed" not in proc.stdout:
        pytest.skip(proc.stdout.strip().splitlines()[-2][-200:])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return True


def _photo4() -> np.ndarray:
    import cv2

    photo = cv2.imread(str(PHOTO))
    return np.ascontiguousarray(np.concatenate([np.concatenate([photo, photo[:, ::-1]], 1)] * 2, 0))  # four faces


@pytest.mark.parametrize("threshold", [0.0, 1e-6, 0.02, 0.3, 0.5, 0.9, 0.999, 0.99999, 1.0])
def test_logit_preselection_is_exact(threshold):
    rng = np.random.default_rng(1)
    for n, spread in ((12_600, 4.0), (5_000, 12.0), (33, 1.0), (0, 1.0)):
        logits = (rng.standard_normal((n, 2)) * spread).astype(np.float32)
        if n:  # a tenth of the rows on the cut, give or take a few ulp
            cut = np.float32(np.log(threshold / (1 - threshold)) if 0 < threshold < 1 else 0.0)
            jitter = rng.integers(-3, 4, n // 10).astype(np.float32) * np.spacing(np.abs(cut) + np.float32(1))
            logits[: n // 10, 1] = logits[: n // 10, 0] + cut + jitter
        scores_all = face_scores(logits)
        want = np.flatnonzero(scores_all > threshold)
        rows, scores = _numpy_keep(logits, threshold)
        np.testing.assert_array_equal(rows, want)
        np.testing.assert_array_equal(scores, scores_all[want])  # bit for bit


def test_decode_detections_unchanged_by_preselection():
    rng = np.random.default_rng(2)
    a = 2_000
    loc, lms = rng.standard_normal((a, 4)).astype(np.float32), rng.standard_normal((a, 10)).astype(np.float32)
    logits = (rng.standard_normal((a, 2)) * 3).astype(np.float32)
    anchors = np.abs(rng.standard_normal((a, 4))).astype(np.float32) * 0.1 + 0.05
    got = decode_detections(loc, logits, lms, anchors, (240, 320), variances=(0.1, 0.2), score_threshold=0.5)
    keep = face_scores(logits) > 0.5
    from featherface.geometry.decode import decode_boxes

    want_boxes = decode_boxes(loc[keep], anchors[keep], (0.1, 0.2)) * np.asarray([320, 240, 320, 240], np.float32)
    order = face_scores(logits)[keep].argsort()[::-1]
    np.testing.assert_array_equal(got.boxes, want_boxes[order].astype(np.float32))


def test_densify_grouped_convs_same_function():
    torch = pytest.importorskip("torch")
    from featherface.export.onnx_export import densify_grouped_convs
    from featherface.models import build_model
    from featherface.models.blocks import ChannelShuffleLight

    torch.manual_seed(0)
    model = build_model("featherface_v2").eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    dense = densify_grouped_convs(model).eval()
    assert not any(isinstance(m, ChannelShuffleLight) for m in dense.modules())
    assert any(isinstance(m, ChannelShuffleLight) for m in model.modules())  # the original is untouched
    for m in dense.modules():
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels  # only depthwise convs stay grouped
    x = torch.randn(2, 3, 77, 131) * 50
    with torch.no_grad():
        ref, got = model(x), dense(x)
    for a, b in zip(ref, got):
        assert float((a - b).abs().max()) <= 1e-4


@pytest.fixture(scope="module")
def dense_export(tmp_path_factory):
    """The shipped V2 checkpoint exported as ``build_model_zoo.py`` does now (dense grouped convs, the default)."""
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    import onnx

    from featherface.checkpoint import load_model
    from featherface.export.onnx_export import check_parity, export_onnx
    from featherface.pretrained import default_weights_path

    model = load_model(default_weights_path())
    path = export_onnx(model, tmp_path_factory.mktemp("dense") / "v2.onnx")
    graph = onnx.load(str(path)).graph
    grouped = [n for n in graph.node if n.op_type == "Conv"
               and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    inits = {i.name: list(i.dims) for i in graph.initializer}
    for n in grouped:  # depthwise only: weight [C, 1, k, k] with group == C
        dims = inits.get(n.input[1])
        assert dims is None or dims[1] == 1
    assert check_parity(model, path, sizes=[(120, 160), (97, 131)]) <= 1e-4
    return path


def test_dense_export_same_faces_as_pytorch(dense_export):
    from featherface.api import FaceDetector

    img = _photo4()
    ref, raw_ref, x = _torch_reference(img)
    det = FaceDetector(dense_export, num_threads=1, score_threshold=0.3)
    raw = det.model.run_numpy(x)
    _assert_raw_close(raw, raw_ref)
    _assert_same_faces(ref, det.detect_arrays(img))


def _torch_reference(img):
    torch = pytest.importorskip("torch")
    from featherface.api import FaceDetector
    from featherface.pretrained import default_weights_path

    torch.set_num_threads(1)
    det = FaceDetector(default_weights_path(), backend="torch", score_threshold=0.3)
    x = preprocess(img)[None]
    with torch.inference_mode():
        out = det.model(torch.from_numpy(x))
    return det.detect_arrays(img), [t.numpy() for t in (out.boxes, out.logits, out.landmarks)], x


def _assert_raw_close(raw, raw_ref):
    """Raw outputs (boxes, logits, landmarks) equal up to float32 rounding. Rounding from another summation order
    or convolution algorithm scales with the magnitudes summed, not with the output element: with the shipped
    weights outputs reach |8| and a few elements differ by 1.3e-4, so the bound is 1e-4 relative plus 2e-5 of the
    tensor's largest magnitude (at least 2e-5). A wrong rewrite errs by orders of magnitude more."""
    assert len(raw) == len(raw_ref) == 3
    for a, b in zip(raw, raw_ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * max(1.0, float(np.abs(b).max())))


def _assert_same_faces(ref, got, atol=1e-3):
    assert len(ref.scores) == len(got.scores) >= 4
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=atol)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-4)
    np.testing.assert_allclose(got.landmarks, ref.landmarks, atol=atol)


def test_shipped_onnx_default_detector_parity_with_pytorch():
    from featherface.api import FaceDetector

    img = _photo4()
    ref, raw_ref, x = _torch_reference(img)
    det = FaceDetector(num_threads=1, score_threshold=0.3)
    assert det.backend == "onnxruntime"
    raw = det.model.run_numpy(x)
    _assert_raw_close(raw, raw_ref)
    _assert_same_faces(ref, det.detect_arrays(img))


def test_openvino_backend_parity_with_pytorch(request):
    if importlib.util.find_spec("openvino") is None:
        pytest.skip(_NEEDS_OPENVINO)
    if _in_child_process(request):
        return
    from featherface.api import FaceDetector

    img = _photo4()
    ref, raw_ref, x = _torch_reference(img)
    det = FaceDetector(num_threads=1, score_threshold=0.3, backend="openvino")
    assert det.backend == "openvino"
    raw = det.model.run_numpy(x)
    _assert_raw_close(raw, raw_ref)
    _assert_same_faces(ref, det.detect_arrays(img))
    # FaceDetector feeds OpenVINO the uint8 image (pre-processing compiled into the graph): same outputs bit for bit
    got_img = det.model.run_image(img)
    for a, b in zip(got_img, raw):
        np.testing.assert_array_equal(a, b)
    small = img[:161, :243].copy()  # another (odd) size: another compiled shape
    ref_small = FaceDetector(backend="torch", score_threshold=0.3).detect_arrays(small)
    got_small = det.detect_arrays(small)
    assert len(got_small.scores) == len(ref_small.scores)
    np.testing.assert_allclose(got_small.boxes, ref_small.boxes, atol=1e-3)
    assert len(det.detect(img)) == len(ref.scores)
    # resized and mirrored inputs (resize policy, the eval protocols' flip) take the same path as ONNX Runtime
    for kw in ({"resize": 320}, {"resize": 900}):
        a = FaceDetector(backend="openvino", score_threshold=0.3, **kw)
        b = FaceDetector(backend="onnxruntime", score_threshold=0.3, **kw)
        got, want = a.detect_arrays(img), b.detect_arrays(img)
        assert len(got.scores) == len(want.scores)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
    flipped_ov = det.predict_raw(img, scale=0.5, flip=True, score_threshold=0.3)
    flipped_ort = FaceDetector(backend="onnxruntime").predict_raw(img, scale=0.5, flip=True, score_threshold=0.3)
    assert len(flipped_ov.scores) == len(flipped_ort.scores) > 0
    np.testing.assert_allclose(flipped_ov.boxes, flipped_ort.boxes, atol=1e-3)


def test_openvino_backend_missing_or_wrong_file(monkeypatch, tmp_path, request):
    if _in_child_process(request):
        return
    from featherface.api import FaceDetector
    from featherface.errors import FeatherFaceError

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(FeatherFaceError, match="pip install openvino"):
        FaceDetector(backend="openvino")
    monkeypatch.undo()
    if importlib.util.find_spec("openvino") is None:
        pytest.skip(_NEEDS_OPENVINO)
    with pytest.raises(FeatherFaceError, match="not found"):
        FaceDetector(tmp_path / "missing.onnx", backend="openvino")
    with pytest.raises(FeatherFaceError, match="shipped model or a path"):
        FaceDetector(pretrained=False, backend="openvino")
