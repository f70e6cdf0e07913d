"""Shared pieces of the peer-detector adapters used by ``benchmarks/bench_deploy.py``.

Every adapter exposes ``name``, ``files`` (model files, for the size column), ``runtime``, ``params`` (initializer
values of the ONNX graph, or true parameters for PyTorch), ``macs(h, w)``, ``protocol`` (what the adapter feeds the
network) and ``detect(image_bgr, threads) -> (boxes [K,4] x1y1x2y2, scores [K], landmarks [K,10] or None)`` in pixels
of the given image. ``detect`` covers the whole inference path: pre-processing, forward, decoding and NMS.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PEERS_ROOT = Path(os.environ.get("FEATHERFACE_PEERS", Path(__file__).resolve().parents[3] / "shared" / "peers"))


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    from featherface.geometry.nms import nms_np

    if len(scores) == 0:
        return np.zeros(0, np.int64)
    return np.asarray(nms_np(boxes.astype(np.float32), scores.astype(np.float32), iou, pixel_offset=0.0), np.int64)


def onnx_params(path: Path) -> int:
    import onnx

    return int(sum(np.prod(i.dims) for i in onnx.load(str(path)).graph.initializer))


def onnx_macs(path: Path, input_shape: list[int] | None = None) -> int:
    """Conv / Gemm / MatMul multiply-accumulates of an ONNX graph, from shape inference at ``input_shape``."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    if input_shape is not None:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        for d, v in zip(dims, input_shape):
            d.ClearField("dim_param")
            d.dim_value = int(v)
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    total = 0
    for n in model.graph.node:
        if n.op_type == "Conv":
            w = inits.get(n.input[1])
            out = shapes.get(n.output[0])
            if w and out and all(out):
                total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul"):
            out = shapes.get(n.output[0])
            a = shapes.get(n.input[0]) or inits.get(n.input[0])
            if out and a and all(out):
                total += int(np.prod(out)) * int(a[-1])
    return total


class OrtPeer:
    """Base class: one ONNX Runtime session per thread count (created lazily, explicit threads, ORT_ENABLE_ALL)."""

    name = "peer"
    runtime = "onnxruntime fp32"
    model_path: Path
    input_hw: tuple[int, int] = (640, 640)

    def __init__(self) -> None:
        self._sessions: dict[int, object] = {}

    @property
    def files(self) -> list[Path]:
        return [self.model_path]

    def available(self) -> bool:
        return self.model_path.is_file()

    @property
    def params(self) -> int:
        return onnx_params(self.model_path)

    def macs(self, h: int, w: int) -> int:
        return onnx_macs(self.model_path, [1, 3, *self.input_hw])

    def session(self, threads: int):
        if threads not in self._sessions:
            from featherface.export.ort_backend import make_session

            self._sessions[threads] = make_session(self.model_path, num_threads=threads)
        return self._sessions[threads]
