"""``featherface info MODEL``: parameter table, thop-convention count and MACs."""

from __future__ import annotations

import argparse

from featherface.cliargs import positive_int, set_overrides


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered model name (featherface_v1, featherface_v2, ...) or a checkpoint path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of a named model, e.g. --set ssh=factorised --set bifpn_cells=3")
    p.add_argument("--size", type=positive_int, nargs=2, default=(640, 640), metavar=("H", "W"), help="input size for MACs")


def run(args: argparse.Namespace) -> int:
    from featherface.models.registry import build_model
    from featherface.models.stats import count_macs, count_parameters, parameter_table, thop_convention_params

    overrides = set_overrides(args.set)
    from featherface.checkpoint import load_any_model

    model = load_any_model(args.model, overrides=overrides, pretrained=not overrides)
    name = getattr(model, "model_name", args.model)
    h, w = args.size
    print(f"{name}" + (f"  (overrides: {overrides})" if overrides else ""))
    print(f"{'module':32s} {'parameters':>12s}  state-dict prefixes")
    rows = parameter_table(model)
    for r in rows:
        print(f"{r.group:32s} {r.params:>12,d}  {', '.join(r.modules)}")
    total = count_parameters(model)
    print(f"{'total (trainable)':32s} {total:>12,d}")
    thop = thop_convention_params(model, (h, w))
    print(f"{'thop convention':32s} {thop:>12,d}  (what thop.profile prints: it skips parameters whose layer never "
          f"runs its own forward — the deformable kernels — and those owned by containers — the BiFPN fusion weights; "
          f"{total - thop:,d} left out)")
    macs = count_macs(model, (h, w))
    print(f"MACs at {h}x{w}: {macs['total'] / 1e9:.3f} G  (convolutions {macs['conv'] / 1e9:.3f} G, "
          f"deformable {macs['deformable'] / 1e9:.3f} G, linear {macs['linear'] / 1e6:.3f} M; "
          "element-wise ops not counted)")
    if name == "featherface_v2" and not overrides:
        print("\nV2 variants (config switches of FeatherFaceV2Config; parameter counts measured here):")
        for label, kw in V2_VARIANTS:
            n = count_parameters(build_model("featherface_v2", **kw))
            print(f"  {label:58s} {n:>9,d}  ({n - total:+,d})  --set " + " --set ".join(f"{k}={v}" for k, v in kw.items()))
    return 0


V2_VARIANTS = (
    ("(a) grouped SSH with 3x3 factorised into 1x3 + 3x1", {"ssh": "factorised"}),
    ("(b) one truly shared CBAM for the 3 BiFPN outputs", {"shared_neck_cbam": True}),
    ("(b') one shared backbone CBAM (256-ch gate)", {"shared_backbone_cbam": True}),
    ("(c) one head shared across levels", {"head": "shared"}),
    ("(c') shared trunk + shared head", {"head": "shared_trunk"}),
    ("(d) 1 BiFPN cell", {"bifpn_cells": 1}),
    ("(d) 3 BiFPN cells", {"bifpn_cells": 3}),
    ("(a)+(b)+(c)", {"ssh": "factorised", "shared_neck_cbam": True, "head": "shared"}),
    ("ablation: V1 deformable SSH instead of grouped SSH", {"ssh": "v1"}),
    ("ablation: V1 BiFPN cells instead of BiFPN-Light", {"neck": "bifpn_v1"}),
    ("ablation: V1 CBAM instead of CBAM-Plus", {"attention": "cbam_v1"}),
)
