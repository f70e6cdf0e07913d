"""Readers, `data check`, the dataset, collate and the data CLI (synthetic files + real-data smoke tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featherface.data.cli import configure_check_parser, configure_preview_parser, run_check, run_preview
from featherface.data.dataset import WiderFaceDataset, detection_collate
from featherface.data.readers import (
    check_dataset,
    detect_format,
    parse_annotations,
    parse_bbx_gt,
    parse_retinaface_labels,
)
from featherface.data.transforms import TrainTransform
from featherface.errors import InputError

SHARED = Path(__file__).resolve().parents[2] / "shared"
TRAIN = SHARED / "data" / "widerface" / "train"


# --------------------------------------------------------------------------------------------- writers
def write_label_txt(path: Path, images: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    lines = []
    for rel, boxes, lms, has in images:
        lines.append(f"# {rel}")
        for b, lm, h in zip(boxes, lms, has):
            x1, y1, x2, y2 = (float(v) for v in b)
            f = [x1, y1, x2 - x1, y2 - y1]
            for k in range(5):
                f += [float(lm[2 * k]), float(lm[2 * k + 1]), 0.0] if h else [-1.0, -1.0, -1.0]
            f.append(0.9 if h else -1.0)
            lines.append(" ".join(repr(v) for v in f))
    path.write_text("\n".join(lines) + "\n")


def write_bbx_gt(path: Path, images: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    lines = []
    for rel, boxes, invalid in images:
        lines += [rel, str(len(boxes))]
        if len(boxes) == 0:
            lines.append("0 0 0 0 0 0 0 0 0 0 ")
        for b, inv in zip(boxes, invalid):
            x1, y1, x2, y2 = (float(v) for v in b)
            lines.append(f"{x1!r} {y1!r} {x2 - x1!r} {y2 - y1!r} 0 0 0 {int(inv)} 0 0 ")
    path.write_text("\n".join(lines) + "\n")


def random_faces(rng, g, w=60, h=40):
    # integer-ish coordinates so that text round trips are exact in float32
    x1 = rng.integers(0, w - 10, g).astype(np.float32)
    y1 = rng.integers(0, h - 10, g).astype(np.float32)
    bw = rng.integers(1, 10, g).astype(np.float32)
    bh = rng.integers(1, 10, g).astype(np.float32)
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], 1)
    lms = np.round(rng.uniform(0, 30, (g, 10)), 2).astype(np.float32)
    has = rng.random(g) < 0.6
    lms[~has] = 0
    return boxes, lms, has


def make_images(root: Path, names: list[str], w=60, h=40, seed=0) -> None:
    rng = np.random.default_rng(seed)
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


# --------------------------------------------------------------------------------------------- readers
@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.lists(st.integers(0, 5), min_size=0, max_size=6))
def test_label_txt_round_trip(tmp_path_factory, seed, counts):
    tmp = tmp_path_factory.mktemp("rt")
    rng = np.random.default_rng(seed)
    images = [(f"ev/img_{i}.jpg", *random_faces(rng, g)) for i, g in enumerate(counts)]
    write_label_txt(tmp / "label.txt", images)
    res = parse_retinaface_labels(tmp / "label.txt")
    assert res.problems == []
    assert len(res.annotations) == len(images)
    for ann, (rel, boxes, lms, has) in zip(res.annotations, images):
        assert ann.image_path == (tmp / "images" / rel).resolve()
        assert ann.boxes.dtype == np.float32 and ann.boxes.shape == (len(boxes), 4)
        np.testing.assert_array_equal(ann.boxes, boxes)
        np.testing.assert_array_equal(ann.has_landmarks, has)
        np.testing.assert_allclose(ann.landmarks, lms, atol=1e-5)
        assert ann.landmarks.shape == (len(boxes), 10)
        assert ann.invalid.dtype == bool and ann.invalid.shape == (len(boxes),) and not ann.invalid.any()
        assert ann.pseudo_landmarks.shape == (len(boxes),) and not ann.pseudo_landmarks.any()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.lists(st.integers(0, 5), min_size=1, max_size=6))
def test_bbx_gt_round_trip(tmp_path_factory, seed, counts):
    tmp = tmp_path_factory.mktemp("rt")
    rng = np.random.default_rng(seed)
    images = []
    for i, g in enumerate(counts):
        boxes, _, _ = random_faces(rng, g)
        images.append((f"ev/img_{i}.jpg", boxes, rng.random(g) < 0.3))
    write_bbx_gt(tmp / "gt.txt", images)
    assert detect_format(tmp / "gt.txt") == "bbx_gt"
    res = parse_annotations(tmp / "gt.txt", tmp / "imgs")
    assert res.format == "bbx_gt" and res.problems == []
    assert len(res.annotations) == len(images)
    for ann, (rel, boxes, inv) in zip(res.annotations, images):
        assert ann.image_path == tmp / "imgs" / rel
        np.testing.assert_array_equal(ann.boxes, boxes.reshape(-1, 4))
        np.testing.assert_array_equal(ann.invalid, inv)
        assert not ann.has_landmarks.any() and ann.num_faces == len(boxes)


def test_boxes_only_label_txt_and_empty_image(tmp_path):
    (tmp_path / "label.txt").write_text("# a.jpg\n1 2 3 4\n# empty.jpg\n# b.jpg\n5 6 7 8\n")
    res = parse_retinaface_labels(tmp_path / "label.txt")
    assert res.problems == []
    assert [a.num_faces for a in res.annotations] == [1, 0, 1]
    np.testing.assert_array_equal(res.annotations[0].boxes, [[1, 2, 4, 6]])
    assert not res.annotations[0].has_landmarks.any()
    assert res.annotations[1].boxes.shape == (0, 4)


TAGGED_LABEL = """\
# ev/a.jpg
1 1 5 5
2 2 5 5 ignore
3 3 5 5 4 4 0.0 6 4 0.0 5 5 1.0 4 6 0.0 6 6 0.0 1.0 pseudo
4 4 5 5 4 4 0.0 6 4 0.0 5 5 1.0 4 6 0.0 6 6 0.0 0.9 ignore
5 5 5 5 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 ignore
# ev/b.jpg
6 6 5 5 4 4 0.0 6 4 0.0 5 5 1.0 4 6 0.0 6 6 0.0 0.9
"""


def test_label_txt_tags_ignore_and_pseudo(tmp_path, capsys):
    lab = tmp_path / "label.txt"
    lab.write_text(TAGGED_LABEL)
    res = parse_retinaface_labels(lab)
    assert res.problems == []
    a, b = res.annotations
    np.testing.assert_array_equal(a.invalid, [False, True, False, True, True])
    np.testing.assert_array_equal(a.pseudo_landmarks, [False, False, True, False, False])
    np.testing.assert_array_equal(a.has_landmarks, [False, False, True, True, False])
    np.testing.assert_array_equal(a.boxes[1], [2, 2, 7, 7])
    np.testing.assert_allclose(a.landmarks[2], [4, 4, 6, 4, 5, 5, 4, 6, 6, 6])
    assert b.invalid.tolist() == [False] and b.pseudo_landmarks.tolist() == [False]
    rep = check_dataset(lab, check_images=False)
    assert rep.ok and rep.num_invalid_flagged == 3 and rep.num_pseudo_landmarks == 1
    assert rep.num_faces == 6 and rep.num_faces_with_landmarks == 3
    assert "1 pseudo-landmarks, 3 tagged ignore" in rep.format_text()
    args = configure_check_parser(argparse.ArgumentParser()).parse_args([str(lab), "--no-images"])
    assert run_check(args) == 0
    assert "1 pseudo-landmarks, 3 tagged ignore" in capsys.readouterr().out


def test_label_txt_bad_tags(tmp_path):
    lab = tmp_path / "label.txt"
    lab.write_text("# ev/a.jpg\n"
                   "1 1 5 5 skip\n"  # 2: unknown tag -> columns, line left out
                   "1 1 5 5 4 4 0.0 6 4 0.0 5 5 1.0 4 6 0.0 6 6 0.0 1.0 teacher\n"  # 3: unknown tag
                   "2 2 5 5 pseudo\n"  # 4: pseudo needs landmarks -> landmarks problem, kept boxes-only
                   "3 3 5 5 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 pseudo\n"  # 5: same
                   "4 4 5 5 ignore pseudo\n"  # 6: two tags -> columns
                   "5 5 5 ignore\n"  # 7: 3 numbers + tag -> columns
                   "6 6 5 5 1.0\n"  # 8: 5 numbers -> columns
                   "7 7 5 5 IGNORE\n")  # 9: tags are lower case
    res = parse_retinaface_labels(lab)
    got = {(p.line, p.kind) for p in res.problems}
    assert got == {(2, "columns"), (3, "columns"), (4, "landmarks"), (5, "landmarks"), (6, "columns"),
                   (7, "columns"), (8, "columns"), (9, "columns")}
    assert "unknown tag 'skip'" in next(p.message for p in res.problems if p.line == 2)
    (a,) = res.annotations
    assert a.face_lines == [4, 5]
    assert not a.pseudo_landmarks.any() and not a.has_landmarks.any() and not a.invalid.any()


def test_bbx_gt_has_no_pseudo_landmarks(tmp_path):
    (tmp_path / "gt.txt").write_text("ev/a.jpg\n2\n1 1 5 5 0 0 0 1 0 0\n1 1 5 5 0 0 0 0 0 0\n")
    (a,) = parse_bbx_gt(tmp_path / "gt.txt").annotations
    assert a.invalid.tolist() == [True, False] and a.pseudo_landmarks.tolist() == [False, False]


def test_dataset_drops_ignore_tagged_faces(tmp_path):
    (tmp_path / "label.txt").write_text("# a.png\n1 1 5 5\n10 10 5 5 ignore\n")
    make_images(tmp_path / "images", ["a.png"], w=30, h=30)
    ds = WiderFaceDataset(tmp_path / "label.txt", transform=TrainTransform(image_size=16), verbose=False)
    assert ds.stats["faces"] == 1 and ds.stats["dropped_invalid"] == 1


BAD_LABEL = """\
1 1 1 1
# ev/a.jpg
10 10 5 5 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1
10 10 5 5 1 2
10 10 nan 5
10 10 five 5
10 10 0 5
10 10 5 -3
50 30 20 20
12 12 4 4 13 13 0 -1 -1 0 14 14 0 13 15 0 15 15 0 0.5
#
# ev/missing.jpg
1 1 2 2
# ev/corrupt.jpg
# ev/b.jpg
1 1 2 2
"""


def test_check_reports_every_bad_line_with_file_and_line(tmp_path, capsys):
    lab = tmp_path / "label.txt"
    lab.write_text(BAD_LABEL)
    make_images(tmp_path / "images", ["ev/a.jpg", "ev/b.jpg"])
    (tmp_path / "images" / "ev" / "corrupt.jpg").write_bytes(b"not a jpeg")
    rep = check_dataset(lab)
    got = {(p.line, p.kind) for p in rep.problems}
    expected = {(1, "structure"), (4, "columns"), (5, "number"), (6, "number"), (7, "size"), (8, "size"),
                (9, "outside"), (10, "landmarks"), (11, "structure"), (12, "image"), (14, "image")}
    assert got == expected
    assert len(rep.problems) == len(expected)
    for p in rep.problems:
        assert str(p).startswith(f"{lab}:{p.line}: ")
    assert rep.num_images == 4 and rep.num_images_checked == 2
    assert rep.num_face_lines == 11
    # parsed: lines 3, 7, 8, 9, 10, 13, 16 -> positive size: 3, 9, 10, 13, 16
    assert rep.num_faces == 5 and rep.num_faces_with_landmarks == 0
    assert rep.counts_by_kind == {"structure": 2, "columns": 1, "number": 2, "size": 2, "outside": 1,
                                  "landmarks": 1, "image": 2}
    assert rep.num_bad_images == 2 and not rep.ok
    # the CLI prints the same lines and a summary, exit code 1
    args = configure_check_parser(argparse.ArgumentParser()).parse_args([str(lab)])
    assert run_check(args) == 1
    out = capsys.readouterr().out
    for p in rep.problems:
        assert str(p) in out
    assert "11 problems" in out and "4 images" in out


def test_check_bbx_gt_problems(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("ev/a.jpg\n2\n1 1 5 5 0 0 0 0 0 0\n1 1 5 5 0 0 0\nev/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
                  "ev/c.jpg\n1\n1 1 0 5 0 0 0 1 0 0\nev/d.jpg\nx\n")
    rep = check_dataset(gt, check_images=False)
    got = {(p.line, p.kind) for p in rep.problems}
    assert got == {(4, "columns"), (10, "size"), (12, "structure")}
    assert rep.num_images == 3 and rep.num_empty_images == 2 and rep.num_invalid_flagged == 1
    gt.write_text("ev/a.jpg\n3\n1 1 5 5 0 0 0 0 0 0\n")
    rep = check_dataset(gt, check_images=False)
    assert [(p.line, p.kind) for p in rep.problems] == [(1, "structure")]
    assert "ends after 1 of 3" in rep.problems[0].message


def test_check_ok_and_input_errors(tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_label_txt(tmp_path / "label.txt", [("ev/a.jpg", *random_faces(rng, 3)), ("ev/b.jpg", *random_faces(rng, 0))])
    make_images(tmp_path / "imgs", ["ev/a.jpg", "ev/b.jpg"])
    p = configure_check_parser(argparse.ArgumentParser())
    assert run_check(p.parse_args([str(tmp_path / "label.txt"), "--images", str(tmp_path / "imgs")])) == 0
    assert "no problems found" in capsys.readouterr().out
    with pytest.raises(InputError):
        run_check(p.parse_args([str(tmp_path / "nope.txt")]))
    with pytest.raises(InputError):
        run_check(p.parse_args([str(tmp_path)]))
    with pytest.raises(InputError):
        run_check(p.parse_args([str(tmp_path / "label.txt"), "--images", str(tmp_path / "none")]))


# --------------------------------------------------------------------------------------------- dataset
@pytest.fixture()
def small_dataset(tmp_path):
    rng = np.random.default_rng(1)
    names = [f"ev/{i}.png" for i in range(10)]
    make_images(tmp_path / "images", names, w=60, h=40)
    images = [(n, *random_faces(rng, 3 if i == 0 else int(rng.integers(0, 4)))) for i, n in enumerate(names)]
    write_label_txt(tmp_path / "label.txt", images)
    return tmp_path / "label.txt"


def test_dataset_items_collate_and_reproducibility(small_dataset):
    t = TrainTransform(image_size=32, mixup_prob=0.3, cutmix_prob=0.3)
    ds = WiderFaceDataset(small_dataset, transform=t, seed=3, verbose=False)
    assert len(ds) == 10
    x, tg = ds[4]
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    b = tg["boxes"]
    assert np.all(b[:, 0] < b[:, 2]) and np.all(b[:, 1] < b[:, 3]) and np.all((b >= 0) & (b <= 1))
    # same (seed, epoch, index) -> same item, in any order; another epoch -> different
    items = [ds[i] for i in range(10)]
    again = [ds[i] for i in reversed(range(10))][::-1]
    for (x1, t1), (x2, t2) in zip(items, again):
        assert np.array_equal(x1, x2) and all(np.array_equal(t1[k], t2[k]) for k in t1)
    ds2 = WiderFaceDataset(small_dataset, transform=t, seed=3, verbose=False)
    assert np.array_equal(ds2[4][0], x)
    ds.set_epoch(1)
    assert not np.array_equal(ds[4][0], x)
    imgs, targets = detection_collate([ds[i] for i in range(4)])
    assert imgs.shape == (4, 3, 32, 32) and imgs.dtype == torch.float32
    assert len(targets) == 4
    for tt in targets:
        assert tt["boxes"].dtype == torch.float32 and tt["boxes"].shape[1] == 4
        assert tt["landmarks"].shape == (len(tt["boxes"]), 10) and tt["has_landmarks"].dtype == torch.bool
        assert tt["weights"].shape == (len(tt["boxes"]),)
    with pytest.raises(IndexError):
        ds[10]


def test_dataloader_workers_give_same_items(small_dataset):
    t = TrainTransform(image_size=24, mixup_prob=0.5)
    ds = WiderFaceDataset(small_dataset, transform=t, seed=0, verbose=False)
    dl0 = torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=detection_collate, num_workers=0)
    dl2 = torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=detection_collate, num_workers=2)
    for (a, ta), (b, tb) in zip(dl0, dl2):
        assert torch.equal(a, b)
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb))


def test_dataset_counts_dropped_boxes(tmp_path, caplog):
    (tmp_path / "label.txt").write_text("# a.png\n1 1 5 5\n2 2 0 4\n30 30 40 40\n1 1 x 1\n# b.png\n")
    make_images(tmp_path / "images", ["a.png", "b.png"], w=50, h=50)
    with caplog.at_level("INFO", logger="featherface.data.dataset"):
        ds = WiderFaceDataset(tmp_path / "label.txt", transform=TrainTransform(image_size=16))
    err = caplog.text  # the summary is logged (the command line shows INFO messages on stderr)
    assert "1 unparseable lines" in err and "1 zero-size" in err
    assert ds.stats["faces"] == 2 and ds.stats["dropped_degenerate"] == 1 and ds.stats["bad_lines"] == 1
    assert ds.stats["empty_images"] == 1
    s = ds.load(0)  # the 30..70 box is clipped to the 50x50 image
    np.testing.assert_array_equal(s.boxes[1], [30, 30, 50, 50])
    x, t = ds[1]  # image without faces works (upstream defect T7, docs/upstream-defects.md)
    assert t["boxes"].shape == (0, 4)


def test_dataset_from_bbx_gt_missing_images_and_invalid(tmp_path):
    write_bbx_gt(tmp_path / "gt.txt", [("a.png", np.array([[1, 1, 9, 9], [10, 10, 20, 20]], np.float32),
                                        np.array([False, True])),
                                       ("gone.png", np.zeros((0, 4), np.float32), np.zeros(0, bool))])
    make_images(tmp_path / "images", ["a.png"])
    with pytest.raises(InputError, match="1 of 2 images"):
        WiderFaceDataset(tmp_path / "gt.txt", verbose=False)
    ds = WiderFaceDataset(tmp_path / "gt.txt", transform=TrainTransform(image_size=16), skip_missing_images=True,
                          verbose=False)
    assert len(ds) == 1 and ds.stats["skipped_images"] == 1 and ds.stats["dropped_invalid"] == 1
    assert ds.stats["faces"] == 1 and ds.stats["faces_with_landmarks"] == 0
    ds = WiderFaceDataset(tmp_path / "gt.txt", transform=TrainTransform(image_size=16), skip_missing_images=True,
                          drop_invalid=False, verbose=False)
    # kept, as an ignore region (neither a face nor background in training)
    assert ds.stats["faces"] == 1 and ds.stats["ignore_faces"] == 1 and ds.stats["dropped_invalid"] == 0
    sample = ds.load(0)
    assert sample.num_faces == 2 and sample.ignore.tolist() == [False, True]
    with pytest.raises(InputError):
        WiderFaceDataset(tmp_path / "gt.txt", images_root=tmp_path / "nope")


def test_dataset_mix_probabilities_statistically(tmp_path):
    (tmp_path / "label.txt").write_text("".join(f"# {i}.png\n2 2 6 6\n" for i in range(20)))
    make_images(tmp_path / "images", [f"{i}.png" for i in range(20)], w=16, h=16)
    t = TrainTransform(image_size=8, mixup_prob=0.25, cutmix_prob=0.125, distort=False)
    ds = WiderFaceDataset(tmp_path / "label.txt", transform=t, seed=11, verbose=False)
    modes = []
    for e in range(40):
        ds.set_epoch(e)
        modes += [ds.augmented(i)[1] for i in range(len(ds))]
    n = len(modes)
    for name, p in (("mixup", 0.25), ("cutmix", 0.125)):
        f = sum(m == name for m in modes) / n
        assert abs(f - p) < 4 * np.sqrt(p * (1 - p) / n), (name, f)


def test_preview_writes_png(small_dataset, tmp_path):
    out = tmp_path / "batch.png"
    p = configure_preview_parser(argparse.ArgumentParser())
    args = p.parse_args([str(small_dataset), "-o", str(out), "--n", "5", "--seed", "0", "--size", "32",
                         "--cell", "64", "--mixup-prob", "0.5"])
    assert run_preview(args) == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (128, 256, 3)
    assert not [f for f in out.parent.iterdir() if f.name.endswith(".tmp")]
    with pytest.raises(InputError):
        run_preview(p.parse_args([str(small_dataset), "-o", str(tmp_path / "no" / "x.png")]))
    with pytest.raises(InputError):
        run_preview(p.parse_args([str(tmp_path / "missing.txt")]))


# --------------------------------------------------------------------------------------------- real data
needs_train = pytest.mark.skipif(not (TRAIN / "label.txt").is_file(),
                                 reason=f"WIDER FACE train subset not found at {TRAIN}")


@needs_train
def test_real_train_label_txt_parses():
    res = parse_retinaface_labels(TRAIN / "label.txt")
    assert res.problems == []
    assert len(res.annotations) == 355
    assert res.num_faces == 1473
    assert sum(int(a.has_landmarks.sum()) for a in res.annotations) == 1145


@needs_train
def test_real_train_check_reports_no_errors():
    rep = check_dataset(TRAIN / "label.txt")
    assert rep.ok, rep.format_text()
    assert rep.num_images_checked == 355 and rep.num_faces == 1473 and rep.num_faces_with_landmarks == 1145


@needs_train
def test_real_train_dataset_sample():
    ds = WiderFaceDataset(TRAIN / "label.txt", transform=TrainTransform(mixup_prob=0.25, cutmix_prob=0.25),
                          verbose=False)
    assert ds.stats["faces"] == 1473
    imgs, targets = detection_collate([ds[i] for i in (0, 100)])
    assert imgs.shape == (2, 3, 640, 640)
