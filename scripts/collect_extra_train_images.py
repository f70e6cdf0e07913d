"""Collect the extra official WIDER FACE training images held across the history of a local mirror of
SihanWang-WHU/Face_Detection (see ../shared/data/README.md, "More training images"), keyed by file name.

    python scripts/collect_extra_train_images.py MIRROR_GIT_DIR OUT_DIR

Writes OUT_DIR/images/<event>/<file>.jpg (never commit them: research-only data) and prints the count. Boxes for
these images come from ../shared/data/widerface/train/wider_face_train_bbx_gt.txt (no landmarks).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PREFIX = "data/WIDER_train/images/"


def main(mirror: str, out_dir: str) -> int:
    out = Path(out_dir) / "images"
    revs = subprocess.run(["git", "--git-dir", mirror, "rev-list", "--all"], capture_output=True, text=True,
                          check=True).stdout.split()
    blobs: dict[str, tuple[str, str]] = {}  # file name -> (relative path event/file, blob id)
    for rev in revs:
        tree = subprocess.run(["git", "--git-dir", mirror, "ls-tree", "-r", rev], capture_output=True, text=True,
                              check=True).stdout
        for line in tree.splitlines():
            meta, path = line.split("\t", 1)
            if not (path.startswith(PREFIX) and path.endswith(".jpg")):
                continue
            rel = path[len(PREFIX):]
            name = rel.rsplit("/", 1)[-1]
            blobs.setdefault(name, (rel, meta.split()[2]))
    proc = subprocess.Popen(["git", "--git-dir", mirror, "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    written = 0
    for name, (rel, blob) in sorted(blobs.items()):
        proc.stdin.write(f"{blob}\n".encode())
        proc.stdin.flush()
        header = proc.stdout.readline().split()
        size = int(header[2])
        data = proc.stdout.read(size)
        proc.stdout.read(1)
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if data[:2] != b"\xff\xd8":  # LFS pointer or other non-JPEG content
            continue
        target.write_bytes(data)
        written += 1
    proc.stdin.close()
    proc.wait()
    print(f"{written} images written under {out} ({len(blobs)} distinct file names)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
