"""Latency work of issue 18: every shortcut must give exactly (or within 1e-4) what the plain path gives.

* the pre-selection of candidates by logit difference (:func:`featherface.geometry.postprocess._numpy_keep`) gives
  the same anchors and bit-identical scores as a softmax over every anchor;
* pre-processing into a reused buffer gives the same input as a fresh array;
* the shipped ONNX file, run by ``FaceDetector()`` (ONNX Runtime, reused input buffer, pre-selection), matches the
  PyTorch checkpoint on raw outputs (<= 1e-4) and finds the same faces;
* the optional OpenVINO backend (skipped without ``openvino``) matches PyTorch the same way.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from featherface.geometry.postprocess import _numpy_keep, decode_detections, face_scores
from featherface.preprocessing import preprocess

PHOTO = Path(__file__).resolve().parents[1] / "src/featherface/assets/grace_hopper.jpg"


def _photo4() -> np.ndarray:
    import cv2

    photo = cv2.imread(str(PHOTO))
    return np.ascontiguousarray(np.concatenate([np.concatenate([photo, photo[:, ::-1]], 1)] * 2, 0))  # four faces


@pytest.mark.parametrize("threshold", [0.0, 0.02, 0.3, 0.5, 0.9, 0.999, 1.0])
def test_logit_preselection_is_exact(threshold):
    rng = np.random.default_rng(1)
    for n, spread in ((12_600, 4.0), (5_000, 12.0), (33, 1.0), (0, 1.0)):
        logits = (rng.standard_normal((n, 2)) * spread).astype(np.float32)
        if n:
            logits[: n // 10, 1] = logits[: n // 10, 0] + np.float32(np.log(threshold / (1 - threshold))
                                                                     if 0 < threshold < 1 else 0.0)  # on the cut
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


def test_preprocess_into_buffer_is_identical():
    img = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    fresh = preprocess(img)
    buf = np.full((1, 3, 37, 53), np.nan, np.float32)
    out = preprocess(img, out=buf)
    assert out is buf
    np.testing.assert_array_equal(out[0], fresh)
    with pytest.raises(ValueError):
        preprocess(img, out=np.empty((3, 37, 54), np.float32))


def test_detector_input_buffer_reuse_and_threads():
    from featherface.api import FaceDetector

    det = FaceDetector(num_threads=1, score_threshold=0.3)
    img = _photo4()
    first = det.detect_arrays(img)
    small = det.detect_arrays(img[:200, :300].copy())  # another size: a new buffer
    again = det.detect_arrays(img)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert len(first.scores) >= 4 and len(small.scores) >= 1
    results = {}

    def work(i):
        results[i] = det.detect_arrays(img if i % 2 else img[:200, :300].copy())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in results.items():
        ref = first if i % 2 else small
        np.testing.assert_array_equal(r.boxes, ref.boxes)


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
    for a, b in zip(raw, raw_ref):
        assert float(np.abs(a - b).max()) <= 1e-4
    _assert_same_faces(ref, det.detect_arrays(img))


def test_openvino_backend_parity_with_pytorch():
    pytest.importorskip("openvino", reason="the optional OpenVINO backend needs: pip install 'featherface[openvino]'")
    from featherface.api import FaceDetector

    img = _photo4()
    ref, raw_ref, x = _torch_reference(img)
    det = FaceDetector(num_threads=1, score_threshold=0.3, backend="openvino")
    assert det.backend == "openvino"
    raw = det.model.run_numpy(x)
    for a, b in zip(raw, raw_ref):
        assert a.shape == b.shape and float(np.abs(a - b).max()) <= 1e-4
    _assert_same_faces(ref, det.detect_arrays(img))
    small = img[:161, :243].copy()  # another (odd) size: another compiled shape
    ref_small = FaceDetector(backend="torch", score_threshold=0.3).detect_arrays(small)
    got_small = det.detect_arrays(small)
    assert len(got_small.scores) == len(ref_small.scores)
    np.testing.assert_allclose(got_small.boxes, ref_small.boxes, atol=1e-3)
    assert len(det.detect(img)) == len(ref.scores)
