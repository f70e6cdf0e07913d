"""Pure geometry: anchors (the :class:`AnchorSpec` contract), box / landmark coding, IoU, NMS and the detection
post-processing.

The torch-free parts (landmarks, NMS, post-processing) are imported here; the torch-based ones (anchors, box coding)
on first use (PEP 562), so ``featherface.geometry`` can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported eagerly: the function names ``nms`` and ``postprocess`` must shadow their submodules' names.
from featherface.geometry.landmarks import LANDMARK_MIRROR, LANDMARK_NAMES, mirror_points
from featherface.geometry.nms import nms, nms_np
from featherface.geometry.postprocess import (
    NMS_PIXEL_OFFSET,
    Detections,
    decode_detections,
    postprocess,
    postprocess_batch,
    select_detections,
)

_LAZY = {
    "anchors": ("AnchorSpec", "DEFAULT_ANCHORS", "DEFAULT_MIN_SIZES", "DEFAULT_STEPS", "anchor_spec_of", "make_anchors",
                "num_anchors"),
    "boxes": ("MAX_LOG_SCALE", "VARIANCES", "box_iou", "box_iou_np", "cxcywh_to_xyxy", "decode_boxes",
              "decode_landmarks", "encode_boxes", "encode_landmarks", "xyxy_to_cxcywh"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    # landmarks, NMS, post-processing (imported above)
    "LANDMARK_MIRROR", "LANDMARK_NAMES", "mirror_points", "nms", "nms_np", "NMS_PIXEL_OFFSET", "Detections",
    "decode_detections", "postprocess", "postprocess_batch", "select_detections",
    # anchors, box coding (imported on first use)
    "AnchorSpec", "DEFAULT_ANCHORS", "DEFAULT_MIN_SIZES", "DEFAULT_STEPS", "anchor_spec_of", "make_anchors",
    "num_anchors", "MAX_LOG_SCALE", "VARIANCES", "box_iou", "box_iou_np", "cxcywh_to_xyxy", "decode_boxes",
    "decode_landmarks", "encode_boxes", "encode_landmarks", "xyxy_to_cxcywh",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'featherface.geometry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"featherface.geometry.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
