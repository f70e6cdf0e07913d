"""``featherface check-teacher PATH``."""

from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="checkpoint to check (ours or an upstream FeatherFace V1 .pth)")


def run(args: argparse.Namespace) -> int:
    from featherface.teacher_check import check_teacher

    report = check_teacher(args.path)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1
