"""``featherface data pseudo-label``: the matching function, the file rewrite (fake teacher) and the CLI on two real
training images with the real teacher."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from featherface.cli import main as cli_main
from featherface.data.pseudo_label import (
    faces_needing_landmarks,
    format_pseudo_line,
    match_pseudo_landmarks,
    pseudo_label_file,
)
from featherface.data.readers import parse_retinaface_labels
from featherface.errors import InputError

SHARED = Path(__file__).resolve().parents[2] / "shared"
TRAIN = SHARED / "data" / "widerface" / "train"
TEACHER = SHARED / "peers" / "featherface" / "featherface_train_mobilenet0.25_Final.pth"


def lm(v: float) -> np.ndarray:
    return np.full(10, v, np.float32)


# --------------------------------------------------------------------------------------------- matching
def test_match_each_face_its_best_detection():
    faces = np.array([[0, 0, 10, 10], [100, 100, 120, 120]], np.float32)
    dets = np.array([[101, 101, 121, 121], [0, 0, 10, 11]], np.float32)
    got, ok = match_pseudo_landmarks(faces, [True, True], dets, [0.9, 0.95], np.stack([lm(1), lm(2)]))
    assert ok.tolist() == [True, True]
    np.testing.assert_array_equal(got, np.stack([lm(2), lm(1)]))
    assert got.dtype == np.float32 and got.shape == (2, 10)


def test_match_thresholds():
    faces = np.array([[0, 0, 10, 10]], np.float32)
    half = np.array([[0, 0, 10, 5]], np.float32)  # IoU exactly 0.5: accepted
    assert match_pseudo_landmarks(faces, [True], half, [0.9], [lm(1)])[1].tolist() == [True]
    below = np.array([[0, 0, 10, 4.9]], np.float32)  # IoU 0.49
    assert match_pseudo_landmarks(faces, [True], below, [0.9], [lm(1)])[1].tolist() == [False]
    same = np.array([[0, 0, 10, 10]], np.float32)
    assert match_pseudo_landmarks(faces, [True], same, [0.79], [lm(1)])[1].tolist() == [False]
    assert match_pseudo_landmarks(faces, [True], same, [0.8], [lm(1)])[1].tolist() == [True]
    got, ok = match_pseudo_landmarks(faces, [True], below, [0.9], [lm(1)], iou_threshold=0.4, score_threshold=0.95)
    assert ok.tolist() == [False]  # IoU passes now, score does not
    got, ok = match_pseudo_landmarks(faces, [True], below, [0.9], [lm(1)], iou_threshold=0.4, score_threshold=0.5)
    assert ok.tolist() == [True] and got[0, 0] == 1


def test_match_greedy_one_detection_per_face():
    # one detection between two faces: the face with the higher IoU takes it, the other gets its next option
    faces = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], np.float32)
    dets = np.array([[1, 0, 11, 10], [2, 0, 12, 9]], np.float32)
    # IoU(f0, d0) = 9/11, IoU(f1, d0) = 9/11 -> tie broken by face index; IoU(f1, d1) = 0.9 is the best pair
    got, ok = match_pseudo_landmarks(faces, [True, True], dets, [0.9, 0.9], np.stack([lm(1), lm(2)]))
    assert ok.tolist() == [True, True]
    np.testing.assert_array_equal(got, np.stack([lm(1), lm(2)]))
    # a single detection: only the better face gets it
    got, ok = match_pseudo_landmarks(faces, [True, True], dets[1:], [0.9], [lm(2)])
    assert ok.tolist() == [False, True]
    np.testing.assert_array_equal(got[0], np.zeros(10))


def test_match_unwanted_faces_still_take_their_detection():
    # the detection fits the annotated face (IoU 1) better than the boxes-only neighbour (IoU 0.6): no pseudo
    faces = np.array([[0, 0, 10, 10], [0, 0, 10, 6]], np.float32)
    dets = np.array([[0, 0, 10, 10]], np.float32)
    got, ok = match_pseudo_landmarks(faces, [False, True], dets, [0.99], [lm(3)])
    assert ok.tolist() == [False, False] and not got.any()
    # with a second detection for the neighbour, the neighbour gets that one
    dets2 = np.array([[0, 0, 10, 10], [0, 0, 10, 6]], np.float32)
    got, ok = match_pseudo_landmarks(faces, [False, True], dets2, [0.99, 0.9], [lm(3), lm(4)])
    assert ok.tolist() == [False, True] and got[1, 0] == 4 and not got[0].any()


def test_match_empty_and_bad_shapes():
    z4, z = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    got, ok = match_pseudo_landmarks(z4, np.zeros(0, bool), z4, z, np.zeros((0, 10)))
    assert got.shape == (0, 10) and ok.shape == (0,)
    faces = np.array([[0, 0, 10, 10]], np.float32)
    got, ok = match_pseudo_landmarks(faces, [True], z4, z, np.zeros((0, 10)))
    assert ok.tolist() == [False] and got.shape == (1, 10)
    with pytest.raises(ValueError):
        match_pseudo_landmarks(faces, [True, False], z4, z, np.zeros((0, 10)))


def test_faces_needing_landmarks_and_line_format():
    boxes = np.array([[0, 0, 5, 5], [0, 0, 5, 5], [0, 0, 5, 5], [0, 0, 0, 5]], np.float32)
    need = faces_needing_landmarks(boxes, np.array([True, False, False, False]), np.array([False, False, True, False]))
    assert need.tolist() == [False, True, False, False]
    line = format_pseudo_line("10 20 30 40".split(), np.arange(10, dtype=np.float32) + 0.5)
    assert line == ("10 20 30 40 0.500 1.500 0.0 2.500 3.500 0.0 4.500 5.500 0.0 6.500 7.500 0.0 8.500 9.500 0.0 "
                    "1.0 pseudo")


# --------------------------------------------------------------------------------------------- file rewrite
class FakeTeacher:
    def __init__(self, boxes, scores, lms):
        self.out = (np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(lms, np.float32))
        self.calls = 0

    def detect_arrays(self, image):
        self.calls += 1
        return self.out


LABEL = """\
# a.png
  2 2 10 10
