"""Tests of featherface.geometry: anchors, box / landmark coding, IoU, NMS, post-processing."""

from __future__ import annotations

import importlib
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featherface.geometry import (
    DEFAULT_ANCHORS,
    VARIANCES,
    AnchorSpec,
    box_iou,
    box_iou_np,
    cxcywh_to_xyxy,
    decode_boxes,
    decode_landmarks,
    encode_boxes,
    encode_landmarks,
    make_anchors,
    nms,
    nms_np,
    num_anchors,
    postprocess,
    postprocess_batch,
    select_detections,
    xyxy_to_cxcywh,
)

nms_module = importlib.import_module("featherface.geometry.nms")

V = DEFAULT_ANCHORS.variances

FAST = settings(max_examples=50, deadline=None)


# --------------------------------------------------------------------------------------------------- anchors
def test_anchor_values_at_640():
    a = make_anchors((640, 640))
    assert a.shape == (16800, 4)
    assert a.dtype == torch.float32
    expected = torch.tensor(
        [[0.00625, 0.00625, 0.025, 0.025], [0.00625, 0.00625, 0.05, 0.05], [0.01875, 0.00625, 0.025, 0.025]]
    )
    assert torch.allclose(a[:3], expected, atol=1e-7, rtol=0)
    assert torch.allclose(a[12800], torch.tensor([0.0125, 0.0125, 0.1, 0.1]), atol=1e-7, rtol=0)
    assert torch.allclose(a[16000], torch.tensor([0.025, 0.025, 0.4, 0.4]), atol=1e-7, rtol=0)


def test_anchor_count_700x405():
    assert num_anchors((405, 700)) == 11836
    assert make_anchors((405, 700)).shape == (11836, 4)


@pytest.mark.parametrize("size", [(1, 1), (7, 9), (33, 65), (405, 700), (481, 353), (1023, 769)])
def test_anchor_count_formula(size):
    h, w = size
    expected = sum(2 * math.ceil(h / s) * math.ceil(w / s) for s in (8, 16, 32))
    assert num_anchors(size) == expected
    assert make_anchors(size).shape == (expected, 4)


def _naive_anchors(h, w, steps=(8, 16, 32), min_sizes=((16, 32), (64, 128), (256, 512))):
    out = []
    for step, sizes in zip(steps, min_sizes):
        for i in range(math.ceil(h / step)):
            for j in range(math.ceil(w / step)):
                for m in sizes:
                    out.append([(j + 0.5) * step / w, (i + 0.5) * step / h, m / w, m / h])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("size", [(37, 53), (64, 40)])
def test_anchor_order_matches_naive_loop(size):
    a = make_anchors(size, dtype=torch.float64)
    assert torch.equal(a, _naive_anchors(*size))
    # float32 result is the float64 one rounded once
    assert torch.equal(make_anchors(size), _naive_anchors(*size).float())


def test_anchors_custom_levels_and_cache_copy():
    a = make_anchors((50, 70), steps=(10,), min_sizes=((20,),))
    assert a.shape == (5 * 7, 4)
    assert num_anchors((50, 70), steps=(10,), min_sizes=((20,),)) == 35
    a[0, 0] = 123.0  # mutating a result must not poison the cache
    assert make_anchors((50, 70), steps=(10,), min_sizes=((20,),))[0, 0] != 123.0
    with pytest.raises(ValueError):
        make_anchors((0, 10))
    with pytest.raises(ValueError):
        num_anchors((10, 10), steps=(8, 16), min_sizes=((16,),))


