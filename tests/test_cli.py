"""The command line: detect on files, folders and videos, errors as one line with a non-zero exit."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from featherface.checkpoint import save_checkpoint
from featherface.cli import main
from featherface.models import build_model

ASSET = Path(__file__).resolve().parents[1] / "src" / "featherface" / "assets" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "v2.pth", build_model("featherface_v2"))


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]


def test_detect_folder_skips_bad_files_and_finishes(tmp_path, ckpt, capsys):
    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    (src / "a.jpg").write_bytes(ASSET.read_bytes())
    (src / "broken.jpg").write_bytes(b"garbage")
    (src / "zero.png").write_bytes(b"")
    cv2.imwrite(str(tmp_path / "in" / "gray.png"), np.zeros((40, 50), np.uint8))
    out = tmp_path / "out"
    rc = main(["detect", str(tmp_path / "in"), "-o", str(out), "--model", str(ckpt), "--score", "0.9"])
    assert rc == 1  # some inputs failed
    err = capsys.readouterr().err
    assert "broken.jpg: not an image" in err and "zero.png: empty file" in err
    recs = _records(out)
    assert sorted(Path(r["source"]).name for r in recs) == ["a.jpg", "gray.png"]
    assert (out / "sub" / "a.jpg").exists() and (out / "gray.png").exists()


def test_detect_video(tmp_path, ckpt):
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(4):
        w.write(np.full((48, 64, 3), i * 40, np.uint8))
    w.release()
    out = tmp_path / "out"
    assert main(["detect", str(video), "-o", str(out), "--model", str(ckpt)]) == 0
    recs = _records(out)
    assert [r["frame"] for r in recs] == [0, 1, 2, 3]
    assert (out / "clip.avi.mp4").exists()  # full input name kept (clip.avi and clip.mp4 never collide)


@pytest.mark.parametrize("argv,needle", [
    (["detect", "missing.jpg", "--model", "{ckpt}"], "missing.jpg: file not found"),
    (["detect", str(ASSET), "--model", "featherface_v9"], "unknown model"),
    (["detect", str(ASSET), "--model", "no/such/file.pth"], "checkpoint not found"),
    (["info", "featherface_v7"], "unknown model"),
    (["check-teacher", "nope.pth"], "cannot be read"),
])
def test_errors_are_one_line_and_non_zero(tmp_path, ckpt, argv, needle):
    argv = [a.replace("{ckpt}", str(ckpt)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "featherface", *argv, "-o", str(tmp_path)] if argv[0] == "detect"
                          else [sys.executable, "-m", "featherface", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert needle in text
    assert "Traceback" not in text


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 100)
    proc = subprocess.run([sys.executable, "-m", "featherface", "detect", str(ASSET), "--model", str(bad), "-o",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and "not a readable checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_detect_help_ends_with_examples():
    proc = subprocess.run([sys.executable, "-m", "featherface", "detect", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stdout.rstrip().splitlines()[-1].strip().startswith("featherface detect")
    assert "examples:" in proc.stdout


def test_info_prints_the_tables():
    proc = subprocess.run([sys.executable, "-m", "featherface", "info", "featherface_v1"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "592,371" in proc.stdout and "488,661" in proc.stdout and "MACs at 640x640" in proc.stdout


def test_one_size_spelling_width_by_height():
    import argparse

    from featherface.cliargs import frame_size

    assert frame_size("640x480") == (480, 640) and frame_size("96×64") == (64, 96)
    for bad in ("640", "0x5", "axb"):
        with pytest.raises(argparse.ArgumentTypeError):
            frame_size(bad)
