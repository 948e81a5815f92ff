"""The package's structure holds: no import cycle, light modules stay light, one home for errors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmimdb_dist"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Package modules imported anywhere in `path` (function level too), TYPE_CHECKING blocks aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


def test_no_import_cycle_in_the_package():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path, set(paths)) for name, path in paths.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("modules, heavy", [
    # Every command loads a config; the baseline and `inspect` read plots without torch.
    ("mmimdb_dist.schema, mmimdb_dist.data.plots, mmimdb_dist.run.protocol, mmimdb_dist.baseline", ("torch",)),
    ("mmimdb_dist.schema, mmimdb_dist.data.plots", ("torch", "sklearn")),
    # A login node submits and looks up checkpoints without torch.
    ("mmimdb_dist.commands.submit, mmimdb_dist.run.checkpoints, mmimdb_dist.run.layout", ("torch", "ray")),
    ("mmimdb_dist.models", ("torch",)),
])
def test_light_modules_do_not_import_heavy_libraries(modules: str, heavy: tuple[str, ...]):
    code = f"import sys, {modules}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_user_facing_error_lives_in_errors_py():
    # Internal signals that carry their own records stay beside them (see errors.py).
    internal = {"SampleSkipped", "_CutShort"}
    elsewhere = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name not in internal and any(
                    ast.unparse(base).endswith(("Error", "Exception", "Unavailable")) for base in node.bases):
                elsewhere.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert elsewhere == []


def test_only_the_mmimdb_source_knows_the_23_genres():
    """The label set is data: after the shard step every module reads it from a manifest or a
    checkpoint, so only MM-IMDb's raw reader and its synthetic twin may import `genres`."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    importers = sorted(name for name, path in paths.items() if "mmimdb_dist.data.sources.mmimdb.genres" in _imports(path, set(paths)))
    assert importers == ["mmimdb_dist.data.sources.mmimdb.raw", "mmimdb_dist.data.sources.mmimdb.synth"]
