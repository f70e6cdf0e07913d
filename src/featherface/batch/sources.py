"""Which images a ``detect-batch`` job reads: a folder, a text file of paths, a glob, or a pyarrow-filesystem URI.

Every image is named by one string, its *key*, used for the ``path`` column of the output and to skip images already
done when a job is re-run: the absolute path for a local file (``/data/photos/a.jpg``, symlinks not resolved), the
URI for everything else (``s3://bucket/photos/a.jpg``). The same image given twice is listed once.

* folder: every image file below it (recursive, sorted, hidden files and folders skipped); the suffixes are those of
  :data:`featherface.imageio.IMAGE_SUFFIXES`. Video files are counted and left out (videos are out of scope).
* glob (``photos/**/*.jpg``, ``s3://bucket/2024-*/*.jpg``): the matching files with an image suffix; ``**`` spans
  folders.
* text file (any existing file whose suffix is not an image suffix): one path or URI per line; blank lines and lines
  starting with ``#`` are ignored; relative paths are relative to ``root`` (default: the list file's folder).
  Lines are taken as given (no suffix filter): a missing or non-image file becomes an error row.
* URI: anything ``pyarrow.fs.FileSystem.from_uri`` opens (``s3://``, ``gs://``, ``hdfs://``, ``file://``, ...); a
  prefix that is a "folder" is listed recursively like a local folder, an object with an image suffix is one image,
  any other object is read as a list of paths.

Nothing here needs Ray; pyarrow is imported only for URIs.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featherface.errors import InputError
from featherface.imageio import IMAGE_SUFFIXES, VIDEO_SUFFIXES, walk_media_files

__all__ = ["Listing", "list_images", "is_uri", "split_uri", "open_filesystem"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_GLOB_CHARS = re.compile(r"[*?\[]")


def is_uri(text: str) -> bool:
    """``True`` for ``scheme://...`` strings (a Windows drive letter ``C:\\`` is not one)."""
    return bool(_URI.match(str(text)))


@dataclass
class Listing:
    """The images of a source: ``keys`` (see the module docstring) in a stable order, without duplicates;
    ``filesystems`` maps a key prefix (``"s3://"``, ``"hdfs://host:8020"``) to the pyarrow filesystem that reads the
    keys starting with it; local keys are read with ``open``. ``skipped_videos``: video files left out of a folder or
    glob."""

    keys: list[str] = field(default_factory=list)
    filesystems: dict[str, Any] = field(default_factory=dict)
    skipped_videos: int = 0

    def add(self, key: str, seen: set[str]) -> None:
        if key not in seen:
            seen.add(key)
            self.keys.append(key)


def split_uri(uri: str) -> tuple[Any, str, str]:
    """``(filesystem, path inside it, key prefix)`` for a URI: ``prefix + path`` is the canonical key of the object
    (``s3://bucket/a.jpg`` -> ``S3FileSystem``, ``bucket/a.jpg``, ``s3://``)."""
    try:
        from pyarrow import fs as pafs
    except ImportError:  # pragma: no cover - pyarrow comes with the [ray] extra
        raise InputError(f"{uri}: reading URIs needs pyarrow: pip install 'featherface[ray]'") from None
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - unknown scheme, bad bucket name, missing credentials library...
        raise InputError(f"{uri}: cannot open this URI with pyarrow ({_first_line(exc)})") from None
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "file":
        return filesystem, path, "file://"
    rest = uri.split("://", 1)[1]
    # hdfs://host:port/path -> path "/path": the prefix keeps the authority; s3://bucket/key -> "bucket/key"
    prefix = f"{scheme}://"
    if not rest.startswith(path.lstrip("/")) and "/" in rest:
        authority = rest.split("/", 1)[0]
        prefix = f"{scheme}://{authority}"
    return filesystem, path, prefix


def open_filesystem(key: str, filesystems: dict[str, Any]) -> tuple[Any, str]:
    """``(filesystem, path)`` that reads ``key``; ``(None, key)`` for a local file."""
    if not is_uri(key):
        return None, key
    for prefix in sorted(filesystems, key=len, reverse=True):
        if key.startswith(prefix):
            return filesystems[prefix], key[len(prefix):]
    filesystem, path, _ = split_uri(key)
    return filesystem, path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _is_video(name: str) -> bool:
    return name.lower().endswith(VIDEO_SUFFIXES)