# --------------------------------------------------------------------------------------------------- strategies
@st.composite
def anchors_and_boxes(draw, max_n=20):
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    anchors = np.concatenate([rng.uniform(0, 1, (n, 2)), rng.uniform(0.005, 1.0, (n, 2))], axis=1)
    centre = rng.uniform(-0.2, 1.2, (n, 2))
    size = rng.uniform(0.001, 1.5, (n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    landmarks = rng.uniform(-0.2, 1.2, (n, 10))
    return (
        torch.from_numpy(anchors),
        torch.from_numpy(boxes),
        torch.from_numpy(landmarks),
    )


@st.composite
def pixel_boxes(draw, min_n=0, max_n=60, distinct=True):
    n = draw(st.integers(min_n, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    span = draw(st.sampled_from([50.0, 200.0, 1000.0]))
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, span, (n, 2))
    wh = rng.uniform(0, 120, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    if distinct:
        scores = rng.permutation(n).astype(np.float32) / max(n, 1) + 0.01
    else:
        scores = rng.integers(0, 4, n).astype(np.float32) / 4  # many ties
    return boxes, scores


# --------------------------------------------------------------------------------------------------- coding
@FAST
@given(anchors_and_boxes())
def test_box_round_trip(data):
    anchors, boxes, _ = data
    loc = encode_boxes(boxes, anchors)
    assert torch.isfinite(loc).all()
    back = decode_boxes(loc, anchors)
    assert back.dtype == torch.float64
    assert torch.allclose(back, boxes, atol=1e-9, rtol=1e-9)
    # float32 path
    back32 = decode_boxes(loc.float(), anchors.float())
    assert back32.dtype == torch.float32
    assert torch.allclose(back32.double(), boxes, atol=1e-4, rtol=1e-4)


@FAST
@given(anchors_and_boxes())
def test_landmark_round_trip(data):
    anchors, _, landmarks = data
    enc = encode_landmarks(landmarks, anchors)
    back = decode_landmarks(enc, anchors)
    assert torch.allclose(back, landmarks, atol=1e-9, rtol=1e-9)


@FAST
@given(anchors_and_boxes(), st.integers(1, 3))
def test_coding_batched_leading_dims(data, batch):
    anchors, boxes, landmarks = data
    bb = boxes.expand(batch, *boxes.shape)
    ll = landmarks.expand(batch, *landmarks.shape)
    assert torch.allclose(decode_boxes(encode_boxes(bb, anchors), anchors), bb, atol=1e-9)
    assert torch.allclose(decode_landmarks(encode_landmarks(ll, anchors), anchors), ll, atol=1e-9)


def test_decode_known_value_and_half_input():
    anchors = torch.tensor([[0.5, 0.5, 0.2, 0.1]])
    loc = torch.tensor([[1.0, -1.0, math.log(2) / VARIANCES[1], 0.0]])
    box = decode_boxes(loc, anchors)
    # centre (0.52, 0.49), size (0.4, 0.1)
    assert torch.allclose(box, torch.tensor([[0.32, 0.44, 0.72, 0.54]]), atol=1e-6)
    assert decode_boxes(loc.half(), anchors.half()).dtype == torch.float32
    # huge size offsets stay finite thanks to the clamp
    assert torch.isfinite(decode_boxes(torch.tensor([[0.0, 0.0, 1e6, 1e6]]), anchors)).all()
    lm = decode_landmarks(torch.arange(10.0).view(1, 10), anchors)
    expected = torch.tensor([[0.5 + 0.1 * 0.2 * k if k % 2 == 0 else 0.5 + 0.1 * 0.1 * k for k in range(10)]])
    assert torch.allclose(lm, expected, atol=1e-6)


@FAST
@given(anchors_and_boxes())
def test_horizontal_flip_invariance(data):
    anchors, boxes, landmarks = data
    loc = encode_boxes(boxes, anchors)
    lm = encode_landmarks(landmarks, anchors)
    flipped_anchors = anchors.clone()
    flipped_anchors[:, 0] = 1 - anchors[:, 0]
    flipped_loc = loc.clone()
    flipped_loc[:, 0] = -loc[:, 0]
    flipped_lm = lm.clone()
    flipped_lm[:, 0::2] = -lm[:, 0::2]
    box = decode_boxes(loc, anchors)
    fbox = decode_boxes(flipped_loc, flipped_anchors)
    assert torch.allclose(fbox[:, 0], 1 - box[:, 2], atol=1e-9)
    assert torch.allclose(fbox[:, 2], 1 - box[:, 0], atol=1e-9)
    assert torch.allclose(fbox[:, 1::2], box[:, 1::2], atol=1e-9)
    pts = decode_landmarks(lm, anchors)
    fpts = decode_landmarks(flipped_lm, flipped_anchors)
    assert torch.allclose(fpts[:, 0::2], 1 - pts[:, 0::2], atol=1e-9)
    assert torch.allclose(fpts[:, 1::2], pts[:, 1::2], atol=1e-9)


@FAST
@given(anchors_and_boxes())
def test_format_conversion_round_trip(data):
    anchors, boxes, _ = data
    assert torch.allclose(xyxy_to_cxcywh(cxcywh_to_xyxy(anchors)), anchors, atol=1e-12)
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes, atol=1e-12)


def test_coding_shape_errors():
    with pytest.raises(ValueError):
        decode_boxes(torch.zeros(5, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError):
        encode_landmarks(torch.zeros(5, 8), torch.zeros(5, 4))


# --------------------------------------------------------------------------------------------------- IoU
@FAST
@given(anchors_and_boxes(), anchors_and_boxes())
def test_iou_properties(d1, d2):
    a, b = d1[1], d2[1]
    iou = box_iou(a, b)
    assert iou.shape == (a.shape[0], b.shape[0])
    assert ((iou >= 0) & (iou <= 1 + 1e-12)).all()
    assert torch.allclose(iou, box_iou(b, a).T)
    assert torch.allclose(torch.diagonal(box_iou(a, a)), torch.ones(a.shape[0], dtype=a.dtype))
    assert np.allclose(box_iou_np(a.numpy(), b.numpy()), iou.numpy())


def test_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 0.0]]))
    assert torch.equal(box_iou(b[2:], b[2:]), torch.zeros(1, 1))  # empty vs empty: 0, not NaN
    # "+1" convention: areas 9 and 9, intersection 4
    assert np.allclose(box_iou_np(a.numpy(), b[:1].numpy(), pixel_offset=1.0), [[4 / 14]])


