"""``featherface web``: serve the in-browser detector (ONNX Runtime Web) on localhost.

Routes (everything is local; the page needs no network):

* ``/`` and ``/<file>`` — the static page, from ``featherface/web_static/`` inside the installed package;
* ``/model.onnx`` — the model given with ``--model`` (or the packaged default ``weights/*.onnx``): an export
  *with* in-graph post-processing (``featherface export CKPT -o model.onnx --with-postprocess``);
* ``/config.json`` — model name, pre-processing and default thresholds for the page;
* ``/example.jpg`` — the bundled example photo;
* ``/ort/<file>`` — ONNX Runtime Web's JavaScript and WASM files, from ``--ort-dir``, else
  ``web/node_modules/onnxruntime-web/dist`` of a source checkout (``npm ci`` in ``web/``).

Every response carries ``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy:
require-corp`` (plus ``Cross-Origin-Resource-Policy: same-origin``) so the page is cross-origin isolated and ORT can
use ``SharedArrayBuffer`` for WASM threads.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import threading
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from featherface.cliargs import port as port_number
from featherface.errors import FeatherFaceError
from featherface.pretrained import example_photo_path

__all__ = ["configure_parser", "run", "make_server", "find_ort_dir", "default_onnx_model", "ISOLATION_HEADERS"]

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".json": "application/json",
          ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".jpg": "image/jpeg",
          ".png": "image/png", ".svg": "image/svg+xml", ".map": "application/json"}
# The ORT files the page may load (the WASM-only build; ORT picks the threaded SIMD binary itself).
_ORT_REQUIRED = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
_MAX_URL = 2048  # longer request targets are answered 414 (no file we serve has a name near that)


def _package_dir() -> Path:
    return Path(str(resources.files("featherface")))


def static_dir() -> Path:
    return _package_dir() / "web_static"


def default_onnx_model() -> Path:
    """The default model's shipped ONNX file with in-graph post-processing (SHA-256 checked); for a build without
    one, the default checkpoint exported once (needs the ``train`` extra) and cached by digest."""
    from featherface.pretrained import default_model_name, weights_file, weights_record

    try:
        name = default_model_name()
        if weights_record(name).web_onnx_file:
            return weights_file(name, "web")
    except FeatherFaceError as exc:
        raise FeatherFaceError(f"{exc}; or pass --model PATH.onnx (made by `featherface export CHECKPOINT -o "
                               "model.onnx --with-postprocess`)") from None
    return _export_default_weights()


def _export_default_weights() -> Path:
    """Export the default .pth weights (SHA-256 checked) with in-graph post-processing, cached by digest."""
    from featherface.pretrained import default_weights_info, default_weights_path

    info = default_weights_info()
    checkpoint = default_weights_path()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "featherface"
    target = cache / f"default-{info.sha256[:16]}.onnx"
    if not target.is_file():
        from featherface.checkpoint import load_model
        from featherface.export.onnx_export import export_onnx

        export_onnx(load_model(checkpoint), target, with_postprocess=True)  # atomic: temp file + rename
    return target


def find_ort_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Folder holding ONNX Runtime Web's ``dist`` files, or a one-line error saying how to get them."""
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    elif os.environ.get("FEATHERFACE_ORT_DIR"):
        candidates.append(Path(os.environ["FEATHERFACE_ORT_DIR"]))
    else:
        candidates.append(static_dir() / "ort")  # a copy vendored into the package, if any
        # source checkout (editable install): <repo>/src/featherface -> <repo>/web/node_modules/...
        candidates.append(_package_dir().parents[1] / "web" / "node_modules" / "onnxruntime-web" / "dist")
    for c in candidates:
        if all((c / name).is_file() for name in _ORT_REQUIRED):
            return c.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise FeatherFaceError(f"ONNX Runtime Web files not found (looked in {where}); run `npm ci` in the web/ folder "
                           "of a featherface checkout or pass --ort-dir node_modules/onnxruntime-web/dist")


def _model_info(path: Path) -> dict:
    """Input/output names and metadata of an ONNX file; refuses exports without in-graph post-processing."""
    info: dict = {"model_name": path.stem, "inputs": None, "outputs": None, "metadata": {}}
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dev / [onnx] dependency; the page checks the names too
        return info
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad user file
        raise FeatherFaceError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if not {"input", "score_threshold", "iou_threshold"} <= set(inputs) or "scores" not in outputs:
        raise FeatherFaceError(f"{path}: not a FeatherFace export with in-graph post-processing (inputs {inputs}); "
                               "re-export with `featherface export CHECKPOINT -o model.onnx --with-postprocess`")
    meta = {p.key: p.value for p in proto.metadata_props}
    info.update(inputs=inputs, outputs=outputs, model_name=meta.get("model_name", path.stem),
                metadata={k: meta[k] for k in ("featherface_version", "preprocessing", "postprocess") if k in meta})
    return info


