"""Readers for face-detection annotation files, and a dataset checker.

Two formats are understood (see ``docs/data-format.md``):

* RetinaFace ``label.txt``: a ``# <relative/path.jpg>`` line opens each image, then one line per face with
  either 20 numbers (``x y w h`` + 5 x ``(lx ly flag)`` + score) or 4 numbers (``x y w h``, boxes only). A face
  whose 10 landmark coordinates are all ``-1`` has no landmarks. A face line may end with one tag word after
  its numbers: ``ignore`` (``Annotation.invalid``: the face is neither a positive nor a negative in training)
  or ``pseudo`` (``Annotation.pseudo_landmarks``: the landmarks were predicted by a teacher; 20 numbers with
  landmarks only). An image header followed by no face line is an image with zero faces (allowed).
* official WIDER FACE ``wider_face_*_bbx_gt.txt``: path line, face count line, then ``count`` lines of
  ``x1 y1 w h blur expression illumination invalid occlusion pose``; an image with count 0 is followed by one
  all-zero line.

Parsing never drops anything silently: every line that cannot be used is recorded as a :class:`Problem`
(``file:line: message``). Lines with a wrong column count or non-finite numbers are left out of the
annotations (they cannot be interpreted); boxes with zero or negative size are *kept* in the annotations (so
the caller sees them) and reported; the training dataset removes them and reports how many it removed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featherface.errors import InputError

__all__ = [
    "Annotation",
    "Problem",
    "ParseResult",
    "CheckReport",
    "parse_retinaface_labels",
    "parse_bbx_gt",
    "parse_annotations",
    "detect_format",
    "default_images_root",
    "check_dataset",
]

RETINAFACE_COLUMNS = (4, 20)
RETINAFACE_TAGS = ("ignore", "pseudo")
BBX_GT_COLUMNS = 10


@dataclass
class Annotation:
    """Faces of one image. Boxes are ``x1 y1 x2 y2`` in pixels; landmarks are 5 ``(x, y)`` points in pixels
    (left eye, right eye, nose, left mouth corner, right mouth corner), zeros where ``has_landmarks`` is False."""

    image_path: Path
    boxes: np.ndarray  # float32 [G, 4]
    landmarks: np.ndarray  # float32 [G, 10]
    has_landmarks: np.ndarray  # bool [G]
    invalid: np.ndarray | None = None  # bool [G], bbx_gt "invalid" flag or label.txt ``ignore`` tag
    line: int = 0  # 1-based line of the image header in the source file
    face_lines: list[int] = field(default_factory=list)  # 1-based line of each face
    pseudo_landmarks: np.ndarray | None = None  # bool [G], label.txt ``pseudo`` tag (teacher-predicted landmarks)

    @property
    def num_faces(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 when the problem is not tied to a line
    kind: str  # "columns", "number", "size", "structure", "landmarks", "image", "outside"
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass
class ParseResult:
    path: Path
    format: str  # "retinaface" or "bbx_gt"
    annotations: list[Annotation]
    problems: list[Problem]
    num_face_lines: int = 0  # face lines seen, usable or not

    @property
    def num_faces(self) -> int:
        return sum(a.num_faces for a in self.annotations)


def _empty(n: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.zeros((n, 4), np.float32), np.zeros((n, 10), np.float32), np.zeros((n,), bool))


def _floats(tokens: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def _checked_numbers(fname: str, line: int, tokens: list[str], problems: list) -> list[float] | None:
    """The tokens as finite floats, or None after recording a ``number`` problem for ``fname:line``."""
    vals = _floats(tokens)
    if vals is None:
        problems.append(Problem(fname, line, "number", "a field is not a number"))
        return None
    if not all(math.isfinite(v) for v in vals):
        problems.append(Problem(fname, line, "number", "NaN or infinite value"))
        return None
    return vals


def _size_problem(fname: str, lineno: int, w: float, h: float) -> Problem | None:
    if w <= 0 or h <= 0:
        return Problem(fname, lineno, "size", f"box has zero or negative size (w={w:g}, h={h:g})")
    return None


def _read_lines(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotation file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not a UTF-8 text annotation file ({exc})") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def default_images_root(path: str | Path) -> Path:
    """``images/`` next to the annotation file."""
    return Path(path).resolve().parent / "images"


def detect_format(path: str | Path) -> str:
    """``"bbx_gt"`` when the first non-empty line is an image path (one token, not a number), else
    ``"retinaface"`` (normally a ``#`` header; a face line there is reported by the RetinaFace parser)."""
    for line in _read_lines(Path(path)):
        tokens = line.split()
        if not tokens:
            continue
        if line.lstrip().startswith("#"):
            return "retinaface"
        return "bbx_gt" if len(tokens) == 1 and _floats(tokens) is None else "retinaface"
    return "retinaface"


def _open_label_file(path: str | Path, images_root: str | Path | None) -> tuple[Path, Path, str, list[str]]:
    """``(path, images root, path as text for messages, lines)`` of a label file, as both parsers start."""
    path = Path(path)
    root = Path(images_root) if images_root is not None else default_images_root(path)
    return path, root, str(path), _read_lines(path)


def parse_retinaface_labels(path: str | Path, images_root: str | Path | None = None) -> ParseResult:
    """Parse a RetinaFace ``label.txt``. Never raises for bad content: see ``ParseResult.problems``."""
    path, root, fname, lines = _open_label_file(path, images_root)
    anns: list[Annotation] = []
    problems: list[Problem] = []
    n_face_lines = 0
    cur: dict | None = None

    def close() -> None:
        if cur is None:
            return
        g = len(cur["boxes"])
        boxes, lms, has = _empty(g)
        if g:
            boxes[:] = cur["boxes"]
            lms[:] = cur["lms"]
            has[:] = cur["has"]
        anns.append(Annotation(root / cur["rel"], boxes, lms, has, np.array(cur["ignore"], bool).reshape(g),
                               cur["line"], cur["face_lines"], np.array(cur["pseudo"], bool).reshape(g)))

    for i, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            close()
            rel = line[1:].strip()
            if not rel:
                problems.append(Problem(fname, i, "structure", "image header '#' without a path"))
                cur = None
                continue
            cur = {"rel": rel, "line": i, "boxes": [], "lms": [], "has": [], "face_lines": [], "ignore": [],
                   "pseudo": []}
            continue
        n_face_lines += 1
        if cur is None:
            problems.append(Problem(fname, i, "structure", "face line before any '# <image path>' header"))
            continue
        tokens = line.split()
        tag = None
        if tokens[-1] in RETINAFACE_TAGS or (len(tokens) - 1 in RETINAFACE_COLUMNS and _floats(tokens[-1:]) is None):
            tag = tokens.pop()
            if tag not in RETINAFACE_TAGS:
                problems.append(Problem(fname, i, "columns",
                                        f"unknown tag {tag!r} after the numbers (expected one of "
                                        f"{', '.join(RETINAFACE_TAGS)})"))
                continue
        if len(tokens) not in RETINAFACE_COLUMNS:
            problems.append(Problem(fname, i, "columns",
                                    f"expected 20 numbers (or 4 for boxes only) and an optional tag "
                                    f"({', '.join(RETINAFACE_TAGS)}), found {len(line.split())} fields"))
            continue
        vals = _checked_numbers(fname, i, tokens, problems)
        if vals is None:
            continue
        x, y, w, h = vals[:4]
        sp = _size_problem(fname, i, w, h)
        if sp:
            problems.append(sp)
        lm = [0.0] * 10
        has = False
        if len(vals) == 20:
            coords = [vals[4 + 3 * k + j] for k in range(5) for j in range(2)]
            if all(c == -1.0 for c in coords):
                has = False
            elif any(c == -1.0 for c in coords):
                problems.append(Problem(fname, i, "landmarks",
                                        "some landmark coordinates are -1 (missing) but not all; "
                                        "the face is used without landmarks"))
            else:
                lm, has = coords, True
        pseudo = tag == "pseudo"
        if pseudo and not has:
            problems.append(Problem(fname, i, "landmarks",
                                    "tag 'pseudo' on a face without landmarks (pseudo needs 20 numbers with "
                                    "landmarks); the face is used without landmarks"))
            pseudo = False
        cur["boxes"].append([x, y, x + w, y + h])
        cur["lms"].append(lm)
        cur["has"].append(has)
        cur["ignore"].append(tag == "ignore")
        cur["pseudo"].append(pseudo)
        cur["face_lines"].append(i)
    close()
    return ParseResult(path, "retinaface", anns, problems, n_face_lines)


def parse_bbx_gt(path: str | Path, images_root: str | Path | None = None) -> ParseResult:
    """Parse an official ``wider_face_*_bbx_gt.txt`` (boxes only; ``invalid`` flag kept in ``Annotation.invalid``)."""
    path, root, fname, lines = _open_label_file(path, images_root)
    anns: list[Annotation] = []
    problems: list[Problem] = []
    n_face_lines = 0
    i = 0
    n = len(lines)
    while i < n:
        raw = lines[i].strip()
        i += 1
        if not raw:
            continue
        header = i
        rel = raw
        if i >= n:
            problems.append(Problem(fname, header, "structure", f"file ends after image path {rel!r} (no face count)"))
            break
        count_s = lines[i].strip()
        i += 1
        try:
            count = int(count_s)
            if count < 0:
                raise ValueError
        except ValueError:
            problems.append(Problem(fname, i, "structure",
                                    f"expected a face count after {rel!r}, found {count_s!r}; rest of file skipped"))
            break
        n_lines = max(count, 1)
        boxes, invalid, face_lines = [], [], []
        truncated = False
        for k in range(n_lines):
            if i >= n:
                problems.append(Problem(fname, header, "structure",
                                        f"{rel}: file ends after {k} of {n_lines} face lines"))
                truncated = True
                break
            lineno = i + 1
            tokens = lines[i].split()
            i += 1
            if count == 0:
                vals = _floats(tokens)
                if vals is None or any(v != 0 for v in vals):
                    problems.append(Problem(fname, lineno, "structure",
                                            "an image with 0 faces should be followed by one all-zero line"))
                continue
            n_face_lines += 1
            if len(tokens) != BBX_GT_COLUMNS:
                problems.append(Problem(fname, lineno, "columns",
                                        f"expected {BBX_GT_COLUMNS} numbers, found {len(tokens)}"))
                continue
            vals = _checked_numbers(fname, lineno, tokens, problems)
            if vals is None:
                continue
            x, y, w, h = vals[:4]
            sp = _size_problem(fname, lineno, w, h)
            if sp:
                problems.append(sp)
            boxes.append([x, y, x + w, y + h])
            invalid.append(bool(vals[7]))
            face_lines.append(lineno)
        g = len(boxes)
        b, lm, has = _empty(g)
        if g:
            b[:] = boxes
        anns.append(Annotation(root / rel, b, lm, has, np.array(invalid, bool).reshape(g), header, face_lines,
                               np.zeros(g, bool)))
        if truncated:
            break
    return ParseResult(path, "bbx_gt", anns, problems, n_face_lines)


def parse_annotations(path: str | Path, images_root: str | Path | None = None,
                      format: str = "auto") -> ParseResult:
    """Parse either format; ``format`` is ``"auto"``, ``"retinaface"`` or ``"bbx_gt"``."""
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "retinaface":
        return parse_retinaface_labels(path, images_root)
    if fmt == "bbx_gt":
        return parse_bbx_gt(path, images_root)
    raise InputError(f"unknown annotation format {format!r} (expected auto, retinaface or bbx_gt)")


@dataclass
class CheckReport:
    path: Path
    format: str
    images_root: Path
    num_images: int
    num_face_lines: int
    num_faces: int  # usable faces (parsed, positive size)
    num_faces_with_landmarks: int
    num_empty_images: int
    num_invalid_flagged: int  # bbx_gt faces flagged invalid, or label.txt faces tagged ``ignore``
    num_images_checked: int
    problems: list[Problem]
    num_pseudo_landmarks: int = 0  # usable faces whose landmarks carry the ``pseudo`` tag (label.txt)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def counts_by_kind(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    @property
    def num_bad_lines(self) -> int:
        return len({p.line for p in self.problems if p.kind != "image" and p.line})

    @property
    def num_bad_images(self) -> int:
        return sum(1 for p in self.problems if p.kind == "image")

    def format_text(self) -> str:
        out = [str(p) for p in self.problems]
        out.append(f"{self.path} ({self.format}): {self.num_images} images "
                   f"({self.num_empty_images} with no usable face), {self.num_face_lines} face lines, "
                   f"{self.num_faces} usable faces ({self.num_faces_with_landmarks} with landmarks"
                   + (f", {self.num_invalid_flagged} flagged invalid" if self.format == "bbx_gt" else
                      f", {self.num_pseudo_landmarks} pseudo-landmarks, {self.num_invalid_flagged} tagged ignore")
                   + f"); {self.num_images_checked} images decoded from {self.images_root}")
        if self.problems:
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts_by_kind.items()))
            out.append(f"{len(self.problems)} problems ({kinds}) on {self.num_bad_lines} lines "
                       f"and {self.num_bad_images} images")
        else:
            out.append("no problems found")
        return "\n".join(out)


