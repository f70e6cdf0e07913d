"""Property tests of the augmentation transforms (seeded generators, small synthetic images)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featherface.data.transforms import (
    CROP_SCALES,
    MEAN_BGR,
    Sample,
    TrainTransform,
    cutmix,
    filter_small,
    mirror,
    mixup,
    pad_to_square,
    photometric_distort,
    random_mirror,
    random_square_crop,
    resize_square,
    to_network_input,
)

SETTINGS = settings(max_examples=40, deadline=None)


def make_sample(seed: int, h: int, w: int, g: int) -> Sample:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    bw = rng.uniform(1.0, max(1.5, w / 2), g)
    bh = rng.uniform(1.0, max(1.5, h / 2), g)
    x1 = rng.uniform(0, w - bw)
    y1 = rng.uniform(0, h - bh)
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], 1).astype(np.float32)
    lx = rng.uniform(x1[:, None], (x1 + bw)[:, None], (g, 5))
    ly = rng.uniform(y1[:, None], (y1 + bh)[:, None], (g, 5))
    lm = np.stack([lx, ly], 2).reshape(g, 10).astype(np.float32)
    has = rng.random(g) < 0.7
    lm[~has] = 0
    return Sample(img, boxes, lm, has)


samples = st.builds(make_sample, st.integers(0, 2**31 - 1), st.integers(8, 80), st.integers(8, 80),
                    st.integers(0, 8))
seeds = st.integers(0, 2**31 - 1)


def assert_valid(s: Sample) -> None:
    h, w = s.image.shape[:2]
    b = s.boxes
    assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
    assert b.dtype == np.float32 and b.shape == (s.num_faces, 4)
    assert s.landmarks.shape == (s.num_faces, 10) and s.has_landmarks.shape == (s.num_faces,)
    assert s.weights.shape == (s.num_faces,)
    assert np.all(np.isfinite(b))
    assert np.all(b[:, 0] < b[:, 2]) and np.all(b[:, 1] < b[:, 3])
    assert np.all(b[:, :2] >= 0) and np.all(b[:, 2] <= w) and np.all(b[:, 3] <= h)
    assert np.all(s.landmarks[~s.has_landmarks] == 0)
    pts = s.landmarks[s.has_landmarks].reshape(-1, 5, 2)
    assert np.all(pts[..., 0] >= -1e-3) and np.all(pts[..., 0] <= w + 1e-3)
    assert np.all(pts[..., 1] >= -1e-3) and np.all(pts[..., 1] <= h + 1e-3)


def same(a: Sample, b: Sample) -> bool:
    return (np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
            and np.array_equal(a.landmarks, b.landmarks) and np.array_equal(a.has_landmarks, b.has_landmarks)
            and np.array_equal(a.weights, b.weights))


# --------------------------------------------------------------------------------------------- mirror
@SETTINGS
@given(samples)
def test_mirror_twice_is_identity(s):
    m2 = mirror(mirror(s))
    assert np.array_equal(m2.image, s.image)
    np.testing.assert_allclose(m2.boxes, s.boxes, atol=1e-4)
    np.testing.assert_allclose(m2.landmarks, s.landmarks, atol=1e-4)
    assert np.array_equal(m2.has_landmarks, s.has_landmarks)
    assert_valid(mirror(s))


def test_mirror_swaps_landmark_sides():
    img = np.zeros((10, 100, 3), np.uint8)
    img[:, :50] = 255  # left half white
    # left eye at x=30, right eye at x=60, nose 45, left mouth 35, right mouth 55
    lm = np.array([[30, 4, 60, 4, 45, 6, 35, 8, 55, 8]], np.float32)
    s = Sample(img, np.array([[20, 1, 70, 9]], np.float32), lm, np.array([True]))
    m = mirror(s)
    assert m.image[0, 99, 0] == 255 and m.image[0, 0, 0] == 0
    np.testing.assert_array_equal(m.boxes, [[30, 1, 80, 9]])
    # point 0 (left eye, image-left) is still the image-left eye after the flip: it is the old right eye
    np.testing.assert_array_equal(m.landmarks, [[40, 4, 70, 4, 55, 6, 45, 8, 65, 8]])
    assert m.landmarks[0, 0] < m.landmarks[0, 2] and m.landmarks[0, 6] < m.landmarks[0, 8]


@SETTINGS
@given(samples)
def test_mirror_keeps_left_right_order(s):
    # for each face, x(left eye) - x(right eye) keeps its sign after the swap + flip
    m = mirror(s)
    d0 = s.landmarks[:, 0] - s.landmarks[:, 2]
    d1 = m.landmarks[:, 0] - m.landmarks[:, 2]
    np.testing.assert_allclose(d0, d1, atol=1e-3)


# --------------------------------------------------------------------------------------------- crop
@SETTINGS
@given(samples, seeds)
def test_crop_keeps_exactly_faces_with_centre_inside(s, seed):
    rng = np.random.default_rng(seed)
    # replay the generator to recover the crop window that was accepted
    out, ok = random_square_crop(s, rng)
    assert_valid(out)
    if not ok:
        assert s.num_faces > 0 and same(out, s)
        return
    replay = np.random.default_rng(seed)
    h, w = s.image.shape[:2]
    c = (s.boxes[:, :2] + s.boxes[:, 2:]) / 2
    while True:
        side = int(CROP_SCALES[int(replay.integers(len(CROP_SCALES)))] * min(h, w))
        if side < 1:
            continue
        left, top = int(replay.integers(w - side + 1)), int(replay.integers(h - side + 1))
        b = s.boxes
        fully = (b[:, 0] >= left) & (b[:, 1] >= top) & (b[:, 2] <= left + side) & (b[:, 3] <= top + side)
        if s.num_faces and not fully.any():
            continue
        break
    inside = (c[:, 0] > left) & (c[:, 0] < left + side) & (c[:, 1] > top) & (c[:, 1] < top + side)
    assert out.image.shape == (side, side, 3)
    assert np.array_equal(out.image, s.image[top:top + side, left:left + side])
    assert out.num_faces == int(inside.sum())
    exp = s.boxes[inside].copy()
    exp[:, [0, 2]] = np.clip(exp[:, [0, 2]], left, left + side) - left
    exp[:, [1, 3]] = np.clip(exp[:, [1, 3]], top, top + side) - top
    np.testing.assert_allclose(out.boxes, exp, atol=1e-4)
    # faces fully inside keep their landmarks (shifted)
    full = fully[inside] & s.has_landmarks[inside]
    assert np.all(out.has_landmarks[full])
    exp_lm = s.landmarks[inside][full] - np.tile([left, top], 5)
    np.testing.assert_allclose(out.landmarks[full], exp_lm, atol=1e-4)


def test_crop_image_without_faces_is_tolerated():
    s = Sample.create(np.zeros((50, 70, 3), np.uint8))
    out, ok = random_square_crop(s, np.random.default_rng(0))
    assert ok and out.num_faces == 0 and out.image.shape[0] == out.image.shape[1]
    x, t = TrainTransform(image_size=32)(s, np.random.default_rng(0))
    assert x.shape == (3, 32, 32) and t["boxes"].shape == (0, 4)


def test_crop_failure_returns_copy_and_pipeline_pads():
    # one face bigger than any square crop can hold -> every try fails
    img = np.full((40, 100, 3), 7, np.uint8)
    s = Sample(img, np.array([[1, 1, 99, 39]], np.float32), np.zeros((1, 10)), np.array([False]))
    out, ok = random_square_crop(s, np.random.default_rng(0), max_tries=20)
    assert not ok and same(out, s) and out.image is not s.image
    p = pad_to_square(out)
    assert p.image.shape == (100, 100, 3)
    assert np.all(p.image[40:] == np.round(MEAN_BGR).astype(np.uint8))
    _, t = TrainTransform(image_size=50, distort=False, mirror_prob=0.0)(s, np.random.default_rng(1))
    np.testing.assert_allclose(t["boxes"], [[0.01, 0.01, 0.99, 0.39]], atol=1e-5)


# --------------------------------------------------------------------------------------------- others
@SETTINGS
@given(samples, seeds)
def test_every_transform_keeps_boxes_valid_and_inputs_untouched(s, seed):
    before = Sample(s.image.copy(), s.boxes.copy(), s.landmarks.copy(), s.has_landmarks.copy(), s.weights.copy())
    rng = np.random.default_rng(seed)
    outs = [random_square_crop(s, rng)[0], photometric_distort(s, rng), pad_to_square(s), mirror(s),
            random_mirror(s, rng), resize_square(s, rng, size=int(rng.integers(16, 64))), filter_small(s, 2.0)]
    for o in outs:
        assert_valid(o)
        assert o.image is not s.image
    assert same(s, before)
    d = photometric_distort(s, rng)
    assert np.array_equal(d.boxes, s.boxes) and d.image.shape == s.image.shape
    r = resize_square(s, size=20, interpolation=0)
    assert r.image.shape == (20, 20, 3)
    f = filter_small(s, 2.0)
    assert np.all(np.minimum(f.boxes[:, 2] - f.boxes[:, 0], f.boxes[:, 3] - f.boxes[:, 1]) >= 2.0)


@SETTINGS
@given(samples, samples, seeds)
def test_mixup_keeps_both_box_sets(a, b, seed):
    size = 32
    a = resize_square(a, size=size, interpolation=0)
    b = resize_square(b, size=size, interpolation=0)
    rng = np.random.default_rng(seed)
    m, lam = mixup(a, b, rng)
    assert 0.0 <= lam <= 1.0
    assert_valid(m)
    np.testing.assert_array_equal(m.boxes, np.concatenate([a.boxes, b.boxes]))
    np.testing.assert_array_equal(m.has_landmarks, np.concatenate([a.has_landmarks, b.has_landmarks]))
    np.testing.assert_allclose(m.weights, np.r_[np.full(a.num_faces, lam), np.full(b.num_faces, 1 - lam)], atol=1e-6)
    exp = np.round(lam * a.image.astype(np.float32) + (1 - lam) * b.image.astype(np.float32))
    assert np.abs(m.image.astype(np.float32) - exp).max() <= 1


def test_mixup_lambda_follows_beta():
    rng = np.random.default_rng(0)
    img = np.zeros((4, 4, 3), np.uint8)
    s = Sample.create(img)
    lams = np.array([mixup(s, s, rng, alpha=0.2)[1] for _ in range(2000)])
    # Beta(0.2, 0.2): mean 0.5, variance 1/(4*(2*0.2+1)) = 0.1786, U-shaped
    assert abs(lams.mean() - 0.5) < 0.03
    assert abs(lams.var() - 0.25 / 1.4) < 0.02
    assert (lams < 0.1).mean() > 0.25 and (lams > 0.9).mean() > 0.25


def test_cutmix_removes_covered_faces_and_clips_pasted_ones():
    a_img = np.zeros((100, 100, 3), np.uint8)
    b_img = np.full((100, 100, 3), 200, np.uint8)
    lm = lambda x, y: [x + 2, y + 2, x + 8, y + 2, x + 5, y + 5, x + 3, y + 8, x + 7, y + 8]  # noqa: E731
    a = Sample(a_img, np.array([[10, 10, 20, 20], [45, 45, 55, 55], [38, 10, 48, 20], [0, 80, 10, 90]], np.float32),
               np.array([lm(10, 10), lm(45, 45), lm(38, 10), lm(0, 80)], np.float32), np.ones(4, bool))
    b = Sample(b_img, np.array([[42, 42, 58, 58], [55, 30, 65, 40], [70, 70, 80, 80], [5, 5, 15, 15]], np.float32),
               np.array([lm(42, 42), lm(55, 30), lm(70, 70), lm(5, 5)], np.float32), np.ones(4, bool))
    patch = (40, 40, 60, 60)
    m, p = cutmix(a, b, np.random.default_rng(0), patch=patch)
    assert p == patch
    assert np.all(m.image[40:60, 40:60] == 200) and m.image[39, 39, 0] == 0 and m.image[60, 60, 0] == 0
    assert_valid(m)
    boxes = m.boxes.tolist()
    assert [45, 45, 55, 55] not in boxes  # a's face fully under the patch is removed
    assert [10, 10, 20, 20] in boxes and [0, 80, 10, 90] in boxes and [38, 10, 48, 20] in boxes
    assert [42, 42, 58, 58] in boxes  # b's face fully inside the patch
    assert [55, 40, 60, 40] not in boxes  # b's face outside the patch (and 55,30 clipped to zero height)
    assert [70, 70, 80, 80] not in boxes and [5, 5, 15, 15] not in boxes
    assert m.num_faces == 4
    assert np.all(m.has_landmarks)


def test_cutmix_partial_overlap_uses_visible_ratio():
    img = np.zeros((100, 100, 3), np.uint8)
    # a face 60 % covered (removed) and one 40 % covered (kept, weight 0.6)
    a = Sample(img, np.array([[34, 0, 44, 10], [36, 20, 46, 30]], np.float32), np.zeros((2, 10)), np.zeros(2, bool))
    b = Sample(img, np.array([[55, 5, 75, 15], [52, 20, 62, 30]], np.float32), np.zeros((2, 10)), np.zeros(2, bool))
    m, _ = cutmix(a, b, np.random.default_rng(0), keep_ratio=0.5, patch=(40, 0, 60, 40))
    # a0 visible 6/10 -> kept weight .6; a1 visible 4/10 -> removed;
    # b0 clipped to [55,5,60,15], ratio 5/20 -> removed; b1 clipped [52,20,60,30], ratio 0.8 -> kept
    np.testing.assert_allclose(m.boxes, [[34, 0, 44, 10], [52, 20, 60, 30]])
    np.testing.assert_allclose(m.weights, [0.6, 0.8], atol=1e-6)
    m2, _ = cutmix(a, b, np.random.default_rng(0), keep_ratio=0.7, patch=(40, 0, 60, 40))
    np.testing.assert_allclose(m2.boxes, [[52, 20, 60, 30]])


def test_cutmix_landmarks_dropped_when_outside_patch_or_covered():
    img = np.zeros((100, 100, 3), np.uint8)
    lm_a = np.array([[10, 10, 30, 10, 20, 20, 12, 28, 28, 28]], np.float32)  # right mouth at x=28 under patch
    a = Sample(img, np.array([[5, 5, 35, 35]], np.float32), lm_a, np.array([True]))
    lm_b = np.array([[42, 50, 58, 50, 50, 55, 44, 58, 56, 58]], np.float32)  # eye x=42 < patch x1=45
    b = Sample(img, np.array([[40, 45, 60, 60]], np.float32), lm_b, np.array([True]))
    m, _ = cutmix(a, b, np.random.default_rng(0), keep_ratio=0.5, patch=(25, 25, 100, 100))
    assert m.num_faces == 2
    np.testing.assert_array_equal(m.has_landmarks, [False, True])
    m, _ = cutmix(a, b, np.random.default_rng(0), keep_ratio=0.5, patch=(45, 25, 100, 100))
    np.testing.assert_array_equal(m.has_landmarks, [True, False])
    assert np.all(m.landmarks[1] == 0)


@SETTINGS
@given(samples, samples, seeds)
def test_cutmix_random_patch_valid(a, b, seed):
    a = resize_square(a, size=48, interpolation=0)
    b = resize_square(b, size=48, interpolation=0)
    m, (x1, y1, x2, y2) = cutmix(a, b, np.random.default_rng(seed))
    assert_valid(m)
    assert 0 <= x1 <= x2 <= 48 and 0 <= y1 <= y2 <= 48
    assert m.num_faces <= a.num_faces + b.num_faces
    assert np.all(m.weights >= 0.5 - 1e-6) and np.all(m.weights <= 1 + 1e-6)


# --------------------------------------------------------------------------------------------- pipeline
@SETTINGS
@given(samples, samples, seeds, st.sampled_from([None, "mixup", "cutmix"]))
def test_full_pipeline_boxes_valid_and_normalised(a, b, seed, mode):
    t = TrainTransform(image_size=32, min_face_size=0.0)
    rng = np.random.default_rng(seed)
    s = t.augment(a, rng)
    assert s.image.shape == (32, 32, 3)
    assert_valid(s)
    if mode:
        s = t.mix(mode, s, t.augment(b, rng), rng)
        assert_valid(s)
    x, tg = t.finalize(s)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    bx = tg["boxes"]
    assert bx.dtype == np.float32 and tg["landmarks"].dtype == np.float32 and tg["has_landmarks"].dtype == bool
    assert np.all(bx[:, 0] < bx[:, 2]) and np.all(bx[:, 1] < bx[:, 3])
    assert np.all(bx >= 0) and np.all(bx <= 1)
    np.testing.assert_allclose(bx * 32, s.boxes, atol=1e-4)


@SETTINGS
@given(samples, seeds)
def test_same_seed_same_output(s, seed):
    t = TrainTransform(image_size=24)
    x1, t1 = t(s, np.random.default_rng(seed))
    x2, t2 = t(s, np.random.default_rng(seed))
    assert np.array_equal(x1, x2)
    for k in t1:
        assert np.array_equal(t1[k], t2[k])


def test_min_face_size_drops_small_faces():
    img = np.zeros((64, 64, 3), np.uint8)
    s = Sample(img, np.array([[0, 0, 1, 1], [10, 10, 40, 40]], np.float32), np.zeros((2, 10)), np.zeros(2, bool))
    t0 = TrainTransform(image_size=64, crop_scales=(1.0,), distort=False, mirror_prob=0.0)
    t2 = TrainTransform(image_size=64, crop_scales=(1.0,), distort=False, mirror_prob=0.0, min_face_size=2.0)
    assert len(t0(s, np.random.default_rng(0))[1]["boxes"]) == 2
    assert len(t2(s, np.random.default_rng(0))[1]["boxes"]) == 1


def test_to_network_input():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 2] = 255
    x = to_network_input(img)
    assert x.shape == (3, 2, 3) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(x[:, 0, 0], [-104, -117, 132])


def test_mix_mode_probabilities_mean_what_they_say():
    t = TrainTransform(mixup_prob=0.25, cutmix_prob=0.5)
    rng = np.random.default_rng(123)
    modes = [t.mix_mode(rng) for _ in range(20000)]
    n = len(modes)
    for name, p in (("mixup", 0.25), ("cutmix", 0.5), (None, 0.25)):
        f = sum(m == name for m in modes) / n
        assert abs(f - p) < 4 * np.sqrt(p * (1 - p) / n), (name, f)
    assert TrainTransform().mix_mode(rng) is None


def test_bad_probabilities_rejected():
    with pytest.raises(ValueError):
        TrainTransform(mixup_prob=0.6, cutmix_prob=0.6)
    with pytest.raises(ValueError):
        TrainTransform(mixup_prob=-0.1)


def test_random_mirror_probability():
    s = Sample.create(np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3))
    rng = np.random.default_rng(5)
    flips = sum(not np.array_equal(random_mirror(s, rng).image, s.image) for _ in range(4000))
    assert abs(flips / 4000 - 0.5) < 4 * np.sqrt(0.25 / 4000)
