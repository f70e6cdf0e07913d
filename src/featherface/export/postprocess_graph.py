"""Anchors, decoding and NMS inside the ONNX graph.

:class:`PostprocessWrapper` wraps a FeatherFace model; its ``forward(input, score_threshold, iou_threshold)`` runs
in PyTorch too (same results as :func:`featherface.geometry.postprocess.postprocess` up to NMS tie order), and exports
with:

* anchors of the model's :class:`~featherface.geometry.anchors.AnchorSpec` computed from the input's runtime height
  and width (``Shape`` → ``Range`` → float64 arithmetic in the reference's operation order, clamped to [0, 1] when
  the spec clips → float32), so the graph is valid for every H×W;
* :func:`featherface.geometry.decode_boxes` / :func:`~featherface.geometry.decode_landmarks` (same code as Python),
  scaled to network-input pixels; scores = softmax(logits)[..., 1];
* ONNX ``NonMaxSuppression`` (one class, ``center_point_box=0``) on boxes whose x2, y2 are shifted by +1: the
  continuous IoU of the shifted boxes is the upstream "+1 pixel" IoU, so the kept set is that of ``nms_np`` with
  ``pixel_offset=1``; ``score > score_threshold`` and ``IoU > iou_threshold`` (suppress) as in the reference;
  at most ``max_detections`` faces per image (a graph constant, upstream ``keep_top_k`` = 750);
* outputs ``boxes [N, 4]``, ``scores [N]``, ``landmarks [N, 10]``, ``batch_index [N]``: every image's faces,
  batch-major, each image by descending score (ORT's NMS order). No padding; for batch 1 ``batch_index`` is all 0.

Pre-NMS ``top_k`` (5000 in :class:`~featherface.api.FaceDetector`) is not applied in the graph; it only matters when
an image has more than 5000 candidates above the score threshold.
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor, nn

from featherface.geometry.anchors import AnchorSpec, anchor_spec_of
from featherface.geometry.boxes import decode_boxes, decode_landmarks

_POSTPROCESS = importlib.import_module("featherface.geometry.postprocess")  # the module (its name is also a function)


def _nms_offset() -> float:
    """:data:`featherface.geometry.postprocess.NMS_PIXEL_OFFSET`, read when used: one definition for every path."""
    return float(_POSTPROCESS.NMS_PIXEL_OFFSET)

__all__ = ["PostprocessWrapper", "graph_anchors"]


class _NMS(torch.autograd.Function):
    """``NonMaxSuppression`` op: exported as the ONNX op, computed eagerly with the project's greedy NMS."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_out: Tensor, iou: Tensor, score_thr: Tensor) -> Tensor:
        from featherface.geometry.nms import nms

        rows = []
        b = boxes.shape[0]
        for i in range(b):
            s = scores[i, 0]
            keep_mask = s > score_thr.reshape(())
            idx = torch.nonzero(keep_mask).flatten()
            if idx.numel():
                bx = boxes[i, idx].clone()
                bx[:, 2:] -= _nms_offset()  # undo the shift: the project NMS applies the offset itself
                kept = idx[nms(bx, s[idx], float(iou.reshape(())), pixel_offset=_nms_offset())]
                kept = kept[: int(max_out.reshape(()))]
                rows.append(torch.stack([torch.full_like(kept, i), torch.zeros_like(kept), kept], dim=1))
        return torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou, score_thr):
        return g.op("NonMaxSuppression", boxes, scores, max_out, iou, score_thr, center_point_box_i=0)


def graph_anchors(height: Tensor | int, width: Tensor | int, steps, min_sizes, clip: bool = False) -> Tensor:
    """Anchors ``[A, 4]`` (same values and order as :func:`featherface.geometry.make_anchors`) from traced sizes."""
    h = torch.as_tensor(height, dtype=torch.long)
    w = torch.as_tensor(width, dtype=torch.long)
    hf, wf = h.to(torch.float64), w.to(torch.float64)
    levels = []
    for step, sizes in zip(steps, min_sizes):
        rows = torch.div(h + (step - 1), step, rounding_mode="floor")
        cols = torch.div(w + (step - 1), step, rounding_mode="floor")
        n = len(sizes)
        cx = (torch.arange(cols).to(torch.float64) + 0.5) * step / wf  # [cols]
        cy = (torch.arange(rows).to(torch.float64) + 0.5) * step / hf  # [rows]
        size = torch.tensor([float(s) for s in sizes], dtype=torch.float64)
        sw, sh = size / wf, size / hf  # [n]
        parts = [cx.reshape(1, -1, 1), cy.reshape(-1, 1, 1), sw.reshape(1, 1, -1), sh.reshape(1, 1, -1)]
        level = torch.stack([p.expand(rows, cols, n) for p in parts], -1)  # [rows, cols, n, 4]
        levels.append(level.reshape(-1, 4))
    out = torch.cat(levels, 0)
    if clip:
        out = out.clamp(0.0, 1.0)
    return out.to(torch.float32)


class PostprocessWrapper(nn.Module):
    def __init__(self, model: nn.Module, *, max_detections: int = 750) -> None:
        super().__init__()
        self.model = model
        self.anchor_spec: AnchorSpec = anchor_spec_of(model)
        self.max_detections = int(max_detections)

    def forward(self, x: Tensor, score_threshold: Tensor, iou_threshold: Tensor):
        out = self.model(x)
        h, w = x.shape[-2], x.shape[-1]
        spec = self.anchor_spec
        anchors = graph_anchors(h, w, spec.steps, spec.min_sizes, spec.clip)
        boxes = decode_boxes(out.boxes, anchors, spec.variances)  # [B, A, 4] normalised
        points = decode_landmarks(out.landmarks, anchors, spec.variances)
        wf = torch.as_tensor(w).to(torch.float32)
        hf = torch.as_tensor(h).to(torch.float32)
        boxes = boxes * torch.stack([wf, hf, wf, hf])
        points = points * torch.stack([wf, hf] * 5)
        scores = torch.softmax(out.logits, dim=-1)[..., 1]  # [B, A]
        offset = _nms_offset()
        shift = torch.tensor([0.0, 0.0, offset, offset])
        sel = _NMS.apply(boxes + shift, scores.unsqueeze(1), torch.tensor([self.max_detections], dtype=torch.long),
                         iou_threshold.reshape(1).to(torch.float32), score_threshold.reshape(1).to(torch.float32))
        bi, ai = sel[:, 0], sel[:, 2]
        return boxes[bi, ai], scores[bi, ai], points[bi, ai], bi
