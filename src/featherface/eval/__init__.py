"""WIDER FACE evaluation: the official protocol (exact, vectorised numpy), test-time protocols and a runner.

Typical use::

    from featherface.eval import evaluate
    result = evaluate("widerface_txt/", "WIDER_val/gt/")   # folder of official files, or {"event/name": [N,5]}
    print(result.easy, result.medium, result.hard)
"""

from featherface.eval.per_size import SizeRecall, save_size_recall_plot, size_recall
from featherface.eval.protocols import LongestSide, MultiScaleFlip, OriginalSize, TestProtocol, parse_protocol
from featherface.eval.widerface import (
    SETTINGS,
    GroundTruth,
    SettingResult,
    WiderResult,
    evaluate,
    load_ground_truth,
    read_image_list,
    read_prediction_file,
    read_predictions,
    save_ground_truth,
    write_prediction_file,
    write_predictions,
)

__all__ = [
    "SETTINGS",
    "GroundTruth",
    "SettingResult",
    "WiderResult",
    "evaluate",
    "load_ground_truth",
    "save_ground_truth",
    "read_image_list",
    "read_prediction_file",
    "read_predictions",
    "write_prediction_file",
    "write_predictions",
    "TestProtocol",
    "OriginalSize",
    "LongestSide",
    "MultiScaleFlip",
    "parse_protocol",
    "SizeRecall",
    "size_recall",
    "save_size_recall_plot",
]
