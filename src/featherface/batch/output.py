"""The OUTPUT of a ``detect-batch`` job: a folder (local or any pyarrow-filesystem URI) of part files plus a small
settings file, and the bookkeeping that makes a job resumable.

Layout::

    OUTPUT/_featherface_batch.json             model digest, thresholds, format (checked when a job is re-run)
    OUTPUT/part-20250101T120000-a1b2c3-00000.parquet   (or .jsonl) one row per image, see worker.arrow_schema
    OUTPUT/part-...-00001.parquet

The driver writes a part file every ``rows_per_file`` rows or ``flush_seconds`` seconds, each one whole: locally
through a hidden temporary file renamed into place (``fsutil``), on object storage as one upload that only appears
when complete. A job killed at any point (even ``SIGKILL``) therefore leaves only whole part files; on the next run
the paths already in them are skipped, so every image ends up in exactly one row. Readers (pandas, pyarrow, DuckDB,
Spark) ignore the ``_``/``.``-prefixed files.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featherface.errors import FeatherFaceError, InputError

__all__ = ["FORMATS", "SETTINGS_FILE", "OutputStore", "Existing"]

FORMATS = ("parquet", "jsonl")
SETTINGS_FILE = "_featherface_batch.json"
_PART = re.compile(r"part-[A-Za-z0-9_\-]+\.(parquet|jsonl)")
_STALE_TEMP = re.compile(r"\.part-[A-Za-z0-9_\-]+\.(?:parquet|jsonl)\.ff(?P<pid>\d+)-[0-9a-f]+\.tmp(?:\.\w+)?")


@dataclass
class Existing:
    """What earlier runs left in OUTPUT: the set of image keys done, and row / face / error counts."""

    keys: set
    files: int = 0
    rows: int = 0
    faces: int = 0
    errors: int = 0


def _f32(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (``12.3456`` rather than ``12.345600128173828``)."""
    import numpy as np

    return float(str(np.float32(v)))


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    faces = row.get("faces")
    if faces is not None:
        faces = [{k: (_f32(v) if k == "score" else [_f32(x) for x in v]) for k, v in face.items()} for face in faces]
    return {**row, "faces": faces}


