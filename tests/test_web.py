"""``featherface web``: the server (headers, routes, one-line errors) and the page in a real headless Chromium.

The browser test starts ``featherface web`` in a subprocess, drives the page with ``web/e2e/run_page.mjs``
(playwright-core + the system Chromium), picks the bundled photo, the same photo stored sideways with EXIF orientation
6 (a portrait phone photo) and a multi-face montage with the file input, and
checks that the page finds the same faces as :class:`featherface.api.FaceDetector` in Python (same count at
score >= 0.5, boxes within 2 px). It also checks the visible messages for a non-image file, a huge image and a
denied webcam, and runs Chromium's fake camera through the webcam loop. Screenshots are written to the test's
temporary folder (and copied to ``$FEATHERFACE_WEB_SCREENSHOT_DIR`` when set).

Needs: Chromium (``/usr/bin/chromium`` or ``$CHROMIUM``), Node.js and ``npm ci`` in ``web/`` (``.ci/run`` installs
them), and trained weights (the packaged default, or the upstream V1 teacher). Without them the browser tests are
skipped with the reason; they never pass without running the page.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from featherface.errors import FeatherFaceError

from helpers import TEACHER

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
DRIVER = WEB / "e2e" / "run_page.mjs"
PHOTO = ROOT / "src" / "featherface" / "assets" / "grace_hopper.jpg"
ORT_DIST = WEB / "node_modules" / "onnxruntime-web" / "dist"
CACHE = ROOT / ".cache" / "web-test"
BOX_TOL = 2.0


def _chromium() -> str | None:
    for c in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser")):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


def _browser_missing() -> str | None:
    if _chromium() is None:
        return "Chromium not found (apt-get install -y chromium, or set $CHROMIUM)"
    if shutil.which("node") is None:
        return "Node.js not found (needed to drive Chromium with playwright-core)"
    if not (WEB / "node_modules" / "playwright-core").is_dir() or not ORT_DIST.is_dir():
        return "web/node_modules missing: run `npm ci` in web/ (onnxruntime-web, playwright-core)"
    return None


def _checkpoint() -> Path | None:
    try:
        from featherface.pretrained import default_weights_path

        return Path(default_weights_path())
    except FeatherFaceError:
        pass
    env = os.environ.get("FEATHERFACE_WEB_TEST_CHECKPOINT")
    if env:
        return Path(env)
    return TEACHER if TEACHER.exists() else None


# ---------------------------------------------------------------------------------------------- server, no browser
def _tiny_onnx(path: Path, inputs=("input", "score_threshold", "iou_threshold")) -> Path:
    """An ONNX file with the post-processed export's input/output names (enough for the server's checks)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs]
    outs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)]
    graph = helper.make_graph([helper.make_node("Identity", [inputs[-1]], ["scores"])], "g", ins, outs)
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.fixture()
def fake_ort(tmp_path):
    d = tmp_path / "ort"
    d.mkdir()
    for name in ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"):
        (d / name).write_bytes(b"// stub\n")
    return d


def test_server_headers_and_routes(tmp_path, fake_ort):
    from featherface.commands.web import make_server

    model = _tiny_onnx(tmp_path / "m.onnx")
    server = make_server(model, port=0, ort_dir=fake_ort)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for path, ctype in [("/", "text/html"), ("/app.js", "text/javascript"), ("/featherface.js", "text/javascript"),
                            ("/ort/ort-wasm-simd-threaded.wasm", "application/wasm"), ("/model.onnx", "application/octet-stream"),
                            ("/example.jpg", "image/jpeg"), ("/config.json", "application/json")]:
            with urllib.request.urlopen(base + path) as r:
                assert r.status == 200, path
                assert r.headers["Content-Type"].startswith(ctype), (path, r.headers["Content-Type"])
                assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
                assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
                body = r.read()
        assert body and json.loads(body)["model"] == "/model.onnx"
        with urllib.request.urlopen(base + "/model.onnx") as r:
            assert r.read() == model.read_bytes()
        for bad in ("/../pyproject.toml", "/ort/../../etc/passwd", "/%2e%2e/api.py", "/nope.js"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(base + bad)
            assert e.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_server_one_line_errors(tmp_path, fake_ort):
    from featherface.commands.web import make_server

    with pytest.raises(FeatherFaceError, match="--with-postprocess"):
        make_server(_tiny_onnx(tmp_path / "raw.onnx", inputs=("input",)), port=0, ort_dir=fake_ort)
    with pytest.raises(FeatherFaceError, match="not found"):
        make_server(tmp_path / "missing.onnx", port=0, ort_dir=fake_ort)
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"x")
    with pytest.raises(FeatherFaceError, match="not a PyTorch checkpoint"):
        make_server(ckpt, port=0, ort_dir=fake_ort)
    with pytest.raises(FeatherFaceError, match="npm ci"):
        make_server(_tiny_onnx(tmp_path / "m.onnx"), port=0, ort_dir=tmp_path / "empty")


