"""``featherface.batch`` / ``featherface detect-batch``: Ray Data batch detection into Parquet / JSON Lines.

The Ray tests start a local Ray with 2 CPUs and shut it down at the end of each test. They check that the rows are
exactly the faces ``FaceDetector`` gives one image at a time (same ONNX model and thresholds), that bad files become
error rows with the same message ``FaceDetector`` raises, and that a job killed with SIGKILL half way and run again
holds every image exactly once. The 100-image variant is marked slow; a 20-image one runs in the default suite.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from helpers import SHARED, VAL_IMAGES

VAL_LIST = SHARED / "data" / "widerface" / "val" / "val-dev.txt"

from featherface.batch.job import INSTALL_HINT, ray_available  # noqa: E402

needs_ray = pytest.mark.skipif(not ray_available(),
                               reason="ray / pyarrow not installed (pip install 'featherface[ray]')")
needs_val = pytest.mark.skipif(not VAL_LIST.exists(), reason=f"WIDER FACE val-dev images not found at {VAL_LIST}")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'featherface[onnx]')")

BAD_FILES = ("truncated.jpg", "text.jpg", "random.png", "empty.jpg", "huge.png")


# ---------------------------------------------------------------------------------------------------- fixtures
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming ``width`` x ``height`` + IEND, no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _make_folder(root: Path, n_images: int) -> tuple[Path, list[Path]]:
    """``n_images`` val-dev images (spread over the list, some in sub-folders), an EXIF-rotated and a grey copy, and
    the synthetic bad files of ``BAD_FILES``; returns the folder and the image files."""
    from PIL import Image

    names = [ln.strip() for ln in VAL_LIST.read_text().splitlines() if ln.strip()]
    step = max(1, len(names) // n_images)
    picked = names[::step][:n_images]
    folder = root / "photos"
    files = []
    for i, name in enumerate(picked):
        dst = folder / (f"sub{i % 3}" if i % 2 else "") / Path(name).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((VAL_IMAGES / name).read_bytes())
        files.append(dst)
    first = VAL_IMAGES / picked[0]
    with Image.open(first) as im:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to show upright
        im.save(folder / "rotated_exif6.jpg", exif=exif.tobytes(), quality=90)
        im.convert("L").save(folder / "grey.png")
    files += [folder / "rotated_exif6.jpg", folder / "grey.png"]
    data = first.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "text.jpg").write_text("this is not a picture\n")
    (folder / "random.png").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "huge.png").write_bytes(_png_header_only(100_000, 100_000))
    (folder / "notes.txt").write_text("not listed: no image suffix\n")
    (folder / "clip.mp4").write_bytes(b"\x00" * 100)  # videos are left out and counted
    (folder / ".hidden.jpg").write_bytes(data)  # hidden files are skipped
    files += [folder / name for name in BAD_FILES]
    return folder, files


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """The raw ONNX file the jobs run for the default model (the shipped one), resolved with a private XDG cache
    (nothing is written to ~/.cache)."""
    cache = tmp_path_factory.mktemp("xdg_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        from featherface.batch.job import resolve_onnx

        onnx_path, _ = resolve_onnx(None)
        yield onnx_path


@pytest.fixture(scope="module")
def reference(cache_env):
    """Per-file results of ``FaceDetector`` on the same ONNX model, one image at a time: faces array [K, 15]
    (box, landmarks, score) or the error message; cached across tests."""
    from featherface.api import FaceDetector
    from featherface.errors import FeatherFaceError

    det = FaceDetector(cache_env, backend="onnxruntime", num_threads=1)
    cache: dict[str, object] = {}

    def get(path: Path):
        key = os.path.abspath(path)
        if key not in cache:
            try:
                faces = det.detect(path)
                cache[key] = np.array([[*f.box, *(v for n in _LM for v in f.landmarks[n]), f.score] for f in faces],
                                      np.float64).reshape(-1, 15)
            except FeatherFaceError as exc:
                cache[key] = str(exc)
        return cache[key]

    return get


_LM = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@pytest.fixture
def local_ray():
    """A local Ray with 2 CPUs for this test only."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


def _rows_faces(faces) -> np.ndarray:
    if faces is None or len(faces) == 0:
        return np.zeros((0, 15))
    return np.array([[*f["box"], *(v for n in _LM for v in f[n]), f["score"]] for f in faces], np.float64)


