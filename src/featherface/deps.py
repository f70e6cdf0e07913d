"""Optional dependencies: which extra provides a module, and a one-line error when it is missing.

The core install (``pip install featherface``) detects faces with ONNX Runtime; PyTorch and the rest come with extras
(``pyproject.toml``). :func:`require` imports a module or raises a :class:`~featherface.errors.FeatherFaceError`
saying which extra to install; :func:`missing_dependency_message` turns a ``ModuleNotFoundError`` that escaped from a
command into the same line.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from featherface.errors import FeatherFaceError

__all__ = ["EXTRA_OF", "TORCH_CPU_HINT", "require", "missing_dependency_message"]

#: top-level module -> the extra that installs it
EXTRA_OF: dict[str, str] = {
    "torch": "train",
    "matplotlib": "train",
    "onnx": "train",
    "scipy": "eval",
    "ray": "ray",
    "pyarrow": "ray",
    "hypothesis": "dev",
    "pytest": "dev",
}

#: How to get the CPU build of torch (the default wheel on PyPI for Linux is the multi-GB CUDA build).
TORCH_CPU_HINT = "for the CPU-only torch first run: pip install torch --index-url https://download.pytorch.org/whl/cpu"


def _message(module: str, what: str | None) -> str:
    extra = EXTRA_OF.get(module)
    need = f"{what} needs {module}" if what else f"{module} is not installed"
    if extra is None:
        return f"{need}: pip install {module}"
    hint = f" ({TORCH_CPU_HINT})" if module == "torch" else ""
    return f"{need}, which the light install leaves out: pip install 'featherface[{extra}]'{hint}"


def require(module: str, what: str | None = None) -> ModuleType:
    """Import ``module`` or raise a one-line :class:`FeatherFaceError` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FeatherFaceError(_message(module.split(".")[0], what)) from None


def missing_dependency_message(exc: ModuleNotFoundError, what: str | None = None) -> str | None:
    """The one-line message for a missing optional dependency, or ``None`` if ``exc`` is about another module."""
    name = (exc.name or "").split(".")[0]
    if name not in EXTRA_OF:
        return None
    return _message(name, what)
