"""Build the shipped model zoo: checkpoints, ONNX files and ``src/featherface/weights/models.json``.

    python scripts/build_model_zoo.py                       # re-export every ONNX file from the shipped .pth files
    python scripts/build_model_zoo.py --v1-from ../shared/peers/featherface/featherface_train_mobilenet0.25_Final.pth
    python scripts/build_model_zoo.py --ap featherface_v2=runs/zoo/v2/results.json   # record a measured val-dev AP

For each record of the manifest:

* ``featherface_v2`` (the default): the checkpoint written by ``scripts/finalize_weights.py``; exported to a raw-output
  ONNX file (dynamic H/W: what ``FaceDetector()`` runs with ONNX Runtime) and to an ONNX file with in-graph
  post-processing (what the browser page runs).
* ``featherface_v1`` (``--v1-from``): the upstream MIT-licensed teacher converted to our checkpoint format with its
  weights stored in float16 (computed in float32), and a raw ONNX file with float16 storage.

SHA-256, parameters, MACs at 640x480 and pre-processing are computed here; the val-dev AP comes from a
``featherface eval`` ``results.json`` given with ``--ap NAME=FILE`` (kept from the previous manifest otherwise).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from featherface.checkpoint import load_model
from featherface.export.onnx_export import (
    check_parity,
    export_onnx,
    shorten_tensor_names,
    simplify_onnx,
    store_weights_as_float16,
)
from featherface.fsutil import atomic_write_text
from featherface.models.stats import count_macs, count_parameters
from featherface.pretrained import MANIFEST, sha256_of

WEIGHTS = Path("src/featherface/weights")
V1_SOURCE = ("FeatherFace V1 teacher trained by the upstream FeatherFace project: github.com/fokouarnaud/featherface-train "
             "weights/mobilenet0.25_Final.pth (commit f9347b5b3288d3c959abd62e56f1e2bc918dfa65, sha256 {sha})")
V1_LICENCE = "MIT (Copyright (c) 2025 dohunKim; upstream repository LICENSE)"


def _ap_record(path: Path) -> dict:
    report = json.loads(path.read_text())
    ap = report["ap"]
    inputs, protocol = report.get("inputs", {}), report.get("protocol") or {}
    return {"easy": round(ap["easy"], 4), "medium": round(ap["medium"], 4), "hard": round(ap["hard"], 4),
            "protocol": protocol.get("name", "original-size"), "images": report["evaluation"].get("num_images"),
            "image_list": inputs.get("image_list"), "results": str(path)}


def _half_checkpoint(model: torch.nn.Module, path: Path, provenance: dict) -> Path:
    """Save ``model`` with its weights in float16 (loading casts them back to float32). BatchNorm running statistics
    (9,004 values in V1) stay float32: the first BN sees 0..255 inputs and its running variance reaches 9e4, beyond
    float16's 65,504 (stored as inf, it silences every face); so does any tensor that float16 cannot hold."""
    from featherface.checkpoint import atomic_save, model_to_checkpoint

    def storable(name: str, t: torch.Tensor) -> bool:
        half = t.half()
        return not name.endswith(("running_mean", "running_var")) and bool(torch.isfinite(half).all())

    ckpt = model_to_checkpoint(model, extra={"provenance": provenance})
    ckpt["state_dict"] = {k: v.half() if v.is_floating_point() and storable(k, v) else v
                          for k, v in ckpt["state_dict"].items()}
    kept = sum(v.numel() for v in ckpt["state_dict"].values() if v.dtype == torch.float32)
    print(f"{path.name}: {kept:,d} values kept in float32 (BatchNorm statistics)")
    return atomic_save(ckpt, path)


def _export_pair(name: str, model: torch.nn.Module, *, web: bool, half: bool) -> dict:
    raw = export_onnx(model, WEIGHTS / f"{name}.onnx", check=True, fold_constants=not half)
    if half:  # float16-exact weights stay exact: no BN folding; the compacted graph fits the 1.5 MB budget
        simplify_onnx(raw)
        shorten_tensor_names(raw)
        store_weights_as_float16(raw)
    err = check_parity(model, raw, sizes=[(120, 160), (97, 131)])
    print(f"{raw}: {raw.stat().st_size:,d} bytes, max |ONNX Runtime - PyTorch| {err:.2e} on raw outputs")
    files = {"onnx_file": raw.name, "onnx_sha256": sha256_of(raw)}
    if web:
        page = export_onnx(model, WEIGHTS / f"{name}_web.onnx", with_postprocess=True)
        print(f"{page}: {page.stat().st_size:,d} bytes (in-graph post-processing, for the browser page)")
        files |= {"web_onnx_file": page.name, "web_onnx_sha256": sha256_of(page)}
    return files


def _describe(model: torch.nn.Module, path: Path) -> dict:
    macs = count_macs(model, (480, 640))["total"]
    return {"model_name": model.model_name, "file": path.name, "sha256": sha256_of(path),
            "params": count_parameters(model), "macs": {"640x480": int(macs)},
            "preprocessing": model.preprocessing.to_dict()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--v1-from", type=Path, help="upstream V1 teacher checkpoint to convert and ship")
    ap.add_argument("--ap", action="append", default=[], metavar="NAME=RESULTS_JSON",
                    help="record the val-dev AP of a `featherface eval` results.json for zoo model NAME")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    manifest_path = WEIGHTS / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"default": "featherface_v2",
                                                                                      "models": {}}
    models = manifest["models"]

    v2 = dict(models.get("featherface_v2", {}))
    v2_path = WEIGHTS / v2.get("file", "featherface_v2_default.pth")
    model = load_model(v2_path)
    v2 |= _describe(model, v2_path) | _export_pair("featherface_v2_default", model, web=True, half=False)
    v2.setdefault("storage_dtype", "float32")
    v2.setdefault("source", "this project: distilled from the featherface_v1 teacher (docs/training.md)")
    v2.setdefault("licence", "MIT (this project)")
    models["featherface_v2"] = v2

    if args.v1_from is not None:
        teacher = load_model(args.v1_from)
        provenance = {"source": V1_SOURCE.format(sha=sha256_of(args.v1_from)), "licence": V1_LICENCE,
                      "storage": "float16 weights, computed in float32"}
        v1_path = _half_checkpoint(teacher, WEIGHTS / "featherface_v1.pth", provenance)
        v1_model = load_model(v1_path)  # the float16-rounded weights, as users get them
        v1 = dict(models.get("featherface_v1", {}))
        v1 |= _describe(v1_model, v1_path) | _export_pair("featherface_v1", v1_model, web=False, half=True)
        v1 |= {"storage_dtype": "float16", "source": provenance["source"], "licence": V1_LICENCE,
               "notes": "the most accurate model (592,371 parameters, deformable convs); slower than featherface_v2"}
        models["featherface_v1"] = v1
        print(f"{v1_path}: {v1_path.stat().st_size:,d} bytes (float16 storage)")
    elif "featherface_v1" in models:
        v1_path = WEIGHTS / models["featherface_v1"]["file"]
        v1_model = load_model(v1_path)
        models["featherface_v1"] |= _describe(v1_model, v1_path) | _export_pair("featherface_v1", v1_model, web=False,
                                                                                 half=True)

    for item in args.ap:
        name, _, file = item.partition("=")
        if name not in models:
            raise SystemExit(f"--ap {item}: no zoo model {name!r}")
        models[name]["val_dev_ap"] = _ap_record(Path(file))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    print(f"{manifest_path}: {', '.join(models)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
