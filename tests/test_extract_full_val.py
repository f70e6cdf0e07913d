"""scripts/extract_full_val.py: the official GT name list, the name check, and a run on a tiny bare git repository
(2 JPEGs and a Git LFS pointer under WIDER_val/images/)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "extract_full_val.py"
_spec = importlib.util.spec_from_file_location("extract_full_val", SCRIPT)
xv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(xv)

GT_TEXT = """0--Parade/0_Parade_a_1.jpg
2
10 10 5 5 0 0 0 0 0 0
20 20 5 5 0 0 0 0 0 0
1--Handshaking/1_Handshaking_b_2.jpg
0
0 0 0 0 0 0 0 0 0 0
"""


def _write_gt(path: Path, text: str = GT_TEXT) -> Path:
    path.write_text(text)
    return path


def test_gt_image_names_order_and_zero_face_images(tmp_path):
    names = xv.gt_image_names(_write_gt(tmp_path / "gt.txt"))
    assert names == ["0--Parade/0_Parade_a_1.jpg", "1--Handshaking/1_Handshaking_b_2.jpg"]


@pytest.mark.parametrize("text", [
    GT_TEXT + "0--Parade/0_Parade_a_1.jpg\n1\n1 1 1 1 0 0 0 0 0 0\n",  # repeated name
    "0--Parade/0_Parade_a_1.jpg\n2\n10 10 5 5 0 0 0 0 0 0\n",  # truncated box lines
    "0--Parade/0_Parade_a_1.jpg\nx\n",  # no face count
    "10 10 5 5 0 0 0 0 0 0\n",  # box line where a name belongs
])
def test_gt_image_names_rejects_malformed(tmp_path, text):
    with pytest.raises(ValueError):
        xv.gt_image_names(_write_gt(tmp_path / "gt.txt", text))


def test_verify_names():
    gt = ["e/b.jpg", "e/a.jpg", "f/c.jpg"]
    assert xv.verify_names(gt, {"e/a.jpg", "e/b.jpg", "f/c.jpg"}) == ([], [])
    assert xv.verify_names(gt, {"e/a.jpg", "g/z.jpg", "g/y.jpg"}) == (["e/b.jpg", "f/c.jpg"], ["g/y.jpg", "g/z.jpg"])


def test_git_blob_id_matches_git(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    p = tmp_path / "x.bin"
    p.write_bytes(b"\xff\xd8hello\x00world")
    out = subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True, check=True).stdout.strip()
    assert xv.git_blob_id(p.read_bytes()) == out


def _jpeg(seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


@pytest.fixture
def fake_mirror(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    bare, wt = tmp_path / "mirror.git", tmp_path / "wt"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    files = {
        "WIDER_val/images/0--Parade/0_Parade_a_1.jpg": _jpeg(0),
        "WIDER_val/images/1--Handshaking/1_Handshaking_b_2.jpg": _jpeg(1),
        "WIDER_val/images/1--Handshaking/1_Handshaking_lfs_3.jpg": b"version https://git-lfs.github.com/spec/v1\n",
        "WIDER_train/images/0--Parade/0_Parade_t_9.jpg": _jpeg(2),  # outside the prefix: never read
    }
    for rel, data in files.items():
        (wt / rel).parent.mkdir(parents=True, exist_ok=True)
        (wt / rel).write_bytes(data)
    git = ["git", "--git-dir", str(bare), "--work-tree", str(wt), "-c", "user.name=t", "-c", "user.email=t@t"]
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "-m", "images"], check=True, env=env)
    commit = subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    return bare, commit, files


def test_extract_run_idempotent_and_checked(tmp_path, fake_mirror, capsys):
    bare, commit, files = fake_mirror
    gt = _write_gt(tmp_path / "gt.txt")
    held = tmp_path / "held"
    (held / "0--Parade").mkdir(parents=True)
    (held / "0--Parade/0_Parade_a_1.jpg").write_bytes(files["WIDER_val/images/0--Parade/0_Parade_a_1.jpg"])
    out = tmp_path / "out"
    argv = [str(bare), str(out), "--commit", commit, "--gt", str(gt), "--check-against", str(held)]

    assert xv.main(argv) == 0
    line = capsys.readouterr().out
    assert line.startswith("OK: 2 images") and "2 written" in line and "1 not JPEG" in line
    assert "1 identical / 0 different" in line
    assert sorted(xv.images_under(out / "images")) == ["0--Parade/0_Parade_a_1.jpg",
                                                      "1--Handshaking/1_Handshaking_b_2.jpg"]
    for rel in xv.images_under(out / "images"):
        assert (out / "images" / rel).read_bytes() == files["WIDER_val/images/" + rel]
    assert (out / "val-all.txt").read_text().splitlines() == xv.gt_image_names(gt)
    from featherface.eval.runner import list_images

    assert list_images(out / "images", out / "val-all.txt") == xv.gt_image_names(gt)

    # Re-run: nothing rewritten; a damaged file is rewritten.
    assert xv.main(argv) == 0
    assert "0 written, 2 already identical" in capsys.readouterr().out
    (out / "images/0--Parade/0_Parade_a_1.jpg").write_bytes(b"\xff\xd8damaged")
    assert xv.main(argv) == 0
    assert "1 written, 1 already identical" in capsys.readouterr().out

    # A held image that differs, a GT name the mirror lacks: failure, the earlier list removed.
    (held / "0--Parade/0_Parade_a_1.jpg").write_bytes(_jpeg(5))
    _write_gt(gt, GT_TEXT + "2--Demo/2_Demo_c_4.jpg\n1\n1 1 1 1 0 0 0 0 0 0\n")
    assert xv.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("FAILED") and "1 missing" in captured.out
    assert "0 identical / 1 different" in captured.out
    assert "2--Demo/2_Demo_c_4.jpg" in captured.err
    assert not (out / "val-all.txt").exists()
