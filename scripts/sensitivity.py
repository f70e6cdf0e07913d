"""Sensitivity of distillation to its temperature and weight (seed report §6.2), measured.

    python scripts/sensitivity.py                    # tiny default budget (a smoke test, not a result)
    python scripts/sensitivity.py --full             # configs/distill_v2.toml budget, all of val-dev, original size
    python scripts/sensitivity.py --temperatures 2 4 6 --alphas 0.5 0.7 0.9 --epochs 20 --image-size 480

Two one-dimensional sweeps around the seed defaults (T = 4, α = 0.7): T ∈ {2, 4, 6} at α = 0.7 and
α ∈ {0.5, 0.7, 0.9} at T = 4 (the shared (4, 0.7) run is trained once). Every run is V2 distilled from the teacher
with the same recipe, seed, images and epochs. Writes ``<out>/sensitivity.md`` (two markdown tables of the
**measured** val-dev AP, plus the parameter count) and ``<out>/sensitivity.json``. Nothing is projected.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ablation import REPO, add_budget_args, fmt_ap, setup_line, train_and_eval  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_args(p)
    p.add_argument("--temperatures", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    p.add_argument("--base-temperature", type=float, default=4.0)
    p.add_argument("--base-alpha", type=float, default=0.7)
    args = p.parse_args(argv)
    if args.no_teacher:
        p.error("the sensitivity sweep needs a teacher")
    out = args.output or (REPO / "runs" / ("sensitivity_full" if args.full else "sensitivity_tiny"))
    out.mkdir(parents=True, exist_ok=True)
    points = [(t, args.base_alpha) for t in args.temperatures] + [(args.base_temperature, a) for a in args.alphas]
    results: dict[tuple[float, float], dict] = {}
    for t, a in points:
        if (t, a) in results:
            continue
        name = f"sens_T{t:g}_a{a:g}"
        r = train_and_eval(args, name, "featherface_v2", {}, {"teacher": args.teacher, "temperature": t, "alpha": a},
                           out)
        results[(t, a)] = r
        print(f"T={t:g} alpha={a:g}: AP {fmt_ap(r['ap_easy'])} / {fmt_ap(r['ap_medium'])} / {fmt_ap(r['ap_hard'])} "
              f"({r['train_s']:.0f} s)", flush=True)
    rows = list(results.values())
    head = "| {} | Easy AP | Medium AP | Hard AP | Params | Final train loss |"
    lines = ["# Distillation sensitivity (seed report §6.2), measured", "", setup_line(rows), "",
             f"## Temperature (α = {args.base_alpha:g})", "", head.format("T"), "|---:|---:|---:|---:|---:|---:|"]
    for t in args.temperatures:
        r = results[(t, args.base_alpha)]
        lines.append(f"| {t:g} | {fmt_ap(r['ap_easy'])} | {fmt_ap(r['ap_medium'])} | {fmt_ap(r['ap_hard'])} "
                     f"| {r['params']:,} | {r['final_loss']:.3f} |")
    lines += ["", f"## Weight α (T = {args.base_temperature:g})", "", head.format("α"), "|---:|---:|---:|---:|---:|---:|"]
    for a in args.alphas:
        r = results[(args.base_temperature, a)]
        lines.append(f"| {a:g} | {fmt_ap(r['ap_easy'])} | {fmt_ap(r['ap_medium'])} | {fmt_ap(r['ap_hard'])} "
                     f"| {r['params']:,} | {r['final_loss']:.3f} |")
    lines += ["", "AP in %. Final train loss is the total distillation objective, whose scale depends on α and T "
              "(not comparable across rows). With the default tiny budget the numbers only show that the pipeline "
              "runs; use `--full` (or larger flags) for a real comparison."]
    (out / "sensitivity.md").write_text("\n".join(lines) + "\n")
    (out / "sensitivity.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(f"wrote {out / 'sensitivity.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
