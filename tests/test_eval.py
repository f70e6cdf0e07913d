"""WIDER FACE evaluator: hand-built cases with known AP, robustness, protocols, runner, CLI, and agreement with the
reference implementation's figures on the oracle prediction sets (../shared/data/widerface/oracle/)."""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featherface.errors import InputError
from featherface.eval import (
    GroundTruth,
    LongestSide,
    MultiScaleFlip,
    OriginalSize,
    evaluate,
    load_ground_truth,
    parse_protocol,
    read_prediction_file,
    read_predictions,
    save_ground_truth,
    write_predictions,
)
from featherface.eval import widerface as wf

SHARED = Path(__file__).resolve().parents[2] / "shared"
WIDER = SHARED / "data" / "widerface"
ORACLE = WIDER / "oracle"
needs_shared = pytest.mark.skipif(
    not (ORACLE / "reference_ap.json").is_file(),
    reason=f"shared WIDER FACE data not found at {WIDER} (the oracle tests need ../shared next to the repository)",
)

pytestmark = pytest.mark.filterwarnings("error")  # no RuntimeWarning (0/0 etc.) anywhere


# ------------------------------------------------------------------------------------------------------ helpers


def make_gt(images: dict[str, tuple[list, dict[str, list[int]]]]) -> GroundTruth:
    """{'event/name': (boxes xywh, {'easy': [0-based], 'medium': [...], 'hard': [...]})} -> GroundTruth."""
    events, names, boxes = [], [], []
    keep = {s: [] for s in wf.SETTINGS}
    for key, (bx, ks) in images.items():
        ev, name = key.split("/")
        events.append(ev)
        names.append(name)
        boxes.append(np.asarray(bx, np.float64).reshape(-1, 4))
        for s in wf.SETTINGS:
            keep[s].append(np.asarray(ks.get(s, []), np.int64))
    return GroundTruth(events, names, boxes, keep, source="synthetic")


def all_settings(idx: list[int]) -> dict[str, list[int]]:
    return {s: list(idx) for s in wf.SETTINGS}


def dets(*rows) -> np.ndarray:
    return np.asarray(rows, np.float64).reshape(-1, 5)


def reference_ap(preds: dict[str, np.ndarray], gt: GroundTruth, iou_thresh: float = 0.5) -> dict[str, float]:
    """Straight loop transcription of the reference algorithm (the official evaluation code), file order, no sort."""
    max_s, min_s = 0.0, 1.0
    for v in preds.values():
        if len(v):
            max_s, min_s = max(v[:, 4].max(), max_s), min(v[:, 4].min(), min_s)
    diff = max_s - min_s
    norm = {}
    for k, v in preds.items():
        v = v.copy()
        if len(v):
            v[:, 4] = (v[:, 4] - min_s) / diff
        norm[k] = v
    out = {}
    for s in wf.SETTINGS:
        count_face = 0
        pr = np.zeros((1000, 2))
        for ev, name, gtb, keep in zip(gt.events, gt.names, gt.boxes, gt.keep[s]):
            pred = norm.get(f"{ev}/{name}", np.zeros((0, 5)))
            count_face += len(keep)
            if len(gtb) == 0 or len(pred) == 0:
                continue
            ignore = np.zeros(len(gtb))
            ignore[keep] = 1
            p = pred.copy()
            g = gtb.copy()
            p[:, 2] += p[:, 0]
            p[:, 3] += p[:, 1]
            g[:, 2] += g[:, 0]
            g[:, 3] += g[:, 1]
            ov = np.zeros((len(p), len(g)))
            for k in range(len(g)):
                area = (g[k, 2] - g[k, 0] + 1) * (g[k, 3] - g[k, 1] + 1)
                for n in range(len(p)):
                    iw = min(p[n, 2], g[k, 2]) - max(p[n, 0], g[k, 0]) + 1
                    if iw > 0:
                        ih = min(p[n, 3], g[k, 3]) - max(p[n, 1], g[k, 1]) + 1
                        if ih > 0:
                            ua = (p[n, 2] - p[n, 0] + 1) * (p[n, 3] - p[n, 1] + 1) + area - iw * ih
                            ov[n, k] = iw * ih / ua
            recall = np.zeros(len(g))
            proposal = np.ones(len(p))
            pred_recall = np.zeros(len(p))
            for h in range(len(p)):
                j = ov[h].argmax()
                if ov[h, j] >= iou_thresh:
                    if ignore[j] == 0:
                        recall[j] = -1
                        proposal[h] = -1
                    elif recall[j] == 0:
                        recall[j] = 1
                pred_recall[h] = (recall == 1).sum()
            for t in range(1000):
                th = 1 - (t + 1) / 1000
                r = np.where(pred[:, 4] >= th)[0]
                if len(r):
                    r = r[-1]
                    pr[t, 0] += (proposal[: r + 1] == 1).sum()
                    pr[t, 1] += pred_recall[r]
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = pr[:, 1] / pr[:, 0]
            rec = pr[:, 1] / count_face
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.fmax(mpre[i - 1], mpre[i])  # fmax: NaN (0/0) never wins, as where the port's NaN sits
        i = np.where(mrec[1:] != mrec[:-1])[0]
        out[s] = float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    return out