# --------------------------------------------------------------------------------------------------- NMS
def naive_nms(boxes, scores, thresh, offset=1.0, order=None):
    """Reference greedy loop written from the spec (one box at a time)."""
    if order is None:
        order = scores.argsort()[::-1]
    order = list(order)
    keep = []
    removed = set()
    for pos, i in enumerate(order):
        if i in removed:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            if j in removed:
                continue
            xx1 = max(boxes[i, 0], boxes[j, 0])
            yy1 = max(boxes[i, 1], boxes[j, 1])
            xx2 = min(boxes[i, 2], boxes[j, 2])
            yy2 = min(boxes[i, 3], boxes[j, 3])
            w = max(0.0, xx2 - xx1 + offset)
            h = max(0.0, yy2 - yy1 + offset)
            inter = w * h
            area_i = (boxes[i, 2] - boxes[i, 0] + offset) * (boxes[i, 3] - boxes[i, 1] + offset)
            area_j = (boxes[j, 2] - boxes[j, 0] + offset) * (boxes[j, 3] - boxes[j, 1] + offset)
            if inter / (area_i + area_j - inter) > thresh:
                removed.add(j)
    return np.array(keep, dtype=np.int64)


def _both_paths(fn):
    """Run fn once with the sparse NMS path forced and once with the dense one."""

    def run(monkeypatch_value):
        old = nms_module._SPARSE_FRACTION
        nms_module._SPARSE_FRACTION = monkeypatch_value
        try:
            return fn()
        finally:
            nms_module._SPARSE_FRACTION = old

    return run(1.0), run(-1.0)


