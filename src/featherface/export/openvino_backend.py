"""Optional OpenVINO backend: a raw-output FeatherFace ONNX file run by OpenVINO's CPU plugin (``pip install openvino``).

``FaceDetector(backend="openvino")`` reads the same ``.onnx`` file as the ONNX Runtime backend (no conversion step)
and reuses the same NumPy pre-processing, decoding and NMS. Measured on this project's 2-core Xeon (issue 18,
docs/deployment.md "Latency work"): the V2 forward at 640×480, 1 thread, takes about 0.75× ONNX Runtime's time,
but only when the network is compiled for a fixed input size (dynamic shapes run as slow as ONNX Runtime), so

* each input size is compiled once (about 0.3 s) and kept; :data:`MAX_COMPILED_SHAPES` sizes are kept (least
  recently used first out). A camera or video stream (one frame size) is the use case; for images of many sizes
  (an evaluation) the default ONNX Runtime backend is the better choice;
* pre-processing (uint8 → float32, mean, std, HWC → CHW) runs inside the compiled graph (:meth:`OvModel.run_image`,
  OpenVINO's ``PrePostProcessor``; same values bit for bit), which saves the NumPy pass of ``preprocess``;
* threads: ``INFERENCE_NUM_THREADS = num_threads`` (``None``: 1), one stream, ``PERFORMANCE_HINT = LATENCY``, and
  ``INFERENCE_PRECISION_HINT = f32`` so CPUs with bf16 / AMX units still compute in float32 (the parity contract:
  raw outputs within 1e-4 of PyTorch, tests/test_speed.py).

:class:`OvModel` has the call contract of :class:`featherface.export.ort_backend.OrtModel` (``run_numpy``,
``anchor_spec``, ``preprocessing``, ``model_name``, ``metadata``); one infer request per thread and input size.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from featherface.errors import FeatherFaceError

__all__ = ["MAX_COMPILED_SHAPES", "OvModel", "openvino_available"]

#: Input sizes kept compiled at once by one :class:`OvModel`.
MAX_COMPILED_SHAPES = 4


def openvino_available() -> bool:
    """Whether ``openvino`` is installed, without importing it (importing starts its thread pool)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _ov():
    try:
        import openvino as ov
    except ImportError:
        raise FeatherFaceError("backend='openvino' needs the optional OpenVINO runtime: pip install openvino "
                               "(or pip install 'featherface[openvino]')") from None
    return ov


class OvModel:
    """A raw-output FeatherFace ONNX file run by OpenVINO (CPU), compiled per input size."""

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = 1) -> None:
        from featherface.export.ort_backend import raw_model_info

        ov = _ov()
        self.path = Path(path)
        if not self.path.is_file():
            raise FeatherFaceError(f"{self.path}: ONNX file not found")
        info = raw_model_info(self.path)  # the same checks and metadata as the ONNX Runtime backend
        self.anchor_spec, self.preprocessing = info["anchor_spec"], info["preprocessing"]
        self.model_name, self.metadata = info["model_name"], info["metadata"]
        self.num_threads = int(num_threads or 1)
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(self.path))
        except Exception as exc:
            raise FeatherFaceError(f"{self.path}: OpenVINO cannot read this file: "
                                   f"{str(exc).splitlines()[0][:200]}") from None
        self.input_name = self._model.inputs[0].any_name
        names = [o.any_name for o in self._model.outputs]
        self._out_index = [names.index(n) for n in ("boxes", "logits", "landmarks")]
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def config(self) -> dict[str, Any]:
        return {"INFERENCE_NUM_THREADS": self.num_threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32"}

    def _with_preprocessing(self, model: Any) -> Any:
        """``model`` taking uint8 BGR ``[1, H, W, 3]``: OpenVINO converts to float32, reorders the colours if the
        model wants RGB, subtracts the mean, divides by the std and transposes to NCHW inside the compiled graph --
        the arithmetic of :func:`featherface.preprocessing.preprocess` (uint8 -> float32 is exact, then the same
        float32 subtraction and division), so the outputs are the same bit for bit (tests/test_speed.py)."""
        ov = _ov()
        from openvino.preprocess import PrePostProcessor

        pre = self.preprocessing
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
        if pre.color_order == "RGB":
            steps = steps.reverse_channels()
        steps = steps.mean([float(v) for v in pre.mean])
        if any(v != 1.0 for v in pre.std):
            steps.scale([float(v) for v in pre.std])
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        return ppp.build()

    def _compiled_for(self, shape: tuple[int, ...], image_input: bool = False):
        key = (image_input, *shape)
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is not None:
                self._compiled.move_to_end(key)
                return compiled
            model = self._model.clone()
            model.reshape({self.input_name: list(shape)})
            if image_input:
                model = self._with_preprocessing(model)
            compiled = self._core.compile_model(model, "CPU", self.config)
            self._compiled[key] = compiled
            while len(self._compiled) > MAX_COMPILED_SHAPES:
                self._compiled.popitem(last=False)
            return compiled

    def _request(self, shape: tuple[int, ...], image_input: bool = False):
        compiled = self._compiled_for(shape, image_input)
        cache = getattr(self._local, "requests", None)
        if cache is None or cache[0] is not compiled:  # one request per thread, for the current compiled size
            cache = (compiled, compiled.create_infer_request())
            self._local.requests = cache
        return cache[1]

    def to(self, *args, **kwargs) -> OvModel:
        return self

    def eval(self) -> OvModel:
        return self

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise FeatherFaceError(f"input must be float32 [B, 3, H, W], got shape {x.shape}")
        request = self._request(tuple(int(v) for v in x.shape))
        request.infer({0: x})  # outputs are copied below: the request's buffers are reused by the next call
        return [np.array(request.get_output_tensor(i).data, copy=True) for i in self._out_index]

    def run_image(self, image_bgr: np.ndarray) -> list[np.ndarray]:
        """Raw outputs for one uint8 BGR ``[H, W, 3]`` image at its own size, pre-processing included in the compiled
        graph (what ``FaceDetector`` calls for this backend; equal to ``run_numpy(preprocess(image)[None])``)."""
        img = np.ascontiguousarray(image_bgr)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise FeatherFaceError(f"run_image needs a uint8 [H, W, 3] image, got {img.dtype} {img.shape}")
        h, w = int(img.shape[0]), int(img.shape[1])
        request = self._request((1, 3, h, w), image_input=True)
        request.infer({0: img[None]})
        return [np.array(request.get_output_tensor(i).data, copy=True) for i in self._out_index]

    def __call__(self, x: Any):
        import torch

        from featherface.models.outputs import DetectionOutput

        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        boxes, logits, lms = self.run_numpy(arr)
        return DetectionOutput(torch.from_numpy(boxes), torch.from_numpy(logits), torch.from_numpy(lms))
