"""Export FeatherFace V1 / V2 to ONNX (TorchScript-based exporter, ``dynamo=False``).

Raw graph (default)
    input ``input`` float32 ``[batch, 3, height, width]`` as the model's :class:`~featherface.preprocessing.Preprocessing`
    says (default BGR − (104, 117, 123); see :func:`featherface.preprocessing.preprocess`);
    outputs ``boxes [batch, anchors, 4]``, ``logits [batch, anchors, 2]``, ``landmarks [batch, anchors, 10]`` — the
    :class:`~featherface.models.outputs.DetectionOutput` of the PyTorch model, all four axes dynamic.

With post-processing (``with_postprocess=True``, see :mod:`featherface.export.postprocess_graph`)
    inputs ``input``, ``score_threshold`` float32 ``[1]``, ``iou_threshold`` float32 ``[1]``; outputs
    ``boxes [N, 4]`` (x1, y1, x2, y2, network-input pixels), ``scores [N]``, ``landmarks [N, 10]`` and
    ``batch_index [N]`` (int64): the detections of every image of the batch, concatenated, image by image, each
    image's faces by descending score. Select one image with ``batch_index == i``.

V1's deformable convolutions are plain ``F.grid_sample`` + ``MatMul`` in PyTorch and export as ONNX ``GridSample``
(opset >= 16). Its TF-style "same" max pool computes the padding from the input size in Python, which the tracer
would freeze; during export it is replaced by an equivalent shape-agnostic form (pad 1 on every side, then drop the
first row / column when that size is even), so V1 exports with dynamic height and width too.

Metadata (``metadata_props``): ``featherface_version``, ``model_name``, ``model_config`` (JSON), ``anchors`` (JSON:
the model's :class:`~featherface.geometry.anchors.AnchorSpec` -- steps, min_sizes, variances, clip -- and the order),
``preprocessing`` (JSON: :meth:`~featherface.preprocessing.Preprocessing.to_dict` -- color_order, mean, std -- plus
layout notes), ``outputs`` and ``postprocess`` (``none`` or JSON of its settings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featherface.errors import FeatherFaceError
from featherface.fsutil import atomic_path
from featherface.geometry.anchors import anchor_spec_of
from featherface.preprocessing import DEFAULT_PREPROCESSING
from featherface.version import __version__

__all__ = ["DEFAULT_OPSET", "export_onnx", "export_friendly", "onnx_metadata", "check_parity", "RAW_OUTPUTS",
           "densify_grouped_convs"]

DEFAULT_OPSET = 17
RAW_OUTPUTS = ("boxes", "logits", "landmarks")


def _maxpool_same_dynamic(self, x: Tensor) -> Tensor:
    """3×3/2 max pool with TF "same" zero padding, written without Python integers taken from the shape.

    TF "same" for k=3, s=2: an odd size n pads (1, 1), an even size (0, 1), i.e. ``(n % 2, 1)``. Under the tracer
    ``n % 2`` stays a graph value, so this exports as a Pad with computed pads.
    """
    h = x.shape[-2]
    w = x.shape[-1]
    x = F.pad(x, [w % 2, 1, h % 2, 1])
    return F.max_pool2d(x, 3, 2)


def _conv_same_dynamic(self, x: Tensor) -> Tensor:
    """``_Conv2dSame`` with the TF "same" padding in traceable form (odd kernels, stride 1 or 2).

    Stride 1: ``((k-1)//2, k-1-(k-1)//2)``, a constant. Stride 2, size n, r = n % 2: total ``k - 2 + r``, before
    ``(k-3)//2 + r``, after ``(k-1)//2``.
    """
    k, s = self.conv.kernel_size[0], self.conv.stride[0]
    if k == 1 and s == 1:
        return self.conv(x)
    if k % 2 == 0 or s not in (1, 2) or self.conv.kernel_size[1] != k or self.conv.stride[1] != s:
        return _ORIGINAL["conv"](self, x)
    if s == 1:
        pads = [(k - 1) // 2, k - 1 - (k - 1) // 2] * 2
    else:
        h, w = x.shape[-2], x.shape[-1]
        pads = [(k - 3) // 2 + w % 2, (k - 1) // 2, (k - 3) // 2 + h % 2, (k - 1) // 2]
    return self.conv(F.pad(x, pads))


_ORIGINAL: dict[str, Any] = {}


@contextlib.contextmanager
def export_friendly() -> Iterator[None]:
    """Temporarily swap shape-dependent Python code of the model blocks for traceable equivalents."""
    from featherface.models import blocks

    _ORIGINAL["pool"], _ORIGINAL["conv"] = blocks._MaxPoolSame.forward, blocks._Conv2dSame.forward
    blocks._MaxPoolSame.forward = _maxpool_same_dynamic
    blocks._Conv2dSame.forward = _conv_same_dynamic
    try:
        yield
    finally:
        blocks._MaxPoolSame.forward, blocks._Conv2dSame.forward = _ORIGINAL["pool"], _ORIGINAL["conv"]


def _dense_conv(conv: nn.Conv2d, in_perm: Tensor | None = None) -> nn.Conv2d:
    """A dense (``groups=1``) ``Conv2d`` computing what ``conv`` computes: its grouped weights on the block diagonal,
    zeros elsewhere. ``in_perm``: the conv's input is ``x[:, in_perm]`` (a channel shuffle before it), folded into the
    weights so that the new conv takes ``x`` itself."""
    g, cin, cout = conv.groups, conv.in_channels, conv.out_channels
    dense = nn.Conv2d(cin, cout, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups=1,
                      bias=conv.bias is not None, padding_mode=conv.padding_mode)
    w = torch.zeros_like(dense.weight)
    ig, og = cin // g, cout // g
    with torch.no_grad():
        for k in range(g):
            w[k * og:(k + 1) * og, k * ig:(k + 1) * ig] = conv.weight[k * og:(k + 1) * og]
        if in_perm is not None:  # conv(W, x[:, perm]) == conv(W', x) with W'[:, perm] = W
            w_perm = torch.zeros_like(w)
            w_perm[:, in_perm] = w
            w = w_perm
        dense.weight.copy_(w)
        if conv.bias is not None:
            dense.bias.copy_(conv.bias)
    return dense.train(conv.training)


class _ShuffleFolded(nn.Module):
    """:class:`~featherface.models.blocks.ChannelShuffleLight` with its shuffle folded into the first (dense) 1×1."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        first = block.conv[0]
        c, g = first.in_channels, block.groups
        perm = torch.arange(c).view(g, c // g).t().reshape(-1)  # channel_shuffle: y = x[:, perm]
        self.conv = nn.Sequential(_dense_conv(first, perm), *list(block.conv)[1:])

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def densify_grouped_convs(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for export where every grouped convolution that is not depthwise (V2's SSH 3×3s and the
    1×1s of its channel-shuffle blocks, ``groups=4``) is a dense convolution with block-diagonal weights, and each
    channel shuffle that feeds such a 1×1 is folded into its weights (a permutation of input channels).

    Same function (the added weights are exact zeros; sums differ only in float rounding), but ONNX Runtime's CPU
    layout optimiser (NCHWc, ``ORT_ENABLE_ALL``) handles only dense and depthwise convolutions: each grouped conv
    made it convert the feature map to plain NCHW and back (``ReorderOutput`` / ``ReorderInput``) and run a slow
    generic kernel. Issue 18, docs/deployment.md "Latency work" for the measured effect."""
    import copy

    from featherface.models.blocks import ChannelShuffleLight

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ChannelShuffleLight) and child.conv[0].groups > 1:
                folded = _ShuffleFolded(child)
                for i, m in enumerate(folded.conv):
                    if isinstance(m, nn.Conv2d) and m.groups > 1:
                        folded.conv[i] = _dense_conv(m)
                setattr(parent, name, folded)
            elif isinstance(child, nn.Conv2d) and child.groups > 1 and not (
                    child.groups == child.in_channels == child.out_channels):
                setattr(parent, name, _dense_conv(child))
    return model


class _RawWrapper(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(x)
        return out.boxes, out.logits, out.landmarks


def _config_dict(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return {}
    if dataclasses.is_dataclass(cfg):
        return json.loads(json.dumps(dataclasses.asdict(cfg)))
    return dict(cfg) if isinstance(cfg, dict) else {}


def onnx_metadata(model: nn.Module, postprocess: dict[str, Any] | None = None) -> dict[str, str]:
    cfg = _config_dict(model)
    spec = anchor_spec_of(model)
    anchors = {
        **spec.to_dict(),
        "order": "level (strides " + ", ".join(str(s) for s in spec.steps) + ") -> row -> column -> min_size; "
                 "(cx, cy, w, h) normalised by W, H; grid ceil(H/s) x ceil(W/s), centre ((j+0.5)s/W, (i+0.5)s/H)"
                 + ("; clamped to [0, 1]" if spec.clip else ""),
    }
    pre = getattr(model, "preprocessing", None) or DEFAULT_PREPROCESSING
    meta = {
        "featherface_version": __version__,
        "model_name": str(getattr(model, "model_name", type(model).__name__)),
        "model_config": json.dumps(cfg, sort_keys=True),
        "anchors": json.dumps(anchors),
        "preprocessing": json.dumps({**pre.to_dict(), "layout": "NCHW float32, (0-255 - mean) / std",
                                     "resize": "any size"}),
        "postprocess": "none" if postprocess is None else json.dumps(postprocess, sort_keys=True),
    }
    if postprocess is None:
        meta["outputs"] = ("boxes [B,A,4] encoded vs anchors; logits [B,A,2] (softmax[...,1] = face); "
                           "landmarks [B,A,10] encoded")
    else:
        meta["outputs"] = ("boxes [N,4] x1y1x2y2 network-input pixels; scores [N]; landmarks [N,10] pixels; "
                           "batch_index [N] int64; per image by descending score")
    return meta


def _set_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = "FeatherFace face detector exported by featherface " + __version__
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    with_postprocess: bool = False,
    max_detections: int = 750,
    example_size: tuple[int, int] = (64, 96),
    check: bool = True,
    fold_constants: bool = True,
    dense_grouped_convs: bool | None = None,
) -> Path:
    """Write ``model`` as ONNX to ``path`` and return the path.

    Args:
        model: a FeatherFace model (``build_model`` / ``load_model``), moved to CPU eval mode here.
        opset: ONNX opset (>= 17; 16 is the minimum for ``GridSample``).
        with_postprocess: include anchors, decoding and ``NonMaxSuppression`` (see module docstring).
        max_detections: at most this many faces per image after NMS (graph constant; with post-processing only).
        example_size: (H, W) of the tracing input; the exported axes are dynamic anyway.
        check: run ``onnx.checker`` (always) and compare with PyTorch on the tracing input (raw export only).
        fold_constants: let the exporter fold constants (BatchNorm into the convolutions among them); ``False``
            keeps every parameter as stored in the model (so float16-stored weights stay exact float16 values).
        dense_grouped_convs: export grouped (non-depthwise) convolutions as dense block-diagonal ones and fold channel
            shuffles into them (:func:`densify_grouped_convs`: 3-4 % less forward time with ONNX Runtime, 4-7 % with
            OpenVINO, 1 thread, 640×480; docs/deployment.md "Latency work"). ``None`` (default): on for raw exports,
            off with ``with_postprocess`` (the browser page's file: onnxruntime-web has no NCHWc kernels, where the
            4× MACs of those layers were not measured). The parity check always compares with ``model`` itself.
    """
    try:
        import onnx  # noqa: F401
    except ImportError:  # pragma: no cover
        raise FeatherFaceError("ONNX export needs the 'onnx' package: pip install 'featherface[train]'") from None
    if opset < 16:
        raise FeatherFaceError(f"opset {opset} is too old: GridSample (V1 deformable convs) needs >= 16; use 17")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    if dense_grouped_convs is None:
        dense_grouped_convs = not with_postprocess
    traced = densify_grouped_convs(model).eval() if dense_grouped_convs else model
    h, w = example_size
    x = torch.zeros(1, 3, h, w)
    x.normal_(0, 50, generator=torch.Generator().manual_seed(0))
    post_meta = None
    if with_postprocess:
        from featherface.export.postprocess_graph import PostprocessWrapper

        wrapper: nn.Module = PostprocessWrapper(traced, max_detections=max_detections)
        args: tuple = (x, torch.tensor([0.02]), torch.tensor([0.4]))
        input_names = ["input", "score_threshold", "iou_threshold"]
        output_names = ["boxes", "scores", "landmarks", "batch_index"]
        dynamic_axes = {"input": {0: "batch", 2: "height", 3: "width"}, **{k: {0: "detections"} for k in output_names}}
        post_meta = {"max_detections_per_image": int(max_detections), "nms": "ONNX NonMaxSuppression, IoU with the "
                     "'+1' pixel convention (x2, y2 shifted by 1 before NMS)", "score_cut": "score > score_threshold",
                     "pre_nms_top_k": None, "coordinates": "network-input pixels (divide by your resize scale)"}
    else:
        wrapper = _RawWrapper(traced)
        args = (x,)
        input_names = ["input"]
        output_names = list(RAW_OUTPUTS)
        dynamic_axes = {"input": {0: "batch", 2: "height", 3: "width"},
                        **{k: {0: "batch", 1: "anchors"} for k in output_names}}
    wrapper.eval()
    with atomic_path(path) as tmp:  # a failed or killed export never leaves a half-written file at ``path``
        with export_friendly(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python control flow are expected
            torch.onnx.export(wrapper, args, str(tmp), dynamo=False, opset_version=int(opset),
                              input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                              do_constant_folding=fold_constants)
        _set_metadata(tmp, onnx_metadata(model, post_meta))
    if check and not with_postprocess:
        err = check_parity(model, path, sizes=[example_size])
        if err >= 1e-4:
            raise FeatherFaceError(f"exported graph differs from PyTorch: max abs difference {err:.3g} >= 1e-4")
    return path


def check_parity(model: nn.Module, path: str | os.PathLike, *, sizes=((64, 96),), batch: int = 1,
                 num_threads: int = 1, seed: int = 0) -> float:
    """Max abs difference between the raw ONNX outputs (onnxruntime) and PyTorch on random inputs of ``sizes``."""
    from featherface.export.ort_backend import make_session

    sess = make_session(path, num_threads=num_threads)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    model = model.cpu().eval()
    for h, w in sizes:
        x = torch.randn(batch, 3, int(h), int(w), generator=g) * 50
        with torch.no_grad():
            ref = model(x)
        out = sess.run(list(RAW_OUTPUTS), {"input": x.numpy()})
        for o, r in zip(out, ref):
            if o.shape != tuple(r.shape):
                raise FeatherFaceError(f"ONNX output shape {o.shape} != PyTorch {tuple(r.shape)} at {h}x{w}")
            worst = max(worst, float(np.abs(o - r.numpy()).max()))
    return worst


def store_weights_as_float16(path: str | os.PathLike, *, min_elements: int = 64, lossless: bool = True) -> int:
    """Store the float32 initializers of an ONNX file (those with at least ``min_elements`` values) as float16, each
    followed by a ``Cast`` back to float32, so the file is about half the size and still computes in float32 (ONNX
    Runtime folds the casts when it loads the file). Rewrites ``path`` atomically; returns the bytes saved.

    ``lossless``: only initializers whose every value float16 holds exactly are converted (the weights of a checkpoint
    stored in half precision; the rest stays float32), so the file computes exactly what the model does. ``False``
    rounds every large enough initializer to float16 (refusing values beyond float16's range).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    before = path.stat().st_size
    proto = onnx.load(str(path))
    graph = proto.graph
    kept, casts = [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        with np.errstate(over="ignore"):
            halved = values.astype(np.float16)
        exact = bool(np.array_equal(halved.astype(np.float32), values))
        if (lossless and not exact) or not np.isfinite(halved).all():
            kept.append(init)
            continue
        half = numpy_helper.from_array(halved, init.name + "__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                      name=init.name + "__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return before - path.stat().st_size


def simplify_onnx(path: str | os.PathLike) -> int:
    """Simplify the graph of an ONNX file with onnxslim (shape arithmetic folded, dead and redundant nodes removed),
    keeping dynamic axes and metadata and never folding parameters into one another (no Conv+BN fusion), so float16
    storage afterwards stays exact. Rewrites ``path`` atomically; returns the number of nodes removed."""
    import onnx

    from featherface.deps import require

    onnxslim = require("onnxslim", "simplifying an ONNX graph")
    path = Path(path)
    proto = onnx.load(str(path))
    before = len(proto.graph.node)
    keep_weights = ["FusionConvAdd", "FusionConvBN", "FusionConvMul", "FusionConvTransposeAdd",
                    "FusionConvTransposeBN", "FusionConvTransposeMul", "FusionGemm", "FusionGemmMul", "FusionGemmAdd",
                    "FusionPadConv"]
    slim = onnxslim.slim(proto, skip_fusion_patterns=keep_weights)
    onnx.checker.check_model(slim)
    with atomic_path(path) as tmp:
        onnx.save(slim, str(tmp))
    return before - len(slim.graph.node)


def shorten_tensor_names(path: str | os.PathLike) -> int:
    """Rename the internal tensors of an ONNX file (:func:`featherface.export.quantize.compact_names`: graph inputs,
    outputs and metadata unchanged): exporter names such as ``/ssh1/conv3x3/Conv_output_0`` are a large share of a
    small model's file. Rewrites ``path`` atomically; returns the bytes saved."""
    import onnx

    from featherface.export.quantize import compact_names

    path = Path(path)
    before = path.stat().st_size
    proto = compact_names(onnx.load(str(path)))
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return before - path.stat().st_size