def test_without_model_the_page_serves_the_shipped_onnx_file(tmp_path, monkeypatch):
    from featherface.commands.web import default_onnx_model
    from featherface.pretrained import weights_file

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = default_onnx_model()
    assert path == weights_file("featherface_v2", "web")  # shipped, SHA-256 checked: no export, no torch
    assert not (tmp_path / "featherface").exists()


def test_a_build_without_a_web_file_exports_the_default_once(tmp_path, monkeypatch):
    from featherface import pretrained
    from featherface.commands.web import default_onnx_model

    record = pretrained.default_weights_info()
    monkeypatch.setattr(pretrained, "weights_record",
                        lambda name: dataclasses.replace(record, web_onnx_file="", web_onnx_sha256=""))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = default_onnx_model()
    assert path.is_file() and path.parent == tmp_path / "featherface"
    mtime = path.stat().st_mtime_ns
    assert default_onnx_model() == path and path.stat().st_mtime_ns == mtime  # cached by the weights' digest


def test_cli_without_model_or_default_weights_says_pass_model(tmp_path, monkeypatch, capsys):
    from featherface import pretrained

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(pretrained, "_weights_dir", lambda: tmp_path / "no_weights")
    from featherface.cli import main

    assert main(["web", "--port", "0"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featherface web: error:") and "--model" in lines[0], err


# --------------------------------------------------------------------------------------------------- the browser
def _montage(path: Path) -> Path:
    """Three copies of the photo at different sizes on a grey canvas (PNG: both decoders give the same pixels)."""
    photo = cv2.imread(str(PHOTO))
    canvas = np.full((660, 1100, 3), 127, np.uint8)
    x = 10
    for s in (1.0, 0.6, 0.35):
        im = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        canvas[20:20 + im.shape[0], x:x + im.shape[1]] = im
        x += im.shape[1] + 30
    cv2.imwrite(str(path), canvas)
    return path


def _portrait_phone_photo(path: Path) -> Path:
    """The photo stored sideways with EXIF orientation 6, as phones write portrait shots: the page (the browser honours
    EXIF) and Python (featherface.imageio) must both see it upright and find the same face."""
    from PIL import Image

    upright = cv2.imread(str(PHOTO))
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # orientation 6 = turn 90 degrees clockwise to display
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored[:, :, ::-1]).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def _exported(ckpt: Path) -> Path:
    """ONNX export with post-processing of ``ckpt``, cached under .cache/ by checkpoint and exporter source."""
    from featherface.export import onnx_export, postprocess_graph

    h = hashlib.sha256(ckpt.read_bytes())
    for mod in (onnx_export, postprocess_graph):
        h.update(Path(mod.__file__).read_bytes())
    out = CACHE / f"{ckpt.stem}-{h.hexdigest()[:16]}.onnx"
    if not out.exists():
        from featherface.checkpoint import load_model

        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.onnx")
        onnx_export.export_onnx(load_model(ckpt), tmp, with_postprocess=True)
        os.replace(tmp, out)
    return out


def _start_server(model: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "featherface", "web", "--port", "0", "--model", str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=60)
    except queue.Empty:
        proc.kill()
        raise AssertionError("featherface web printed no URL within 60 s: " + proc.stderr.read()) from None
    url = next((w for w in line.split() if w.startswith("http://")), None)
    assert url, f"no URL in {line!r}"
    return proc, url


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory):
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    ckpt = _checkpoint()
    if ckpt is None:
        pytest.skip(f"no trained weights: no packaged default and no teacher at {TEACHER} "
                    "(set FEATHERFACE_WEB_TEST_CHECKPOINT)")
    pytest.importorskip("onnx")
    out = tmp_path_factory.mktemp("web")
    model = _exported(ckpt)
    images = [PHOTO, _portrait_phone_photo(out / "portrait_exif6.jpg"), _montage(out / "montage.png")]
    huge = out / "huge.jpg"
    cv2.imwrite(str(huge), np.full((6500, 8000, 3), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])  # 52 MP
    proc, url = _start_server(model)
    try:
        cmd = ["node", str(DRIVER), url, str(out), *map(str, images), "--chromium", _chromium(), "--bad-inputs",
               "--huge-image", str(huge)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=WEB)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert r.stdout.strip(), f"driver printed nothing (rc {r.returncode}): {r.stderr[-2000:]}"
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0 and "fatal" not in result, f"{result.get('fatal')}\n{result.get('console')}\n{r.stderr[-2000:]}"
    shots = os.environ.get("FEATHERFACE_WEB_SCREENSHOT_DIR")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        for p in out.glob("page-*.png"):
            shutil.copy(p, Path(shots) / p.name)
    return {"result": result, "images": images, "out": out, "ckpt": ckpt}


