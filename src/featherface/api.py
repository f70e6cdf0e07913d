"""``FaceDetector``: image in, faces out.

Data flow, one module per stage:

image → :func:`featherface.imageio.decode_image` (uint8 BGR, upright by EXIF) → :class:`ResizePolicy` →
:func:`featherface.preprocessing.preprocess` (the model's :class:`~featherface.preprocessing.Preprocessing`) →
model (raw boxes / logits / landmarks as NumPy arrays; ONNX Runtime via :mod:`featherface.export.ort_backend`, the
default for the shipped models, or PyTorch) →
:func:`featherface.geometry.postprocess.decode_detections` (the model's
:class:`~featherface.geometry.anchors.AnchorSpec`) → :func:`~featherface.geometry.postprocess.select_detections`
(top-k, greedy NMS with the "+1" pixel convention, keep-top-k) → :class:`Face` objects in original-image pixels.

Importing this module does not import torch; only the PyTorch backend does (``backend="torch"``, a ``.pth``
checkpoint, an ``nn.Module`` or an untrained network).
"""

from __future__ import annotations

import numbers
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from featherface.devices import torch_threads
from featherface.errors import FeatherFaceError, InputError
from featherface.geometry.anchors import AnchorSpec, anchor_spec_of
from featherface.geometry.landmarks import LANDMARK_NAMES
from featherface.geometry.postprocess import Detections, decode_detections, select_detections
from featherface.imageio import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from featherface.preprocessing import DEFAULT_PREPROCESSING, MEAN_BGR, Preprocessing, preprocess, resize_image
from featherface.resolve import ModelSource, resolve_model_source

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from featherface.export.ort_backend import OrtModel

__all__ = ["LANDMARK_NAMES", "MEAN_BGR", "Face", "ResizePolicy", "FaceDetector", "faces_from_arrays", "preprocess",
           "torch_threads"]


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the image given to ``detect``.

    box: ``(x1, y1, x2, y2)`` floats; score: face probability in [0, 1]; landmarks: name → ``(x, y)``.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: dict[str, tuple[float, float]] = field(default_factory=dict)

    def scaled(self, fx: float, fy: float) -> Face:
        """The same face with x coordinates multiplied by ``fx`` and y by ``fy`` (e.g. to draw on a resized copy)."""
        x1, y1, x2, y2 = self.box
        return Face((x1 * fx, y1 * fy, x2 * fx, y2 * fy), self.score,
                    {k: (x * fx, y * fy) for k, (x, y) in self.landmarks.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 2) for v in self.box], "score": round(self.score, 5),
                "landmarks": {k: [round(x, 2), round(y, 2)] for k, (x, y) in self.landmarks.items()}}


@dataclass(frozen=True)
class ResizePolicy:
    """How an image is scaled before the network.

    longest_side: ``None`` keeps the original size (the WIDER FACE protocol); ``N`` scales so the longest side is N.
    max_side: upper bound applied in every case, so huge inputs (e.g. 12000×9000) cannot exhaust memory;
        ``None`` disables it.
    """

    longest_side: int | None = None
    max_side: int | None = 2560

    @classmethod
    def parse(cls, value: ResizePolicy | str | int | None, max_side: int | None = 2560) -> ResizePolicy:
        if isinstance(value, ResizePolicy):
            return value
        if value is None or (isinstance(value, str) and value.strip().lower() in ("original", "none", "")):
            return cls(None, max_side)
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise FeatherFaceError(f"resize policy must be 'original' or a longest side in pixels, got {value!r}") from None
        if n < 32:
            raise FeatherFaceError(f"resize longest side must be >= 32 pixels, got {n}")
        return cls(n, max_side)

    def scale_for(self, height: int, width: int) -> float:
        longest = max(height, width)
        scale = 1.0 if self.longest_side is None else self.longest_side / longest
        if self.max_side is not None and longest * scale > self.max_side:
            scale = self.max_side / longest
        return scale

    @property
    def name(self) -> str:
        return "original" if self.longest_side is None else f"longest_side_{self.longest_side}"


@lru_cache(maxsize=32)
def _anchors(height: int, width: int, spec: AnchorSpec) -> np.ndarray:
    anchors = spec.anchors_np((height, width))
    anchors.flags.writeable = False  # cached: shared by every call
    return anchors


def _is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")  # an nn.Module cannot exist unless torch was imported
    return torch is not None and isinstance(obj, torch.nn.Module)