# The three-setting ground truth used by the hand-built cases: one image, faces A (easy+), B (medium+), C (hard),
# D ignored everywhere.
A, B, C, D = [10, 10, 40, 40], [100, 10, 30, 30], [200, 10, 12, 12], [300, 10, 20, 20]
GT4 = {"0--Ev/img_1": ([A, B, C, D], {"easy": [0], "medium": [0, 1], "hard": [0, 1, 2]})}


def box(b, s):
    return [*b, s]


# ------------------------------------------------------------------------------------------- hand-built cases


def test_ground_truth_as_predictions_is_perfect():
    gt = make_gt(GT4)
    preds = {"0--Ev/img_1": dets(box(A, 1.0), box(B, 1.0), box(C, 1.0), box(D, 1.0))}
    r = evaluate(preds, gt)
    assert r.ap == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    assert r.settings["hard"].num_faces == 3 and r.settings["easy"].num_faces == 1


def test_ground_truth_as_predictions_on_official_mat_files(tmp_path):
    gt = make_gt(
        {
            "0--Parade/a_1": ([A, B], {"easy": [0], "medium": [0, 1], "hard": [0, 1]}),
            "0--Parade/a_2": ([C], {"easy": [], "medium": [], "hard": [0]}),
            "1--Handshaking/b_3": ([A, D, C], {"easy": [0], "medium": [0, 2], "hard": [0, 1, 2]}),
        }
    )
    save_ground_truth(gt, tmp_path / "gt")
    g2 = load_ground_truth(tmp_path / "gt")
    assert g2.keys == gt.keys
    preds = {k: np.c_[b, np.linspace(0.9, 0.5, len(b))] for k, b in zip(gt.keys, gt.boxes)}
    write_predictions(preds, tmp_path / "pred")
    r = evaluate(tmp_path / "pred", tmp_path / "gt")
    assert r.ap == {"easy": 1.0, "medium": 1.0, "hard": 1.0}


def test_one_false_positive():
    gt = make_gt({"e/i": ([A], all_settings([0]))})
    fp = [500, 500, 20, 20]
    # FP scored above the hit: at the top thresholds precision 0, then 1/2 at recall 1
    assert evaluate({"e/i": dets(box(fp, 0.9), box(A, 0.8))}, gt).ap["hard"] == pytest.approx(0.5, abs=1e-15)
    # FP below the hit: recall 1 is reached at precision 1 -> AP 1
    assert evaluate({"e/i": dets(box(A, 0.9), box(fp, 0.8))}, gt).ap["hard"] == 1.0


def test_one_miss():
    gt = make_gt({"e/i": ([A, B], all_settings([0, 1]))})
    r = evaluate({"e/i": dets(box(A, 0.9))}, gt)
    assert r.ap["easy"] == pytest.approx(0.5, abs=1e-15)


