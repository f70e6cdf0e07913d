"""``featherface eval``: WIDER FACE AP of a model (detector pass) or of a folder of prediction files.

    featherface eval --model MODEL_OR_CHECKPOINT --images WIDER_val/images --gt GT_DIR [--image-list val-dev.txt]
    featherface eval --predictions DIR --gt GT_DIR [--image-list LIST]

The main CLI wires :func:`configure_parser` / :func:`run`; ``python -m featherface.eval.cli ...`` works stand-alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featherface.cliargs import add_backend_option, device, open_unit_interval, positive_int, probability
from featherface.errors import InputError

__all__ = ["configure_parser", "run", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("what to score (one of)")
    ex = src.add_mutually_exclusive_group(required=True)
    ex.add_argument("--model", metavar="MODEL", help="shipped model name, checkpoint or .onnx file: run the detector")
    ex.add_argument("--predictions", metavar="DIR", help="folder of official prediction files (<event>/<image>.txt)")
    parser.add_argument("--images", metavar="DIR", help="WIDER_val/images folder (needed with --model)")
    parser.add_argument(
        "--gt", required=True, metavar="GT_DIR", help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat"
    )
    parser.add_argument(
        "--image-list",
        metavar="FILE",
        help="restrict the run and the ground truth to these images (e.g. val-dev.txt: one event/image.jpg per line)",
    )
    parser.add_argument("--max-images", type=positive_int, metavar="N",
                        help="with --model: only N images, evenly spaced over the (listed) images, as the trainer's "
                             "periodic AP does")
    parser.add_argument("--output", "-o", metavar="DIR", help="output folder (default: eval_<protocol> / none for --predictions)")
    t = parser.add_argument_group("test-time protocol (with --model)")
    t.add_argument(
        "--protocol",
        default="original-size",
        help="original-size (the paper's, default), longest-side-N, multiscale-flip (RetinaFace sizes 500..1700) "
        "or multiscale-flip-S1-S2-...",
    )
    t.add_argument("--score-threshold", type=probability, default=0.02, help="keep candidates above this score (default 0.02)")
    t.add_argument("--nms-threshold", type=open_unit_interval, default=0.4, help="NMS IoU, +1 pixel convention (default 0.4)")
    t.add_argument("--top-k", type=positive_int, default=None, help="candidates kept before NMS (default: all, as upstream)")
    t.add_argument("--keep-top-k", type=positive_int, default=None, help="detections kept after NMS (default: all)")
    t.add_argument("--device", type=device, default="cpu", help="torch device (default cpu)")
    add_backend_option(t)
    parser.add_argument("--no-plot", action="store_true", help="do not write the precision-recall PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _print_result(result, protocol_label: str, out: Path | None, timing: dict) -> None:
    print(f"Protocol: {protocol_label}")
    print(
        f"Images: {result.num_images} in ground truth, {result.num_images_with_predictions} with detections, "
        f"{result.num_boxes} boxes"
    )
    for name, sr in result.settings.items():
        print(f"{name.capitalize():<6} Val AP: {sr.ap:.4f}  ({sr.ap * 100:.2f} %, {sr.num_faces} faces)")
    if result.size_recall is not None:
        print(result.size_recall.format_table())
    parts = [f"{k} {v:.2f} s" for k, v in timing.items() if k.endswith("_s")]
    if parts:
        print("Time: " + ", ".join(parts))
    if out is not None:
        print(f"Results: {out / 'results.json'}")


def run(args: argparse.Namespace) -> int:
    from featherface.eval.protocols import parse_protocol
    from featherface.eval.runner import evaluate_detector, score_prediction_folder

    gt = Path(args.gt)
    out = Path(args.output) if getattr(args, "output", None) else None
    plot = not getattr(args, "no_plot", False)
    if getattr(args, "predictions", None):
        result, _ = score_prediction_folder(args.predictions, gt, output_dir=out, image_list=args.image_list, plot=plot)
        label = "external prediction files (test protocol set by whoever made them)"
        _print_result(result, label, out, result.extra.get("timing", {}))
        with_files = result.num_images_with_prediction_files
        if with_files is None:
            with_files = result.num_images_with_predictions
        missing = result.num_images - with_files
        empty = with_files - result.num_images_with_predictions
        if missing:
            print(f"Note: {missing} ground-truth images have no prediction file (counted as no detections)")
        if empty:
            print(f"Note: {empty} ground-truth images have an empty prediction (no faces listed)")
        return 0

    if not args.images:
        raise InputError("--images is required with --model (the WIDER_val/images folder)")
    try:
        protocol = parse_protocol(
            args.protocol,
            score_threshold=args.score_threshold,
            nms_threshold=args.nms_threshold,
            top_k=args.top_k,
            keep_top_k=args.keep_top_k,
        )
    except ValueError as e:
        raise InputError(str(e)) from None
    from featherface.eval.widerface import load_ground_truth

    gtd = load_ground_truth(gt)  # fail on a bad GT dir before loading the model
    from featherface.api import FaceDetector
    from featherface.cliargs import backend_arg

    detector = FaceDetector(args.model, device=args.device, backend=backend_arg(getattr(args, "backend", "auto")))
    image_list = args.image_list
    if args.max_images is not None:
        if args.max_images < 1:
            raise InputError(f"--max-images must be >= 1, got {args.max_images}")
        from featherface.eval.runner import evenly_spaced, list_images

        image_list = evenly_spaced(list_images(args.images, args.image_list), args.max_images)
    out = out or Path(f"eval_{protocol.name}")
    model_info = {"model": str(args.model), "device": args.device, "backend": getattr(detector, "backend", None)}
    result, report = evaluate_detector(
        detector,
        args.images,
        gtd,
        output_dir=out,
        image_list=image_list,
        protocol=protocol,
        model_info=model_info,
        progress=not args.no_progress,
        plot=plot,
    )
    _print_result(result, protocol.label, out, report["timing"])
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m featherface.eval.cli ...`` = ``featherface eval ...`` (one parse / error path: featherface.cli)."""
    from featherface.cli import main as featherface_main

    return featherface_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
