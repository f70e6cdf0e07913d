"""Turn a training checkpoint into the shipped default weights.

    python scripts/finalize_weights.py runs/ship_v2/best.pth [--bn-batches 40] [--out src/featherface/weights]

1. Optionally re-estimates BatchNorm statistics over training batches (``featherface.train.precise_bn``; the
   recipe's labels, images and crop size are read from the checkpoint's training config).
2. Writes an inference-only checkpoint (weights + model config + featherface version, no optimizer or training
   state) as ``featherface_v2_default.pth``, updates the ``featherface_v2`` record of ``models.json`` (SHA-256,
   notes; the val-dev AP is cleared until measured again) and regenerates the ONNX files from it with
   ``scripts/build_model_zoo.py``, so the shipped checkpoint, ONNX files and manifest cannot drift apart. Then:
   ``featherface eval --model featherface_v2 ... -o runs/zoo/featherface_v2`` and
   ``python scripts/build_model_zoo.py --ap featherface_v2=runs/zoo/featherface_v2/results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from featherface.checkpoint import load_model, read_checkpoint, save_checkpoint
from featherface.fsutil import atomic_write_text
from featherface.models.stats import count_parameters
from featherface.pretrained import MANIFEST, sha256_of

FILE_NAME = "featherface_v2_default.pth"
WEIGHTS = Path("src/featherface/weights")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, default=Path("src/featherface/weights"))
    ap.add_argument("--bn-batches", type=int, default=0, help="precise-BN batches (0 = keep the running statistics)")
    ap.add_argument("--bn-batch-size", type=int, default=16)
    ap.add_argument("--notes", default="")
    args = ap.parse_args(argv)

    raw = read_checkpoint(args.checkpoint)
    extra = raw.get("extra", {}) if isinstance(raw, dict) else {}
    config = extra.get("config") or {}
    model = load_model(args.checkpoint)
    if args.bn_batches:
        from featherface.train.freeze import freeze_module, unfreeze_module
        from featherface.train.precise_bn import recompute_bn_stats, training_batches

        if config.get("freeze_backbone"):  # trained on the teacher's frozen backbone: its BNs stay as they are
            freeze_module(model.body)

        data = config["data"]
        batches = training_batches(data["train_labels"], data.get("train_images"), image_size=int(data["image_size"]),
                                   crop_scales=data.get("crop_scales"), n=args.bn_batches,
                                   batch_size=args.bn_batch_size, seed=0)
        used = recompute_bn_stats(model, batches)
        if config.get("freeze_backbone"):
            unfreeze_module(model.body)
        print(f"BatchNorm statistics re-estimated over {used} training batches of {args.bn_batch_size}"
              + (" (frozen backbone's BNs untouched)" if config.get("freeze_backbone") else ""))
    provenance = {"source_checkpoint": str(args.checkpoint), "epochs_trained": extra.get("epoch"),
                  "precise_bn_batches": args.bn_batches, "train_config": config.get("name"), "notes": args.notes}
    path = save_checkpoint(args.out / FILE_NAME, model, extra={"provenance": provenance})
    manifest_path = args.out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"default": "featherface_v2",
                                                                                      "models": {}}
    record = manifest["models"].setdefault("featherface_v2", {})
    record.update({"file": FILE_NAME, "sha256": sha256_of(path), "model_name": model.model_name,
                   "params": count_parameters(model), "notes": args.notes or f"from {args.checkpoint}",
                   "val_dev_ap": {}})
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    print(f"{path}: {path.stat().st_size:,d} bytes, {record['params']:,d} parameters, sha256 {record['sha256'][:16]}…")
    if args.out.resolve() == WEIGHTS.resolve():
        from build_model_zoo import main as build_model_zoo  # scripts/ is on sys.path when run as a script

        build_model_zoo([])  # the ONNX files (raw, browser) and their digests follow the new checkpoint
    return 0


if __name__ == "__main__":
    sys.exit(main())
