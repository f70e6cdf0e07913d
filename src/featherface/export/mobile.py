"""``featherface export --format onnx|ort|tflite|coreml``: one export path, one small adapter per format.

Every format starts from the same PyTorch model (:func:`featherface.checkpoint.load_any_model`) and carries the same
app-side contract, :func:`app_metadata` (input name, shape, layout and pre-processing; anchor spec; output layout;
decoding recipe), so that an app can run the file without featherface:

``onnx``
    :func:`featherface.export.onnx_export.export_onnx` (dynamic batch / height / width; NCHW). Contract in the ONNX
    ``metadata_props`` (``anchors``, ``preprocessing``, ...).
``ort``
    ONNX Runtime's ORT format for mobile / minimal builds, made by ONNX Runtime's own tool
    (``onnxruntime.tools.convert_onnx_models_to_ort``, optimisation style *Fixed*, target ``arm``), next to the
    ``<name>.required_operators.config`` that a reduced-operator build (``build.sh --include_ops_by_config``) needs.
    The ONNX ``metadata_props`` survive (``InferenceSession(...).get_modelmeta().custom_metadata_map``).
``tflite``
    A LiteRT flatbuffer by ``litert-torch`` (torch.export → StableHLO → LiteRT converter), fixed size ``--size WxH``,
    input NHWC. ``fp16``: weights stored as float16 with ``DEQUANTIZE`` ops in front of the convolutions (the
    standard LiteRT fp16 model, made by ``ai-edge-quantizer``'s ``float_casting``); arithmetic stays float32 on CPU,
    GPU delegates may run it in fp16. Contract embedded as the flatbuffer metadata entry ``featherface`` (UTF-8 JSON)
    and written beside the file as ``<file>.json``.
``coreml``
    An ML Program (``.mlpackage``, iOS 15+) by ``coremltools`` from ``torch.export``, fixed size, float16 compute,
    float32 input / outputs, input NCHW. Contract in ``user_defined_metadata`` (``featherface``: the JSON; also
    ``anchors`` and ``preprocessing`` as in ONNX). Core ML cannot run on Linux: only the spec is checked here.

Outputs of every format: ``boxes [1, A, 4]`` (encoded against the anchors), ``logits [1, A, 2]`` (softmax index 1 =
face), ``landmarks [1, A, 10]`` (encoded), ``A`` = number of anchors for the input size (ONNX / ORT: any batch and
size). Decoding and NMS run in the app (recipe in the metadata, code in ``docs/mobile.md``); ``onnx`` and ``ort`` can
instead put them in the graph (``with_postprocess``).

The converters are optional (``pip install 'featherface[mobile]'``); a missing one is a one-line
:class:`~featherface.errors.FeatherFaceError`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from featherface.errors import FeatherFaceError
from featherface.export.formats import FORMATS, MOBILE_EXTRA, PRECISIONS
from featherface.fsutil import atomic_write_bytes, atomic_write_text
from featherface.geometry.anchors import anchor_spec_of
from featherface.preprocessing import DEFAULT_PREPROCESSING, Preprocessing, preprocess
from featherface.pretrained import example_photo_path
from featherface.version import __version__

__all__ = ["FORMATS", "PRECISIONS", "MOBILE_EXTRA", "METADATA_KEY", "CANDIDATE_SCORE", "export_model", "app_metadata",
           "decoded_boxes_scores", "export_ort", "check_ort_parity", "onnx_session_like_ort_conversion",
           "export_tflite", "tflite_to_fp16", "tflite_metadata", "check_tflite_parity", "export_coreml",
           "coreml_spec_summary", "mobile_friendly", "require_converter"]

#: Name of the metadata entry (TFLite flatbuffer) / user-defined metadata key (Core ML) holding :func:`app_metadata`.
METADATA_KEY = "featherface"
DEFAULT_MOBILE_SIZE = (480, 640)  # (height, width) of the fixed-size formats
OUTPUT_NAMES = ("boxes", "logits", "landmarks")
#: Parity limits of the export checks (max abs difference of decoded boxes in pixels and of scores).
TFLITE_FP32_LIMIT = 1e-3
#: Score above which an anchor is a detection candidate (the default score threshold of every path).
CANDIDATE_SCORE = 0.02
ORT_LIMIT = 1e-5


def require_converter(module: str, purpose: str) -> Any:
    """Import ``module`` or raise a one-line :class:`FeatherFaceError` naming the ``mobile`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FeatherFaceError(f"{purpose} needs the '{module.split('.')[0]}' module ({exc.name} is missing): "
                               f"{MOBILE_EXTRA}") from None


# ------------------------------------------------------------------------------------------------- model plumbing
def _channel_gate_without_adaptive_max(self, x: Tensor) -> Tensor:
    """V1 CBAM channel gate with the global pools written as ``mean`` / ``amax`` (same values; the LiteRT
    lowering has no ``adaptive_max_pool2d``)."""
    att = self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True))
    return x * torch.sigmoid(att)[:, :, None, None]


def _nearest_indices(in_size: int, out_size: int) -> Tensor:
    """PyTorch's ``mode="nearest"`` source index of every output row / column: ``floor(i * (in / out))`` with the
    scale in float32, clamped to ``in - 1``."""
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return torch.from_numpy(np.minimum(idx, in_size - 1))


def _upsample_to_by_gather(x: Tensor, ref: Tensor) -> Tensor:
    """``F.interpolate(x, size=ref.shape[-2:], mode="nearest")`` as two constant-index gathers (fixed sizes only).

    The LiteRT lowering of nearest resize disagrees with PyTorch when the ratio is not an integer (e.g. 8 → 15 rows
    at 240 pixels: stride 32 → 16); gathers with PyTorch's indices are exact in every runtime.
    """
    rows = _nearest_indices(int(x.shape[-2]), int(ref.shape[-2]))
    cols = _nearest_indices(int(x.shape[-1]), int(ref.shape[-1]))
    return x.index_select(-2, rows).index_select(-1, cols)


@contextlib.contextmanager
def mobile_friendly() -> Iterator[None]:
    """Temporarily swap model code that the fixed-size converters (LiteRT, Core ML) lower wrongly or not at all for
    equivalent code: V1's channel gate (``adaptive_max_pool2d``) and the BiFPN's nearest upsampling."""
    from featherface.models import blocks

    originals = (blocks.ChannelGate.forward, blocks._upsample_to)
    blocks.ChannelGate.forward = _channel_gate_without_adaptive_max
    blocks._upsample_to = _upsample_to_by_gather
    try:
        yield
    finally:
        blocks.ChannelGate.forward, blocks._upsample_to = originals


class _NamedOutputs(nn.Module):
    """``input [1, 3, H, W]`` (or ``[1, H, W, 3]`` with ``channels_last``) → ``{"boxes", "logits", "landmarks"}``."""

    def __init__(self, model: nn.Module, *, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, input: Tensor) -> dict[str, Tensor]:  # parameter name = the graph input's name
        x = input.permute(0, 3, 1, 2) if self.channels_last else input
        out = self.model(x)
        return {"boxes": out.boxes, "logits": out.logits, "landmarks": out.landmarks}


def _example_input(height: int, width: int, *, channels_last: bool, seed: int = 0,
                   preprocessing: Preprocessing = DEFAULT_PREPROCESSING) -> Tensor:
    """The bundled example photo stretched to ``height x width``, pre-processed by ``preprocessing`` (the one rule),
    plus seeded ``N(0, 8²)`` noise: ``[1, 3, H, W]`` or ``[1, H, W, 3]`` float32.

    A real face keeps candidates (score > :data:`CANDIDATE_SCORE`) in a trained model's output, so the decoded-box
    parity is measured; on pure noise a trained detector scores every anchor near 0 and that check would be empty.
    """
    import cv2

    from featherface.imageio import load_image

    photo = load_image(example_photo_path())
    photo = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(preprocess(photo, 1.0, preprocessing=preprocessing))[None]
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * 8
    return x.permute(0, 2, 3, 1).contiguous() if channels_last else x


def _preprocessing_of(model: nn.Module) -> Preprocessing:
    return getattr(model, "preprocessing", None) or DEFAULT_PREPROCESSING


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    h, w = (int(v) for v in size)
    if h < 32 or w < 32:
        raise FeatherFaceError(f"--size {w}x{h}: width and height must be at least 32 pixels")
    return h, w


# ------------------------------------------------------------------------------------------------------ metadata
def app_metadata(model: nn.Module, *, fmt: str, input_size: Sequence[int] | None, channels_last: bool = False,
                 precision: str = "fp32", input_name: str = "input",
                 output_names: Sequence[str] = OUTPUT_NAMES) -> dict[str, Any]:
    """The app-side contract of an exported file (JSON-serialisable).

    ``input_size``: ``(height, width)`` of a fixed-size format, ``None`` for dynamic ONNX / ORT inputs.
    """
    spec = anchor_spec_of(model)
    pre = _preprocessing_of(model)
    h, w = ("H", "W") if input_size is None else (int(input_size[0]), int(input_size[1]))
    shape = [1, h, w, 3] if channels_last else [1, 3, h, w]
    layout = "NHWC" if channels_last else "NCHW"
    anchors = None if input_size is None else int(spec.anchors((h, w)).shape[0])
    a = "A" if anchors is None else anchors
    return {
        "featherface_version": __version__,
        "model_name": str(getattr(model, "model_name", type(model).__name__)),
        "format": fmt,
        "precision": precision,
        "input": {
            "name": input_name, "shape": shape, "layout": layout, "dtype": "float32",
            **pre.to_dict(),
            "formula": f"x = (pixel - mean) / std, channels in {pre.color_order} order, pixel in 0..255; resize the "
                       "image to the input size (keep the scale to map boxes back)",
        },
        "outputs": {
            output_names[0]: {"shape": [1, a, 4], "meaning": "encoded box (dx, dy, dw, dh) per anchor"},
            output_names[1]: {"shape": [1, a, 2], "meaning": "logits (background, face); score = softmax(...)[1]"},
            output_names[2]: {"shape": [1, a, 10], "meaning": "encoded 5 landmarks (x, y) per anchor"},
        },
        "anchors": {
            **spec.to_dict(), "count": anchors,
            "order": "level (steps in order) -> row -> column -> min_size; anchor (cx, cy, s/W, s/H) with "
                     "cx = (j + 0.5) * step / W, cy = (i + 0.5) * step / H; grid ceil(H/step) x ceil(W/step)"
                     + ("; clamped to [0, 1]" if spec.clip else ""),
        },
        "decode": {
            "box": "cx = acx + dx*v0*aw; cy = acy + dy*v0*ah; w = aw*exp(dw*v1); h = ah*exp(dh*v1); "
                   "x1 = (cx - w/2)*W, y1 = (cy - h/2)*H, x2 = (cx + w/2)*W, y2 = (cy + h/2)*H (v0, v1 = variances; "
                   "featherface clamps dw*v1 and dh*v1 at ln(1e4) before exp)",
            "landmark": "x_k = (acx + lx_k*v0*aw)*W, y_k = (acy + ly_k*v0*ah)*H",
            "score_threshold": 0.02, "nms_iou": 0.4,
            "nms": "greedy by descending score, IoU with sides x2 - x1 + 1 (upstream py_cpu_nms)",
        },
    }


def _onnx_metadata_props(model: nn.Module) -> dict[str, str]:
    from featherface.export.onnx_export import onnx_metadata

    return onnx_metadata(model)


def tflite_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The :func:`app_metadata` embedded in a ``.tflite`` file by :func:`export_tflite` (``{}`` when absent)."""
    schema = require_converter("ai_edge_litert.schema_py_generated", "reading LiteRT metadata")
    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == METADATA_KEY:
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode("utf-8"))
    return {}


def _with_tflite_metadata(flatbuffer: bytes, meta: dict[str, Any]) -> bytes:
    """``flatbuffer`` with one more metadata entry ``featherface`` holding ``meta`` as UTF-8 JSON, all weights inline
    and the internal tensors' names shortened to ``<last module>:<index>`` (inputs / outputs keep theirs)."""
    import flatbuffers

    schema = require_converter("ai_edge_litert.schema_py_generated", "LiteRT export")
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    for buf in model.buffers or []:  # weights stored after the flatbuffer (offset / size): move them inline
        if buf.offset and buf.offset > 1:
            buf.data = np.frombuffer(flatbuffer, dtype=np.uint8, count=int(buf.size), offset=int(buf.offset))
            buf.offset, buf.size = 0, 0
    for graph in model.subgraphs or []:  # the converter names are whole module paths: a sixth of the file
        keep = {int(i) for i in [*list(graph.inputs if graph.inputs is not None else []),
                                 *list(graph.outputs if graph.outputs is not None else [])]}
        for i, tensor in enumerate(graph.tensors or []):
            if i not in keep and tensor.name:
                short = [p for p in tensor.name.decode("utf-8", "replace").split(";") if p] or [""]
                tensor.name = f"{short[-1].rsplit('/', 1)[-1][:48]}:{i}".encode()
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema.MetadataT(name=METADATA_KEY, buffer=len(model.buffers) - 1)
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_KEY.encode()] + [entry]
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ----------------------------------------------------------------------------------------------------- decoding
def decoded_boxes_scores(boxes: np.ndarray, logits: np.ndarray, input_size: Sequence[int],
                         model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Every anchor decoded: ``boxes [A, 4]`` x1 y1 x2 y2 in network-input pixels and face ``scores [A]`` (0..1).

    ``boxes`` / ``logits``: raw outputs ``[1, A, 4]`` / ``[1, A, 2]`` (or without the batch axis) for ``input_size``
    ``(height, width)``.
    """
    from featherface.geometry.boxes import decode_boxes

    spec = anchor_spec_of(model)
    h, w = (int(v) for v in input_size)
    anchors = spec.anchors((h, w))
    loc = torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4))
    pixels = decode_boxes(loc, anchors, spec.variances) * torch.tensor([w, h, w, h], dtype=torch.float32)
    scores = torch.softmax(torch.from_numpy(np.asarray(logits, np.float32).reshape(-1, 2)), dim=-1)[:, 1]
    return pixels.numpy(), scores.numpy()


def _torch_outputs(model: nn.Module, x_nchw: Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model.cpu().eval()(x_nchw)
    return {"boxes": out.boxes.numpy(), "logits": out.logits.numpy(), "landmarks": out.landmarks.numpy()}


def _decoded_diff(model: nn.Module, got: dict[str, np.ndarray], ref: dict[str, np.ndarray],
                  input_size: Sequence[int]) -> dict[str, float]:
    """Max abs differences: ``boxes_px`` over the candidates (reference score > 0.02, the anchors an app keeps;
    0 when there are none), ``boxes_px_all_anchors`` (far-off anchors decode to boxes of thousands of pixels whose
    float32 rounding alone is ~1e-3 px), ``scores`` over all anchors, ``landmarks_raw`` (encoded outputs)."""
    gb, gs = decoded_boxes_scores(got["boxes"], got["logits"], input_size, model)
    rb, rs = decoded_boxes_scores(ref["boxes"], ref["logits"], input_size, model)
    box_err = np.abs(gb - rb).max(axis=1)
    candidates = rs > CANDIDATE_SCORE
    return {"boxes_px": float(box_err[candidates].max()) if candidates.any() else 0.0,
            "boxes_px_all_anchors": float(box_err.max()), "scores": float(np.abs(gs - rs).max()),
            "landmarks_raw": float(np.abs(got["landmarks"] - ref["landmarks"]).max()),
            "candidates": int(candidates.sum())}


# ---------------------------------------------------------------------------------------------------------- ORT
def export_ort(model: nn.Module, path: str | os.PathLike, *, with_postprocess: bool = False,
               max_detections: int = 750, opset: int = 17,
               parity_sizes: Sequence[Sequence[int]] = ()) -> tuple[Path, Path, float | None]:
    """Write the ORT-format model to ``path`` and the reduced-build operator config beside it.

    Returns ``(ort_path, config_path, parity)``; the config is ``<stem>.required_operators.config`` (the tool's
    name); ``parity`` is :func:`check_ort_parity` against the intermediate ONNX file at ``parity_sizes`` ``(height,
    width)`` (``None`` when no sizes are given or with post-processing, whose output length depends on the data).
    """
    require_converter("flatbuffers", "ORT format export")  # the config writer reads the .ort with it
    tool = require_converter("onnxruntime.tools.convert_onnx_models_to_ort", "ORT format export")
    from featherface.export.onnx_export import export_onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config_path = path.with_name(path.stem + ".required_operators.config")
    parity = None
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as work:
        onnx_path = export_onnx(model, Path(work) / "model.onnx", opset=opset, with_postprocess=with_postprocess,
                                max_detections=max_detections, check=False)
        out_dir = Path(work) / "ort"
        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # "Created config in <tmp>"
        with contextlib.redirect_stdout(io.StringIO()) as log:
            try:
                tool.convert_onnx_models_to_ort(onnx_path, output_dir=out_dir,
                                                optimization_styles=[tool.OptimizationStyle.Fixed],
                                                target_platform="arm")
            except Exception as exc:
                tail = log.getvalue().strip().splitlines()[-1:] or [str(exc)]
                raise FeatherFaceError(f"{path}: ORT conversion failed: {tail[0]}") from exc
        converted, config = out_dir / "model.ort", out_dir / "model.required_operators.config"
        if not converted.is_file() or not config.is_file():
            raise FeatherFaceError(f"{path}: ORT conversion wrote no model.ort / model.required_operators.config")
        if parity_sizes and not with_postprocess:
            parity = check_ort_parity(onnx_path, converted, sizes=parity_sizes)
        config.write_text(config.read_text().replace(str(converted), path.name))  # its header names the model
        os.replace(config, config_path)
        os.replace(converted, path)
    return path, config_path, parity


#: Optimiser that ``convert_onnx_models_to_ort`` leaves out for non-x86 targets (its NCHWc layout is x86-only).
ORT_CONVERSION_DISABLED_OPTIMIZERS = ("NchwcTransformer",)


def onnx_session_like_ort_conversion(onnx_path: str | os.PathLike, *, num_threads: int = 1):
    """An onnxruntime session on an ONNX file with the optimisations the ORT conversion applies (all levels, minus
    :data:`ORT_CONVERSION_DISABLED_OPTIMIZERS`): the same kernels in the same order as the ``.ort`` file, so the two
    agree to float32 rounding. (A plain session adds the x86 NCHWc layout: its sums run in another order, ~1e-4 apart
    on real images.)"""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(num_threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(ORT_CONVERSION_DISABLED_OPTIMIZERS))


def check_ort_parity(onnx_path: str | os.PathLike, ort_path: str | os.PathLike, *,
                     sizes: Sequence[Sequence[int]] = ((64, 96), (96, 64)), seed: int = 0) -> float:
    """Max abs difference of the raw outputs of ``ort_path`` and ``onnx_path``, both in onnxruntime (the ONNX file
    with :func:`onnx_session_like_ort_conversion`), on seeded random inputs of ``sizes`` ``(height, width)``."""
    from featherface.export.ort_backend import make_session

    onnx_sess, ort_sess = onnx_session_like_ort_conversion(onnx_path), make_session(ort_path)
    names = [o.name for o in onnx_sess.get_outputs()]
    worst = 0.0
    for i, (h, w) in enumerate(sizes):
        x = _example_input(int(h), int(w), channels_last=False, seed=seed + i).numpy()
        for a, b in zip(onnx_sess.run(names, {"input": x}), ort_sess.run(names, {"input": x})):
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


# ------------------------------------------------------------------------------------------------------- LiteRT
def export_tflite(model: nn.Module, path: str | os.PathLike, *, size: Sequence[int] = DEFAULT_MOBILE_SIZE,
                  precision: str = "fp32") -> tuple[Path, Path]:
    """Write a LiteRT flatbuffer of ``model`` for a fixed input ``size`` ``(height, width)``, input NHWC float32.

    ``precision`` ``fp32`` or ``fp16`` (float16 weights, see module docstring). Returns ``(tflite_path,
    sidecar_json_path)``; the metadata is embedded in the flatbuffer too (:func:`tflite_metadata`).
    """
    if precision not in PRECISIONS:
        raise FeatherFaceError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    h, w = _check_size(size)
    litert_torch = require_converter("litert_torch", "LiteRT (tflite) export")
    require_converter("ai_edge_litert.schema_py_generated", "LiteRT (tflite) export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _NamedOutputs(model.cpu().eval(), channels_last=True).eval()
    x = _example_input(h, w, channels_last=True, preprocessing=_preprocessing_of(model))
    with mobile_friendly(), torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), \
            tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as work:
        warnings.simplefilter("ignore")
        try:
            edge = litert_torch.convert(wrapper, sample_kwargs={"input": x})
        except Exception as exc:  # converter errors are long multi-line reports: keep the first line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FeatherFaceError(f"{path}: LiteRT conversion of {getattr(model, 'model_name', '?')} failed: "
                                   f"{first}") from exc
        float_path = Path(work) / "model.tflite"
        edge.export(str(float_path))
        flatbuffer = float_path.read_bytes()
    meta = app_metadata(model, fmt="tflite", input_size=(h, w), channels_last=True, precision=precision)
    meta["tflite"] = {"signature": "serving_default", "input": "input",
                      "outputs": "signature outputs 'boxes', 'logits', 'landmarks' (use runSignature with names; "
                                 "the tensor order of getOutputTensor(i) is not guaranteed)"}
    return _write_tflite(path, _fp16_weights(flatbuffer) if precision == "fp16" else flatbuffer, meta)


def _write_tflite(path: Path, flatbuffer: bytes, meta: dict[str, Any]) -> tuple[Path, Path]:
    atomic_write_bytes(path, _with_tflite_metadata(flatbuffer, meta))
    sidecar = atomic_write_text(Path(str(path) + ".json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path, sidecar


def tflite_to_fp16(source: str | os.PathLike, path: str | os.PathLike) -> tuple[Path, Path]:
    """The fp16 variant of an fp32 ``.tflite`` written by :func:`export_tflite` (no second conversion from PyTorch):
    same graph and metadata, convolution / fully-connected weights float16. Returns ``(path, sidecar_json_path)``."""
    source, path = Path(source), Path(path)
    meta = tflite_metadata(source)
    if not meta:
        raise FeatherFaceError(f"{source}: no featherface metadata (not written by featherface export --format tflite)")
    if meta.get("precision") != "fp32":
        raise FeatherFaceError(f"{source}: precision is {meta.get('precision')!r}, expected fp32")
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_tflite(path, _fp16_weights(source.read_bytes()), {**meta, "precision": "fp16"})


def _fp16_weights(flatbuffer: bytes) -> bytes:
    """Store convolution / fully-connected weights as float16 + DEQUANTIZE (``ai-edge-quantizer`` float_casting)."""
    quantizer = require_converter("ai_edge_quantizer.quantizer", "LiteRT fp16 export")
    qtyping = require_converter("ai_edge_quantizer.qtyping", "LiteRT fp16 export")
    q = quantizer.Quantizer(bytearray(flatbuffer))
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_2D_TRANSPOSE"):
        q.add_weight_only_config(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op), num_bits=16,
                                 algorithm_key="float_casting")
    with contextlib.redirect_stdout(sys.stderr):  # its size report and progress bars: keep stdout for our JSON
        return bytes(q.quantize().quantized_model)


def _litert_runner(path: str | os.PathLike, num_threads: int = 1):
    interpreter_mod = require_converter("ai_edge_litert.interpreter", "running a LiteRT model")
    interpreter = interpreter_mod.Interpreter(model_path=str(path), num_threads=int(num_threads))
    return interpreter.get_signature_runner()


def check_tflite_parity(model: nn.Module, path: str | os.PathLike, *, seed: int = 0) -> dict[str, float]:
    """LiteRT (XNNPACK) vs PyTorch on a seeded random input of the file's size: max abs differences of decoded
    boxes (``boxes_px``, network-input pixels, candidates only), scores (0..1) and raw landmark outputs
    (see :func:`_decoded_diff`)."""
    runner = _litert_runner(path)
    shape = [int(v) for v in runner.get_input_details()["input"]["shape"]]
    h, w = shape[1], shape[2]
    x = _example_input(h, w, channels_last=True, seed=seed, preprocessing=_preprocessing_of(model))
    got = runner(input=x.numpy())
    with mobile_friendly():
        ref = _torch_outputs(model, x.permute(0, 3, 1, 2))
    return _decoded_diff(model, got, ref, (h, w))


# ------------------------------------------------------------------------------------------------------ Core ML
def export_coreml(model: nn.Module, path: str | os.PathLike, *,
                  size: Sequence[int] = DEFAULT_MOBILE_SIZE) -> Path:
    """Write an ML Program ``.mlpackage`` (folder) for a fixed input ``size`` ``(height, width)``: input ``input``
    float32 NCHW, outputs ``boxes``, ``logits``, ``landmarks`` float32, float16 compute, iOS 15+."""
    h, w = _check_size(size)
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise FeatherFaceError(f"{path}: a Core ML ML Program is a folder ending in .mlpackage")
    ct = require_converter("coremltools", "Core ML export")
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _NamedOutputs(model.cpu().eval()).eval()
    x = _example_input(h, w, channels_last=False, preprocessing=_preprocessing_of(model))
    with mobile_friendly(), torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(wrapper, (x,)).run_decompositions({})
            mlmodel = ct.convert(program, inputs=[ct.TensorType(name="input", shape=(1, 3, h, w), dtype=np.float32)],
                                 outputs=[ct.TensorType(name=n, dtype=np.float32) for n in OUTPUT_NAMES],
                                 convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
                                 minimum_deployment_target=ct.target.iOS15)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FeatherFaceError(f"{path}: Core ML conversion of {getattr(model, 'model_name', '?')} failed: "
                                   f"{first}") from exc
    meta = app_metadata(model, fmt="coreml", input_size=(h, w), precision="fp16")
    props = _onnx_metadata_props(model)
    mlmodel.short_description = f"FeatherFace {meta['model_name']} face detector, {w}x{h}, exported by featherface"
    mlmodel.version = __version__
    mlmodel.user_defined_metadata[METADATA_KEY] = json.dumps(meta, sort_keys=True)
    for key in ("anchors", "preprocessing", "model_name", "featherface_version"):
        mlmodel.user_defined_metadata[key] = props[key]
    _save_folder_atomically(path, mlmodel.save)
    return path


def _save_folder_atomically(path: Path, save) -> None:
    """``save(tmp)`` into a temporary folder next to ``path``, then swap it in (an old ``path`` is removed)."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as work:
        tmp = Path(work) / path.name
        save(str(tmp))
        old = Path(work) / "previous"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)


def coreml_spec_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Inputs and outputs (name, shape, data type) and user metadata of a saved ``.mlpackage`` (no prediction)."""
    ct = require_converter("coremltools", "reading a Core ML model")
    spec = ct.utils.load_spec(str(path))

    from coremltools.proto import FeatureTypes_pb2

    def arrays(features) -> dict[str, dict[str, Any]]:
        name = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name
        return {f.name: {"shape": [int(v) for v in f.type.multiArrayType.shape],
                         "dtype": name(f.type.multiArrayType.dataType)} for f in features}

    return {"inputs": arrays(spec.description.input), "outputs": arrays(spec.description.output),
            "metadata": dict(spec.description.metadata.userDefined),
            "spec_version": int(spec.specificationVersion), "model_type": spec.WhichOneof("Type")}


# ------------------------------------------------------------------------------------------------ the dispatcher
def export_model(model: nn.Module, path: str | os.PathLike, *, fmt: str = "onnx",
                 size: Sequence[int] = DEFAULT_MOBILE_SIZE, precision: str = "fp32", opset: int = 17,
                 with_postprocess: bool = False, max_detections: int = 750, example_size: Sequence[int] = (64, 96),
                 parity_sizes: Sequence[Sequence[int]] = ((64, 96), (96, 64)), check: bool = True) -> dict[str, Any]:
    """Export ``model`` to ``path`` in format ``fmt`` and return a JSON-serialisable report.

    Args:
        fmt: ``onnx`` | ``ort`` | ``tflite`` | ``coreml``.
        size: ``(height, width)`` of the fixed-size formats (tflite, coreml); ignored by onnx / ort (dynamic).
        precision: ``fp32`` | ``fp16`` (tflite); coreml is always fp16, onnx / ort fp32.
        opset, with_postprocess, max_detections, example_size: as :func:`~featherface.export.onnx_export.export_onnx`
            (onnx, ort).
        parity_sizes: ``(height, width)`` sizes of the onnx / ort parity checks.
        check: run the parity check of the format (onnx: onnxruntime vs PyTorch; ort: .ort vs .onnx in onnxruntime;
            tflite: LiteRT vs PyTorch on decoded boxes / scores; coreml: spec only).
    """
    if fmt not in FORMATS:
        raise FeatherFaceError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if precision not in PRECISIONS:
        raise FeatherFaceError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and fmt in ("onnx", "ort"):
        raise FeatherFaceError(f"--precision fp16 applies to tflite (coreml is always fp16), not to {fmt}")
    if with_postprocess and fmt in ("tflite", "coreml"):
        raise FeatherFaceError(f"--with-postprocess is available for onnx and ort, not {fmt} (decode in the app: "
                               "docs/mobile.md)")
    model = model.cpu().eval()
    report: dict[str, Any] = {"format": fmt, "model": getattr(model, "model_name", "?")}
    if fmt == "onnx":
        from featherface.export.onnx_export import check_parity, export_onnx

        out = export_onnx(model, path, opset=opset, with_postprocess=with_postprocess, max_detections=max_detections,
                          example_size=tuple(example_size), check=check)
        report.update(output=str(out), bytes=out.stat().st_size, opset=opset, with_postprocess=bool(with_postprocess))
        if check and not with_postprocess and parity_sizes:
            err = check_parity(model, out, sizes=parity_sizes, batch=2)
            report["parity_max_abs_diff"] = err
            report["parity_sizes"] = [f"{w}x{h}" for h, w in parity_sizes]
            if err >= 1e-4:
                raise FeatherFaceError(f"parity check failed: max abs difference {err:.3g} >= 1e-4")
    elif fmt == "ort":
        out, config, err = export_ort(model, path, with_postprocess=with_postprocess, max_detections=max_detections,
                                      opset=opset, parity_sizes=parity_sizes if check else ())
        report.update(output=str(out), bytes=out.stat().st_size, operators_config=str(config), opset=opset,
                      with_postprocess=bool(with_postprocess))
        if err is not None:
            report["parity_vs_onnx_max_abs_diff"] = err
            report["parity_sizes"] = [f"{w}x{h}" for h, w in parity_sizes]
            if err > ORT_LIMIT:
                raise FeatherFaceError(f"ORT parity check failed: max abs difference {err:.3g} > {ORT_LIMIT}")
    elif fmt == "tflite":
        out, sidecar = export_tflite(model, path, size=size, precision=precision)
        report.update(output=str(out), bytes=out.stat().st_size, metadata_json=str(sidecar), precision=precision,
                      size=f"{size[1]}x{size[0]}", layout="NHWC")
        if check:
            diff = check_tflite_parity(model, out)
            report["parity_vs_pytorch"] = diff
            if precision == "fp32" and max(diff["boxes_px"], diff["scores"]) > TFLITE_FP32_LIMIT:
                raise FeatherFaceError(f"LiteRT parity check failed: decoded boxes differ by {diff['boxes_px']:.3g} px "
                                       f"and scores by {diff['scores']:.3g} (limit {TFLITE_FP32_LIMIT})")
    else:
        out = export_coreml(model, path, size=size)
        report.update(output=str(out), bytes=_tree_bytes(out), precision="fp16", size=f"{size[1]}x{size[0]}",
                      layout="NCHW", parity="not run (Core ML predicts on macOS / iOS only)")
    return report


def _tree_bytes(path: Path) -> int:
    """Size of a file, or the sum of the files under a folder (``.mlpackage``)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
