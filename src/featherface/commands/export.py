"""``featherface export`` / ``quantize`` / ``prune``: the command-line layer (argparse) over the keyword APIs of
:mod:`featherface.export.onnx_export`, :mod:`featherface.export.quantize` and :mod:`featherface.prune`.

Data-path defaults (``../shared``, this repository's layout) live here, not in the library."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from featherface.cliargs import frame_size, open_unit_interval_excl, percentile, positive_int
from featherface.errors import FeatherFaceError
from featherface.export.formats import FORMATS, PRECISIONS

__all__ = ["configure_parser", "run", "configure_quantize_parser", "run_quantize", "configure_prune_parser",
           "run_prune"]

_DATA = Path("..") / "shared" / "data" / "widerface"  # relative to the working directory, as the train recipes


# ----------------------------------------------------------------------------------------------------------- export
def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="FeatherFace checkpoint (.pth, ours or upstream V1) or a model name (random weights)")
    p.add_argument("-o", "--output", required=True,
                   help="file to write: .onnx, .ort, .tflite, or a .mlpackage folder (coreml)")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx (default; dynamic sizes), ort (ONNX Runtime mobile format + required_operators.config), "
                        "tflite (LiteRT, fixed --size, NHWC), coreml (ML Program, fixed --size, fp16); "
                        "ort/tflite/coreml need pip install 'featherface[mobile]' (see docs/mobile.md)")
    p.add_argument("--size", type=frame_size, default=None, metavar="WxH",
                   help="fixed input size of tflite / coreml, width x height (default 640x480)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="tflite weights: fp32 (default) or fp16 (about half the file; coreml is always fp16)")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (>= 16 for GridSample; default 17)")
    p.add_argument("--with-postprocess", action="store_true",
                   help="onnx / ort: anchors, decoding and NonMaxSuppression in the graph; score/IoU thresholds "
                        "become inputs")
    p.add_argument("--max-detections", type=positive_int, default=750, help="faces per image kept after NMS (in-graph only)")
    p.add_argument("--example-size", type=frame_size, default=(64, 96), metavar="WxH",
                   help="size of the tracing input, width x height (default 96x64; the axes stay dynamic)")
    p.add_argument("--parity-sizes", type=frame_size, nargs="*", default=[(64, 96), (96, 64)], metavar="WxH",
                   help="sizes (width x height) at which onnx (onnxruntime vs PyTorch) and ort (.ort vs .onnx) are "
                        "checked after a raw export (default 96x64 64x96); tflite is checked at --size")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")


def run(args: argparse.Namespace) -> int:
    from featherface.checkpoint import load_any_model
    from featherface.export.mobile import DEFAULT_MOBILE_SIZE, export_model

    if args.size is not None and args.format in ("onnx", "ort"):
        raise FeatherFaceError(f"--size applies to tflite and coreml; {args.format} inputs have dynamic sizes")
    model = load_any_model(args.checkpoint)
    report = export_model(model, args.output, fmt=args.format, size=args.size or DEFAULT_MOBILE_SIZE,
                          precision=args.precision, opset=args.opset, with_postprocess=args.with_postprocess,
                          max_detections=args.max_detections, example_size=args.example_size,
                          parity_sizes=args.parity_sizes or (), check=not args.no_check)
    print(json.dumps(report))
    return 0


# --------------------------------------------------------------------------------------------------------- quantize
def configure_quantize_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="fp32 raw-output ONNX file from `featherface export`")
    p.add_argument("-o", "--output", required=True, help="INT8 ONNX file to write")
    p.add_argument("--calib-images", default=str(_DATA / "train" / "images"), help="folder of calibration images")
    p.add_argument("-n", "--num-images", type=positive_int, default=32, help="calibration images (N)")
    p.add_argument("--calib-size", type=positive_int, default=640, help="longest side of the calibration inputs")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default per-channel)")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax",
                   help="activation-range calibration (default minmax)")
    p.add_argument("--percentile", type=percentile, default=99.999, help="clipping percentile of --method percentile")
    p.add_argument("--keep-float", nargs="*", default=["stage1"], metavar="GROUP",
                   help="parts left in float32: attention (sigmoid gates), heads, neck, ssh, stem, stage1, stage2, "
                        "stage3 (default: stage1, the best measured recipe; give the flag alone to quantise all)")
    p.add_argument("--only", nargs="+", default=(), metavar="GROUP",
                   help="quantise only these groups (same names as --keep-float), everything else float")
    p.add_argument("--format", dest="quant_format", choices=("qdq", "qoperator"), default="qdq",
                   help="QDQ pairs (default) or ORT's QOperator format (QLinearConv ...)")
    p.add_argument("--eval-images", default=None,
                   help="WIDER val images root: also report AP change (val-dev list / GT from --eval-gt, --eval-list)")
    p.add_argument("--eval-gt", default=None)
    p.add_argument("--eval-list", default=None)
    p.add_argument("--eval-limit", type=positive_int, default=None, help="evaluate only the first N listed images")
    p.add_argument("--eval-protocol", default="original-size",
                   help="'original-size' or 'longest-side-N' (as featherface train/eval; a bare N is accepted too)")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--report", default=None, help="write the JSON report here")


def run_quantize(args: argparse.Namespace) -> int:
    from featherface.export.quantize import quantize_report

    evaluate = None
    if args.eval_images:
        if not args.eval_gt:
            raise FeatherFaceError("--eval-images needs --eval-gt (folder with wider_face_val.mat etc.)")
        evaluate = _ap_function(args)
    report = quantize_report(args.model, args.output, calib_images=args.calib_images, num_images=args.num_images,
                             calib_size=args.calib_size, per_channel=not args.per_tensor, method=args.method,
                             percentile=args.percentile, keep_float=tuple(args.keep_float or ()),
                             only=tuple(args.only or ()), quant_format=args.quant_format, threads=args.threads, evaluate=evaluate, report_path=args.report)
    print(json.dumps(report, indent=2))
    return 0


def _ap_function(args: argparse.Namespace):
    from featherface.eval.protocols import LongestSide, OriginalSize
    from featherface.eval.runner import list_images, onnx_ap

    rels = list_images(args.eval_images, args.eval_list)
    if args.eval_limit:
        rels = rels[: int(args.eval_limit)]
    size = _longest_side(args.eval_protocol)
    proto = OriginalSize() if size is None else LongestSide(size=size)
    return lambda path: onnx_ap(path, args.eval_images, args.eval_gt, rels, proto, int(args.threads))


def _longest_side(text: str) -> int | None:
    """``original`` / ``original-size`` / ``none`` → None; ``640`` / ``longest-side-640`` → 640 (as ``train``)."""
    t = str(text).strip().lower()
    if t in ("original", "original-size", "none"):
        return None
    num = t.removeprefix("longest-side-")
    if not num.isdigit() or int(num) < 1:
        raise FeatherFaceError(f"--eval-protocol must be 'original-size' or 'longest-side-N' (or N), got {text!r}")
    return int(num)


# ------------------------------------------------------------------------------------------------------------ prune
def configure_prune_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="V2 checkpoint (or model name for random weights)")
    p.add_argument("-o", "--output", required=True, help="pruned checkpoint to write")
    p.add_argument("--ratio", type=open_unit_interval_excl, default=0.2, help="share of channels removed from SSH, BiFPN and heads")
    p.add_argument("--finetune-config", metavar="TOML",
                   help="fine-tune the pruned weights with this training recipe (its model widths are replaced by "
                        "the pruned ones; e.g. configs/prune_finetune_v2.toml)")
    p.add_argument("--finetune-epochs", type=positive_int, help="override the recipe's epoch count")
    p.add_argument("--no-progress", action="store_true")


def run_prune(args: argparse.Namespace) -> int:
    from featherface.prune import prune_checkpoint

    recipe = None
    if args.finetune_config:
        from featherface.train.cli import with_default_paths
        from featherface.train.config import load_config

        recipe = with_default_paths(load_config(args.finetune_config))
    summary = prune_checkpoint(args.checkpoint, args.output, ratio=args.ratio, finetune=recipe,
                               finetune_epochs=args.finetune_epochs, finetune_label=args.finetune_config,
                               progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0