def test_duplicate_is_a_false_positive():
    gt = make_gt({"e/i": ([A, B], all_settings([0, 1]))})
    # normalised scores 1, 0.5, 0: A (TP), A again (FP), B (TP) -> AP = 0.5*1 + 0.5*(2/3)
    r = evaluate({"e/i": dets(box(A, 0.9), box(A, 0.8), box(B, 0.7))}, gt)
    assert r.ap["hard"] == pytest.approx(5 / 6, abs=1e-12)


def test_hit_on_ignored_face_changes_nothing():
    gt = make_gt(GT4)
    base = [box(A, 0.9), box([500, 500, 20, 20], 0.5)]  # the hit and a false positive
    without = evaluate({"0--Ev/img_1": dets(*base)}, gt)
    with_ignored = evaluate({"0--Ev/img_1": dets(base[0], box(D, 0.7), base[1])}, gt)
    for s in wf.SETTINGS:
        assert with_ignored.ap[s] == without.ap[s]
        np.testing.assert_array_equal(with_ignored.settings[s].proposals, without.settings[s].proposals)
    # in easy, faces B and C are ignored too: hitting them is no proposal either
    r = evaluate({"0--Ev/img_1": dets(box(A, 0.9), box(B, 0.8), box(C, 0.7))}, gt)
    assert r.ap["easy"] == 1.0
    assert r.settings["easy"].proposals[-1] == 1 and r.settings["hard"].proposals[-1] == 3


def test_missing_prediction_file_means_no_detections(tmp_path):
    gt = make_gt({"e/i1": ([A], all_settings([0])), "e/i2": ([B], all_settings([0]))})
    write_predictions({"e/i1": dets(box(A, 0.9))}, tmp_path)
    r = evaluate(tmp_path, gt)
    assert r.ap["hard"] == pytest.approx(0.5, abs=1e-15)
    assert r.num_images == 2 and r.num_images_with_predictions == 1


def test_iou_threshold_is_inclusive_half():
    # GT w=h=9 is 10x10 px with the +1 convention; a 5x10 px prediction inside it has IoU 50/100 exactly
    gt = make_gt({"e/i": ([[0, 0, 9, 9]], all_settings([0]))})
    assert evaluate({"e/i": dets([0, 0, 4, 9, 1.0])}, gt).ap["hard"] == 1.0  # IoU 0.5 counts
    assert evaluate({"e/i": dets([0, 0, 3, 9, 1.0])}, gt).ap["hard"] == 0.0  # IoU 0.4 does not


def test_normalisation_range_starts_at_one_and_zero():
    gt = make_gt({"e/i": ([A], all_settings([0]))})
    r = evaluate({"e/i": dets(box(A, 0.6), box(B, 0.3))}, gt)
    assert r.score_range == (0.3, 0.6)
    r = evaluate({"e/i": dets(box(A, 7.0), box(B, 3.0))}, gt)  # scores > 1: max is the data max
    assert r.score_range == (1.0, 7.0)  # min starts at 1 (reference behaviour)
    r = evaluate({"e/i": dets(box(A, 1.0))}, gt)  # max == min: every normalised score is 1, no 0/0
    assert r.score_range == (1.0, 1.0) and r.ap["hard"] == 1.0


def test_unsorted_file_is_sorted_stably(tmp_path):
    gt = make_gt({"e/i": ([A, B], all_settings([0, 1]))})
    sorted_ = dets(box(A, 0.9), box(A, 0.8), box(B, 0.7))
    shuffled = sorted_[[2, 0, 1]]
    assert evaluate({"e/i": shuffled}, gt).ap == evaluate({"e/i": sorted_}, gt).ap
    # ties keep file order: the first of two equal-score duplicates takes the TP either way -> same AP
    tie = dets(box(A, 0.5), box(A, 0.5), box(B, 0.9))
    assert evaluate({"e/i": tie}, gt).ap == evaluate({"e/i": tie[[2, 0, 1]]}, gt).ap


def test_empty_prediction_and_image_without_faces():
    gt = make_gt({"e/i1": ([A], all_settings([0])), "e/none": ([], all_settings([]))})
    r = evaluate({"e/i1": np.zeros((0, 5)), "e/none": dets(box(A, 0.9)), "other/x": dets(box(A, 0.1))}, gt)
    assert r.ap["hard"] == 0.0
    assert r.num_prediction_files == 3 and r.score_range == (0.1, 0.9)  # all files normalise, as the reference


