"""Every repository path, test id and `mmimdb_dist.X` name the README and docs/ mention exists, so
they cannot drift from the code again (a moved module, a renamed test, a config that is gone)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "RESULTS.md"]
# Repository folders (shards/ holds what a command writes, not files of the repository).
PATH = re.compile(r"(?:mmimdb_dist|configs|launch|benchmarks|tests|docs)/[\w./-]+")
PLACEHOLDER = re.compile(r"(^|/)[A-Z]{1,2}(\.|/|$)")  # configs/X.yaml: "any config"
TEST_ID = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
NAME = re.compile(r"(?<![\w/.])mmimdb_dist(?:\.\w+)+")


def _defined(path: Path) -> set[str]:
    """Top-level names a module defines (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _name_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = REPO.joinpath(*parts[:cut])
        source = module.with_suffix(".py") if module.with_suffix(".py").is_file() else module / "__init__.py"
        if source.is_file():
            rest = parts[cut:]
            return not rest or rest[0] in _defined(source)
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_test_and_module_name_a_doc_mentions_exists(doc: Path):
    text = doc.read_text(encoding="utf-8")
    missing = []
    for quoted in re.findall(r"`([^`\n]+)`|\]\(([^)\s]+)\)", text):
        for span in quoted:
            for match in PATH.finditer(span):
                path, after = match.group().rstrip(".,"), span[match.end() : match.end() + 1]
                pattern = after in ("*", "{", "<")  # a family of files (`configs/synth_*`), not one
                if not pattern and not PLACEHOLDER.search(path) and not (REPO / path).exists():
                    missing.append(path)
            for file, test in TEST_ID.findall(span):
                if (REPO / file).is_file() and test not in _defined(REPO / file):
                    missing.append(f"{file}::{test}")
            missing += [name for name in NAME.findall(span) if not _name_exists(name)]
    assert missing == [], f"{doc.relative_to(REPO)} names what is not there"