class _Handler(BaseHTTPRequestHandler):
    server_version = "featherface-web"

    def __init__(self, *args, routes: dict, ort_dir: Path, static: Path, quiet: bool, **kwargs) -> None:
        self.routes, self.ort_dir, self.static, self.quiet = routes, ort_dir, static, quiet
        super().__init__(*args, **kwargs)

    def log_message(self, fmt: str, *args) -> None:  # noqa: D401 - stdlib signature
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} - {fmt % args}\n")

    def _send(self, status: int, body: bytes, ctype: str, head_only: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _resolve(self, url_path: str) -> tuple[Path | None, bytes | None]:
        if url_path in self.routes:
            value = self.routes[url_path]
            return (value, None) if isinstance(value, Path) else (None, value)
        if url_path == "/":
            url_path = "/index.html"
        if url_path.startswith("/ort/"):
            base, rel = self.ort_dir, url_path[len("/ort/"):]
        else:
            base, rel = self.static, url_path.lstrip("/")
        target = (base / rel).resolve()
        if rel and target.is_file() and target.is_relative_to(base.resolve()):
            return target, None
        return None, None

    def _serve(self, head_only: bool) -> None:
        if len(self.path) > _MAX_URL:
            self._send(HTTPStatus.REQUEST_URI_TOO_LONG, b"URI too long\n", "text/plain; charset=utf-8", head_only)
            return
        try:
            path = unquote(urlsplit(self.path).path, errors="strict")
        except (UnicodeDecodeError, ValueError):
            path = None
        if path is None or "\x00" in path or not path.startswith("/"):
            self._send(HTTPStatus.BAD_REQUEST, b"bad request\n", "text/plain; charset=utf-8", head_only)
            return
        try:
            file, body = self._resolve(path)
        except (OSError, ValueError):  # a name the file system refuses (too long, bad characters): not ours
            file, body = None, None
        if file is None and body is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head_only)
            return
        if body is None:
            try:
                body = file.read_bytes()
            except OSError:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head_only)
                return
            ctype = _TYPES.get(file.suffix.lower()) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        else:
            ctype = "application/json"
        try:
            self._send(HTTPStatus.OK, body, ctype, head_only)
        except (BrokenPipeError, ConnectionResetError):  # the browser went away mid-transfer
            pass

    def _handle(self, head_only: bool) -> None:
        try:
            self._serve(head_only)
        except (BrokenPipeError, ConnectionResetError):  # the browser went away
            pass
        except Exception:  # noqa: BLE001 - never a traceback or a dropped connection for a strange request
            try:
                self._send(HTTPStatus.BAD_REQUEST, b"bad request\n", "text/plain; charset=utf-8", head_only)
            except OSError:
                pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._handle(False)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._handle(True)


def make_server(model: str | os.PathLike | None = None, *, host: str = "127.0.0.1", port: int = 8000,
                ort_dir: str | os.PathLike | None = None, quiet: bool = True) -> ThreadingHTTPServer:
    """A ready (not yet serving) HTTP server for the page; ``port=0`` picks a free port."""
    model_path = Path(model) if model else default_onnx_model()
    if not model_path.is_file():
        raise FeatherFaceError(f"{model_path}: model file not found")
    if model_path.suffix.lower() != ".onnx":
        raise FeatherFaceError(f"{model_path}: the web page needs an .onnx export (featherface export CHECKPOINT "
                               "-o model.onnx --with-postprocess), not a PyTorch checkpoint")
    info = _model_info(model_path)
    ort = find_ort_dir(ort_dir)
    static = static_dir()
    if not (static / "index.html").is_file():  # pragma: no cover - packaging error
        raise FeatherFaceError(f"web page files missing from the installed package ({static})")
    config = {"model": "/model.onnx", "model_name": info["model_name"], "model_file": model_path.name,
              "example": "/example.jpg", "inputs": info["inputs"], "outputs": info["outputs"],
              "metadata": info["metadata"], "defaults": {"score_threshold": 0.5, "nms_threshold": 0.4,
                                                          "longest_side": None, "max_side": 2560}}
    routes = {"/model.onnx": model_path.resolve(), "/example.jpg": example_photo_path(),
              "/config.json": json.dumps(config).encode()}
    handler = partial(_Handler, routes=routes, ort_dir=ort, static=static, quiet=quiet)
    try:
        return ThreadingHTTPServer((host, int(port)), handler)
    except OSError as exc:
        raise FeatherFaceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=port_number, default=8000, help="port on localhost (0: any free port; default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--model", default=None,
                   help="ONNX model exported with --with-postprocess (default: the packaged default model)")
    p.add_argument("--ort-dir", default=None,
                   help="folder with ONNX Runtime Web's dist files (default: web/node_modules/onnxruntime-web/dist)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    server = make_server(args.model, host=args.host, port=args.port, ort_dir=args.ort_dir, quiet=not args.verbose)
    host, port = server.server_address[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    print(f"FeatherFace web page: {url}  (Ctrl+C to stop)", flush=True)
    if args.open:
        import webbrowser

        threading.Timer(0.3, webbrowser.open, args=(url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
