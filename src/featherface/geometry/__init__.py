"""Pure geometry: anchors, box / landmark coding, IoU, NMS and the detection post-processing."""

from featherface.geometry.anchors import DEFAULT_MIN_SIZES, DEFAULT_STEPS, make_anchors, num_anchors
from featherface.geometry.boxes import (
    MAX_LOG_SCALE,
    VARIANCES,
    box_iou,
    box_iou_np,
    cxcywh_to_xyxy,
    decode_boxes,
    decode_landmarks,
    encode_boxes,
    encode_landmarks,
    xyxy_to_cxcywh,
)
from featherface.geometry.nms import nms, nms_np
from featherface.geometry.postprocess import Detections, postprocess, postprocess_batch

__all__ = [
    "DEFAULT_MIN_SIZES",
    "DEFAULT_STEPS",
    "MAX_LOG_SCALE",
    "VARIANCES",
    "Detections",
    "box_iou",
    "box_iou_np",
    "cxcywh_to_xyxy",
    "decode_boxes",
    "decode_landmarks",
    "encode_boxes",
    "encode_landmarks",
    "make_anchors",
    "nms",
    "nms_np",
    "num_anchors",
    "postprocess",
    "postprocess_batch",
    "xyxy_to_cxcywh",
]