def _hidden(rel_parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") for part in rel_parts)


def _list_local_folder(folder: Path, out: Listing, seen: set[str], exclude: Path | None) -> None:
    for path in walk_media_files(folder, exclude):
        if _is_image(path.name):
            out.add(os.path.abspath(path), seen)
        else:
            out.skipped_videos += 1


def _list_local_glob(pattern: str, out: Listing, seen: set[str]) -> None:
    for match in sorted(_glob.glob(pattern, recursive=True)):
        if os.path.isfile(match):
            if _is_image(match):
                out.add(os.path.abspath(match), seen)
            elif _is_video(match):
                out.skipped_videos += 1


def _read_list_lines(text: str, name: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _add_list_entries(lines: list[str], root: str | None, out: Listing, seen: set[str]) -> None:
    for line in lines:
        if is_uri(line):
            known = next((p for p in out.filesystems if line.startswith(p) and "?" not in line), None)
            if known is not None:  # one filesystem per prefix, not one per line (from_uri may ask the network)
                out.add(line, seen)
                continue
            fs_, path, prefix = split_uri(line)
            out.filesystems.setdefault(prefix, fs_)
            out.add(prefix + path, seen)
        elif root is not None and is_uri(root):
            key = root.rstrip("/") + "/" + line.lstrip("/") if not os.path.isabs(line) else line
            if is_uri(key):
                fs_, path, prefix = split_uri(key)
                out.filesystems.setdefault(prefix, fs_)
                key = prefix + path
            out.add(key, seen)
        else:
            base = Path(root) if root is not None else Path.cwd()
            out.add(os.path.abspath(base / line), seen)


def _list_uri(source: str, out: Listing, seen: set[str], root: str | None) -> None:
    from pyarrow import fs as pafs

    filesystem, path, prefix = split_uri(source)
    out.filesystems.setdefault(prefix, filesystem)
    m = _GLOB_CHARS.search(path)
    try:
        if m:
            base = path[: m.start()].rsplit("/", 1)[0] if "/" in path[: m.start()] else ""
            infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
            regex = _glob_regex(path)
            for info in sorted(infos, key=lambda i: i.path):
                if info.type == pafs.FileType.File and regex.fullmatch(info.path):
                    if _is_image(info.path):
                        out.add(prefix + info.path, seen)
                    elif _is_video(info.path):
                        out.skipped_videos += 1
            return
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"{source}: not found")
        if info.type == pafs.FileType.Directory:
            base = path.rstrip("/")
            for item in sorted(filesystem.get_file_info(pafs.FileSelector(base, recursive=True)),
                               key=lambda i: i.path):
                rel = item.path[len(base):].lstrip("/") if item.path.startswith(base) else item.base_name
                if item.type != pafs.FileType.File or _hidden(tuple(rel.split("/"))):
                    continue
                if _is_image(item.path):
                    out.add(prefix + item.path, seen)
                elif _is_video(item.path):
                    out.skipped_videos += 1
            return
        if _is_image(path):
            out.add(prefix + path, seen)
            return
        with filesystem.open_input_stream(path) as fh:
            text = fh.read().decode("utf-8")
    except InputError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: cannot list or read it ({_first_line(exc)})") from None
    list_root = root if root is not None else source.rsplit("/", 1)[0]
    _add_list_entries(_read_list_lines(text, source), list_root, out, seen)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Regex for a glob over ``/``-separated paths: ``*`` and ``?`` stay inside one folder, ``[...]`` is a character
    class, a ``**`` component spans any number of folders (including none)."""
    out: list[str] = []
    comps = pattern.split("/")
    for i, comp in enumerate(comps):
        last = i == len(comps) - 1
        if comp == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
            continue
        j = 0
        while j < len(comp):
            c = comp[j]
            if c == "*":
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            elif c == "[" and comp.find("]", j + 1 + (comp[j + 1:j + 2] in ("!", "]"))) > 0:
                end = comp.find("]", j + 1 + (comp[j + 1:j + 2] in ("!", "]")))
                body = comp[j + 1:end]
                body = "^" + body[1:] if body.startswith("!") else body
                out.append("[" + body.replace("\\", "\\\\") + "]")
                j = end
            else:
                out.append(re.escape(c))
            j += 1
        if not last:
            out.append("/")
    return re.compile("".join(out))


def list_images(source: str | os.PathLike, *, root: str | os.PathLike | None = None,
                exclude: str | os.PathLike | None = None) -> Listing:
    """The images of ``source`` (see the module docstring). ``root``: folder (or URI) that relative paths of a list
    file are relative to. ``exclude``: a local folder never listed (the job's own output)."""
    source = os.fspath(source)
    root_s = None if root is None else os.fspath(root)
    if root_s is not None and not is_uri(root_s):
        root_s = os.path.abspath(root_s)
    out, seen = Listing(), set()
    excl = Path(exclude).resolve() if exclude is not None and not is_uri(os.fspath(exclude)) else None
    if is_uri(source):
        _list_uri(source, out, seen, root_s)
        return out
    p = Path(source)
    if p.is_dir():
        _list_local_folder(p, out, seen, excl)
    elif p.is_file() and not _is_image(p.name):
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{source}: not a text file of image paths (not UTF-8) and not an image suffix "
                             f"({', '.join(IMAGE_SUFFIXES)})") from None
        except OSError as exc:
            raise InputError(f"{source}: cannot read ({exc.strerror or exc})") from None
        _add_list_entries(_read_list_lines(text, source), root_s or str(p.resolve().parent), out, seen)
    elif p.is_file():
        out.add(os.path.abspath(p), seen)
    elif _GLOB_CHARS.search(source):
        _list_local_glob(source, out, seen)
    else:
        raise InputError(f"{source}: no such file, folder or glob match")
    return out