@FAST
@given(pixel_boxes(), st.sampled_from([0.3, 0.4, 0.5, 0.7]), st.sampled_from([0.0, 1.0]))
def test_nms_equals_naive_reference(data, thresh, offset):
    boxes, scores = data
    b64 = boxes.astype(np.float64)
    expected = naive_nms(b64, scores, thresh, offset)
    for got in _both_paths(lambda: nms_np(b64, scores, thresh, pixel_offset=offset)):
        assert np.array_equal(got, expected)
    got_t = nms(torch.from_numpy(b64), torch.from_numpy(scores), thresh, pixel_offset=offset)
    assert got_t.dtype == torch.long
    assert np.array_equal(got_t.numpy(), expected)  # distinct scores: tie rule irrelevant


@FAST
@given(pixel_boxes(distinct=False), st.sampled_from([0.3, 0.4]))
def test_nms_ties_follow_upstream_order_by_default(data, thresh):
    boxes, scores = data
    b64 = boxes.astype(np.float64)
    assert np.array_equal(nms_np(b64, scores, thresh), naive_nms(b64, scores, thresh))
    stable = np.argsort(-scores, kind="stable")
    expected_stable = naive_nms(b64, scores, thresh, order=stable)
    assert np.array_equal(nms_np(b64, scores, thresh, stable=True), expected_stable)
    assert np.array_equal(nms(torch.from_numpy(b64), torch.from_numpy(scores), thresh).numpy(), expected_stable)


@FAST
@given(pixel_boxes(min_n=1), st.integers(0, 2**32 - 1))
def test_nms_permutation_invariant(data, seed):
    boxes, scores = data
    perm = np.random.default_rng(seed).permutation(len(scores))
    a = nms_np(boxes, scores, 0.4)
    b = perm[nms_np(boxes[perm], scores[perm], 0.4)]
    assert np.array_equal(a, b)


@FAST
@given(pixel_boxes(), st.sampled_from([0.2, 0.4, 0.6]))
def test_nms_keeps_no_overlapping_pair_and_sorted(data, thresh):
    boxes, scores = data
    keep = nms_np(boxes, scores, thresh)
    assert len(set(keep.tolist())) == len(keep)
    assert np.all(np.diff(scores[keep]) <= 0)
    kept = boxes[keep].astype(np.float64)
    iou = box_iou_np(kept, kept, pixel_offset=1.0)
    np.fill_diagonal(iou, 0)
    assert (iou <= thresh + 1e-6).all()
    # every suppressed box overlaps some kept box with a higher score
    suppressed = np.setdiff1d(np.arange(len(scores)), keep)
    if suppressed.size:
        ov = box_iou_np(boxes[suppressed].astype(np.float64), kept, pixel_offset=1.0)
        assert (ov > thresh - 1e-6).any(axis=1).all()


def test_nms_empty_and_errors():
    assert nms_np(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).shape == (0,)
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.4).shape == (0,)
    with pytest.raises(ValueError):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.4)


