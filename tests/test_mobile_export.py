"""``featherface export --format ort|tflite|coreml`` (featherface.export.mobile).

ORT runs wherever onnxruntime is installed; LiteRT and Core ML need the ``mobile`` extra and skip without it. The
LiteRT and Core ML exports use the bundled default weights (real activations; an untrained network hides converter
errors that only show with trained weights) at 320x240, a size whose stride-16 grid (15 rows) is not twice the
stride-32 grid (8 rows), which exercises the BiFPN's nearest upsampling at a non-integer ratio.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'featherface[onnx]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'featherface[onnx]')")

from featherface.checkpoint import load_any_model, save_checkpoint  # noqa: E402
from featherface.cli import main  # noqa: E402
from featherface.errors import FeatherFaceError  # noqa: E402
from featherface.export import mobile  # noqa: E402
from featherface.models import build_model  # noqa: E402
from featherface.pretrained import default_weights_path  # noqa: E402

SIZE = (240, 320)  # (height, width): --size 320x240
ANCHORS_320x240 = 2 * (30 * 40 + 15 * 20 + 8 * 10)


def _needs(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (pip install 'featherface[mobile]')")


def _small_v2():
    torch.manual_seed(0)
    return build_model("featherface_v2").eval()


@pytest.fixture(scope="module")
def trained_v2():
    return load_any_model(str(default_weights_path()))


# ------------------------------------------------------------------------------------------- arguments, errors
@pytest.mark.parametrize("argv,message", [
    (["--format", "onnx", "--size", "320x240"], "--size applies to tflite and coreml"),
    (["--format", "ort", "--precision", "fp16"], "--precision fp16 applies to tflite"),
    (["--format", "tflite", "--with-postprocess"], "--with-postprocess is available for onnx and ort"),
])
def test_bad_option_combinations_are_one_line_errors(tmp_path, capsys, argv, message):
    assert main(["export", "featherface_v2", "-o", str(tmp_path / "m.bin"), *argv]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_coreml_output_must_be_an_mlpackage(tmp_path):
    with pytest.raises(FeatherFaceError, match="mlpackage"):
        mobile.export_coreml(_small_v2(), tmp_path / "m.mlmodel", size=SIZE)


@pytest.mark.parametrize("module,call", [
    ("litert_torch", lambda m, d: mobile.export_tflite(m, d / "m.tflite", size=SIZE)),
    ("coremltools", lambda m, d: mobile.export_coreml(m, d / "m.mlpackage", size=SIZE)),
])
def test_missing_converter_names_the_extra(tmp_path, monkeypatch, module, call):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(FeatherFaceError) as info:
        call(_small_v2(), tmp_path)
    assert "pip install 'featherface[mobile]'" in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_default_format_is_onnx_as_before(tmp_path, capsys):
    out = tmp_path / "v2.onnx"
    assert main(["export", "featherface_v2", "-o", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["format"] == "onnx" and report["parity_max_abs_diff"] < 1e-4 and out.is_file()


# ------------------------------------------------------------------------------------------------------- ORT
def test_ort_export_with_operator_config_metadata_and_parity(tmp_path, capsys):
    import onnxruntime as ort

    ckpt = save_checkpoint(tmp_path / "v2.pth", _small_v2())
    out = tmp_path / "face.ort"
    assert main(["export", str(ckpt), "--format", "ort", "-o", str(out), "--parity-sizes", "96x64", "131x77"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["parity_vs_onnx_max_abs_diff"] <= 1e-5
    config = tmp_path / "face.required_operators.config"
    assert out.is_file() and config.is_file() and report["operators_config"] == str(config)
    ops = config.read_text()
    assert "ai.onnx;" in ops and "Conv" in ops and "face.ort" in ops and ".face.ort." not in ops  # no temp path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.ort", "face.required_operators.config", "v2.pth"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["anchors"])["variances"] == [0.1, 0.2]
    assert json.loads(meta["preprocessing"])["mean"] == [104.0, 117.0, 123.0]
    boxes, logits, _ = sess.run(None, {"input": np.zeros((1, 3, 77, 131), np.float32)})  # dynamic size survives
    assert boxes.shape[1] == logits.shape[1] > 0


def test_ort_parity_helper_is_exact_against_its_onnx(tmp_path):
    from featherface.export.onnx_export import export_onnx

    model = _small_v2()
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    ort_path, _, err = mobile.export_ort(model, tmp_path / "m.ort", parity_sizes=[(64, 96)])
    assert err is not None and err <= 1e-5
    assert mobile.check_ort_parity(onnx_path, ort_path, sizes=[(96, 64)]) <= 1e-5


# ---------------------------------------------------------------------------------------------------- LiteRT
@pytest.fixture(scope="module")
def tflite_fp32(tmp_path_factory):
    """The default weights exported through the command line (fp32, 320x240, parity checked by the command)."""
    _needs("litert_torch")
    _needs("ai_edge_litert")
    out = tmp_path_factory.mktemp("tflite") / "face.tflite"
    argv = ["export", str(default_weights_path()), "--format", "tflite", "--size", "320x240", "-o", str(out)]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return out, json.loads(buf.getvalue().strip().splitlines()[-1])


def test_tflite_fp32_matches_pytorch(tflite_fp32, trained_v2):
    out, report = tflite_fp32
    assert report["layout"] == "NHWC" and report["size"] == "320x240"
    parity = report["parity_vs_pytorch"]
    assert parity["boxes_px"] <= 1e-3 and parity["scores"] <= 1e-3 and parity["candidates"] > 0
    again = mobile.check_tflite_parity(trained_v2, out, seed=1)  # a second input
    assert again["boxes_px"] <= 1e-3 and again["scores"] <= 1e-3


def test_tflite_carries_the_app_metadata(tflite_fp32):
    out, _ = tflite_fp32
    meta = mobile.tflite_metadata(out)
    assert meta == json.loads((out.parent / "face.tflite.json").read_text())
    assert meta["input"]["shape"] == [1, 240, 320, 3] and meta["input"]["layout"] == "NHWC"
    assert meta["input"]["color_order"] == "BGR" and meta["input"]["mean"] == [104.0, 117.0, 123.0]
    assert meta["anchors"]["steps"] == [8, 16, 32] and meta["anchors"]["count"] == ANCHORS_320x240
    assert meta["outputs"]["boxes"]["shape"] == [1, ANCHORS_320x240, 4]
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(out)).get_signature_runner()
    assert set(runner.get_output_details()) == {"boxes", "logits", "landmarks"}


def test_tflite_fp16_is_about_half_and_close(tflite_fp32, trained_v2, tmp_path):
    """fp16 weights: looser limits (measured on this input: boxes ~0.5 px, scores ~5e-4); size 0.5-0.6 of fp32."""
    out, _ = tflite_fp32
    half, sidecar = mobile.tflite_to_fp16(out, tmp_path / "face_fp16.tflite")
    assert 0.45 < half.stat().st_size / out.stat().st_size < 0.62
    assert mobile.tflite_metadata(half)["precision"] == "fp16" and sidecar.is_file()
    parity = mobile.check_tflite_parity(trained_v2, half)
    assert parity["boxes_px"] <= 2.0 and parity["scores"] <= 5e-3


# --------------------------------------------------------------------------------------------------- Core ML
def test_coreml_spec(trained_v2, tmp_path):
    """Core ML predicts only on macOS / iOS: the spec (inputs, outputs, shapes, metadata) is what is checked."""
    _needs("coremltools")
    out = mobile.export_coreml(trained_v2, tmp_path / "face.mlpackage", size=SIZE)
    spec = mobile.coreml_spec_summary(out)
    assert spec["model_type"] == "mlProgram"
    assert spec["inputs"] == {"input": {"shape": [1, 3, 240, 320], "dtype": "FLOAT32"}}
    assert spec["outputs"] == {"boxes": {"shape": [1, ANCHORS_320x240, 4], "dtype": "FLOAT32"},
                               "logits": {"shape": [1, ANCHORS_320x240, 2], "dtype": "FLOAT32"},
                               "landmarks": {"shape": [1, ANCHORS_320x240, 10], "dtype": "FLOAT32"}}
    meta = json.loads(spec["metadata"]["featherface"])
    assert meta["precision"] == "fp16" and meta["input"]["layout"] == "NCHW"
    assert json.loads(spec["metadata"]["anchors"])["min_sizes"] == [[16, 32], [64, 128], [256, 512]]
    assert json.loads(spec["metadata"]["preprocessing"])["color_order"] == "BGR"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.mlpackage"]  # no temporary folder left
