"""Recall per face size (featherface.eval.per_size): hand-built cases, a brute-force cross-check, the runner / CLI
output (table, results.json, PNG) and the figures on an oracle val-dev prediction set (../shared)."""

from __future__ import annotations

import argparse
import json
import tarfile

import numpy as np
import pytest

from featherface.eval import (
    GroundTruth,
    SizeRecall,
    evaluate,
    save_ground_truth,
    save_size_recall_plot,
    size_recall,
    write_predictions,
)
from featherface.eval import widerface as wf
from featherface.eval.per_size import bin_labels, face_sizes

from helpers import SHARED

ORACLE = SHARED / "data" / "widerface" / "oracle"
needs_oracle = pytest.mark.skipif(
    not (ORACLE / "gt_val_dev" / "wider_hard_val.mat").is_file()
    or not (ORACLE / "predictions_val_dev" / "featherface_teacher_valdev.tar.gz").is_file(),
    reason=f"oracle val-dev data not found at {ORACLE} (needs ../shared next to the repository)",
)

pytestmark = pytest.mark.filterwarnings("error")


def make_gt(images: dict[str, tuple[list, list[int]]]) -> GroundTruth:
    """{'event/name': (boxes xywh, hard gt_list 0-based)} -> GroundTruth (easy/medium: the first face, if kept)."""
    events, names, boxes = [], [], []
    keep = {s: [] for s in wf.SETTINGS}
    for key, (bx, hard) in images.items():
        ev, name = key.split("/")
        events.append(ev)
        names.append(name)
        boxes.append(np.asarray(bx, np.float64).reshape(-1, 4))
        keep["hard"].append(np.asarray(hard, np.int64))
        keep["medium"].append(np.asarray(hard[:1], np.int64))
        keep["easy"].append(np.asarray(hard[:1], np.int64))
    return GroundTruth(events, names, boxes, keep, source="synthetic")


def sq(x, y, s):
    return [x, y, s, s]


# one face per bin (sizes 10, 20, 40, 80, 160, 300 px), plus face 6 (100 px) ignored in the Hard setting
FACES = [sq(0, 0, 10), sq(50, 0, 20), sq(100, 0, 40), sq(200, 0, 80), sq(300, 0, 160), sq(500, 0, 300), sq(900, 0, 100)]
GT1 = make_gt({"0--Ev/img_1": (FACES, [0, 1, 2, 3, 4, 5])})


def preds_one_per_bin():
    return {
        "0--Ev/img_1": np.array(
            [
                [0, 0, 10, 10, 0.9],  # bin <16: hit, high score
                [50, 0, 20, 20, 0.3],  # 16-32: hit, low score (any only)
                [130, 0, 40, 40, 0.95],  # 32-64: shifted by 30 px -> IoU < 0.5, a miss at every score
                [202, 2, 80, 80, 0.5],  # 64-128: hit at exactly 0.5 (>= is inclusive)
                # 128-256: nothing
                [500, 0, 300, 300, 0.7],  # >=256: hit
                [900, 0, 100, 100, 0.99],  # the ignored face: not counted anywhere
                [5000, 5000, 30, 30, 0.99],  # a false positive: irrelevant to recall
            ]
        )
    }


