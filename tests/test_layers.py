"""The engine's layers (README "Layout"): the import-linter contract in pyproject.toml holds,
breaks on a planted upward import, no module is in an import circle, imports inside functions
are only there to keep a heavy library out of start-up, names of files are not reused for
different things, no module is over ~400 lines, and nothing outside the registries branches
on a suite's or a method's name."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.import_graph import function_imports, import_circles, keeps_heavy_out

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
SOURCES = sorted(p for p in (ROOT / "engine").rglob("*.py")) + sorted((ROOT / "tui").rglob("*.py"))

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (scripts/setup.sh --dev)")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_layers_contract_is_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "KEPT" in result.stdout


def _copy(tmp_path: Path) -> Path:
    for name in ("engine", "tui"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("planted", [
    "from engine import api  # planted at the top\n",
    "def _planted():\n    from engine.report import build_report  # planted inside a function\n"
    "    return build_report\n"])
def test_an_upward_import_breaks_the_contract(tmp_path, planted):
    """A bottom-layer module (engine.errors) that imports a top one, at the top or inside a
    function, fails the contract, naming both."""
    root = _copy(tmp_path)
    errors = root / "engine" / "errors.py"
    errors.write_text(errors.read_text() + "\n\n" + planted)
    result = _lint(root)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "engine.errors is not allowed to import" in result.stdout


def test_no_module_is_in_an_import_circle():
    """Over every import of engine/ and tui/ (inside functions too; `if TYPE_CHECKING:` ones
    do not run and are left out), no strongly connected component has two modules."""
    assert import_circles(ROOT) == []


def test_imports_inside_functions_keep_a_heavy_library_out():
    """A project module imported inside a function is one that would pull a heavy library
    (torch, transformers, numpy, ...) into a module that does not have it at import; any other
    belongs at the top of the module."""
    unjustified = [f"{m} -> {t} (line {line})" for m, t, line in function_imports(ROOT)
                   if not keeps_heavy_out(ROOT, m, t)]
    assert unjustified == []
    # and each says what it keeps out ("# on use: torch")
    unexplained = [f"{m} -> {t} (line {line})" for m, t, line in function_imports(ROOT)
                   if "#" not in _source_line(m, line)]
    assert unexplained == []


def _source_line(module: str, line: int) -> str:
    path = ROOT.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return path.read_text().splitlines()[line - 1]


# names that are the same role in parallel packages: each package's base classes, each job
# family's runner, and the per-suite modules of the suites and of their aggregations
SHARED_NAMES = {"__init__.py", "base.py", "runner.py", "toxicity.py", "bold.py", "crows_pairs.py",
                "perplexity.py"}


def test_file_names_are_not_reused_for_different_things():
    names = Counter(p.name for p in SOURCES)
    assert sorted(n for n, c in names.items() if c > 1 and n not in SHARED_NAMES) == []
    for name in SHARED_NAMES - {"__init__.py", "base.py", "runner.py"}:
        folders = {p.parent.relative_to(ROOT).as_posix() for p in SOURCES if p.name == name}
        assert folders <= {"engine/evaluation/suites", "engine/evaluation/aggregations"}, (name, folders)


def test_no_module_is_over_about_400_lines():
    long = {p.relative_to(ROOT).as_posix(): n for p in SOURCES
            if (n := len(p.read_text().splitlines())) > 420}
    assert long == {}


def test_every_exception_class_is_in_engine_errors():
    """One home for errors: an exception class anywhere else is a private control-flow signal
    (a name starting with "_")."""
    import builtins
    import engine.errors as errors_module
    known = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
             and issubclass(getattr(builtins, n), BaseException)}
    known |= {n for n, v in vars(errors_module).items() if isinstance(v, type) and issubclass(v, BaseException)}
    elsewhere = []
    for path in SOURCES:
        if path == ROOT / "engine" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and any(
                    getattr(b, "id", getattr(b, "attr", "")) in known for b in node.bases):
                elsewhere.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert elsewhere == []


REGISTRY_FOLDERS = ("engine/catalog", "engine/evaluation/suites", "engine/evaluation/aggregations",
                    "engine/compression/methods")


def _registered_names() -> set[str]:
    from engine.catalog.method_info import methods
    from engine.catalog.suite_info import suite_names
    names = set(suite_names())
    for kind in ("prune", "quantize"):
        names |= {m.name for m in methods(kind)}
    return names


def _names_a_registered_thing(node: ast.AST) -> bool:
    """`suite`, `spec.method`, `s.name`, `args.kind`, `row["suite"]`: an operand that holds a
    suite's or a method's name."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        word = str(node.slice.value)
    else:
        word = getattr(node, "attr", getattr(node, "id", ""))
    return word in ("suite", "method", "name", "suite_name", "method_name")


def test_nothing_outside_the_registries_branches_on_a_suite_or_method_name():
    """`x == "toxicity"`, `x in ("wanda", "magnitude")`, `if method == "rtn"`: a branch on a
    registered name belongs to that suite's or method's own module."""
    names = _registered_names()
    found = []
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(REGISTRY_FOLDERS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            if not any(_names_a_registered_thing(o) for o in operands):
                continue
            for operand in operands:
                values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                hits = [v.value for v in values if isinstance(v, ast.Constant) and v.value in names]
                if hits:
                    found.append(f"{rel}:{node.lineno} compares with {hits}")
    assert found == []