def _unmatched(ref: np.ndarray, got: np.ndarray, atol: float) -> list:
    """Faces of ``ref`` that a one-to-one pairing with ``got`` cannot match within ``atol`` (sets, any order)."""
    from scipy.optimize import linear_sum_assignment

    if len(ref) != len(got):
        return [("count", len(ref), len(got))]
    if len(ref) == 0:
        return []
    close = (np.abs(ref[:, None, :] - got[None, :, :]) <= atol).all(-1)
    rows, cols = linear_sum_assignment(~close)
    return [ref[r].round(4).tolist() for r, c in zip(rows, cols) if not close[r, c]]


def _read_rows(out: Path) -> list[dict]:
    parts = sorted(out.glob("part-*"))
    if parts and parts[0].suffix == ".jsonl":
        return [json.loads(ln) for p in parts for ln in p.read_text().splitlines() if ln.strip()]
    import pyarrow.parquet as pq

    return pq.read_table(out).to_pylist()


def _check_against_reference(rows: list[dict], files: list[Path], reference, atol: float = 1e-4) -> None:
    by_path = {}
    for r in rows:
        assert r["path"] not in by_path, f"{r['path']} appears twice"
        by_path[r["path"]] = r
    assert set(by_path) == {os.path.abspath(f) for f in files}
    for f in files:
        row, ref = by_path[os.path.abspath(f)], reference(f)
        if isinstance(ref, str):
            assert row["error"] == ref
            assert row["num_faces"] == 0 and not row["faces"] and row["width"] is None
            continue
        assert row["error"] is None, row["error"]
        assert row["num_faces"] == len(ref) == len(row["faces"])
        got = _rows_faces(row["faces"])
        assert _unmatched(ref, got, atol) == [], f
        scores = [fc["score"] for fc in row["faces"]]
        assert scores == sorted(scores, reverse=True)


# ---------------------------------------------------------------------------------------------------- no Ray needed
@needs_val
def test_decode_bytes_matches_imageio(tmp_path):
    """The workers' bytes decoder gives the same array (or the same error text) as imageio decodes the file."""
    from featherface.batch.worker import decode_image_bytes
    from featherface.errors import FeatherFaceError
    from featherface.imageio import decode_image

    folder, files = _make_folder(tmp_path, 3)
    # a large JPEG decoded reduced (target side 800 from a 3200 px picture) and a pixel-budget refusal after reduction
    import cv2

    big = cv2.resize(cv2.imread(str(files[0])), (3200, 2400))
    cv2.imwrite(str(folder / "big.jpg"), big)
    files.append(folder / "big.jpg")
    for target, budget in ((None, 100_000_000), (lambda h, w: 800.0, 100_000_000), (lambda h, w: 800.0, 400_000)):
        for f in files:
            try:
                want = decode_image(f, max_pixels=budget, target_side=target)
            except FeatherFaceError as exc:
                want = str(exc)
            try:
                got = decode_image_bytes(f.read_bytes(), str(f), max_pixels=budget, target_side=target)
            except FeatherFaceError as exc:
                got = str(exc)
            if isinstance(want, str):
                assert got == want
            else:
                assert not isinstance(got, str), got
                assert (got.width, got.height) == (want.width, want.height)
                assert np.array_equal(got.image, want.image)
    assert "truncated or corrupt JPEG" in str(decode_error(folder / "truncated.jpg"))
    assert "MP limit" in str(decode_error(folder / "huge.png"))


def decode_error(path: Path):
    from featherface.batch.worker import decode_image_bytes
    from featherface.errors import FeatherFaceError

    try:
        decode_image_bytes(path.read_bytes(), str(path), max_pixels=100_000_000)
    except FeatherFaceError as exc:
        return exc
    return None


