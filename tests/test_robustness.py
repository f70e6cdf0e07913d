"""Real-world inputs (issue 19): phone photos with EXIF orientation, damaged and huge images, folder runs that meet
bad files, output that must never overwrite itself, one-line errors, API input checks, atomic writes, the web server's
answers to strange paths. One test per case; every input is generated here."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from featherface.api import FaceDetector
from featherface.cli import main
from featherface.errors import CheckpointError, FeatherFaceError, InputError
from featherface.fsutil import AtomicFile, atomic_write_bytes, atomic_write_text, remove_stale_temps
from featherface.imageio import IMAGE_SUFFIXES, apply_orientation, load_image, read_header
from featherface.models import build_model

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "src" / "featherface" / "assets" / "grace_hopper.jpg"
# EXIF orientation -> the transform that turns the upright picture into the stored pixels (inverse of the display)
_TO_STORED = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
              5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, 1), 7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
              8: lambda a: np.rot90(a, -1)}


def _pattern(h: int = 48, w: int = 64) -> np.ndarray:
    """An asymmetric upright test picture (BGR): every flip or rotation of it is different."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 3] = (255, 255, 255)
    img[h // 2:, w // 2:] = (0, 0, 200)
    img[: h // 4, w - w // 4:] = (0, 200, 0)
    return img


def _exif_jpeg(path: Path, upright_bgr: np.ndarray, orientation: int, quality: int = 95) -> Path:
    """A JPEG whose stored pixels are ``upright_bgr`` turned so that EXIF ``orientation`` shows it upright."""
    stored = np.ascontiguousarray(_TO_STORED[orientation](upright_bgr))
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored[:, :, ::-1]).save(path, "JPEG", quality=quality, exif=exif.tobytes())
    return path


def _png_declaring(path: Path, width: int, height: int, *, complete: bool = False) -> Path:
    """An RGB PNG whose header says ``width`` x ``height``. ``complete``: a valid all-black image (the deflate stream
    is one full-flushed block repeated, so a 30000x30000 file takes seconds to write, not to compress); else the
    pixel data is cut short (fine for anything refused from the header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr))
        if not complete:
            f.write(chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
            return path
        rows_per_block = max(1, min(height, (8 << 20) // (1 + 3 * width)))
        block = b"\x00" * ((1 + 3 * width) * rows_per_block)
        c = zlib.compressobj(9)
        first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
        repeat = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)  # no history after a full flush: same bytes again
        n_blocks, rest_rows = divmod(height, rows_per_block)
        tail = zlib.compressobj(9)
        tail_bytes = tail.compress(b"\x00" * ((1 + 3 * width) * rest_rows)) + tail.flush(zlib.Z_FULL_FLUSH)
        # adler32 of n zero bytes: a = 1, b = n (mod 65521)
        total = (1 + 3 * width) * height
        adler = ((total % 65521) << 16) | 1
        body = [first] + [repeat] * (n_blocks - 1) + ([tail_bytes[2:]] if rest_rows else [])
        data = b"".join(body) + b"\x03\x00" + struct.pack(">I", adler)  # empty final block + checksum
        f.write(chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from featherface.checkpoint import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "v2.pth", build_model("featherface_v2"))


@pytest.fixture(scope="module")
def trained():
    """The bundled default weights (real faces); skipped where the package has none."""
    try:
        return FaceDetector(score_threshold=0.5)
    except FeatherFaceError as exc:
        pytest.skip(f"no bundled default weights: {exc}")


def _detect_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["detect", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------ 2. EXIF orientation
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_all_eight(tmp_path, orientation):
    upright = _pattern()
    path = _exif_jpeg(tmp_path / f"o{orientation}.jpg", upright, orientation)
    ours = load_image(path)
    assert ours.shape == upright.shape
    # OpenCV's own EXIF handling (IMREAD_COLOR) decodes with the same libjpeg: identical pixels
    assert np.array_equal(ours, cv2.imread(str(path), cv2.IMREAD_COLOR))
    # PIL's exif_transpose (another libjpeg build): the same picture up to JPEG rounding
    pil = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))[:, :, ::-1]
    assert np.abs(ours.astype(int) - pil.astype(int)).mean() < 2.0
    # and it is the upright picture that was encoded
    assert np.abs(ours.astype(int) - upright.astype(int)).mean() < 4.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_equals_pil_exif_transpose(orientation):
    upright = _pattern(30, 50)
    stored = np.ascontiguousarray(_TO_STORED[orientation](upright))
    assert np.array_equal(apply_orientation(stored, orientation), upright)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif.tobytes())
    assert np.array_equal(np.asarray(ImageOps.exif_transpose(Image.open(buf))), upright)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_pil_image_input_is_turned_upright(tmp_path, orientation):
    path = _exif_jpeg(tmp_path / "p.jpg", _pattern(), orientation)
    from_pil = load_image(Image.open(path))
    assert from_pil.shape == _pattern().shape
    assert np.abs(from_pil.astype(int) - load_image(path).astype(int)).mean() < 2.0
    # a PIL image already turned with exif_transpose is not turned twice
    assert load_image(ImageOps.exif_transpose(Image.open(path))).shape == _pattern().shape


def test_png_exif_orientation_is_applied(tmp_path):
    stored = np.ascontiguousarray(_TO_STORED[6](_pattern()))
    img = Image.fromarray(stored[:, :, ::-1])
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "p.png", exif=exif.tobytes())
    assert np.array_equal(load_image(tmp_path / "p.png"), _pattern())


def test_portrait_phone_photo_is_detected_upright(tmp_path, trained, capsys):
    upright = cv2.imread(str(ASSET))
    path = _exif_jpeg(tmp_path / "phone.jpg", upright, 6)
    ref = trained.detect(upright)
    faces = trained.detect(path)
    assert len(faces) == len(ref) == 1 and faces[0].score > 0.99
    assert np.allclose(faces[0].box, ref[0].box, atol=4.0)
    rc, _, _ = _detect_cli([str(path), "-o", str(tmp_path / "out")], capsys)
    rec = _records(tmp_path / "out")[0]
    assert rc == 0 and (rec["width"], rec["height"]) == (upright.shape[1], upright.shape[0])
    assert cv2.imread(str(tmp_path / "out" / "phone.jpg")).shape == upright.shape


# ------------------------------------------------------------------------------- 3. header first, big images
def test_pixel_budget_refuses_before_decoding(tmp_path, monkeypatch):
    path = _png_declaring(tmp_path / "huge.png", 30000, 30000)
    assert read_header(path.read_bytes()).width == 30000

    def no_decode(*a, **k):
        raise AssertionError("decoded although over the budget")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    with pytest.raises(InputError, match=r"30000x30000 image \(900 MP\) is over the 100 MP limit") as e:
        load_image(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_pixel_budget_is_a_setting(tmp_path):
    path = _png_declaring(tmp_path / "mid.png", 3000, 2000)  # 6 MP, pixel data cut short
    with pytest.raises(InputError, match="over the 5 MP limit"):
        load_image(path, max_pixels=5_000_000)
    with pytest.raises(InputError, match="not an image OpenCV can decode"):  # allowed: the decoder's own verdict
        load_image(path, max_pixels=None)
    with pytest.raises(FeatherFaceError, match="max_pixels"):
        FaceDetector(build_model("featherface_v2"), max_pixels=0)


def test_large_jpeg_is_decoded_reduced_with_results_in_original_pixels(tmp_path, trained):
    photo = cv2.resize(cv2.imread(str(ASSET)), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    big = np.full((5250, 4480, 3), 120, np.uint8)  # longest side 5250 >= 2 * 2560: decoded at 1/2
    big[2500:2500 + photo.shape[0], 3000:3000 + photo.shape[1]] = photo
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    decoded = trained.load(path)
    assert decoded.reduced and decoded.image.shape[:2] == (2625, 2240) and (decoded.width, decoded.height) == (4480, 5250)
    reduced = trained.detect(path)
    full = trained.detect(load_image(path))  # the full-size array: resized by the detector itself
    assert len(reduced) == len(full) == 1
    assert np.allclose(reduced[0].box, full[0].box, rtol=0, atol=0.01 * 5250)
    assert reduced[0].box[0] > 3000 and reduced[0].box[1] > 2500  # original pixels, not the half-size decode's


def test_small_jpeg_is_never_reduced(trained):
    decoded = trained.load(ASSET)
    assert not decoded.reduced and np.array_equal(decoded.image, cv2.imread(str(ASSET)))


def _jpeg_bytes() -> bytes:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((240, 320, 3)) * 255).astype(np.uint8), (0, 0), 3)
    return cv2.imencode(".jpg", img)[1].tobytes()


def test_jpeg_with_trailing_data_is_accepted(tmp_path):
    raw = _jpeg_bytes()
    (tmp_path / "motion.jpg").write_bytes(raw + b"\x00" * 5000 + b"MotionPhoto_Data" + raw)
    assert np.array_equal(load_image(tmp_path / "motion.jpg"), cv2.imdecode(np.frombuffer(raw, np.uint8), 1))


def test_half_jpeg_with_end_marker_is_refused(tmp_path):
    raw = _jpeg_bytes()
    (tmp_path / "half.jpg").write_bytes(raw[: len(raw) // 2] + b"\xff\xd9")
    with pytest.raises(InputError, match="truncated or corrupt JPEG.*premature end"):
        load_image(tmp_path / "half.jpg")


def test_truncated_jpeg_is_refused(tmp_path):
    raw = _jpeg_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cut.jpg: truncated or corrupt JPEG"):
        load_image(tmp_path / "cut.jpg")


@pytest.mark.slow
def test_peak_memory_of_a_30000x30000_png(tmp_path):
    """The 2.6 MB PNG that used to take 5.67 GB: refused from its header, peak RSS of the whole CLI run < 1 GB."""
    path = _png_declaring(tmp_path / "huge.png", 30000, 30000, complete=True)
    code = ("import resource, sys; from featherface.cli import main; rc = main(sys.argv[1:]); "
            "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "detect", str(path), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    rss_mb = int(proc.stdout.split("MAXRSS_KB")[1].split()[0]) / 1024
    print(f"\n30000x30000 PNG ({path.stat().st_size / 1e6:.1f} MB file): peak RSS {rss_mb:.0f} MB; {proc.stderr.strip()}")
    assert proc.returncode == 1 and "over the 100 MP limit" in proc.stderr
    assert rss_mb < 1024


# -------------------------------------------------------------------------------------------- 4. folder runs
def test_folder_run_survives_any_per_file_exception(tmp_path, ckpt, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.jpg", "boom.jpg", "c.jpg"):
        cv2.imwrite(str(src / name), np.full((40, 60, 3), 90, np.uint8))
    real = FaceDetector.detect_decoded

    def flaky(self, decoded):
        if decoded.width == 60 and getattr(flaky, "calls", 0) == 1:
            flaky.calls += 1
            raise RuntimeError("simulated bug")
        flaky.calls = getattr(flaky, "calls", 0) + 1
        return real(self, decoded)

    monkeypatch.setattr(FaceDetector, "detect_decoded", flaky)
    rc, _, err = _detect_cli([str(src), "-o", str(tmp_path / "out"), "--model", str(ckpt)], capsys)
    assert rc == 1 and "skipped:" in err and "RuntimeError: simulated bug" in err and "Traceback" not in err
    assert sorted(Path(r["source"]).name for r in _records(tmp_path / "out")) == ["a.jpg", "c.jpg"]


def test_huge_image_in_a_folder_is_skipped_and_the_run_finishes(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _png_declaring(src / "a_huge.png", 33000, 33000)
    cv2.imwrite(str(src / "b.jpg"), np.full((40, 60, 3), 90, np.uint8))
    rc, out, err = _detect_cli([str(src), "-o", str(tmp_path / "out"), "--model", str(ckpt)], capsys)
    assert rc == 1 and "a_huge.png: 33000x33000 image" in err
    assert [Path(r["source"]).name for r in _records(tmp_path / "out")] == ["b.jpg"]
    assert "1 input(s) skipped" in out


def test_same_name_different_suffix_gives_distinct_outputs(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    img = np.full((40, 60, 3), 90, np.uint8)
    for name in ("a.jpg", "a.webp", "a.png", "sub/a.jpg"):
        cv2.imwrite(str(src / name), img)
    Image.fromarray(img).save(src / "a.gif")
    rc, _, _ = _detect_cli([str(src), "-o", str(tmp_path / "out"), "--model", str(ckpt)], capsys)
    out = tmp_path / "out"
    assert rc == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.gif.png", "a.jpg", "a.png", "a.webp", "detections.jsonl", "sub/a.jpg"]
    assert {Path(r["output"]).relative_to(out).as_posix() for r in _records(out)} == {
        "a.gif.png", "a.jpg", "a.png", "a.webp", "sub/a.jpg"}


def test_output_folder_is_never_read_as_input(tmp_path, ckpt, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    cv2.imwrite(str(src / "a.jpg"), np.full((40, 60, 3), 90, np.uint8))
    for _ in range(3):  # `featherface detect . -o out` run three times
        rc, _, _ = _detect_cli([str(src), "-o", str(src / "out"), "--model", str(ckpt)], capsys)
        assert rc == 0
    assert not (src / "out" / "out").exists()
    assert [Path(r["source"]).name for r in _records(src / "out")] == ["a.jpg"]


def test_output_folder_equal_to_the_input_folder_is_refused(tmp_path, ckpt, capsys):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((40, 60, 3), 90, np.uint8))
    before = (tmp_path / "a.jpg").read_bytes()
    rc, _, err = _detect_cli([str(tmp_path), "-o", str(tmp_path), "--model", str(ckpt)], capsys)
    assert rc == 2 and "the output folder is the input folder" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "a.jpg").read_bytes() == before


@pytest.mark.parametrize("suffix", [".gif", ".tif", ".tiff", ".bmp", ".webp", ".png", ".jpg", ".jpeg"])
def test_every_image_suffix_works_in_folders_and_as_single_files(tmp_path, ckpt, capsys, suffix):
    assert suffix in IMAGE_SUFFIXES
    src = tmp_path / "in"
    src.mkdir()
    img = np.full((40, 60, 3), 90, np.uint8)
    name = f"x{suffix}"
    if suffix == ".gif":
        Image.fromarray(img).save(src / name)
    else:
        cv2.imwrite(str(src / name), img)
    for source, out in ((src, tmp_path / "o1"), (src / name, tmp_path / "o2")):
        rc, _, err = _detect_cli([str(source), "-o", str(out), "--model", str(ckpt)], capsys)
        assert rc == 0, err
        assert [Path(r["source"]).name for r in _records(out)] == [name]


def test_a_bad_file_is_one_line(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    src.mkdir()
    raw = _jpeg_bytes()
    (src / "half.jpg").write_bytes(raw[: len(raw) // 2] + b"\xff\xd9")
    (src / "ok.jpg").write_bytes(raw)
    proc = subprocess.run([sys.executable, "-m", "featherface", "detect", str(src), "-o", str(tmp_path / "out"),
                           "--model", str(ckpt)], capture_output=True, text=True)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "\r" not in ln and "detect:" not in ln]
    assert proc.returncode == 1 and len(lines) == 1 and "half.jpg" in lines[0], proc.stderr


# --------------------------------------------------------------------------------------- 5. one-line errors
@pytest.mark.parametrize("argv,needle", [
    (["--threads", "0"], "argument --threads: must be an integer >= 1"),
    (["--threads", "-3"], "argument --threads: must be an integer >= 1"),
    (["--device", "banana"], "argument --device: unknown device 'banana'"),
    (["--max-side", "-5"], "argument --max-side: must be an integer >= 0"),
    (["--max-frames", "0"], "argument --max-frames: must be an integer >= 1"),
    (["--resize", "10"], "argument --resize: longest side must be >= 32"),
    (["--score", "1.5"], "argument --score: must be in [0, 1]"),
    (["--nms", "0"], "argument --nms: must be in (0, 1]"),
    (["--max-megapixels", "-1"], "argument --max-megapixels: must be a number >= 0"),
])
def test_bad_arguments_are_one_line_usage_errors(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main(["detect", str(ASSET), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv,needle", [
    (["--threads", "0"], "argument --threads: must be an integer >= 1"),
    (["--device", "banana"], "argument --device: unknown device 'banana'"),
    (["--batch-size", "-3"], "argument --batch-size: must be an integer >= 1"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
])
def test_bad_train_arguments_are_one_line_usage_errors(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", "configs/ship_v2_640.toml", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_says_so(capsys, ckpt):
    with pytest.raises(SystemExit):
        main(["detect", str(ASSET), "--device", "cuda"])
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "corrupt" not in err
    with pytest.raises(FeatherFaceError, match="CUDA is not available"):
        FaceDetector(ckpt, device="cuda")


def test_output_that_is_a_file_is_one_line(tmp_path, ckpt, capsys):
    (tmp_path / "out").write_text("not a folder")
    rc, _, err = _detect_cli([str(ASSET), "-o", str(tmp_path / "out"), "--model", str(ckpt)], capsys)
    assert rc == 2 and f"{tmp_path / 'out'}: exists and is not a folder" in err and len(err.strip().splitlines()) == 1


def test_full_disk_on_output_is_one_line_per_file(tmp_path, ckpt, capsys, monkeypatch):
    import featherface.commands.detect as detect_mod

    def full(path, image):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(detect_mod, "write_image_atomic", full)
    rc, _, err = _detect_cli([str(ASSET), "-o", str(tmp_path / "out"), "--model", str(ckpt)], capsys)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and "grace_hopper.jpg" in lines[0] and "No space left on device" in lines[0]
    assert str(tmp_path / "out" / "grace_hopper.jpg") in lines[0]


def test_os_error_anywhere_in_a_command_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    import featherface.commands.info as info

    def boom(args):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x.txt"))

    monkeypatch.setattr(info, "run", boom)
    assert main(["info", "featherface_v2"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"featherface info: error: {tmp_path / 'x.txt'}: Permission denied"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_with_a_clear_message(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "x": _Payload(marker)}, bad)
    rc, _, err = _detect_cli([str(ASSET), "--model", str(bad), "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and "not a safe checkpoint (it contains code or objects we refuse to load)" in err
    assert "weights_only" not in err and "corrupt" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_garbage_checkpoint_is_still_called_corrupt(tmp_path):
    from featherface.checkpoint import read_checkpoint

    (tmp_path / "z.pth").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "z.pth")


# ------------------------------------------------------------------------------------------------- 6. API
@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return FaceDetector(build_model("featherface_v2"), score_threshold=0.0, keep_top_k=5)


def test_float_image_in_0_1_is_refused_with_a_message(untrained):
    img = cv2.imread(str(ASSET)).astype(np.float32) / 255
    with pytest.raises(InputError, match="looks like a 0..1 image.*value_scale=255"):
        untrained.detect(img)


def test_value_scale_makes_a_0_1_image_usable(untrained):
    bgr = cv2.imread(str(ASSET))
    scaled = untrained.detect((bgr.astype(np.float64) / 255), value_scale=255)
    plain = untrained.detect(bgr.astype(np.float32))  # floats in 0..255 are used as they are
    assert [f.box for f in plain] == [f.box for f in untrained.detect(bgr)]
    assert len(scaled) == len(plain)


@pytest.mark.parametrize("array,needle", [
    (np.full((20, 30, 3), 300.0), "must be in 0..255, got 300..300"),
    (np.full((20, 30, 3), -1, np.int32), "must be in 0..255, got -1..-1"),
    (np.full((20, 30, 3), np.nan, np.float32), "NaN"),
])
def test_out_of_range_values_are_refused(untrained, array, needle):
    with pytest.raises(InputError, match=needle):
        untrained.detect(array)


def test_list_with_a_bad_item_names_its_index(untrained, tmp_path):
    good = cv2.imread(str(ASSET))
    with pytest.raises(InputError, match=r"item 1 of 3: unsupported image input of type NoneType"):
        untrained.detect([good, None, tmp_path / "missing.jpg"])
    out = untrained.detect([good, None, tmp_path / "missing.jpg"], return_exceptions=True)
    assert isinstance(out[0], list) and [f.box for f in out[0]] == [f.box for f in untrained.detect(good)]
    assert isinstance(out[1], InputError) and out[1].index == 1
    assert isinstance(out[2], InputError) and "item 2 of 3" in str(out[2]) and "file not found" in str(out[2])


def test_detector_still_takes_a_module_and_a_device():
    model = build_model("featherface_v2")
    det = FaceDetector(model, device=torch.device("cpu"))
    assert det.model is model and isinstance(det.detect(np.zeros((32, 32, 3), np.uint8)), list)


# ------------------------------------------------------------------------------------------ 7. atomic writes
def test_atomic_write_honours_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    old = os.umask(0o022)
    try:
        p = atomic_write_bytes(tmp_path / "b.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_detect_outputs_are_not_private(tmp_path, ckpt, capsys):
    old = os.umask(0o022)
    try:
        _detect_cli([str(ASSET), "-o", str(tmp_path / "out"), "--model", str(ckpt)], capsys)
    finally:
        os.umask(old)
    for name in ("grace_hopper.jpg", "detections.jsonl"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o644


def test_failed_atomic_write_leaves_nothing(tmp_path):
    (tmp_path / "t.txt").write_text("old")

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("disk gone")

    from featherface.fsutil import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "t.txt", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"] and (tmp_path / "t.txt").read_text() == "old"


def test_temp_file_of_a_killed_writer_is_removed_at_the_next_start(tmp_path):
    target = tmp_path / "last.pth"
    code = ("import os, signal, sys; from featherface.fsutil import AtomicFile; f = AtomicFile(sys.argv[1]); "
            "f.fh.write(b'x' * 1000); f.fh.flush(); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(target)])
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".last.pth.") and left[0].endswith(".tmp")
    from featherface.checkpoint import save_checkpoint

    save_checkpoint(target, build_model("featherface_v2"))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_stale_temp_removal_spares_live_writers(tmp_path):
    target = tmp_path / "x.txt"
    live = AtomicFile(target)  # this process is alive: its temporary file stays
    legacy = tmp_path / ".x.txt.abcd1234.tmp"  # mkstemp-style name from an older version
    legacy.write_bytes(b"")
    fresh_legacy = tmp_path / ".x.txt.zzzz9999.tmp"
    fresh_legacy.write_bytes(b"")
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_temps(target) == [legacy]
    assert live.tmp.exists() and fresh_legacy.exists()
    live.commit()
    assert target.exists()


# --------------------------------------------------------------------------------------------- web, labels, eval
def _tiny_server(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from featherface.commands.web import make_server

    ort = tmp_path / "ort"
    ort.mkdir()
    for name in ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"):
        (ort / name).write_bytes(b"// stub\n")
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("input", "score_threshold", "iou_threshold")]
    outs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)]
    graph = helper.make_graph([helper.make_node("Identity", ["iou_threshold"], ["scores"])], "g", ins, outs)
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    return make_server(tmp_path / "m.onnx", port=0, ort_dir=ort, quiet=False)


@pytest.mark.parametrize("path,status", [("/%00", 400), ("/app.js%00.png", 400), ("/%ff", 400),
                                         ("/" + "a" * 5000, 414), ("/" + "a" * 1000 + ".js", 404), ("/", 200)])
def test_web_server_answers_strange_paths_without_a_traceback(tmp_path, capfd, path, status):
    import http.client

    server = _tiny_server(tmp_path)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == status
        resp.read()
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capfd.readouterr().err


def test_label_file_with_a_utf8_bom(tmp_path):
    from featherface.data.readers import parse_retinaface_labels

    (tmp_path / "images" / "ev").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "ev" / "a.jpg"), np.zeros((40, 60, 3), np.uint8))
    (tmp_path / "label.txt").write_bytes("\ufeff# ev/a.jpg\n10 10 20 20\n".encode("utf-8"))
    result = parse_retinaface_labels(tmp_path / "label.txt", tmp_path / "images")
    assert len(result.annotations) == 1 and not result.problems


def test_eval_empty_prediction_file_is_not_a_missing_one(tmp_path, capsys):
    from featherface.eval.widerface import GroundTruth, save_ground_truth

    keep = {s: [np.asarray([0])] * 2 for s in ("easy", "medium", "hard")}
    gt = GroundTruth(["0--Parade", "0--Parade"], ["a", "b"], [np.asarray([[10.0, 10, 20, 20]])] * 2, keep, source="t")
    save_ground_truth(gt, tmp_path / "gt")
    pred = tmp_path / "pred" / "0--Parade"
    pred.mkdir(parents=True)
    (pred / "a.txt").write_text("a\n1\n10 10 20 20 0.9\n")
    (pred / "b.txt").write_text("")  # an empty file: no faces, but not missing
    assert main(["eval", "--predictions", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 0
    out = capsys.readouterr().out
    assert "no prediction file" not in out and "1 ground-truth images have an empty prediction" in out