class OutputStore:
    """Part files of one OUTPUT (``fmt`` ``"parquet"`` or ``"jsonl"``; ``None``: whatever OUTPUT already holds, else
    parquet)."""

    def __init__(self, output: str | os.PathLike, fmt: str | None = None) -> None:
        from featherface.batch.sources import is_uri, split_uri

        self.name = os.fspath(output)
        if is_uri(self.name):
            self.fs, self.base, _ = split_uri(self.name)
            self.base = self.base.rstrip("/")
            from pyarrow import fs as pafs

            self.local = isinstance(self.fs, pafs.LocalFileSystem)
        else:
            self.fs, self.base, self.local = None, os.path.abspath(self.name), True
        if self.local:
            p = Path(self.base)
            if p.exists() and not p.is_dir():
                raise InputError(f"{self.name}: exists and is not a folder (-o needs a folder)")
            try:
                p.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"{self.name}: cannot create the output folder ({exc.strerror or exc})") from None
            self._remove_stale_temps()
        else:
            try:
                self.fs.create_dir(self.base, recursive=True)
            except OSError:
                pass  # object stores have no folders; a real failure shows at the first write
        found = self._part_files()
        formats = {name.rsplit(".", 1)[1] for name in found}
        if len(formats) > 1:
            raise FeatherFaceError(f"{self.name}: holds both parquet and jsonl part files; use a new OUTPUT")
        existing = next(iter(formats), None)
        if fmt is not None and fmt not in FORMATS:
            raise FeatherFaceError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if fmt is not None and existing is not None and fmt != existing:
            raise FeatherFaceError(f"{self.name}: holds {existing} results of an earlier run; re-run with --format "
                                   f"{existing} to resume it, or choose another OUTPUT")
        self.format = fmt or existing or "parquet"
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        self.seq = 0
        self.written: list[str] = []

    # ------------------------------------------------------------------------------------------ listing / reading
    def _join(self, name: str) -> str:
        return f"{self.base}/{name}" if not self.local else os.path.join(self.base, name)

    def _names(self) -> list[str]:
        if self.local:
            try:
                return sorted(os.listdir(self.base))
            except FileNotFoundError:
                return []
        from pyarrow import fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.base, recursive=False, allow_not_found=True))
        except OSError as exc:
            raise InputError(f"{self.name}: cannot list the output ({exc})") from None
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)

    def _part_files(self) -> list[str]:
        return [n for n in self._names() if _PART.fullmatch(n)]

    def _remove_stale_temps(self) -> None:
        from featherface.fsutil import pid_alive

        try:
            entries = os.listdir(self.base)
        except OSError:
            return
        for name in entries:
            m = _STALE_TEMP.fullmatch(name)
            if m and not pid_alive(int(m.group("pid"))):
                try:
                    os.unlink(os.path.join(self.base, name))
                except OSError:
                    pass

    def _read_text(self, name: str) -> str:
        path = self._join(name)
        if self.local:
            return Path(path).read_text(encoding="utf-8")
        with self.fs.open_input_stream(path) as fh:
            return fh.read().decode("utf-8")

    def existing(self) -> Existing:
        """Keys and counts of every row already written (all part files)."""
        out = Existing(keys=set())
        for name in self._part_files():
            try:
                if name.endswith(".parquet"):
                    import pyarrow.compute as pc
                    import pyarrow.parquet as pq

                    t = pq.read_table(self._join(name), columns=["path", "num_faces", "error"],
                                      filesystem=None if self.local else self.fs)
                    keys = t.column("path").to_pylist()
                    faces = pc.sum(t.column("num_faces")).as_py() or 0
                    errors = t.num_rows - t.column("error").null_count
                else:
                    keys, faces, errors = [], 0, 0
                    for line in self._read_text(name).splitlines():
                        if line.strip():
                            rec = json.loads(line)
                            keys.append(rec["path"])
                            faces += int(rec.get("num_faces") or 0)
                            errors += rec.get("error") is not None
            except Exception as exc:  # noqa: BLE001 - a part file we cannot read would be lost silently
                raise FeatherFaceError(f"{self._join(name)}: cannot read this part file of an earlier run "
                                       f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                                       "move it away and re-run (its images are then done again)") from None
            out.files += 1
            out.rows += len(keys)
            out.faces += int(faces)
            out.errors += int(errors)
            out.keys.update(keys)
        return out

    # ------------------------------------------------------------------------------------------ settings
    def check_settings(self, settings: dict[str, Any]) -> None:
        """Write the settings file on the first run; on a later run refuse settings that change the results."""
        name = SETTINGS_FILE
        try:
            previous = json.loads(self._read_text(name))
        except (FileNotFoundError, OSError, ValueError):
            previous = None
        if previous is not None:
            diffs = [f"{k}: {previous.get(k)!r} then, {settings.get(k)!r} now" for k in sorted(settings)
                     if k != "featherface_version" and previous.get(k) != settings.get(k)]
            if diffs:
                raise FeatherFaceError(f"{self.name}: was written with other settings ({'; '.join(diffs)}); re-run "
                                       "with the same model and thresholds to resume it, or choose another OUTPUT")
            return
        text = json.dumps({**settings, "format": self.format}, indent=2, sort_keys=True) + "\n"
        self._write_bytes(name, text.encode("utf-8"))

    # ------------------------------------------------------------------------------------------ writing
    def _write_bytes(self, name: str, data: bytes) -> None:
        if self.local:
            from featherface.fsutil import atomic_write_bytes

            atomic_write_bytes(self._join(name), data)
        else:
            with self.fs.open_output_stream(self._join(name)) as fh:
                fh.write(data)

    def write_part(self, table) -> str:
        """Write ``table`` (rows in ``worker.arrow_schema``) as the next whole part file; returns its path."""
        name = f"part-{self.run_id}-{self.seq:05d}.{self.format}"
        self.seq += 1
        if self.format == "parquet":
            import pyarrow.parquet as pq

            if self.local:
                from featherface.fsutil import atomic_path

                with atomic_path(self._join(name)) as tmp:
                    pq.write_table(table, str(tmp), compression="zstd")
            else:
                pq.write_table(table, self._join(name), filesystem=self.fs, compression="zstd")
        else:
            lines = [json.dumps(_json_row(r), separators=(", ", ": ")) for r in table.to_pylist()]
            self._write_bytes(name, ("\n".join(lines) + "\n").encode("utf-8"))
        self.written.append(name)
        return self._join(name)


class PartWriter:
    """Buffers result tables and writes a part file every ``rows_per_file`` rows or ``flush_seconds`` seconds."""

    def __init__(self, store: OutputStore, schema, *, rows_per_file: int = 5000, flush_seconds: float = 60.0) -> None:
        self.store, self.schema = store, schema
        self.rows_per_file = max(1, int(rows_per_file))
        self.flush_seconds = float(flush_seconds) if flush_seconds and flush_seconds > 0 else math.inf
        self.buffer: list = []
        self.buffered = 0
        self.last = time.monotonic()

    def add(self, table) -> None:
        if table.num_rows:
            self.buffer.append(table)
            self.buffered += table.num_rows
        while self.buffered >= self.rows_per_file:
            self._write(self.rows_per_file)
        if self.buffered and time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def _write(self, n: int) -> None:
        import pyarrow as pa

        table = pa.concat_tables(self.buffer).cast(self.schema) if len(self.buffer) > 1 else self.buffer[0]
        head, rest = table.slice(0, n), table.slice(n)
        self.store.write_part(head.combine_chunks())
        self.buffer = [rest] if rest.num_rows else []
        self.buffered = rest.num_rows
        self.last = time.monotonic()

    def flush(self) -> None:
        if self.buffered:
            self._write(self.buffered)
        self.last = time.monotonic()