def _ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _TorchRunner:
    """Runs a PyTorch FeatherFace model on NumPy input: ``[1, 3, H, W]`` float32 → boxes / logits / landmarks."""

    def __init__(self, model: nn.Module, device: torch.device, num_threads: int | None) -> None:
        self.model, self.device, self.num_threads = model, device, num_threads

    def __call__(self, x: np.ndarray) -> tuple[Any, Any, Any]:
        import torch

        with torch.inference_mode(), torch_threads(self.num_threads):
            out = self.model(torch.from_numpy(x).to(self.device))
        return out.boxes[0], out.logits[0], out.landmarks[0]


def _ort_runner(model: OrtModel):
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, logits, landmarks = model.run_numpy(x)
        return boxes[0], logits[0], landmarks[0]

    return run


class FaceDetector:
    """Detect faces with a FeatherFace model.

    Args:
        model: ``None`` (the default pretrained model), a shipped model name (``"featherface_v2"``: fast, the
            default; ``"featherface_v1"``: the most accurate; ``featherface models`` lists them), a checkpoint path
            (ours or an upstream FeatherFace V1 file), a raw-output ``.onnx`` export, or an ``nn.Module``.
        pretrained: ``False`` turns a model name (or ``None``) into an untrained network (random weights, for tests).
        device: torch device of the PyTorch backend (the ONNX Runtime backend runs on the CPU).
        score_threshold: faces with a lower probability are dropped.
        nms_threshold: IoU above which the lower-scored of two overlapping boxes is suppressed.
        resize: ``"original"``/``None`` (original size), an int (longest side in pixels) or a :class:`ResizePolicy`.
        max_side: longest side never exceeded (memory guard for huge images); ``None`` disables it.
        top_k / keep_top_k: optional caps on candidates before / faces after NMS.
        num_threads: threads of the network: ONNX Runtime's ``intra_op_num_threads`` (``None``: 1), or torch's
            intra-op threads while this detector runs (set and restored around each call, never changed for the
            process; ``None`` leaves torch's setting).
        backend: ``None`` picks ONNX Runtime for the shipped models (their ``.onnx`` files) and for ``.onnx`` paths,
            PyTorch for ``.pth`` checkpoints, modules, untrained networks and devices other than the CPU;
            ``"onnxruntime"`` or ``"torch"`` force one. ``"openvino"`` (optional, ``pip install openvino``) runs the
            same ``.onnx`` file with OpenVINO, compiled once per input size: faster per frame on a fixed-size stream
            (docs/deployment.md, "Latency work"), about 0.3 s to start on each new size. Pre-processing, decoding
            and NMS are the same NumPy code for every backend, so all give the same faces (to float rounding).
        max_pixels: image files (and PIL images) whose decode would exceed this many pixels are refused with an
            :class:`~featherface.errors.InputError` before decoding (default 100 MP; ``None``: no limit). Large
            JPEGs that the resize policy shrinks anyway are decoded at 1/2, 1/4 or 1/8 (results stay in original
            pixels), so they cost far less.
    """

    def __init__(self, model: str | os.PathLike | nn.Module | None = None, *, pretrained: bool = True,
                 device: str | torch.device = "cpu", score_threshold: float = 0.5, nms_threshold: float = 0.4,
                 resize: Any = None, max_side: int | None = 2560, top_k: int | None = 5000,
                 keep_top_k: int | None = 750, num_threads: int | None = None, backend: str | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise FeatherFaceError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise FeatherFaceError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Real)
                                       or not max_pixels > 0):
            raise FeatherFaceError(f"max_pixels must be a positive number or None, got {max_pixels!r}")
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral)
                                        or num_threads < 1):
            raise FeatherFaceError(f"num_threads must be an integer >= 1, got {num_threads!r}")
        if backend not in (None, "torch", "onnxruntime", "openvino"):
            raise FeatherFaceError(f"backend must be 'torch', 'onnxruntime' or 'openvino', got {backend!r}")
        on_cpu = str(device).strip().lower() == "cpu"
        source = None if _is_torch_module(model) else resolve_model_source(model, pretrained=pretrained)  # type: ignore[arg-type]
        if backend is None:
            backend = self._default_backend(source, on_cpu)
        self.backend = backend
        self.num_threads = None if num_threads is None else int(num_threads)
        if backend in ("onnxruntime", "openvino"):
            self.device: Any = "cpu"
            self.model: Any = self._ort_model(model, source, on_cpu, runtime=backend)
            self._run = _ort_runner(self.model)
        else:
            self.device = self._torch_device(device)
            self.model = self._torch_model(model, source)
            self._run = _TorchRunner(self.model, self.device, self.num_threads)
        self.source = source
        self.anchor_spec: AnchorSpec = anchor_spec_of(self.model)
        self.preprocessing: Preprocessing = getattr(self.model, "preprocessing", None) or DEFAULT_PREPROCESSING
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.resize = ResizePolicy.parse(resize, max_side)
        self.top_k = top_k
        self.keep_top_k = keep_top_k
        self.max_pixels = None if max_pixels is None else int(max_pixels)

    @staticmethod
    def _default_backend(source: ModelSource | None, on_cpu: bool) -> str:
        if source is not None and source.kind == "onnx":
            return "onnxruntime"
        if source is not None and source.kind == "pretrained" and source.onnx_path is not None and on_cpu \
                and _ort_available():
            return "onnxruntime"
        return "torch"

    def _ort_model(self, model: Any, source: ModelSource | None, on_cpu: bool, runtime: str = "onnxruntime") -> Any:
        if not on_cpu:
            raise FeatherFaceError(f"backend={runtime!r} runs on the CPU; use backend='torch' for other devices")
        if source is not None and source.kind == "pretrained" and source.onnx_path is not None:
            path = source.onnx_path
        elif source is not None and source.kind == "onnx" and source.path is not None:
            path = source.path
        else:
            raise FeatherFaceError(f"backend={runtime!r} needs a shipped model or a path to an .onnx file, "
                                   f"got {model!r}")
        if runtime == "openvino":
            from featherface.export.openvino_backend import OvModel

            return OvModel(path, num_threads=self.num_threads)
        from featherface.export.ort_backend import OrtModel

        return OrtModel(path, num_threads=self.num_threads)

    @staticmethod
    def _torch_device(device: Any) -> torch.device:
        from featherface.deps import require

        torch = require("torch", "the PyTorch backend (a .pth checkpoint, backend='torch')")
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise FeatherFaceError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)") from None
        from featherface.devices import check_device

        problem = check_device(str(dev))
        if problem:
            raise FeatherFaceError(problem)
        return dev

    def _torch_model(self, model: Any, source: ModelSource | None) -> nn.Module:
        if source is None:
            return model.to(self.device).eval()
        if source.kind == "onnx":
            raise FeatherFaceError(f"{source.path}: an ONNX file runs with backend='onnxruntime', not 'torch'")
        from featherface.checkpoint import load_any_model

        return load_any_model(source, map_location=self.device).to(self.device)

    @property
    def model_name(self) -> str:
        return getattr(self.model, "model_name", type(self.model).__name__)

    # The anchor contract's parts, as attributes of earlier versions.
    @property
    def steps(self) -> tuple[int, ...]:
        return self.anchor_spec.steps

    @property
    def min_sizes(self) -> tuple[tuple[int, ...], ...]:
        return self.anchor_spec.min_sizes

    @property
    def variances(self) -> tuple[float, float]:
        return self.anchor_spec.variances

    # ----------------------------------------------------------------------------------------------- low level
    def predict_raw(self, image_bgr: np.ndarray, *, scale: float = 1.0, flip: bool = False,
                    score_threshold: float = 0.02) -> Detections:
        """Decoded candidates before NMS for one uint8 BGR image resized by ``scale`` (mirrored when ``flip``).

        Returns ``boxes [N, 4]`` (x1, y1, x2, y2), ``scores [N]``, ``landmarks [N, 10]`` in pixels of the ORIGINAL
        (un-scaled, un-mirrored) image, for scores ``> score_threshold``, sorted by descending score.
        """
        run_image = getattr(self.model, "run_image", None)  # OpenVINO: pre-processing inside the compiled graph
        if run_image is not None and image_bgr.dtype == np.uint8 and image_bgr.ndim == 3 and image_bgr.shape[2] == 3:
            img = resize_image(image_bgr, scale, flip=flip)
            h, w = img.shape[:2]
            boxes, logits, landmarks = (o[0] for o in run_image(img))
        else:
            x = preprocess(image_bgr, scale, flip=flip, preprocessing=self.preprocessing)[None]
            h, w = x.shape[-2:]
            boxes, logits, landmarks = self._run(x)
        return decode_detections(boxes, logits, landmarks, _anchors(h, w, self.anchor_spec), (h, w),
                                 variances=self.anchor_spec.variances, score_threshold=score_threshold, scale=scale,
                                 flip=flip)

    def detect_arrays(self, image_bgr: np.ndarray, *, score_threshold: float | None = None,
                      nms_threshold: float | None = None, scale: float | None = None) -> Detections:
        """Detections as arrays: ``boxes [K, 4]``, ``scores [K]``, ``landmarks [K, 10]`` (original pixels)."""
        thr = self.score_threshold if score_threshold is None else score_threshold
        nms_thr = self.nms_threshold if nms_threshold is None else nms_threshold
        if scale is None:
            scale = self.resize.scale_for(*image_bgr.shape[:2])
        cand = self.predict_raw(image_bgr, scale=scale, score_threshold=thr)
        return select_detections(*cand, nms_threshold=nms_thr, top_k=self.top_k, keep_top_k=self.keep_top_k,
                                 presorted=True)

    # ---------------------------------------------------------------------------------------------- high level
    def detect(self, image: Any, *, rgb: bool = False, value_scale: float | None = None,
               return_exceptions: bool = False) -> list[Face] | list[list[Face]] | list[list[Face] | Exception]:
        """Faces in ``image`` (path, numpy array — BGR unless ``rgb=True`` — or PIL image), in its upright pixels.

        Files and PIL images are turned upright by their EXIF orientation first. Numeric arrays other than uint8 /
        uint16 / bool must hold values in 0..255; a float image in 0..1 is refused unless ``value_scale=255`` says
        how to scale it (``value_scale`` multiplies the values of arrays and PIL images before the 0..255 check).

        A list or tuple of images (sizes may differ) returns one list of faces per image, in order. A bad item raises
        :class:`~featherface.errors.InputError` naming its index (``item 2 of 3: ...``); with
        ``return_exceptions=True`` its slot holds that exception instead and the other items are still processed.
        """
        if isinstance(image, (list, tuple)):
            out: list = []
            for i, im in enumerate(image):
                try:
                    out.append(self._detect_one(im, rgb=rgb, value_scale=value_scale))
                except FeatherFaceError as exc:
                    err = InputError(f"item {i} of {len(image)}: {exc}")
                    err.index = i  # type: ignore[attr-defined]
                    if not return_exceptions:
                        raise err from None
                    out.append(err)
            return out
        return self._detect_one(image, rgb=rgb, value_scale=value_scale)

    def target_side(self, height: int, width: int) -> float:
        """The longest side (pixels) the resize policy scales an upright ``height`` x ``width`` image to."""
        return max(height, width) * self.resize.scale_for(height, width)

    def load(self, image: Any, *, rgb: bool = False, value_scale: float | None = None) -> DecodedImage:
        """Decode ``image`` as :meth:`detect` does: upright, within ``max_pixels``, large JPEGs reduced when the resize
        policy allows it."""
        return decode_image(image, rgb=rgb, max_pixels=self.max_pixels, value_scale=value_scale,
                            target_side=self.target_side)

    def detect_decoded(self, decoded: DecodedImage) -> list[Face]:
        """Faces of a :meth:`load` result, in pixels of the upright original image."""
        boxes, scores, lms = self.detect_arrays(decoded.image)
        if decoded.reduced:
            fx, fy = decoded.factor_x, decoded.factor_y
            boxes = boxes * np.asarray([fx, fy, fx, fy], np.float32)
            lms = lms * np.asarray([fx, fy] * 5, np.float32)
        return faces_from_arrays(boxes, scores, lms)

    def _detect_one(self, image: Any, *, rgb: bool, value_scale: float | None = None) -> list[Face]:
        return self.detect_decoded(self.load(image, rgb=rgb, value_scale=value_scale))

    def __repr__(self) -> str:
        return (f"FaceDetector(model={self.model_name}, backend={self.backend}, score_threshold={self.score_threshold}, "
                f"nms_threshold={self.nms_threshold}, resize={self.resize.name})")


def faces_from_arrays(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> list[Face]:
    faces = []
    for b, s, lm in zip(boxes.tolist(), scores.tolist(), landmarks.tolist()):
        pts = {name: (lm[2 * i], lm[2 * i + 1]) for i, name in enumerate(LANDMARK_NAMES)}
        faces.append(Face(box=(b[0], b[1], b[2], b[3]), score=float(s), landmarks=pts))
    return faces

