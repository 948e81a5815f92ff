"""The package's structure holds: no import cycle (parent packages counted), light modules stay
light, function-level imports only defer a heavy library, run-file names have one home, one home
for errors."""

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
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    own = {*_parents(name), name}
    found: set[str] = set()
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
        for candidate in candidates:
            if candidate in modules:
                # Importing a.b.c first runs a/__init__ and a/b/__init__: those are edges too
                # (the importer's own packages are already initialising, so they are not).
                found |= {candidate, *(p for p in _parents(candidate) if p in modules and p not in own)}
    return found - {name}


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]  # below the root package


def test_no_import_cycle_in_the_package():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path, set(paths)) for name, path in paths.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize(
    ("modules", "heavy"),
    [
        # Every command loads a config; the baseline and `inspect` read plots without torch.
        ("mmimdb_dist.schema, mmimdb_dist.data.plots, mmimdb_dist.run.protocol, mmimdb_dist.baseline", ("torch",)),
        ("mmimdb_dist.schema, mmimdb_dist.data.plots", ("torch", "sklearn")),
        # A login node submits and looks up checkpoints without torch.
        ("mmimdb_dist.commands.submit, mmimdb_dist.run.checkpoints, mmimdb_dist.run.layout", ("torch", "ray")),
        ("mmimdb_dist.models", ("torch",)),
    ],
)
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
            if (
                isinstance(node, ast.ClassDef)
                and node.name not in internal
                and any(ast.unparse(base).endswith(("Error", "Exception", "Unavailable")) for base in node.bases)
            ):
                elsewhere.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert elsewhere == []


def test_only_the_mmimdb_source_knows_the_23_genres():
    """The label set is data: after the shard step every module reads it from a manifest or a
    checkpoint, so only MM-IMDb's raw reader and its synthetic twin may import `genres`."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    importers = sorted(
        name for name, path in paths.items() if "mmimdb_dist.data.sources.mmimdb.genres" in _imports(path, set(paths))
    )
    assert importers == ["mmimdb_dist.data.sources.mmimdb.raw", "mmimdb_dist.data.sources.mmimdb.synth"]


# Libraries worth deferring to the function that needs them: each costs a second or more to
# import, or is an optional extra (`pip install .[tune]`, `.[slurm]`, `.[deepspeed]`, ...).
HEAVY_LIBRARIES = {
    "torch", "torchvision", "transformers", "sklearn", "ray", "deepspeed", "mlflow", "matplotlib",
    "accelerate", "safetensors", "huggingface_hub", "submitit", "optuna", "pyarrow", "webdataset",
}  # fmt: skip


def _top_level_graph() -> tuple[dict[str, Path], dict[str, set[str]]]:
    """Each module's imports at module level: package modules, and `lib:<name>` for libraries."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nested = {
            id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(f)
        }
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in nested or not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = _targets(node, name, path)
            inside = {t for t in targets if t in paths}
            edges |= inside | {p for t in inside for p in _parents(t) if p in paths}
            if not inside:
                edges.add("lib:" + targets[0].split(".")[0])
        graph[name] = edges
    return paths, graph


def _targets(node: ast.Import | ast.ImportFrom, name: str, path: Path) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
    target = ".".join(base + ([node.module] if node.module else [])) if node.level else str(node.module)
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def test_function_level_imports_only_defer_a_heavy_library():
    """A function-level import must put off a heavy library, directly or through the package module
    it names (whose module-level imports reach one); anything else belongs at the top of the file.
    A command's module (`commands/`, `cli`) may load the command it runs when it runs, and a
    platform probe (`try: import fcntl / except ImportError`) stays where it is."""
    paths, graph = _top_level_graph()

    def heavy(module: str, seen: frozenset[str] = frozenset()) -> bool:
        if module.startswith("lib:"):
            return module[4:] in HEAVY_LIBRARIES
        return module not in seen and any(heavy(m, seen | {module}) for m in graph.get(module, ()))

    light = []
    for name, path in sorted(paths.items()):
        if name.startswith("mmimdb_dist.commands") or name == "mmimdb_dist.cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        probes = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                  if any("ImportError" in ast.unparse(h.type or ast.Name("")) for h in t.handlers)
                  for n in t.body}  # fmt: skip
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in probes:
                    continue
                targets = _targets(node, name, path)
                module = next((t for t in reversed(targets) if t in paths), None)
                if not heavy(module if module else "lib:" + targets[0].split(".")[0]):
                    light.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert light == []


def test_run_file_names_are_written_only_in_run_layout():
    """The names of a run folder's files and folders are constants of run/layout.py; a literal
    elsewhere is a second home that can drift (docstrings and comments may name them)."""
    layout = ast.parse((PACKAGE / "run" / "layout.py").read_text(encoding="utf-8"))
    names = {
        node.value.value
        for node in layout.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    } - {"tensorboard"}  # also a tracker's name (train.trackers), which is what the other uses are
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "run" / "layout.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
        }  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert found == []
