"""Annotation readers, dataset checking, training augmentation and the WIDER FACE dataset."""

from featherface.data.readers import (
    Annotation,
    CheckReport,
    ParseResult,
    Problem,
    check_dataset,
    parse_annotations,
    parse_bbx_gt,
    parse_retinaface_labels,
)

__all__ = [
    "Annotation",
    "CheckReport",
    "ParseResult",
    "Problem",
    "check_dataset",
    "parse_annotations",
    "parse_bbx_gt",
    "parse_retinaface_labels",
    "WiderFaceDataset",
    "detection_collate",
    "TrainTransform",
    "Sample",
]


def __getattr__(name: str):
    # lazy: the dataset pulls in torch and cv2
    if name in ("WiderFaceDataset", "detection_collate"):
        from featherface.data import dataset

        return getattr(dataset, name)
    if name in ("TrainTransform", "Sample"):
        from featherface.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'featherface.data' has no attribute {name!r}")
