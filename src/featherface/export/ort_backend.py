"""onnxruntime sessions and an ORT-backed stand-in for a FeatherFace ``nn.Module``.

:func:`make_session` always sets ``intra_op_num_threads`` explicitly (ORT ignores ``OMP_NUM_THREADS``; its default
pool uses every core, which thrashes when several processes share a CPU), one inter-op thread, sequential execution
and ``ORT_ENABLE_ALL`` graph optimisation.

:class:`OrtModel` is callable like the PyTorch model (``model(x [B,3,H,W] Tensor) -> DetectionOutput``) and carries
``anchor_spec`` (:class:`~featherface.geometry.anchors.AnchorSpec`) and ``preprocessing``
(:class:`~featherface.preprocessing.Preprocessing`) read from the file's metadata, and ``model_name``, so
``FaceDetector(path.onnx, backend="onnxruntime")`` reuses the PyTorch backend's pre-processing, decoding and NMS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from featherface.errors import FeatherFaceError
from featherface.geometry.anchors import AnchorSpec
from featherface.preprocessing import Preprocessing

__all__ = ["make_session", "read_metadata", "raw_model_info", "OrtModel"]


def _ort():
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover
        raise FeatherFaceError("the onnxruntime backend needs onnxruntime (a core dependency): "
                               "pip install onnxruntime") from None
    return ort


def make_session(path: str | os.PathLike, *, num_threads: int | None = 1, optimized_model_path: str | None = None):
    """An ``InferenceSession`` on CPU with explicit threads and all graph optimisations."""
    ort = _ort()
    path = Path(path)
    if not path.is_file():
        raise FeatherFaceError(f"{path}: ONNX file not found")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(num_threads or os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if optimized_model_path:
        so.optimized_model_filepath = str(optimized_model_path)
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise FeatherFaceError(f"{path}: onnxruntime cannot load this file: {str(exc).splitlines()[0][:200]}") from None


def read_metadata(session_or_path: Any) -> dict[str, str]:
    sess = session_or_path
    if isinstance(session_or_path, (str, os.PathLike)):
        import onnx

        proto = onnx.load(str(session_or_path), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props}
    return dict(sess.get_modelmeta().custom_metadata_map)


def _raw_info(path: Path, session: Any) -> dict[str, Any]:
    """Check that ``session`` runs a raw FeatherFace export and read its anchors / pre-processing / name metadata."""
    meta = read_metadata(session)
    outputs = [o.name for o in session.get_outputs()]
    if "batch_index" in outputs or meta.get("postprocess", "none") != "none":
        raise FeatherFaceError(f"{path}: this ONNX file has post-processing inside the graph; "
                               "FaceDetector needs a raw export (featherface export without --with-postprocess)")
    if outputs[:3] != ["boxes", "logits", "landmarks"]:
        raise FeatherFaceError(f"{path}: outputs {outputs} are not FeatherFace's boxes/logits/landmarks")
    try:
        anchor_spec = AnchorSpec.from_dict(json.loads(meta["anchors"]))
        preprocessing = Preprocessing.from_dict(json.loads(meta.get("preprocessing", "{}") or "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise FeatherFaceError(f"{path}: no usable featherface metadata (anchors / preprocessing: {exc}); "
                               "export it with `featherface export`") from None
    return {"anchor_spec": anchor_spec, "preprocessing": preprocessing, "model_name": meta.get("model_name", "onnx"),
            "metadata": meta}


def raw_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """:class:`OrtModel`'s checks and metadata (``anchor_spec``, ``preprocessing``, ``model_name``, ``metadata``) of a
    raw export, for other runtimes (the OpenVINO backend); reads the file with an unoptimised ONNX Runtime session."""
    ort = _ort()
    path = Path(path)
    if not path.is_file():
        raise FeatherFaceError(f"{path}: ONNX file not found")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise FeatherFaceError(f"{path}: onnxruntime cannot load this file: {str(exc).splitlines()[0][:200]}") from None
    return _raw_info(path, session)


class OrtModel:
    """A raw-output FeatherFace ONNX file run by onnxruntime, with the PyTorch model's call contract."""

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = 1) -> None:
        self.path = Path(path)
        self.session = make_session(self.path, num_threads=num_threads)
        info = _raw_info(self.path, self.session)
        self.anchor_spec, self.preprocessing = info["anchor_spec"], info["preprocessing"]
        self.model_name, self.metadata = info["model_name"], info["metadata"]
        self.input_name = self.session.get_inputs()[0].name

    def to(self, *args, **kwargs) -> OrtModel:  # device moves are meaningless here (CPU provider)
        return self

    def eval(self) -> OrtModel:
        return self

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(["boxes", "logits", "landmarks"], {self.input_name: np.ascontiguousarray(x, np.float32)})

    def __call__(self, x: Any):
        """``x``: ``Tensor[B, 3, H, W]`` → :class:`~featherface.models.outputs.DetectionOutput` of tensors (the
        PyTorch model's contract; needs torch). :meth:`run_numpy` is the torch-free call."""
        import torch

        from featherface.models.outputs import DetectionOutput

        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        boxes, logits, lms = self.run_numpy(arr)
        return DetectionOutput(torch.from_numpy(boxes), torch.from_numpy(logits), torch.from_numpy(lms))