def _upstream_loop_case(max_side, n=5000):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (n, 2))
    wh = rng.uniform(5, max_side, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.random(n).astype(np.float32)
    # the upstream-style loop: one kept box per step, float32 arithmetic
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    expected = []
    while order.size > 0:
        i = order[0]
        expected.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        order = order[np.where(inter / (areas[i] + areas[order[1:]] - inter) <= 0.4)[0] + 1]
    return boxes, scores, np.array(expected)


@pytest.mark.parametrize("max_side", [20, 100, 400])
def test_nms_float32_matches_upstream_vectorised_loop(max_side):
    boxes, scores, expected = _upstream_loop_case(max_side)
    assert np.array_equal(nms_np(boxes, scores, 0.4), expected)


@pytest.mark.slow
def test_nms_speed_on_5000_boxes():
    """Timing (shared CI CPUs make wall-clock bounds flaky, hence slow-marked): typically 10-60 ms on an idle core."""
    for max_side in (20, 100, 400):
        boxes, scores, expected = _upstream_loop_case(max_side)
        best = math.inf
        for _ in range(3):
            t = time.perf_counter()
            keep = nms_np(boxes, scores, 0.4)
            best = min(best, time.perf_counter() - t)
        assert np.array_equal(keep, expected)
        assert best < 0.5, f"nms_np on 5000 boxes took {best * 1e3:.0f} ms"


# --------------------------------------------------------------------------------------------------- postprocess
def _reference_pipeline(loc, logits, lms, anchors, h, w, thresh, nms_thresh, scale):
    boxes = decode_boxes(loc, anchors) * torch.tensor([w, h, w, h]) / scale
    points = decode_landmarks(lms, anchors) * torch.tensor([w, h] * 5) / scale
    scores = torch.softmax(logits, -1)[:, 1].numpy()
    boxes, points = boxes.numpy(), points.numpy()
    inds = np.where(scores > thresh)[0]
    boxes, points, scores = boxes[inds], points[inds], scores[inds]
    order = scores.argsort()[::-1]
    boxes, points, scores = boxes[order], points[order], scores[order]
    keep = naive_nms(boxes, scores, nms_thresh, 1.0)
    return boxes[keep], scores[keep], points[keep]


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_postprocess_matches_reference_pipeline(scale):
    h, w = 72, 100
    anchors = make_anchors((h, w))
    a = anchors.shape[0]
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(a, 4, generator=g) * 0.5
    logits = torch.randn(a, 2, generator=g) * 2
    lms = torch.randn(a, 10, generator=g)
    det = postprocess(loc, logits, lms, anchors, (h, w), variances=V, score_threshold=0.3, scale=scale)
    boxes, scores, points = _reference_pipeline(loc, logits, lms, anchors, h, w, 0.3, 0.4, scale)
    assert det.boxes.dtype == np.float32 and det.boxes.shape == boxes.shape
    assert np.array_equal(det.boxes, boxes)
    assert np.array_equal(det.scores, scores)
    assert np.array_equal(det.landmarks, points)
    assert (det.scores > 0.3).all()
    assert np.all(np.diff(det.scores) <= 0)


def test_postprocess_known_face_and_options():
    h, w = 64, 64
    anchors = make_anchors((h, w))
    a = anchors.shape[0]
    face = torch.tensor([[10.0, 12.0, 30.0, 36.0]]) / torch.tensor([w, h, w, h])
    loc = encode_boxes(face.expand(a, 4), anchors)
    lm_true = torch.tensor([[14.0, 20, 26, 20, 20, 26, 15, 31, 25, 31]]) / torch.tensor([w, h] * 5)
    lms = encode_landmarks(lm_true.expand(a, 10), anchors)
    logits = torch.zeros(a, 2)
    logits[:, 1] = torch.linspace(-3, 3, a)  # every anchor predicts the same face, distinct scores
    det = postprocess(loc, logits, lms, anchors, (h, w), variances=V, scale=2.0)
    assert det.boxes.shape == (1, 4)  # all identical boxes collapse into one
    assert np.allclose(det.boxes[0], np.array([10, 12, 30, 36]) / 2.0, atol=1e-3)
    assert np.allclose(det.landmarks[0], np.array([14, 20, 26, 20, 20, 26, 15, 31, 25, 31]) / 2.0, atol=1e-3)
    assert det.scores[0] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item(), abs=1e-6)
    # strict threshold: a score equal to the threshold is dropped
    thr = float(torch.softmax(logits, -1)[:, 1].max())
    assert len(postprocess(loc, logits, lms, anchors, (h, w), variances=V, score_threshold=thr).scores) == 0
    # no NMS suppression possible with threshold 1.0 -> keep_top_k / top_k cut
    many = postprocess(loc, logits, lms, anchors, (h, w), variances=V, nms_threshold=1.0, top_k=50, keep_top_k=7)
    assert len(many.scores) == 7
    assert np.all(np.diff(many.scores) <= 0)
    assert len(postprocess(loc, logits, lms, anchors, (h, w), variances=V, nms_threshold=1.0, top_k=5).scores) == 5


