"""Build one RetinaFace-format label file for every training image found under IMAGES_ROOT.

    python scripts/build_train_labels.py IMAGES_ROOT OUT_LABELS [--landmarks LABEL_TXT] [--bbx-gt BBX_GT_TXT]

Images listed in LABEL_TXT (RetinaFace labels with landmarks) keep those lines; every other image gets its boxes
from the official BBX_GT_TXT as 4-number lines (no landmarks); faces flagged invalid there are written with the
``ignore`` tag (``x y w h ignore``, see docs/data-format.md) and zero-size boxes are skipped.
Defaults read ../shared/data/widerface/train/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface" / "train"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images_root", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--landmarks", type=Path, default=SHARED_TRAIN / "label.txt")
    ap.add_argument("--bbx-gt", type=Path, default=SHARED_TRAIN / "wider_face_train_bbx_gt.txt")
    args = ap.parse_args(argv)

    have = {p.relative_to(args.images_root).as_posix() for p in args.images_root.rglob("*.jpg")}
    blocks: dict[str, list[str]] = {}
    current = None
    for line in args.landmarks.read_text().splitlines():
        if line.startswith("#"):
            current = line[1:].strip()
            blocks[current] = []
        elif current is not None and line.strip():
            blocks[current].append(line.strip())
    with_landmarks = set(blocks) & have

    lines = args.bbx_gt.read_text().split("\n")
    i, boxes_only, faces, ignored, skipped = 0, 0, 0, 0, 0
    out_blocks: dict[str, list[str]] = {k: blocks[k] for k in with_landmarks}
    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        n = int(lines[i + 1])
        rows = lines[i + 2: i + 2 + max(n, 1)]
        i += 2 + max(n, 1)
        if name not in have or name in with_landmarks:
            continue
        kept = []
        for row in rows[:n]:
            x, y, w, h, _blur, _expr, _ill, invalid, _occ, _pose = (int(v) for v in row.split()[:10])
            if w <= 0 or h <= 0:
                skipped += 1
                continue
            if invalid:
                ignored += 1
                kept.append(f"{x} {y} {w} {h} ignore")
            else:
                faces += 1
                kept.append(f"{x} {y} {w} {h}")
        out_blocks[name] = kept
        boxes_only += 1
    text = "".join(f"# {k}\n" + "".join(f"{r}\n" for r in v) for k, v in sorted(out_blocks.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"{len(out_blocks)} images: {len(with_landmarks)} with landmarks ({sum(len(blocks[k]) for k in with_landmarks)} "
          f"faces), {boxes_only} boxes-only ({faces} faces + {ignored} invalid-flagged faces tagged ignore; "
          f"{skipped} zero-size boxes skipped) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