def check_dataset(path: str | Path, images_root: str | Path | None = None, format: str = "auto",
                  check_images: bool = True) -> CheckReport:
    """Validate an annotation file line by line and (optionally) decode every image with ``cv2.imread``
    and check that every box lies inside it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the label.txt or wider_face_*_bbx_gt.txt file")
    root = Path(images_root) if images_root is not None else default_images_root(path)
    res = parse_annotations(path, root, format)
    problems = list(res.problems)
    fname = str(path)
    n_checked = 0
    if check_images:
        import cv2

        for ann in res.annotations:
            if not ann.image_path.is_file():
                problems.append(Problem(fname, ann.line, "image", f"image not found: {ann.image_path}"))
                continue
            img = cv2.imread(str(ann.image_path), cv2.IMREAD_COLOR)
            if img is None:
                problems.append(Problem(fname, ann.line, "image", f"image cannot be decoded: {ann.image_path}"))
                continue
            n_checked += 1
            h, w = img.shape[:2]
            for b, ln in zip(ann.boxes, ann.face_lines):
                x1, y1, x2, y2 = (float(v) for v in b)
                if x2 <= x1 or y2 <= y1:
                    continue  # already reported as a size problem
                if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
                    problems.append(Problem(fname, ln, "outside",
                                            f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the "
                                            f"{w}x{h} image {ann.image_path.name}"))
    problems.sort(key=lambda p: (p.line, p.kind))
    n_faces = n_lm = n_inv = n_empty = n_pseudo = 0
    for a in res.annotations:
        pos = (a.boxes[:, 2] > a.boxes[:, 0]) & (a.boxes[:, 3] > a.boxes[:, 1])
        n_faces += int(pos.sum())
        n_empty += int(not pos.any())
        n_lm += int((pos & a.has_landmarks).sum())
        if a.invalid is not None:
            n_inv += int(a.invalid.sum())
        if a.pseudo_landmarks is not None:
            n_pseudo += int((pos & a.pseudo_landmarks).sum())
    return CheckReport(
        path=path, format=res.format, images_root=root, num_images=len(res.annotations),
        num_face_lines=res.num_face_lines, num_faces=n_faces, num_faces_with_landmarks=n_lm,
        num_empty_images=n_empty,
        num_invalid_flagged=n_inv, num_images_checked=n_checked, problems=problems,
        num_pseudo_landmarks=n_pseudo,
    )
