"""Extract the whole WIDER FACE val set (3,226 images) from a local bare git mirror of Yusepp/YOLOv8-Face.

For evaluation only: never for training, never committed (research-only data).

    python scripts/extract_full_val.py MIRROR_GIT_DIR OUT_DIR
    python scripts/extract_full_val.py /work/.mirror/Yusepp+YOLOv8-Face/repo .cache/wider_val_full

The images sit in one commit only (``--commit``, deleted by the next one) under ``--prefix``
(``WIDER_val/images/<event>/<file>.jpg``). Only that folder is read (``git ls-tree`` of the prefix, blobs through
one ``git cat-file --batch``). Writes:

- ``OUT_DIR/images/<event>/<file>.jpg``: blobs that are not JPEG (Git LFS pointers and the like) are skipped and
  counted; a file already there whose git blob id matches is left alone (re-runs are cheap and idempotent);
  each image goes to a temporary file that is renamed into place.
- ``OUT_DIR/val-all.txt``: the 3,226 relative paths in the order of the official ``--gt`` file
  (``wider_face_val_bbx_gt.txt``), the format of ``featherface eval --image-list``; written atomically, and only
  when the check below passes (otherwise any earlier one is removed).

Checks: every image named in the official GT is under ``OUT_DIR/images`` and every image there is named in the GT;
the images of ``--check-against`` (the 385 val-dev images held in ../shared) are compared byte for byte (sha256)
with the extracted ones. Prints one summary line; exit status 1 when an image is missing, unlisted or different.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from featherface.fsutil import atomic_write_bytes, atomic_write_text

COMMIT = "4ed272dfa4bb6a6de95496d8c9c90bb3af8e3c5d"
PREFIX = "WIDER_val/images/"
VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface" / "val"
CHECK_AGAINST = VAL / "images"
GT = VAL / "wider_face_val_bbx_gt.txt"
JPEG_MAGIC = b"\xff\xd8"


def gt_image_names(path: str | os.PathLike) -> list[str]:
    """``<event>/<file>.jpg`` of every image of an official ``wider_face_*_bbx_gt.txt``, in file order.

    Walks the format (image line, face count, that many box lines; a count of 0 is followed by one dummy box line)
    so that a box line can never be taken for a name; raises ValueError on a malformed file or a repeated name."""
    lines = [s.strip() for s in Path(path).read_text().splitlines()]
    names: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(lines):
        name = lines[i]
        if not name:
            i += 1
            continue
        if not (name.lower().endswith(".jpg") and "/" in name):
            raise ValueError(f"{path}:{i + 1}: expected an <event>/<file>.jpg line, got {name!r}")
        if i + 1 >= len(lines) or not lines[i + 1].isdigit():
            raise ValueError(f"{path}:{i + 2}: expected the face count of {name}")
        n = int(lines[i + 1])
        name = name.replace("\\", "/").lstrip("/")
        if name in seen:
            raise ValueError(f"{path}:{i + 1}: {name} listed twice")
        seen.add(name)
        names.append(name)
        i += 2 + max(n, 1)
    if i > len(lines):
        raise ValueError(f"{path}: truncated (box lines of the last image missing)")
    return names


def verify_names(gt_names: list[str], found: set[str]) -> tuple[list[str], list[str]]:
    """(GT names not found, in GT order; found names not in the GT, sorted)."""
    gt = set(gt_names)
    return [n for n in gt_names if n not in found], sorted(found - gt)


def images_under(root: Path) -> set[str]:
    """Relative posix paths of the ``.jpg`` files under ``root`` (hidden files and folders left out)."""
    out: set[str] = set()
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fn in filenames:
            if not fn.startswith(".") and fn.lower().endswith(".jpg"):
                out.add((Path(dirpath) / fn).relative_to(root).as_posix())
    return out


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob with these bytes (sha1 of ``blob <size>\\0`` + data)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_blobs(mirror: str, commit: str, prefix: str) -> dict[str, str]:
    """Relative path under ``prefix`` -> blob id, for the ``.jpg`` files below ``prefix`` at ``commit``."""
    out = subprocess.run(["git", "--git-dir", mirror, "ls-tree", "-r", "-z", commit, "--", prefix],
                         capture_output=True, check=True).stdout.decode()
    blobs: dict[str, str] = {}
    for entry in filter(None, out.split("\0")):
        meta, path = entry.split("\t", 1)
        kind, blob = meta.split()[1:3]
        if kind == "blob" and path.startswith(prefix) and path.lower().endswith(".jpg"):
            blobs[path[len(prefix):]] = blob
    return blobs


def _write_file(target: Path, data: bytes) -> None:
    """Temporary file in the target's folder, renamed into place (no fsync: an interrupted run is simply re-run)."""
    atomic_write_bytes(target, data, fsync=False)


