"""Deployment benchmark: ``python benchmarks/bench_deploy.py [featherface benchmark options]``.

Same as ``featherface benchmark``; defaults write ``benchmarks/results/deploy.md`` and ``deploy.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featherface.export.benchmark import configure, run

if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    p = argparse.ArgumentParser(description=__doc__)
    configure(p)
    p.set_defaults(output=str(out / "deploy.md"), json=str(out / "deploy.json"))
    sys.exit(run(p.parse_args()))
