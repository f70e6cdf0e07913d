"""The ``featherface`` command line. Each subcommand lives in its own module; this file only dispatches.

User errors (:class:`featherface.errors.FeatherFaceError`), usage errors (argument values are validated while
parsing) and operating-system errors on files (``OSError``: full disk, read-only folder, a file where a folder
should be) print one line and exit 2 (detect: 1 when some inputs failed); ``--debug`` shows the traceback.

Only the subcommand being run is imported and configured: ``featherface --help`` and commands that run no model
(``eval --predictions``, ``data check``, ``web``) import neither torch nor onnxruntime.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from featherface.version import __version__

# name -> (module, configure function, run function, help)
_COMMANDS = {
    "detect": ("featherface.commands.detect", "configure_parser", "run", "detect faces in images, folders, videos, webcams"),
    "detect-batch": ("featherface.commands.detect_batch", "configure_parser", "run",
                     "detect faces in many images on Ray Data (local or a cluster) into Parquet; resumable"),
    "models": ("featherface.commands.models", "configure_parser", "run",
               "list the shipped pretrained models (name, size, val-dev AP, licence)"),
    "info": ("featherface.commands.info", "configure_parser", "run", "parameter table, thop count and MACs of a model"),
    "check-teacher": ("featherface.commands.check_teacher", "configure_parser", "run",
                      "check that a checkpoint is a usable FeatherFace V1 teacher"),
    "eval": ("featherface.eval.cli", "configure_parser", "run", "WIDER FACE evaluation (Easy / Medium / Hard AP)"),
    "train": ("featherface.train.cli", "configure_parser", "run", "train V1 or V2 (optionally distilled from a teacher)"),
    "export": ("featherface.commands.export", "configure_parser", "run",
               "export a checkpoint to ONNX, ORT, LiteRT (tflite) or Core ML"),
    "quantize": ("featherface.commands.export", "configure_quantize_parser", "run_quantize",
                 "INT8 static quantization (QDQ, per-channel) of an exported ONNX file"),
    "prune": ("featherface.commands.export", "configure_prune_parser", "run_prune",
              "structured channel pruning of V2 (SSH, BiFPN, heads) with a short fine-tune"),
    "web": ("featherface.commands.web", "configure_parser", "run",
            "serve the in-browser detector (ONNX Runtime Web) on localhost"),
}
_DATA_COMMANDS = {
    "check": ("featherface.data.cli", "configure_check_parser", "run_check", "validate a label file and its images"),
    "preview": ("featherface.data.cli", "configure_preview_parser", "run_preview",
                "write a PNG of augmented training samples"),
    "pseudo-label": ("featherface.data.cli", "configure_pseudo_label_parser", "run_pseudo_label",
                     "fill boxes-only faces' landmarks from a teacher (tag 'pseudo')"),
}


_PACKAGE_DIR = Path(__file__).resolve().parent


def _available(module: str) -> bool:
    """Whether this installation ships ``module`` (a file check: ``find_spec`` would import its parent packages)."""
    rel = Path(*module.split(".")[1:])
    return (_PACKAGE_DIR / rel.with_suffix(".py")).is_file() or (_PACKAGE_DIR / rel / "__init__.py").is_file()


def _add(sub, name: str, spec: tuple, configure_it: bool) -> None:
    module, configure, run, help_text = spec
    if not _available(module):
        return
    p = sub.add_parser(name, help=help_text, description=help_text)
    if configure_it:  # importing a command's module can be costly (torch): only for the command being run
        getattr(importlib.import_module(module), configure)(p)
    p.set_defaults(_run=(module, run))


def _selected(argv: list[str]) -> list[str]:
    """The subcommand words of ``argv`` (``["detect"]``, ``["data", "check"]``): the first non-option tokens."""
    words = [a for a in argv if not a.startswith("-")]
    return words[:2] if words[:1] == ["data"] else words[:1]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``featherface detect: error: argument --threads: ...``) and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``featherface`` parser. With ``argv``, only the subcommand it names is configured (the others are listed
    with their help line); without, every subcommand is (slower: imports every command module)."""
    chosen = None if argv is None else _selected(argv)
    parser = _Parser(prog="featherface", description="FeatherFace face detection.")
    parser.add_argument("--version", action="version", version=f"featherface {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, spec in _COMMANDS.items():
        _add(sub, name, spec, chosen is None or chosen == [name])
    if _available("featherface.data.cli"):
        data = sub.add_parser("data", help="dataset tools (check, preview, pseudo-label)")
        data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
        for name, spec in _DATA_COMMANDS.items():
            _add(data_sub, name, spec, chosen is None or chosen == ["data", name])
    return parser


class _StderrHandler(logging.Handler):
    """Library messages as the command line prints them, on the current ``sys.stderr``: INFO plain, WARNING and
    above as ``warning: ...``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            sys.stderr.write(text + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _configure_logging(debug: bool) -> None:
    """Library modules log (``logging.getLogger(__name__)``); the command line shows their INFO+ lines on stderr."""
    logger = logging.getLogger("featherface")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())


def main(argv: list[str] | None = None) -> int:
    from featherface.deps import missing_dependency_message
    from featherface.errors import FeatherFaceError, describe_os_error

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(argv)
    except ModuleNotFoundError as exc:  # the selected command's module needs an extra (torch, scipy, ...)
        command = next((a for a in argv if not a.startswith("-")), "?")
        message = missing_dependency_message(exc, f"featherface {command}")
        if message is None or "--debug" in argv:
            raise
        print(f"featherface {command}: error: {message}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    module, run = args._run
    _configure_logging(bool(args.debug))
    try:
        return int(getattr(importlib.import_module(module), run)(args) or 0)
    except FeatherFaceError as exc:
        if args.debug:
            raise
        print(f"featherface {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional dependency this command needs is not installed
        command = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))
        message = missing_dependency_message(exc, f"featherface {command}")
        if message is None or args.debug:
            raise
        print(f"featherface {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder we had to write or read: one line naming it
        if args.debug:
            raise
        print(f"featherface {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
