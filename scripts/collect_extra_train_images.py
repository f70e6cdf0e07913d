"""Collect extra official WIDER FACE training images held in a local bare mirror of a public repository (see
../shared/data/README.md, "More training images"), keyed by file name.

    python scripts/collect_extra_train_images.py MIRROR_GIT_DIR OUT_DIR
    python scripts/collect_extra_train_images.py --flat --commit COMMIT --prefix PREFIX MIRROR_GIT_DIR OUT_DIR

Default mode: SihanWang-WHU/Face_Detection layout (``data/WIDER_train/images/<event>/<file>.jpg``), across the
whole history of the mirror (every ref). ``--flat``: a layout without event folders (``PREFIX<file>.jpg``, e.g.
jiel-github/YOLO-Face-Detection, ``Dataset/WIDER_subset/WIDER_train/images/``); each file name is mapped to its
``<event>/<file>.jpg`` through the official BBX_GT (``--bbx-gt``, default
../shared/data/widerface/train/wider_face_train_bbx_gt.txt); names not listed there are skipped and counted.

Writes OUT_DIR/images/<event>/<file>.jpg (never commit them: research-only data), skipping files already present
and blobs that are not JPEG (Git LFS pointers and the like), and prints the counts. Boxes for these images come
from the BBX_GT (no landmarks): see scripts/build_train_labels.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

PREFIX = "data/WIDER_train/images/"
BBX_GT = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface" / "train" / "wider_face_train_bbx_gt.txt"


def _git(mirror: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", mirror, *args], capture_output=True, text=True, check=True).stdout


def bbx_gt_names(path: Path) -> dict[str, str]:
    """File name -> ``<event>/<file>.jpg`` for every image path line of an official bbx_gt file."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.endswith(".jpg") and "/" in s:
            out[s.rsplit("/", 1)[-1]] = s
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mirror", help="bare git directory of the mirror")
    ap.add_argument("out_dir")
    ap.add_argument("--flat", action="store_true", help="images sit directly under PREFIX (no event folders)")
    ap.add_argument("--commit", default=None, help="read this commit only (default: every commit of every ref)")
    ap.add_argument("--prefix", default=None, help=f"folder of the images in the repository (default {PREFIX})")
    ap.add_argument("--bbx-gt", type=Path, default=BBX_GT, help="official bbx_gt file used by --flat")
    args = ap.parse_args(argv)
    prefix = args.prefix if args.prefix is not None else PREFIX
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    mirror = args.mirror
    out = Path(args.out_dir) / "images"
    names = bbx_gt_names(args.bbx_gt) if args.flat else {}
    revs = [args.commit] if args.commit else _git(mirror, "rev-list", "--all").split()
    blobs: dict[str, tuple[str, str]] = {}  # file name -> (relative path event/file, blob id)
    unknown: set[str] = set()
    for rev in revs:
        for line in _git(mirror, "ls-tree", "-r", rev).splitlines():
            meta, path = line.split("\t", 1)
            if not (path.startswith(prefix) and path.endswith(".jpg")):
                continue
            rel = path[len(prefix):]
            name = rel.rsplit("/", 1)[-1]
            if args.flat:
                if "/" in rel:
                    continue
                if name not in names:
                    unknown.add(name)
                    continue
                rel = names[name]
            blobs.setdefault(name, (rel, meta.split()[2]))
    proc = subprocess.Popen(["git", "--git-dir", mirror, "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    written = present = not_jpeg = 0
    events: set[str] = set()
    for _name, (rel, blob) in sorted(blobs.items()):
        target = out / rel
        if target.is_file():
            present += 1
            continue
        proc.stdin.write(f"{blob}\n".encode())
        proc.stdin.flush()
        header = proc.stdout.readline().split()
        size = int(header[2])
        data = proc.stdout.read(size)
        proc.stdout.read(1)
        if data[:2] != b"\xff\xd8":  # LFS pointer or other non-JPEG content
            not_jpeg += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += 1
        events.add(rel.split("/", 1)[0])
    proc.stdin.close()
    proc.wait()
    print(f"{written} new images written under {out} ({len(events)} events; {len(blobs)} distinct file names: "
          f"{present} already present, {not_jpeg} not JPEG"
          + (f"; {len(unknown)} names not in {args.bbx_gt.name} skipped" if args.flat else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
