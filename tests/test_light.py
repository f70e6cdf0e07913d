"""The light install: detection without PyTorch.

Marked ``light``: these tests need only the core install (numpy, opencv-python-headless, onnxruntime, pillow, tqdm)
plus pytest. ``.ci/run`` runs them twice: in the full environment, where every command runs in a subprocess with
torch made unimportable, and in a fresh venv holding ``pip install .`` alone, where torch is simply absent. Nothing
here imports torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.light

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "src" / "featherface" / "assets" / "grace_hopper.jpg"

# Runs a script with torch (and everything the light install leaves out) unimportable, then reports which of those
# modules got imported anyway.
_PRELUDE = textwrap.dedent("""
    import importlib.abc, json, sys
    HEAVY = ("torch", "matplotlib", "scipy", "onnx")
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in HEAVY:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, _Block())
    """)
_EPILOGUE = textwrap.dedent("""
    print("HEAVY_IMPORTED=" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)))
    """)


def _run_light(body: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    code = _PRELUDE + textwrap.dedent(body) + _EPILOGUE
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def _heavy(proc: subprocess.CompletedProcess) -> list[str]:
    line = next(x for x in proc.stdout.splitlines() if x.startswith("HEAVY_IMPORTED="))
    return json.loads(line.split("=", 1)[1])


def _cli(*argv: str, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, int]:
    body = """
        from featherface.cli import main
        try:
            rc = main(sys.argv[1:])
        except SystemExit as exc:
            rc = exc.code
        print(f"RC={rc}")
        """
    proc = _run_light(body, *argv, cwd=cwd)
    rc_line = [x for x in proc.stdout.splitlines() if x.startswith("RC=")]
    assert rc_line, proc.stdout + proc.stderr
    return proc, int(rc_line[-1][3:])


def test_api_default_detector_without_torch():
    proc = _run_light(f"""
        from featherface import FaceDetector
        det = FaceDetector()
        faces = det.detect({str(ASSET)!r})
        print("BACKEND=" + det.backend)
        print("FACES=" + json.dumps([f.to_dict() for f in faces]))
        v1 = FaceDetector("featherface_v1")
        print("V1=" + str(len(v1.detect({str(ASSET)!r}))))
        """)
    assert proc.returncode == 0, proc.stderr
    assert _heavy(proc) == []
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert out["BACKEND"] == "onnxruntime" and out["V1"] == "1"
    faces = json.loads(out["FACES"])
    assert len(faces) == 1 and faces[0]["score"] > 0.9


def test_detect_image_folder_and_video_without_torch(tmp_path):
    import cv2

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    img = cv2.imread(str(ASSET))
    cv2.imwrite(str(folder / "a.jpg"), img)
    cv2.imwrite(str(folder / "sub" / "b.png"), cv2.resize(img, None, fx=0.5, fy=0.5))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (img.shape[1], img.shape[0]))
    for _ in range(3):
        writer.write(img)
    writer.release()
    proc, rc = _cli("detect", str(ASSET), str(folder), str(video), "-o", str(tmp_path / "out"))
    assert rc == 0, proc.stderr
    assert _heavy(proc) == []
    records = [json.loads(x) for x in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    images = [r for r in records if "faces" in r and "frame" not in r]
    assert len(images) == 3 and all(len(r["faces"]) == 1 for r in images)
    assert any("frame" in r for r in records)
    assert (tmp_path / "out" / "grace_hopper.jpg").is_file()


def test_help_models_and_web_model_without_torch():
    proc, rc = _cli("--help")
    assert rc == 0 and "detect" in proc.stdout and _heavy(proc) == []
    proc, rc = _cli("models")
    assert rc == 0 and "featherface_v1" in proc.stdout and "featherface_v2 (default)" in proc.stdout
    assert _heavy(proc) == []
    proc = _run_light("""
        from featherface.commands.web import default_onnx_model, make_server
        print("WEB=" + default_onnx_model().name)
        """)
    assert proc.returncode == 0, proc.stderr
    assert "WEB=featherface_v2_default_web.onnx" in proc.stdout and _heavy(proc) == []


@pytest.mark.parametrize("argv", [
    ["train", "--config", "missing.toml"],
    ["export", "src/featherface/weights/featherface_v2_default.pth", "-o", "x.onnx"],
    ["info", "featherface_v2"],
    ["detect", "src/featherface/assets/grace_hopper.jpg", "--backend", "torch", "-o", "out"],
])
def test_commands_that_need_torch_name_the_extra(argv, tmp_path):
    args = [str(ROOT / a) if a.startswith("src/") else (str(tmp_path / a) if a in ("x.onnx", "out") else a)
            for a in argv]
    proc, rc = _cli(*args, cwd=tmp_path)
    assert rc == 2
    errors = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    assert len(errors) == 1 and "pip install 'featherface[train]'" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_light_and_torch_paths_agree_on_the_bundled_photo():
    """The default path (ONNX Runtime, NumPy decoding) gives the faces the PyTorch checkpoint gives."""
    pytest.importorskip("torch", reason="the PyTorch side needs the train extra")
    from featherface import FaceDetector

    a = FaceDetector().detect_arrays(FaceDetector().load(ASSET).image)
    torch_det = FaceDetector(backend="torch")
    b = torch_det.detect_arrays(torch_det.load(ASSET).image)
    assert len(a.scores) == len(b.scores) == 1
    assert np.abs(a.boxes - b.boxes).max() <= 1e-3 and np.abs(a.landmarks - b.landmarks).max() <= 1e-3
    assert abs(float(a.scores[0] - b.scores[0])) <= 1e-5