def test_postprocess_batch():
    h, w = 40, 48
    anchors = make_anchors((h, w))
    a = anchors.shape[0]
    g = torch.Generator().manual_seed(1)
    loc, logits, lms = torch.randn(2, a, 4, generator=g), torch.randn(2, a, 2, generator=g), torch.randn(2, a, 10, generator=g)
    out = postprocess_batch(loc, logits, lms, anchors, (h, w), variances=V, scale=[1.0, 2.0], score_threshold=0.5)
    assert len(out) == 2
    for i, s in enumerate([1.0, 2.0]):
        single = postprocess(loc[i], logits[i], lms[i], anchors, (h, w), variances=V, scale=s, score_threshold=0.5)
        assert np.array_equal(out[i].boxes, single.boxes)
        assert np.array_equal(out[i].scores, single.scores)
    with pytest.raises(ValueError):
        postprocess(loc[0], logits[0], lms[0, :, :8], anchors, (h, w), variances=V)


def test_postprocess_flip_maps_back_to_the_unflipped_detection():
    """A face seen in the mirrored input comes back at the same place with its landmark pairs swapped back."""
    h, w = 64, 80
    anchors = make_anchors((h, w))
    a = anchors.shape[0]
    face = torch.tensor([[10.0, 12.0, 30.0, 36.0]])
    pts = torch.tensor([[14.0, 20, 26, 20, 20, 26, 15, 31, 25, 31]])  # left eye, right eye, nose, mouth l, mouth r
    mirrored_face = torch.tensor([[w - 30.0, 12.0, w - 10.0, 36.0]])
    mp = pts.view(5, 2)[[1, 0, 2, 4, 3]].clone()
    mp[:, 0] = w - mp[:, 0]
    norm = torch.tensor([w, h, w, h])
    loc = encode_boxes((mirrored_face / norm).expand(a, 4), anchors)
    lms = encode_landmarks((mp.view(1, 10) / torch.tensor([w, h] * 5)).expand(a, 10), anchors)
    logits = torch.zeros(a, 2)
    logits[:, 1] = torch.linspace(-3, 3, a)
    det = postprocess(loc, logits, lms, anchors, (h, w), variances=V, flip=True, scale=0.5)
    assert det.boxes.shape == (1, 4)
    assert np.allclose(det.boxes[0], face[0].numpy() / 0.5, atol=1e-3)
    assert np.allclose(det.landmarks[0], pts[0].numpy() / 0.5, atol=1e-3)


def test_select_detections_sorts_caps_and_keeps_landmarks_aligned():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [100, 0, 110, 10]], np.float32)
    scores = np.array([0.5, 0.9, 0.7, 0.2], np.float32)
    lms = np.arange(40, dtype=np.float32).reshape(4, 10)
    det = select_detections(boxes, scores, lms, nms_threshold=0.4)
    assert det.scores.tolist() == pytest.approx([0.9, 0.7, 0.2])
    assert np.array_equal(det.landmarks, lms[[1, 2, 3]])
    assert len(select_detections(boxes, scores, lms, nms_threshold=0.4, top_k=2).scores) == 2  # 0.9 and 0.7 only
    assert len(select_detections(boxes, scores, lms, nms_threshold=0.4, keep_top_k=1).scores) == 1
    empty = select_detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 10), np.float32),
                              nms_threshold=0.4)
    assert empty.boxes.shape == (0, 4) and empty.landmarks.shape == (0, 10)


def test_anchor_spec_clip_and_round_trip():
    spec = AnchorSpec(clip=True)
    a = spec.anchors((40, 40))
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.equal(a, DEFAULT_ANCHORS.anchors((40, 40)))  # the 512-px anchors of a 40-px image are clipped
    assert AnchorSpec.from_dict(spec.to_dict()) == spec
    assert AnchorSpec.from_dict({k: v for k, v in DEFAULT_ANCHORS.to_dict().items() if k != "clip"}) == DEFAULT_ANCHORS
    with pytest.raises(ValueError):
        AnchorSpec(steps=(8, 16), min_sizes=((16,),))
