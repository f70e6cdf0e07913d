"""``featherface models``: the shipped pretrained models (the model zoo) as a table, or as JSON."""

from __future__ import annotations

import argparse
import json

__all__ = ["configure_parser", "run"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print every record in full as JSON")


def _ap(record) -> str:
    ap = record.val_dev_ap
    if not ap:
        return "not measured"
    return f"{ap['easy']:.3f} / {ap['medium']:.3f} / {ap['hard']:.3f}"


def run(args: argparse.Namespace) -> int:
    from featherface.pretrained import default_model_name, list_weights, weights_dir

    records = list_weights()
    if args.json:
        print(json.dumps({"default": default_model_name(), "models": {r.name: r.to_dict() for r in records}},
                         indent=2))
        return 0
    default = default_model_name()
    rows = [("name", "parameters", "GMACs 640x480", "val-dev AP easy / medium / hard", "weights", "files", "licence")]
    for r in records:
        files = [f for f in (r.file, r.onnx_file, r.web_onnx_file) if f]
        size = sum((weights_dir() / f).stat().st_size for f in files) / 1e6
        macs = r.macs.get("640x480")
        rows.append((r.name + (" (default)" if r.name == default else ""), f"{r.params:,d}",
                     f"{macs / 1e9:.3f}" if macs else "?", _ap(r), r.storage_dtype, f"{len(files)}, {size:.1f} MB",
                     r.licence.split(" (")[0]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    protocol = next((r.val_dev_ap for r in records if r.val_dev_ap), {})
    if protocol:
        print(f"\nAP: WIDER FACE val-dev ({protocol.get('images')} images), protocol {protocol.get('protocol')}; "
              "`featherface models --json` gives every field (source, SHA-256, pre-processing).")
    print("Use one by name: FaceDetector('featherface_v1') or `featherface detect IMAGE --model featherface_v1`.")
    return 0