def test_without_ray_one_line_install_hint(tmp_path, monkeypatch, capsys):
    import importlib.util

    from featherface import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == "ray"
                        else real(name, *a))
    rc = cli.main(["detect-batch", str(tmp_path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and 'pip install "featherface[ray]"' in err, err
    assert err == f"featherface detect-batch: error: {INSTALL_HINT}"
    assert not (tmp_path / "out").exists()


def test_help_says_videos_out_of_scope(capsys):
    from featherface import cli

    with pytest.raises(SystemExit):
        cli.main(["detect-batch", "--help"])
    text = capsys.readouterr().out
    assert "videos are out of scope" in text.lower()
    for opt in ("--workers", "--batch-size", "--address", "--format", "--model", "--threads"):
        assert opt in text


# ---------------------------------------------------------------------------------------------------- listing
@needs_ray
def test_list_images_folder_list_glob_uri(tmp_path):
    from featherface.batch.sources import list_images

    for sub in ("a", "a/b", ".hid"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    for name in ("x.jpg", "a/y.PNG", "a/b/z.webp", "a/v.mp4", ".hid/h.jpg", "a/.h.jpg", "a/n.txt"):
        (tmp_path / name).write_bytes(b"1")
    folder = list_images(tmp_path)
    want = [os.path.abspath(tmp_path / p) for p in ("a/b/z.webp", "a/y.PNG", "x.jpg")]
    assert sorted(folder.keys) == sorted(want) and folder.skipped_videos == 1 and not folder.filesystems

    glob = list_images(str(tmp_path / "**" / "*.jpg"))
    assert glob.keys == [os.path.abspath(tmp_path / "x.jpg")]

    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nx.jpg\n\na/y.PNG\nx.jpg\nmissing.jpg\n")
    listed = list_images(lst)
    assert listed.keys == [os.path.abspath(tmp_path / p) for p in ("x.jpg", "a/y.PNG", "missing.jpg")]
    rooted = list_images(lst, root=tmp_path / "a")
    assert rooted.keys[0] == os.path.abspath(tmp_path / "a" / "x.jpg")

    uri = list_images(f"file://{tmp_path}")
    assert sorted(uri.keys) == sorted("file://" + k for k in want) and "file://" in uri.filesystems
    uri_glob = list_images(f"file://{tmp_path}/a/**/*.webp")
    assert uri_glob.keys == [f"file://{tmp_path}/a/b/z.webp"]
    with pytest.raises(Exception, match="no such file"):
        list_images(tmp_path / "nope")


@needs_ray
def test_output_store_refuses_mixed_format_and_changed_settings(tmp_path):
    import pyarrow as pa

    from featherface.batch.output import OutputStore
    from featherface.batch.worker import arrow_schema
    from featherface.errors import FeatherFaceError

    store = OutputStore(tmp_path / "out", "jsonl")
    store.check_settings({"score_threshold": 0.5, "model_sha256": "a"})
    row = {"path": "/x.jpg", "width": 4, "height": 3, "num_faces": 1, "error": None,
           "faces": [{"box": [0.1, 0.2, 1.5, 2.5], "score": 0.9, **{n: [1.0, 2.0] for n in _LM}}]}
    store.write_part(pa.Table.from_pylist([row], schema=arrow_schema()))
    line = json.loads(next((tmp_path / "out").glob("part-*.jsonl")).read_text())
    assert line["faces"][0]["box"] == [0.1, 0.2, 1.5, 2.5] and line["faces"][0]["score"] == 0.9  # float32, short
    with pytest.raises(FeatherFaceError, match="--format jsonl"):
        OutputStore(tmp_path / "out", "parquet")
    again = OutputStore(tmp_path / "out")
    assert again.format == "jsonl" and again.existing().keys == {"/x.jpg"}
    with pytest.raises(FeatherFaceError, match="other settings.*score_threshold"):
        again.check_settings({"score_threshold": 0.6, "model_sha256": "a"})


# ---------------------------------------------------------------------------------------------------- on Ray
def _run_job(folder, out, **kw):
    from featherface.batch import detect_batch

    return detect_batch(folder, out, workers=2, batch_size=4, progress=False, quiet=True, **kw)


@needs_ray
@needs_val
def test_batch_matches_facedetector_20_images(tmp_path, cache_env, reference, local_ray):
    folder, files = _make_folder(tmp_path, 20)
    out = tmp_path / "faces"
    s = _run_job(folder, out, rows_per_file=8)
    assert s.listed == len(files) == s.processed and s.already_done == 0 and s.skipped_videos == 1
    assert s.errors == len(BAD_FILES) and s.workers == 2 and len(s.files) >= -(-len(files) // 8)
    rows = _read_rows(out)
    _check_against_reference(rows, files, reference)
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == set(BAD_FILES)
    assert "truncated or corrupt JPEG" in errors["truncated.jpg"] and "MP limit" in errors["huge.png"]
    assert "empty file" in errors["empty.jpg"] and "not an image" in errors["text.jpg"]
    assert s.faces == sum(r["num_faces"] for r in rows) > 0
    import pyarrow.parquet as pq

    schema = pq.read_schema(next(out.glob("part-*.parquet")))
    assert schema.names == ["path", "width", "height", "num_faces", "faces", "error"]
    assert [f.name for f in schema.field("faces").type.value_type] == ["box", "score", *_LM]
    import pandas as pd

    assert len(pd.read_parquet(out)) == len(files)  # the settings file is ignored by readers

    # the same faces as the default (PyTorch) FaceDetector, up to ONNX Runtime's float rounding
    from featherface.api import FaceDetector

    torch_det = FaceDetector(num_threads=1)
    by_path = {r["path"]: r for r in rows}
    for f in files[:6]:
        ref = np.array([[*x.box, *(v for n in _LM for v in x.landmarks[n]), x.score] for x in torch_det.detect(f)],
                       np.float64).reshape(-1, 15)
        assert _unmatched(ref, _rows_faces(by_path[os.path.abspath(f)]["faces"]), 1e-3) == []

    # re-run: everything is done, nothing is written, no image twice
    again = _run_job(folder, out)
    assert again.processed == 0 and again.already_done == len(files) and again.files == []
    assert again.total_rows == len(files) and again.total_errors == len(BAD_FILES)

    # a pyarrow-filesystem URI: the actors read through pyarrow, the rows are keyed by URI, same faces
    out_uri = tmp_path / "faces_uri"
    u = _run_job(f"file://{folder}/sub0", out_uri)
    uri_rows = _read_rows(out_uri)
    assert u.processed == len(uri_rows) > 0 and all(r["path"].startswith(f"file://{folder}/sub0/") for r in uri_rows)
    for r in uri_rows:
        want = reference(Path(r["path"][len("file://"):]))
        assert _unmatched(want, _rows_faces(r["faces"]), 1e-4) == [] and r["error"] is None

    # JSON Lines from a list file with --root semantics and a limit, then resumed
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(str(f.relative_to(folder)) for f in files[:6]) + "\n")
    out2 = tmp_path / "faces_jsonl"
    first = _run_job(lst, out2, fmt="jsonl", root=folder, limit=4)
    second = _run_job(lst, out2, root=folder)
    assert (first.processed, second.processed, second.already_done) == (4, 2, 4)
    _check_against_reference(_read_rows(out2), files[:6], reference)


def _kill_and_resume(tmp_path, cache_env, reference, n_images: int) -> None:
    folder, files = _make_folder(tmp_path, n_images)
    out = tmp_path / "faces"
    def cmd(batch: int) -> list[str]:
        return [sys.executable, "-m", "featherface", "detect-batch", str(folder), "-o", str(out), "--num-cpus", "2",
                "--workers", "2", "--batch-size", str(batch), "--rows-per-file", "2", "--no-progress", "-q"]

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg_cache")}  # ONNX Runtime writes a database there
    proc = subprocess.Popen(cmd(1), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.glob("part-*.parquet"))) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the job ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        try:  # Ray's helper processes outlive a SIGKILLed driver (they are in its session): end them too
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done_before = _read_rows(out)
    assert 0 < len(done_before) < len(files)

    rerun = subprocess.run(cmd(4), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 1, rerun.stderr[-2000:]  # 1: the bad files are error rows
    assert f"({len(done_before)} already done, skipped)" in rerun.stdout, rerun.stdout
    rows = _read_rows(out)
    assert len(rows) == len(files)
    _check_against_reference(rows, files, reference)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # killed writes' temp files removed


@needs_ray
@needs_val
def test_kill_half_way_and_resume_20_images(tmp_path, cache_env, reference):
    _kill_and_resume(tmp_path, cache_env, reference, 20)


@pytest.mark.slow
@needs_ray
@needs_val
def test_batch_100_images_matches_facedetector_and_resumes(tmp_path, cache_env, reference, local_ray):
    """93 val-dev images + 2 converted copies + 5 bad files: the faces of FaceDetector, then kill and resume."""
    folder, files = _make_folder(tmp_path, 93)
    assert len(files) == 100
    s = _run_job(folder, tmp_path / "faces", rows_per_file=1000)
    assert s.processed == len(files) and s.errors == len(BAD_FILES)
    _check_against_reference(_read_rows(tmp_path / "faces"), files, reference)
    local_ray.shutdown()
    _kill_and_resume(tmp_path / "kill", cache_env, reference, 93)
