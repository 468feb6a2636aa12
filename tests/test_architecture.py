"""The package's shape: one import direction, a core without I/O, no cycles, small pieces.

Layers, lowest first. A module may import its own folder and any lower layer; folders that
share a layer are siblings and may not import each other. Lazy imports inside functions count
the same as imports at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "amygdala_daemon"

LAYERS: list[set[str]] = [
    {"core"},
    {"sources", "model", "store", "reader"},
    {"distributed"},
    {"engine", "views", "seed"},
    {"serving", "vllm_plugin"},
    {"cli"},
]
# The public face re-exports from every layer; `python -m amygdala_daemon` runs the CLI.
UNLAYERED = {"__init__", "__main__"}

# Modules that do I/O, or that pull in a runtime that does: never imported by the core.
IO_MODULES = {
    "os", "io", "shutil", "tempfile", "subprocess", "socket", "sqlite3", "sqlite_utils", "fcntl",
    "asyncio", "threading", "signal", "time", "urllib", "http", "tomllib", "torch",
    "transformers", "safetensors", "websockets", "apscheduler", "mcp", "anyio", "logging",
}  # fmt: skip

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def package_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import in the file, lazy ones included."""
    inside = path.is_relative_to(PACKAGE.parent)
    package = (
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]) if inside else ""
    )
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module
            # `from amygdala_daemon import sources` imports the submodule.
            for alias in node.names:
                if is_package_module(f"{module}.{alias.name}"):
                    yield node.lineno, f"{module}.{alias.name}"


def is_package_module(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "amygdala_daemon":
        return False
    base = PACKAGE.parent.joinpath(*parts)
    return base.is_dir() or base.with_suffix(".py").exists()


def folder_of(module: str) -> str | None:
    """The top folder of a package module (`amygdala_daemon.store.ledger` -> `store`)."""
    parts = module.split(".")
    if parts[0] != "amygdala_daemon" or len(parts) < 2:
        return None
    return parts[1]


def layer_index(folder: str) -> int:
    for index, members in enumerate(LAYERS):
        if folder in members:
            return index
    raise AssertionError(f"amygdala_daemon/{folder} belongs to no layer: add it to LAYERS")


def import_violations(path: Path, own_folder: str, label: str) -> list[str]:
    """Every import in `path` that points up the layers or sideways to a sibling."""
    own = layer_index(own_folder)
    found = []
    for line, module in imports_of(path):
        target = folder_of(module)
        if target is None or target == own_folder or target in UNLAYERED:
            continue
        if not (PACKAGE / target).is_dir() and not (PACKAGE / f"{target}.py").exists():
            continue  # an attribute of the package, such as __version__
        if layer_index(target) >= own:
            found.append(f"{label}:{line} imports {module}")
    return found


def test_every_import_points_down_the_layers() -> None:
    violations = []
    for name, path in package_modules():
        folder = folder_of(name)
        if folder is None or folder in UNLAYERED:
            continue
        violations += import_violations(path, folder, name)
    assert violations == []


def test_a_backward_import_is_caught(tmp_path: Path) -> None:
    """The check above can fail: a core module that imports the engine is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from amygdala_daemon.engine.writer import Engine\n")
    found = import_violations(bad, "core", "amygdala_daemon.core.bad")
    assert found == ["amygdala_daemon.core.bad:1 imports amygdala_daemon.engine.writer"]


def test_the_core_does_no_io() -> None:
    found = []
    for name, path in package_modules():
        if folder_of(name) != "core":
            continue
        for line, module in imports_of(path):
            if module.split(".")[0] in IO_MODULES:
                found.append(f"{name}:{line} imports {module}")
    assert found == []


def test_no_import_cycle_between_modules() -> None:
    modules = dict(package_modules())
    graph = {
        name: {m for _, m in imports_of(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ importing its own submodules is how a package exports.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("limit", [MAX_MODULE_LINES])
def test_no_module_is_too_long(limit: int) -> None:
    long = {
        name: n
        for name, path in package_modules()
        if (n := len(path.read_text().splitlines())) > limit
    }
    assert long == {}


def test_no_function_is_too_long() -> None:
    long = []
    for name, path in package_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []
