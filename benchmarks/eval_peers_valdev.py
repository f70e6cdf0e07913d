"""WIDER FACE val-dev AP of the peer detectors, run here and scored by our evaluator (original image size).

    python benchmarks/eval_peers_valdev.py [--peers yunet retinaface] [--limit N]
    python benchmarks/eval_peers_valdev.py --peers yunet --images .cache/wider_val_full/images \
        --image-list .cache/wider_val_full/val-all.txt          # the full val set (scripts/extract_full_val.py)

- YuNet 2023mar through OpenCV's ``cv2.FaceDetectorYN`` with the input size set to each image's size, score > 0.02,
  NMS 0.45, top-k 5000 (the protocol of the reference figure in ../shared/data/README.md).
- RetinaFace-MobileNet0.25 (biubug6 release weights, ``benchmarks/peers/retinaface.py``) through ``FaceDetector``
  with the upstream test pipeline: original size, score > 0.02, NMS 0.4, no top-k.
Prints Easy / Medium / Hard AP next to the reference figures (val-dev) and the Hard-face recall per face size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

from featherface.api import FaceDetector  # noqa: E402
from featherface.eval.per_size import size_recall  # noqa: E402
from featherface.eval.widerface import evaluate, read_image_list  # noqa: E402
from featherface.geometry.anchors import DEFAULT_ANCHORS  # noqa: E402
from featherface.models.outputs import DetectionOutput  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
VAL = SHARED / "data" / "widerface" / "val"
REFERENCE = SHARED / "data" / "widerface" / "oracle" / "reference_ap.json"


class _AsDetectionOutput(torch.nn.Module):
    anchor_spec = DEFAULT_ANCHORS  # RetinaFace-MobileNet0.25 uses upstream cfg_mnet's anchors, as FeatherFace

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return DetectionOutput(*self.net(x))


def yunet_predictions(names: list[str], images: Path) -> dict[str, np.ndarray]:
    model = SHARED / "peers" / "yunet" / "face_detection_yunet_2023mar.onnx"
    det = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold=0.02, nms_threshold=0.45, top_k=5000)
    out = {}
    for name in tqdm(names, desc="yunet", unit="img"):
        img = cv2.imread(str(images / name))
        det.setInputSize((img.shape[1], img.shape[0]))
        _, faces = det.detect(img)
        faces = np.zeros((0, 15), np.float32) if faces is None else faces
        out[name[:-4]] = np.concatenate([faces[:, :4], faces[:, 14:15]], axis=1).astype(np.float64)
    return out


def retinaface_predictions(names: list[str], images: Path) -> dict[str, np.ndarray]:
    from retinaface import load_retinaface

    det = FaceDetector(_AsDetectionOutput(load_retinaface()), score_threshold=0.02, top_k=None, keep_top_k=None,
                       max_side=None)
    out = {}
    for name in tqdm(names, desc="retinaface", unit="img"):
        boxes, scores, _ = det.detect_arrays(cv2.imread(str(images / name)))
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        out[name[:-4]] = np.concatenate([xywh, scores[:, None]], axis=1).astype(np.float64)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", nargs="+", default=["yunet", "retinaface"], choices=["yunet", "retinaface"])
    ap.add_argument("--limit", type=int, default=None, help="first N listed images only")
    ap.add_argument("--images", type=Path, default=VAL / "images", help="val images folder (default: val-dev's)")
    ap.add_argument("--image-list", type=Path, default=VAL / "val-dev.txt")
    ap.add_argument("--gt", type=Path, default=VAL, help="folder with the four official .mat files")
    args = ap.parse_args(argv)
    if not args.images.exists() or not args.image_list.exists():
        print(f"val images or list not found: {args.images}, {args.image_list}", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    names = read_image_list(args.image_list)[: args.limit]
    ref = json.loads(REFERENCE.read_text())["val_dev"]["results"] if REFERENCE.exists() else {}
    ref_keys = {"retinaface": "retinaface_mnet025", "yunet": "yunet"}
    for peer in args.peers:
        t0 = time.perf_counter()
        preds = (yunet_predictions if peer == "yunet" else retinaface_predictions)(names, args.images)
        det_s = time.perf_counter() - t0
        res = evaluate(preds, args.gt, image_list=names)
        is_val_dev = args.image_list.resolve() == (VAL / "val-dev.txt").resolve() and args.limit is None
        r = ref.get(ref_keys[peer], {}).get("raw", {}) if is_val_dev else {}
        cells = " / ".join(f"{s} {res.settings[s].ap:.6f}" + (f" (ref {r[s]:.6f})" if s in r else "")
                           for s in ("easy", "medium", "hard"))
        print(f"{peer:<11} {len(names)} images, detector {det_s:.0f} s: {cells}")
        print(size_recall(preds, args.gt, image_list=names).format_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