def test_subset_without_easy_faces_gives_nan_without_warning():
    gt = make_gt({"e/i": ([C], {"easy": [], "medium": [], "hard": [0]})})
    r = evaluate({"e/i": dets(box(C, 0.9))}, gt)
    assert np.isnan(r.ap["easy"]) and r.ap["hard"] == 1.0


# ------------------------------------------------------------------------------- equivalence with the reference


def _random_case(rng, n_img, dup_scores):
    images, preds = {}, {}
    for i in range(n_img):
        k = int(rng.integers(0, 8))
        xy = rng.integers(0, 200, size=(k, 2))
        wh = rng.integers(0, 40, size=(k, 2))
        bx = np.c_[xy, wh].astype(np.float64)
        hard = [j for j in range(k) if rng.random() < 0.8]
        med = [j for j in hard if rng.random() < 0.6]
        easy = [j for j in med if rng.random() < 0.6]
        images[f"ev{i % 3}/im{i}"] = (bx, {"easy": easy, "medium": med, "hard": hard})
        n = int(rng.integers(0, 12))
        src = bx[rng.integers(0, k, size=n)] if k else np.zeros((n, 4))
        p = src + rng.normal(0, 4, size=(n, 4)) if n else np.zeros((0, 4))
        p = np.round(p, 2) if rng.random() < 0.5 else np.round(p)
        s = rng.random(n)
        if dup_scores:
            s = np.round(s, 1)
        s = -np.sort(-s)  # files sorted by score, as every upstream writer does
        preds[f"ev{i % 3}/im{i}"] = np.c_[p, s]
    return make_gt(images), preds


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_img=st.integers(1, 6), dup=st.booleans())
def test_matches_reference_transcription(seed, n_img, dup):
    gt, preds = _random_case(np.random.default_rng(seed), n_img, dup)
    scores = np.concatenate([v[:, 4] for v in preds.values()])
    if len(scores) == 0 or max(scores.max(), 0) == min(scores.min(), 1):
        return  # the reference divides by zero there (covered in test_normalisation_range_starts_at_one_and_zero)
    ours = evaluate(preds, gt)
    ref = reference_ap(preds, gt)
    for s in wf.SETTINGS:
        if np.isnan(ref[s]):
            assert np.isnan(ours.ap[s])
        else:
            assert ours.ap[s] == ref[s]  # bit-identical


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), thr=st.sampled_from([0.3, 0.5, 0.7, 1.0]))
def test_sparse_matching_equals_dense(seed, thr):
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(1, 30)), int(rng.integers(1, 60))
    g = np.c_[rng.integers(-5, 120, (k, 2)), rng.integers(-2, 40, (k, 2))].astype(np.float64)
    p = g[rng.integers(0, k, n)] + rng.normal(0, 3, (n, 4))
    odd = rng.random(n) < 0.2  # some degenerate / very different sizes
    p[odd, 2:] = rng.uniform(-3, 60, (int(odd.sum()), 2))
    with np.errstate(all="ignore"):
        best_d, valid_d = wf._best_matches(p, g, thr)
    best_s, valid_s = wf._match_all([p], [g], [0], thr)
    np.testing.assert_array_equal(valid_s, valid_d)
    np.testing.assert_array_equal(best_s[valid_s], best_d[valid_d])


# ------------------------------------------------------------------------------------------------ file handling


def test_prediction_file_round_trip_and_robust_parsing(tmp_path):
    d = tmp_path / "pred" / "0--Parade"
    d.mkdir(parents=True)
    # Windows path in the header, real .jpg suffix, trailing spaces, CRLF, blank line, extra columns
    (d / "0_Parade_x_1.txt").write_bytes(
        b"C:\\data\\WIDER_val\\0--Parade\\0_Parade_x_1.jpg\r\n2\r\n1 2 3 4 0.5 \r\n\r\n5.5 6 7 8 0.25 99 98\r\n"
    )
    (d / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "pred" / "notes.md").write_text("not a prediction")
    preds = read_predictions(tmp_path / "pred")
    assert list(preds) == ["0--Parade/0_Parade_x_1"]
    np.testing.assert_array_equal(preds["0--Parade/0_Parade_x_1"], [[1, 2, 3, 4, 0.5], [5.5, 6, 7, 8, 0.25]])
    name, arr = read_prediction_file(d / "0_Parade_x_1.txt")
    assert name == "0_Parade_x_1" and arr.shape == (2, 5)
    # names the port's rstrip('.jpg') would mangle
    assert wf.normalise_key("/ev/face_jpg.jpg") == "ev/face_jpg"
    assert wf.normalise_key("ev\\pig.JPEG") == "ev/pig"
    assert wf.normalise_key("ev/shot.2024") == "ev/shot.2024"