def extract(mirror: str, blobs: dict[str, str], out: Path) -> tuple[int, int, int]:
    """Write the JPEG blobs under ``out``; returns (written, already present and identical, not JPEG)."""
    written = present = not_jpeg = 0
    todo = []
    for rel, blob in sorted(blobs.items()):
        target = out / rel
        if target.is_file() and git_blob_id(target.read_bytes()) == blob:
            present += 1
        else:
            todo.append((rel, blob))
    if not todo:
        return written, present, not_jpeg
    proc = subprocess.Popen(["git", "--git-dir", mirror, "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        for rel, blob in todo:
            proc.stdin.write(f"{blob}\n".encode())
            proc.stdin.flush()
            header = proc.stdout.readline().split()
            if len(header) != 3:
                raise RuntimeError(f"git cat-file: no blob {blob} for {rel}: {b' '.join(header).decode()}")
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)
            if data[:2] != JPEG_MAGIC:  # Git LFS pointer or other non-JPEG content
                not_jpeg += 1
                continue
            _write_file(out / rel, data)
            written += 1
    finally:
        proc.stdin.close()
        proc.wait()
    return written, present, not_jpeg


def compare_with(reference: Path, out: Path) -> tuple[int, list[str], list[str]]:
    """Images under ``reference`` against the same paths under ``out``: (identical count, differing, absent)."""
    same, diff, absent = 0, [], []
    for rel in sorted(images_under(reference)):
        mine = out / rel
        if not mine.is_file():
            absent.append(rel)
        elif sha256_file(mine) == sha256_file(reference / rel):
            same += 1
        else:
            diff.append(rel)
    return same, diff, absent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mirror", help="bare git directory of the Yusepp/YOLOv8-Face mirror")
    ap.add_argument("out_dir")
    ap.add_argument("--commit", default=COMMIT, help=f"commit holding the images (default {COMMIT[:12]})")
    ap.add_argument("--prefix", default=PREFIX, help=f"folder of the images in the repository (default {PREFIX})")
    ap.add_argument("--check-against", type=Path, default=CHECK_AGAINST,
                    help="folder of val images held already, compared byte for byte (default ../shared val images)")
    ap.add_argument("--gt", type=Path, default=GT, help="official wider_face_val_bbx_gt.txt (names and order)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    prefix = args.prefix if args.prefix.endswith("/") or not args.prefix else args.prefix + "/"
    out_dir = Path(args.out_dir)
    images = out_dir / "images"

    gt_names = gt_image_names(args.gt)
    blobs = tree_blobs(args.mirror, args.commit, prefix)
    if not blobs:
        print(f"error: no .jpg under {prefix} at {args.commit} in {args.mirror}", file=sys.stderr)
        return 1
    written, present, not_jpeg = extract(args.mirror, blobs, images)
    found = images_under(images)
    missing, extra = verify_names(gt_names, found)
    same, diff, absent = (compare_with(args.check_against, images) if args.check_against.is_dir() else (0, [], []))
    ok = not missing and not extra and not diff and not absent
    problems = (("missing (in the GT, not extracted)", missing), ("not in the GT", extra),
                (f"different from {args.check_against}", diff), (f"absent, held in {args.check_against}", absent))
    for label, items in problems:
        if items:
            print(f"warning: {len(items)} images {label}: {', '.join(items[:5])}"
                  + (" ..." if len(items) > 5 else ""), file=sys.stderr)
    list_path = out_dir / "val-all.txt"
    if ok:
        atomic_write_text(list_path, "".join(f"{n}\n" for n in gt_names))
    else:
        list_path.unlink(missing_ok=True)  # a list from an earlier run would claim a complete set
    check = f"{same} identical / {len(diff)} different" + (f" / {len(absent)} absent" if absent else "")
    if not args.check_against.is_dir():
        check = f"{args.check_against} not found, not compared"
    print(f"{'OK' if ok else 'FAILED'}: {len(found)} images under {images} ({written} written, {present} already "
          f"identical, {not_jpeg} not JPEG; {len(blobs)} .jpg in {args.commit[:12]}:{prefix}); GT {len(gt_names)} "
          f"names: {len(missing)} missing, {len(extra)} not in GT; held val images: {check}; "
          + (f"list {list_path} ({len(gt_names)} lines)" if ok else "no list written (any earlier one removed)")
          + f"; {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