def test_one_face_per_bin_hits_and_misses():
    sr = size_recall(preds_one_per_bin(), GT1)
    assert sr.labels == ["<16", "16-32", "32-64", "64-128", "128-256", ">=256"]
    assert sr.num_faces.tolist() == [1, 1, 1, 1, 1, 1]  # the ignored 100-px face is not in 64-128
    assert sr.recalled_any.tolist() == [1, 1, 0, 1, 0, 1]
    assert sr.recalled_at_threshold.tolist() == [1, 0, 0, 1, 0, 1]
    np.testing.assert_array_equal(sr.recall_any, [1, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(sr.recall_at(0.95), [0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(sr.recall_at(0.0), sr.recall_any)
    assert sr.total_faces == 6
    np.testing.assert_allclose(sr.sizes, [10, 20, 40, 80, 160, 300])
    np.testing.assert_array_equal(sr.best_scores, [0.9, 0.3, -np.inf, 0.5, -np.inf, 0.7])


def test_setting_and_threshold_choices():
    # easy/medium keep only face 0 here
    sr = size_recall(preds_one_per_bin(), GT1, setting="easy")
    assert sr.num_faces.tolist() == [1, 0, 0, 0, 0, 0] and sr.recalled_any.tolist() == [1, 0, 0, 0, 0, 0]
    assert np.isnan(sr.recall_any[1:]).all()
    sr = size_recall(preds_one_per_bin(), GT1, score_threshold=0.25)
    assert sr.recalled_at_threshold.tolist() == [1, 1, 0, 1, 0, 1]
    sr = size_recall(preds_one_per_bin(), GT1, bins=(50,))
    assert sr.labels == ["<50", ">=50"] and sr.num_faces.tolist() == [3, 3]
    with pytest.raises(ValueError):
        size_recall(preds_one_per_bin(), GT1, bins=(32, 16))
    with pytest.raises(ValueError):
        size_recall(preds_one_per_bin(), GT1, size="area")
    with pytest.raises(ValueError):
        size_recall(preds_one_per_bin(), GT1, setting="extreme")


def test_scores_are_raw_not_normalised():
    # dataset-wide min-max normalisation would map 0.55 -> 0 and 0.6 -> 1; per-size recall uses the raw values
    gt = make_gt({"0--Ev/a": ([sq(0, 0, 20), sq(100, 0, 20)], [0, 1])})
    preds = {"0--Ev/a": np.array([[0, 0, 20, 20, 0.6], [100, 0, 20, 20, 0.55]])}
    assert size_recall(preds, gt).recalled_at_threshold.tolist() == [0, 2, 0, 0, 0, 0]
    preds = {"0--Ev/a": np.array([[0, 0, 20, 20, 4.0], [100, 0, 20, 20, 0.45]])}  # logits-like scores stay raw
    assert size_recall(preds, gt).recalled_at_threshold.tolist() == [0, 1, 0, 0, 0, 0]


def test_bin_edges_and_size_measure():
    assert face_sizes(np.array([[0, 0, 8, 32]])).tolist() == [16.0]
    assert face_sizes(np.array([[0, 0, 8, 32]]), "max_side").tolist() == [32.0]
    gt = make_gt({"0--Ev/a": ([[0, 0, 8, 32], [100, 0, 15.9, 15.9], [200, 0, 256, 256]], [0, 1, 2])})
    sr = size_recall({"0--Ev/a": np.zeros((0, 5))}, gt)
    assert sr.num_faces.tolist() == [1, 1, 0, 0, 0, 1]  # an edge value belongs to the upper bin
    sr = size_recall({"0--Ev/a": np.zeros((0, 5))}, gt, size="max_side")
    assert sr.num_faces.tolist() == [1, 0, 1, 0, 0, 1]
    assert sr.recalled_any.sum() == 0
    assert bin_labels((8, 12.5)) == ["<8", "8-12.5", ">=12.5"]


def test_iou_uses_the_plus_one_convention_and_inclusive_half():
    # GT 9x9 -> 10x10 pixels with "+1"; the prediction 9x4 -> 10x5: IoU exactly 0.5 (without "+1" it is 36/81)
    gt = make_gt({"0--Ev/a": ([[0, 0, 9, 9]], [0])})
    sr = size_recall({"0--Ev/a": np.array([[0, 0, 9, 4, 0.8]])}, gt)
    assert sr.recalled_any.tolist() == [1, 0, 0, 0, 0, 0]
    sr = size_recall({"0--Ev/a": np.array([[0, 0, 9, 3.9, 0.8]])}, gt)
    assert sr.recalled_any.sum() == 0


def test_one_prediction_can_recall_two_overlapping_faces():
    # no one-to-one assignment: both near-duplicate faces are covered (the official matching finds only one)
    gt = make_gt({"0--Ev/a": ([sq(0, 0, 40), sq(2, 0, 40)], [0, 1])})
    preds = {"0--Ev/a": np.array([[1, 0, 40, 40, 0.9]])}
    assert size_recall(preds, gt).recalled_any.tolist() == [0, 0, 2, 0, 0, 0]
    assert evaluate(preds, gt).settings["hard"].true_positives[-1] == 1


def test_lookup_missing_images_and_image_list():
    gt = make_gt({"0--Ev/a": ([sq(0, 0, 20)], [0]), "1--Other/b": ([sq(0, 0, 70)], [0]), "1--Other/c": ([], [])})
    preds = {"b": np.array([[0, 0, 70, 70, 0.9]])}  # key by image name only, as evaluate() accepts
    sr = size_recall(preds, gt)
    assert sr.num_faces.tolist() == [0, 1, 0, 1, 0, 0] and sr.recalled_any.tolist() == [0, 0, 0, 1, 0, 0]
    sr = size_recall(preds, gt, image_list=["1--Other/b.jpg"])
    assert sr.num_faces.tolist() == [0, 0, 0, 1, 0, 0] and sr.recalled_any.tolist() == [0, 0, 0, 1, 0, 0]
    empty = size_recall({"x": np.zeros((0, 5))}, make_gt({"0--Ev/z": ([], [])}))
    assert empty.total_faces == 0 and empty.to_dict()["total"]["recall_any_score"] is None


def _brute_force_best(preds, gt, setting="hard"):
    out = []
    for ev, name, boxes, keep in zip(gt.events, gt.names, gt.boxes, gt.keep[setting]):
        p = preds.get(f"{ev}/{name}", np.zeros((0, 5)))
        for j in keep:
            gx, gy, gw, gh = boxes[j]
            best = -np.inf
            for x, y, w, h, s in p:
                iw = min(x + w, gx + gw) - max(x, gx) + 1
                ih = min(y + h, gy + gh) - max(y, gy) + 1
                if iw > 0 and ih > 0 and iw * ih / ((w + 1) * (h + 1) + (gw + 1) * (gh + 1) - iw * ih) >= 0.5:
                    best = max(best, s)
            out.append(best)
    return np.asarray(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    images, preds = {}, {}
    for i in range(12):
        k = int(rng.integers(0, 25))
        sizes = np.exp(rng.uniform(np.log(4), np.log(400), k))
        xy = rng.uniform(0, 600, (k, 2))
        boxes = np.c_[xy, sizes * rng.uniform(0.7, 1.0, k), sizes].round()
        hard = sorted(rng.choice(k, size=int(rng.integers(0, k + 1)), replace=False).tolist()) if k else []
        images[f"{i % 3}--Ev/img_{i}"] = (boxes, hard)
        if i % 5 == 4:
            continue  # an image without predictions
        src = boxes[rng.integers(0, k, int(rng.integers(0, 3 * k + 1)))] if k else np.zeros((0, 4))
        jit = src + rng.normal(0, 1, src.shape) * np.maximum(src[:, 3:4], 1) * 0.15
        fp = np.c_[rng.uniform(0, 600, (3, 2)), rng.uniform(5, 100, (3, 2))]
        p = np.r_[jit, fp]
        preds[f"{i % 3}--Ev/img_{i}"] = np.c_[p, rng.uniform(0, 1, len(p))]
    gt = make_gt(images)
    sr = size_recall(preds, gt)
    np.testing.assert_array_equal(sr.best_scores, _brute_force_best(preds, gt))
    # coverage recall is never below the official greedy matching's recall at its lowest threshold
    assert sr.recalled_any.sum() >= evaluate(preds, gt).settings["hard"].true_positives[-1]


def test_to_dict_table_and_plot(tmp_path):
    sr = size_recall(preds_one_per_bin(), GT1)
    d = sr.to_dict()
    json.dumps(d, allow_nan=False)
    assert [b["bin"] for b in d["bins"]] == sr.labels
    assert d["bins"][0] == {
        "bin": "<16", "min_px": 0.0, "max_px": 16.0, "num_faces": 1, "recalled_any_score": 1,
        "recalled_at_score_threshold": 1, "recall_any_score": 1.0, "recall_at_score_threshold": 1.0,
    }
    assert d["bins"][-1]["max_px"] is None and d["setting"] == "hard" and d["size"] == "sqrt(w*h)"
    assert d["total"] == {"num_faces": 6, "recalled_any_score": 4, "recalled_at_score_threshold": 3,
                          "recall_any_score": 4 / 6, "recall_at_score_threshold": 0.5}
    table = sr.format_table()
    assert "sqrt(w*h)" in table and "score>=0.5" in table
    assert table.splitlines()[2].split() == ["<16", "1", "1.0000", "1.0000"]
    assert table.splitlines()[-1].split() == ["all", "6", "0.6667", "0.5000"]
    empty_bin = size_recall(preds_one_per_bin(), GT1, setting="easy").format_table()
    assert empty_bin.splitlines()[3].split() == ["16-32", "0", "-", "-"]
    png = save_size_recall_plot(sr, tmp_path / "sub" / "size_recall.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert sorted(p.name for p in png.parent.iterdir()) == ["size_recall.png"]  # no temporary file left


def test_cli_predictions_prints_table_and_writes_json_and_png(tmp_path, capsys):
    from featherface.eval import cli

    save_ground_truth(GT1, tmp_path / "gt")
    write_predictions(preds_one_per_bin(), tmp_path / "preds")
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    out = tmp_path / "out"
    assert cli.run(parser.parse_args(["--predictions", str(tmp_path / "preds"), "--gt", str(tmp_path / "gt"),
                                      "-o", str(out)])) == 0
    printed = capsys.readouterr().out
    assert "Recall per face size (Hard faces" in printed
    assert size_recall(preds_one_per_bin(), GT1).format_table() in printed
    js = json.loads((out / "results.json").read_text())
    assert js["size_recall"]["total"]["recalled_any_score"] == 4
    assert [b["num_faces"] for b in js["size_recall"]["bins"]] == [1] * 6
    assert (out / "size_recall.png").stat().st_size > 5000 and js["size_recall_plot"] == str(out / "size_recall.png")
    # without an output folder the table is still printed; --no-plot writes no PNG
    assert cli.run(parser.parse_args(["--predictions", str(tmp_path / "preds"), "--gt", str(tmp_path / "gt")])) == 0
    assert "Recall per face size" in capsys.readouterr().out
    out2 = tmp_path / "out2"
    assert cli.run(parser.parse_args(["--predictions", str(tmp_path / "preds"), "--gt", str(tmp_path / "gt"),
                                      "-o", str(out2), "--no-plot"])) == 0
    assert not (out2 / "size_recall.png").exists() and "size_recall" in json.loads((out2 / "results.json").read_text())


def test_runner_with_a_detector_writes_the_table(tmp_path):
    import cv2

    from featherface.eval.runner import evaluate_detector

    class Det:  # one 20-px face found at score 0.4, one 80-px face at 0.9 (x1 y1 x2 y2)
        def predict_raw(self, image_bgr, *, scale=1.0, flip=False, score_threshold=0.02):
            boxes = np.array([[10, 10, 30, 30], [100, 10, 180, 90]], np.float32)
            return boxes, np.array([0.4, 0.9], np.float32), np.zeros((2, 10), np.float32)

    (tmp_path / "images" / "0--Ev").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "0--Ev" / "a.jpg"), np.full((120, 200, 3), 128, np.uint8))
    gt = make_gt({"0--Ev/a": ([sq(10, 10, 20), sq(100, 10, 80), sq(0, 100, 10)], [0, 1, 2])})
    result, report = evaluate_detector(Det(), tmp_path / "images", gt, output_dir=tmp_path / "o", progress=False)
    assert isinstance(result.size_recall, SizeRecall)
    assert result.size_recall.recalled_any.tolist() == [0, 1, 0, 1, 0, 0]
    assert result.size_recall.recalled_at_threshold.tolist() == [0, 0, 0, 1, 0, 0]
    assert report["size_recall"]["total"]["num_faces"] == 3
    assert (tmp_path / "o" / "size_recall.png").is_file()


@needs_oracle
def test_oracle_val_dev_cli(tmp_path, capsys):
    from featherface.eval import cli

    with tarfile.open(ORACLE / "predictions_val_dev" / "featherface_teacher_valdev.tar.gz") as tf:
        tf.extractall(tmp_path, filter="data")
    preds = tmp_path / "widerface_txt"
    out = tmp_path / "out"
    assert cli.main(["--predictions", str(preds), "--gt", str(ORACLE / "gt_val_dev"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    sr = size_recall(preds, ORACLE / "gt_val_dev")
    assert sr.format_table() in printed
    js = json.loads((out / "results.json").read_text())
    assert js["size_recall"] == json.loads(json.dumps(sr.to_dict()))
    # val-dev Hard faces per bin, sqrt(w*h) (6,028 in all, the Hard AP's denominator)
    assert sr.num_faces.tolist() == [2330, 2157, 1015, 336, 130, 60]
    assert js["size_recall"]["total"]["num_faces"] == js["evaluation"]["settings"]["hard"]["num_faces"] == 6028
    assert sr.recalled_any.tolist() == [1927, 2008, 976, 324, 130, 59]
    assert sr.recalled_at_threshold.tolist() == [1206, 1699, 926, 317, 130, 58]
    official_tp = js["evaluation"]["settings"]["hard"]["true_positives_at_lowest_threshold"]
    assert official_tp <= sr.recalled_any.sum() <= official_tp + 10
    assert (out / "size_recall.png").stat().st_size > 5000