def test_written_files_score_like_memory(tmp_path):
    gt, preds = _random_case(np.random.default_rng(3), 6, False)
    preds = {k: v + np.r_[0.123456789, 0, 0, 0, 0] for k, v in preds.items()}
    write_predictions(preds, tmp_path / "p")
    back = read_predictions(tmp_path / "p")
    for k, v in preds.items():
        np.testing.assert_array_equal(back[k], v)  # float text round-trips exactly
    assert evaluate(tmp_path / "p", gt).ap == evaluate(preds, gt).ap


def test_bad_inputs_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="nope"):
        load_ground_truth(tmp_path / "nope")
    (tmp_path / "gt").mkdir()
    with pytest.raises(InputError, match=r"wider_face_val\.mat"):
        load_ground_truth(tmp_path / "gt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        read_predictions(tmp_path / "empty")
    ev = tmp_path / "bad" / "ev"
    ev.mkdir(parents=True)
    (ev / "a.txt").write_text("a\n2\n1 2 3 4 0.5\n1 2 three 4 0.5\n")
    with pytest.raises(InputError, match=r"a\.txt:4"):
        read_predictions(tmp_path / "bad")
    (ev / "a.txt").write_text("a\n1\n1 2 3 4\n")
    with pytest.raises(InputError, match=r"a\.txt:3"):
        read_predictions(tmp_path / "bad")
    with pytest.raises(InputError):
        evaluate({"e/i": np.zeros((3, 4))}, make_gt({"e/i": ([A], all_settings([0]))}))


def test_mat_layout_matches_official(tmp_path):
    """save_ground_truth writes the official cell layout: the subset of the official files equals gt_val_dev."""
    if not (WIDER / "val" / "wider_face_val.mat").is_file():
        pytest.skip(f"official ground truth not found under {WIDER / 'val'}")
    import scipy.io as sio

    full = load_ground_truth(WIDER / "val")
    assert len(full) == 3226 and full.num_faces() == 39708
    assert [full.num_faces(s) for s in wf.SETTINGS] == [7211, 13319, 31958]
    sub = full.subset(wf.read_image_list(WIDER / "val" / "val-dev.txt"))
    save_ground_truth(sub, tmp_path)
    mine, official = sio.loadmat(tmp_path / "wider_hard_val.mat"), sio.loadmat(WIDER / "val" / "wider_hard_val.mat")
    for var in ("event_list", "file_list", "face_bbx_list", "gt_list"):
        assert mine[var].shape[1] == official[var].shape[1] == 1 and mine[var].dtype == object
        assert mine[var][0][0].shape[1:] == official[var][0][0].shape[1:]
    if (ORACLE / "gt_val_dev").is_dir():
        ref = load_ground_truth(ORACLE / "gt_val_dev")
        back = load_ground_truth(tmp_path)
        assert back.keys == ref.keys == sub.keys
        for a, b in zip(back.boxes, ref.boxes):
            np.testing.assert_array_equal(a, b)
        for s in wf.SETTINGS:
            for a, b in zip(back.keep[s], ref.keep[s]):
                np.testing.assert_array_equal(a, b)
    assert load_ground_truth(WIDER / "val") is full  # parsed once per process


# ------------------------------------------------------------------------------------------- protocols / runner


def test_protocol_names_and_passes():
    assert OriginalSize().name == "original-size" and OriginalSize().passes(300, 1024) == [(1.0, False)]
    assert LongestSide(640).name == "longest-side-640" and LongestSide(640).passes(300, 1024) == [(0.625, False)]
    ms = MultiScaleFlip()
    assert ms.name == "multiscale-flip-500-800-1100-1400-1700"
    p = ms.passes(768, 1024)  # base = 800/768 (long side 1067 <= 1200)
    assert len(p) == 10 and p[0] == (pytest.approx(500 / 768), False) and p[1][1] is True
    p = ms.passes(400, 1024)  # 800/400 * 1024 > 1200 -> base = 1200/1024
    assert p[2][0] == pytest.approx(1200 / 1024)
    assert parse_protocol("original") == OriginalSize()
    assert parse_protocol("longest-side-1600", top_k=5000) == LongestSide(1600, top_k=5000)
    assert parse_protocol("multiscale-flip-500-1000").scales == (500, 1000)
    assert parse_protocol("multiscale-800").flip is False
    with pytest.raises(ValueError):
        parse_protocol("bogus")
    d = OriginalSize().describe()
    assert d["name"] == "original-size" and d["nms_threshold"] == 0.4 and d["score_threshold"] == 0.02
    assert "no top-k" in d["label"]


class FakeDetector:
    """Returns the ground-truth boxes of each image (known by its size) plus a low-scored duplicate."""

    def __init__(self, boxes_by_size):
        self.boxes_by_size = boxes_by_size
        self.calls = []

    def predict_raw(self, image_bgr, *, scale=1.0, flip=False, score_threshold=0.02):
        self.calls.append((image_bgr.shape[:2], scale, flip, score_threshold))
        b = np.asarray(self.boxes_by_size[image_bgr.shape[:2]], np.float32)  # x1 y1 x2 y2
        boxes = np.concatenate([b, b + 1])
        scores = np.concatenate([np.full(len(b), 0.9), np.full(len(b), 0.3)]).astype(np.float32)
        return boxes, scores, np.zeros((len(boxes), 10), np.float32)


@pytest.fixture()
def tiny_wider(tmp_path):
    import cv2

    spec = {
        ("0--Parade", "0_Parade_a_1"): ((120, 200), [[10, 10, 40, 50], [100, 20, 130, 60]]),
        ("1--Handshaking", "1_Hand_b_2"): ((90, 160), [[20, 30, 60, 70]]),
    }
    images = tmp_path / "images"
    by_size, gt_items = {}, {}
    for (ev, name), ((h, w), b) in spec.items():
        (images / ev).mkdir(parents=True)
        cv2.imwrite(str(images / ev / f"{name}.jpg"), np.full((h, w, 3), 128, np.uint8))
        by_size[(h, w)] = b
        xywh = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in b]
        gt_items[f"{ev}/{name}"] = (xywh, all_settings(list(range(len(b)))))
    save_ground_truth(make_gt(gt_items), tmp_path / "gt")
    return tmp_path, FakeDetector(by_size)