def _match(page_faces, py_faces):
    """Pair each Python face with the page face of largest IoU; return the max |coordinate difference| per pair."""
    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)

    free = list(range(len(page_faces)))
    diffs = []
    for f in py_faces:
        j = max(free, key=lambda k: iou(page_faces[k]["box"], f.box))
        free.remove(j)
        diffs.append(max(abs(a - b) for a, b in zip(page_faces[j]["box"], f.box)))
    return diffs


@pytest.fixture(scope="module")
def python_model(browser_run):
    from featherface.checkpoint import load_model

    return load_model(browser_run["ckpt"])


def test_page_finds_the_same_faces_as_python(browser_run, python_model):
    from featherface.api import FaceDetector

    res = browser_run["result"]
    assert res["crossOriginIsolated"] is True, "COOP/COEP headers did not make the page cross-origin isolated"
    det = FaceDetector(python_model, score_threshold=0.5, nms_threshold=0.4)
    report = []
    for img, page in zip(browser_run["images"], res["images"]):
        assert page["state"] == "done", page
        py = det.detect(str(img))
        h, w = cv2.imread(str(img)).shape[:2]  # IMREAD_COLOR honours EXIF: the upright size
        assert (page["width"], page["height"]) == (w, h)
        page_faces = [f for f in page["faces"] if f["score"] >= 0.5]
        assert len(page_faces) == len(py), f"{img.name}: page found {len(page_faces)} faces, Python {len(py)}"
        diffs = _match(page_faces, py)
        report.append(f"{img.name}: {len(py)} faces, max box diff {max(diffs, default=0):.4f} px, "
                      f"{page['ms']:.0f} ms in the page")
        assert all(d <= BOX_TOL for d in diffs), f"{img.name}: box differences {diffs} px > {BOX_TOL}"
        for pf, f in zip(sorted(page_faces, key=lambda f: -f["score"]), py):
            assert abs(pf["score"] - f.score) < 0.01
    assert len(res["images"]) == 3 and sum(len(p["faces"]) for p in res["images"]) >= 4
    print("\n" + "\n".join(report) + f"\npage timings (s since launch): {res.get('timings')}")


def test_page_resize_policy_matches_python(browser_run, python_model):
    """Longest side 640: same network size as ResizePolicy(640); the browser's resampling is not OpenCV's, so the
    boxes are compared with the same 2 px tolerance in original pixels."""
    from featherface.api import FaceDetector

    res = browser_run["result"]["resized640"]
    img = browser_run["images"][-1]
    h, w = cv2.imread(str(img)).shape[:2]
    scale = 640 / max(h, w)
    assert (res["inputWidth"], res["inputHeight"]) == (round(w * scale), round(h * scale))
    py = FaceDetector(python_model, resize=640).detect(str(img))
    page_faces = [f for f in res["faces"] if f["score"] >= 0.5]
    assert len(page_faces) == len(py) > 0
    diffs = _match(page_faces, py)
    print(f"\n{img.name} at longest side 640: {len(py)} faces, max box diff {max(diffs):.3f} px")
    assert all(d <= BOX_TOL for d in diffs), diffs


def test_page_saves_screenshots(browser_run):
    for i in range(len(browser_run["images"])):
        png = browser_run["out"] / f"page-{i}.png"
        assert png.is_file() and png.stat().st_size > 10_000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\nscreenshots: {browser_run['out']}")


def test_bad_inputs_show_messages(browser_run):
    bad = browser_run["result"]["badInputs"]
    assert bad["nonImage"]["visible"] and "not an image" in bad["nonImage"]["message"]
    assert bad["hugeImage"]["visible"] and "8000\u00d76500" in bad["hugeImage"]["message"]
    assert bad["webcamDenied"]["visible"] and "denied" in bad["webcamDenied"]["message"]
    assert bad["facesAfterErrors"] >= 1  # the page still works after the errors


def test_webcam_stream_runs_the_detector(browser_run):
    cam = browser_run["result"]["webcam"]
    assert cam["width"] > 0 and cam["height"] > 0
    assert "ms per frame" in cam["status"]