20 20 10 10 ignore
40 2 10 10 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1
2 40 10 10 3 43 0.0 8 43 1.0 5 45 0.0 3 48 0.0 8 48 0.0 0.8
40 40 5 5
this line is bad
# full.png
2 2 10 10 3 3 0.0 8 3 1.0 5 5 0.0 3 8 0.0 8 8 0.0 0.8
# empty.png
# b.png
50 50 8 8
"""


def _images(root: Path, names) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        cv2.imwrite(str(root / n), np.zeros((60, 60, 3), np.uint8))


def test_pseudo_label_file_rewrites_only_filled_faces(tmp_path):
    (tmp_path / "label.txt").write_text(LABEL)
    _images(tmp_path / "images", ["a.png", "full.png", "empty.png", "b.png"])
    # detections for: face 1 (boxes-only), the ignore face, the -1 face, the annotated face, none for the 5x5 one;
    # a 0.5-score one for b.png's face (the fake teacher returns them all for every image)
    boxes = [[2, 2, 12, 12], [20, 20, 30, 30], [40, 2, 50, 12], [2, 40, 12, 50], [50, 50, 58, 58]]
    teacher = FakeTeacher(boxes, [0.99, 0.99, 0.85, 0.99, 0.5], [lm(1), lm(2), lm(3), lm(4), lm(5)])
    out = tmp_path / "out.txt"
    stats = pseudo_label_file(tmp_path / "label.txt", teacher, out, progress=False)
    assert teacher.calls == 2  # a.png and b.png; full.png and empty.png are copied without a teacher run
    assert (stats.images, stats.teacher_images, stats.copied_images) == (4, 2, 2)
    # a.png: faces 1, 3 (-1 landmarks) and 5 need landmarks, b.png: 1 face (only a 0.5-score detection)
    assert (stats.boxes_only_faces, stats.pseudo_faces, stats.problems) == (4, 2, 1)
    assert stats.summary() == "2 images, 4 boxes-only faces, 2 got pseudo-landmarks (50.0 %)"
    want = LABEL.splitlines()
    want[1] = "2 2 10 10 " + " ".join(["1.000 1.000 0.0"] * 5) + " 1.0 pseudo"
    want[3] = "40 2 10 10 " + " ".join(["3.000 3.000 0.0"] * 5) + " 1.0 pseudo"
    assert out.read_text().splitlines() == want
    res = parse_retinaface_labels(out)
    a = res.annotations[0]
    assert a.pseudo_landmarks.tolist() == [True, False, True, False, False]
    assert a.has_landmarks.tolist() == [True, False, True, True, False]
    assert a.invalid.tolist() == [False, True, False, False, False]
    # --max-images: the teacher runs on the first image needing it only; the file stays complete
    teacher.calls = 0
    stats = pseudo_label_file(tmp_path / "label.txt", teacher, out, progress=False, max_images=1)
    assert teacher.calls == 1 and stats.skipped_images == 1 and stats.teacher_images == 1
    assert len(parse_retinaface_labels(out).annotations) == 4
    # missing image: copied unchanged and counted
    (tmp_path / "images" / "b.png").unlink()
    stats = pseudo_label_file(tmp_path / "label.txt", teacher, out, progress=False)
    assert stats.unreadable_images == 1 and stats.teacher_images == 1


def test_pseudo_label_refuses_bbx_gt(tmp_path):
    (tmp_path / "gt.txt").write_text("ev/a.jpg\n1\n1 1 5 5 0 0 0 0 0 0\n")
    with pytest.raises(InputError, match="RetinaFace"):
        pseudo_label_file(tmp_path / "gt.txt", FakeTeacher(np.zeros((0, 4)), [], np.zeros((0, 10))),
                          tmp_path / "out.txt", progress=False)


# --------------------------------------------------------------------------------------------- real teacher
STRIPPED = "1--Handshaking/1_Handshaking_Handshaking_1_65.jpg"  # 4 annotated faces, landmarks removed here
FULL = "1--Handshaking/1_Handshaking_Handshaking_1_164.jpg"  # 2 annotated faces, copied unchanged


@pytest.mark.skipif(not (TRAIN / "label.txt").is_file() or not TEACHER.is_file(),
                    reason="needs ../shared/data/widerface/train and the shared FeatherFace teacher checkpoint")
def test_cli_pseudo_label_real_teacher(tmp_path, capsys):
    src = parse_retinaface_labels(TRAIN / "label.txt", TRAIN / "images")
    by_rel = {a.image_path.relative_to(TRAIN / "images").as_posix(): a for a in src.annotations}
    text = (TRAIN / "label.txt").read_text().splitlines()
    stripped, full = by_rel[STRIPPED], by_rel[FULL]
    assert stripped.has_landmarks.all() and full.has_landmarks.all()
    lines = [f"# {STRIPPED}"]
    for k, ln in enumerate(stripped.face_lines):
        box = " ".join(text[ln - 1].split()[:4])
        lines.append(box + (" ignore" if k == 0 else ""))  # the first face is an ignore region: never filled
    lines.append(f"# {FULL}")
    lines += [text[ln - 1] for ln in full.face_lines]
    (tmp_path / "label.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "pseudo.txt"
    t0 = time.perf_counter()
    rc = cli_main(["data", "pseudo-label", str(tmp_path / "label.txt"), "--teacher", str(TEACHER), "-o", str(out),
                   "--images", str(TRAIN / "images"), "--no-progress"])
    elapsed = time.perf_counter() - t0
    assert rc == 0
    printed = capsys.readouterr().out.strip().splitlines()
    n = stripped.num_faces - 1
    got = parse_retinaface_labels(out, TRAIN / "images").annotations
    a, b = got
    k = int(a.pseudo_landmarks.sum())
    assert printed[-1] == f"1 images, {n} boxes-only faces, {k} got pseudo-landmarks ({100 * k / n:.1f} %)"
    assert k >= n - 1  # large frontal faces: the teacher finds (nearly) all of them
    assert not a.pseudo_landmarks[0] and not a.has_landmarks[0] and a.invalid[0]
    # the teacher's points are close to the human annotation (within 15 % of the box size on average)
    for f in np.flatnonzero(a.pseudo_landmarks):
        size = float(stripped.boxes[f, 2] - stripped.boxes[f, 0])
        err = np.abs(a.landmarks[f] - stripped.landmarks[f]).mean()
        assert err < 0.15 * size, (f, err, size)
    # the fully annotated image is copied byte for byte
    assert out.read_text().splitlines()[-full.num_faces:] == lines[-full.num_faces:]
    assert not b.pseudo_landmarks.any()
    assert elapsed < 60