def test_runner_writes_predictions_json_and_curve(tiny_wider):
    from featherface.eval.runner import evaluate_detector

    root, det = tiny_wider
    result, report = evaluate_detector(
        det, root / "images", root / "gt", output_dir=root / "out", protocol=OriginalSize(), progress=False
    )
    assert result.ap == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    assert all(c[1:] == (1.0, False, 0.02) for c in det.calls)
    name, arr = read_prediction_file(root / "out" / "predictions" / "0--Parade" / "0_Parade_a_1.txt")
    assert name == "0_Parade_a_1" and arr.shape == (2, 5)  # the +1 duplicates were suppressed by NMS 0.4
    np.testing.assert_allclose(arr[:, :4], [[10, 10, 30, 40], [100, 20, 30, 40]])
    js = json.loads((root / "out" / "results.json").read_text())
    assert js["protocol"]["name"] == "original-size" and js["ap"]["hard"] == 1.0
    assert "detector_s" in js["timing"] and "scoring_s" in js["timing"]
    assert (root / "out" / "pr_curve.png").stat().st_size > 1000


def test_runner_multiscale_and_image_list(tiny_wider):
    from featherface.eval.runner import evaluate_detector

    root, det = tiny_wider
    lst = root / "list.txt"
    lst.write_text("/1--Handshaking/1_Hand_b_2.jpg\n")
    result, report = evaluate_detector(
        det, root / "images", root / "gt", output_dir=root / "o2", image_list=lst,
        protocol=MultiScaleFlip(scales=(400, 800)), progress=False, plot=False,
    )
    assert result.num_images == 1 and result.ap["hard"] == 1.0  # GT restricted to the list
    assert sorted({c[2] for c in det.calls}) == [False, True] and len(det.calls) == 4
    assert report["protocol"]["name"] == "multiscale-flip-400-800"


