"""The package's structure: no import cycle, no private name imported across modules, layers that only import
downwards (see docs/architecture.md), and commands that run no model import neither torch nor onnxruntime.

Imports are read from the source (every ``import``, also inside functions; ``if TYPE_CHECKING:`` blocks excepted).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "featherface"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = _modules()


def _owner(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every featherface import of ``path``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("featherface")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("featherface"):
            found += [(node.module, a.name) for a in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        deps = set()
        for module, name in _imports(path):
            full = f"{module}.{name}" if name else module
            deps.add(full if full in MODULES else _owner(module))
        deps.discard(mod)
        graph[mod] = deps
    return graph


GRAPH = _graph()


def test_no_import_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_name_imported_across_modules():
    bad = []
    for mod, path in MODULES.items():
        for module, name in _imports(path):
            if name and name.startswith("_") and not name.startswith("__") and f"{module}.{name}" not in MODULES \
                    and _owner(module) != mod:
                bad.append(f"{mod} imports {module}.{name}")
    assert not bad, bad


# Each layer may import only from the layers listed after it (or from itself).
CORE = ("featherface.errors", "featherface.fsutil", "featherface.version", "featherface.devices",
        "featherface.preprocessing", "featherface.imageio", "featherface.geometry", "featherface.models",
        "featherface.pretrained", "featherface.resolve", "featherface.deps", "featherface.checkpoint",
        "featherface.data.readers", "featherface.data.transforms")
CLI_LAYER = ("featherface.cli", "featherface.__main__", "featherface.cliargs", "featherface.commands",
             "featherface.eval.cli", "featherface.train.cli", "featherface.data.cli")


def _in(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer,allowed", [
    (CORE, CORE),
    (("featherface.export",), CORE + ("featherface.export",)),
    (("featherface.api",), CORE + ("featherface.api", "featherface.export.ort_backend",
                                   "featherface.export.openvino_backend")),
])
def test_lower_layers_do_not_import_upwards(layer, allowed):
    bad = [f"{m} -> {d}" for m, deps in GRAPH.items() if _in(m, layer) for d in deps
           if d != "featherface" and not _in(d, allowed)]
    assert not bad, bad


def test_only_the_cli_layer_uses_argparse_or_imports_the_cli():
    bad = []
    for mod, path in MODULES.items():
        if _in(mod, CLI_LAYER):
            continue
        if "argparse" in {n.split(".")[0] for n in _stdlib_imports(path)}:
            bad.append(f"{mod} imports argparse")
        bad += [f"{mod} -> {d}" for d in GRAPH[mod] if _in(d, CLI_LAYER)]
    assert not bad, bad


def _stdlib_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_library_code_does_not_build_paths_into_the_repository():
    """No ``../shared`` default and no ``__file__``-relative path out of the package in library code (the command
    line and the scripts may default to the repository's layout)."""
    bad = []
    for mod, path in MODULES.items():
        if _in(mod, CLI_LAYER):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and ("../shared" in node.value or "shared/data" in node.value):
                bad.append(f"{mod}: {node.value!r}")
            if isinstance(node, ast.Subscript) and "__file__" in ast.unparse(node) and ".parents[" in ast.unparse(node):
                bad.append(f"{mod}: {ast.unparse(node)}")
    assert not bad, bad


def _heavy_modules_after(code: str) -> list[str]:
    probe = (f"import sys\n{code}\n"
             "print(','.join(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    last = (res.stdout.strip().splitlines() or [""])[-1]
    return [m for m in last.split(",") if m]


def test_help_imports_neither_torch_nor_onnxruntime():
    code = ("import contextlib, io\nfrom featherface.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n")
    assert _heavy_modules_after(code) == []


@pytest.mark.parametrize("module", ["featherface.eval.cli", "featherface.eval.runner", "featherface.data.cli",
                                    "featherface.commands.web", "featherface.geometry", "featherface.preprocessing",
                                    "featherface.eval.protocols"])
def test_modules_that_run_no_model_import_no_torch(module):
    assert _heavy_modules_after(f"import {module}") == []


def test_readme_layout_names_every_module_and_package():
    readme = (SRC.parent / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    entries = sorted(p.name for p in PKG.iterdir()
                     if (p.suffix == ".py" and p.name not in ("__init__.py", "__main__.py"))
                     or (p.is_dir() and (p / "__init__.py").exists()))
    missing = [e for e in entries if (e if e.endswith(".py") else e + "/") not in block]
    assert not missing, f"README Layout does not mention {missing}"
    for sub in ("geometry", "prune"):  # the stage-per-module packages list their files
        for f in sorted((PKG / sub).glob("*.py")):
            if f.name != "__init__.py":
                assert f.name in block, f"README Layout does not mention {sub}/{f.name}"