def test_cli_predictions_and_model(tiny_wider, monkeypatch, capsys):
    from featherface.eval import cli

    root, det = tiny_wider
    import featherface.api

    monkeypatch.setattr(featherface.api, "FaceDetector", lambda model, device="cpu", backend=None: det)
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    args = parser.parse_args(
        ["--model", "fake.pth", "--images", str(root / "images"), "--gt", str(root / "gt"), "-o", str(root / "c"),
         "--no-progress"]
    )
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "Protocol: original-size" in out and "Hard   Val AP: 1.0000" in out
    args = parser.parse_args(["--predictions", str(root / "c" / "predictions"), "--gt", str(root / "gt")])
    assert cli.run(args) == 0
    assert "Easy   Val AP: 1.0000" in capsys.readouterr().out
    args = parser.parse_args(["--predictions", str(root / "c" / "predictions"), "--gt", str(root / "nogt")])
    with pytest.raises(InputError, match="nogt"):
        cli.run(args)
    assert cli.main(["--predictions", str(root / "c"), "--gt", str(root / "nogt")]) == 2


# ------------------------------------------------------------------------------------------------------ oracle


@pytest.fixture(scope="module")
def reference():
    return json.loads((ORACLE / "reference_ap.json").read_text())


_unpacked: dict[str, Path] = {}


def _unpack(archive: Path, tmp_path_factory) -> Path:
    if archive.name not in _unpacked:
        dest = tmp_path_factory.mktemp(archive.name.split(".")[0])
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
        _unpacked[archive.name] = dest / "widerface_txt"
    return _unpacked[archive.name]


def _check(result, raw, tol=1e-4):
    for s in wf.SETTINGS:
        assert abs(result.ap[s] - raw[s]) < tol, (s, result.ap[s], raw[s])
        assert abs(result.ap[s] - raw[s]) < 1e-9  # in practice bit-identical


@needs_shared
@pytest.mark.parametrize("name", ["featherface_teacher", "retinaface_mnet025"])
def test_oracle_val_dev_made_here(name, reference, tmp_path_factory):
    folder = _unpack(ORACLE / "predictions_val_dev" / f"{name}_valdev.tar.gz", tmp_path_factory)
    raw = reference["val_dev"]["results"][name]["raw"]
    _check(evaluate(folder, ORACLE / "gt_val_dev"), raw)
    # the full official GT restricted by the list gives the same figures as the cut-down .mat files
    _check(evaluate(folder, WIDER / "val", image_list=wf.read_image_list(WIDER / "val" / "val-dev.txt")), raw)


def _full_val(name, reference, tmp_path_factory):
    folder = _unpack(ORACLE / "predictions" / f"{name}.tar.gz", tmp_path_factory)
    _check(evaluate(folder, WIDER / "val"), reference["full_val"][name]["raw"])
    vd = wf.read_image_list(WIDER / "val" / "val-dev.txt")
    _check(evaluate(folder, ORACLE / "gt_val_dev", image_list=vd), reference["val_dev"]["results"][name]["raw"])
    full_folder = reference["val_dev"]["results_full_prediction_folder"][name]["raw"]
    _check(evaluate(folder, ORACLE / "gt_val_dev"), full_folder)


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("name", ["derronqi_yolov7-face", "MAhaitao999_Retinaface-PyTorch-onnx-trt",
                                  "thflgg133_RetinaFace-optimization"])
def test_oracle_full_val_slow(name, reference, tmp_path_factory):
    """The full val set (3,226 images): slow-marked; the val-dev oracle tests above run in the default suite."""
    _full_val(name, reference, tmp_path_factory)
