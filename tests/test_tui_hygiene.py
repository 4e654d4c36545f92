"""Layering: the engine never imports Textual, and the app reaches the engine only through its
public modules (api, views, specs, paths, the Store handle and the worker starter)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parents[1]
# What tui/ may import from the engine: its API only (which re-exports what the app reads from
# the lower layers: specs, the suite registry, settings, the store). demo.py (a dev tool that
# writes a demo store) is exempt.
ALLOWED = {"engine.api"}


def test_engine_never_imports_textual():
    modules = sorted(m.name for m in pkgutil.walk_packages(engine.__path__, "engine."))
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ImportError as exc:  # an optional dependency missing: not our concern\n"
            "        print('skipped', name, exc, file=sys.stderr)\n"
            "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
            "print(','.join(bad))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"engine imported {result.stdout.strip()}"


def _engine_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "engine"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
            found |= ({f"{node.module}.{a.name}" if node.module == "engine" else node.module
                       for a in node.names})
    return found


def test_the_app_uses_only_the_engines_public_modules():
    offenders = {}
    for path in sorted((ROOT / "tui").rglob("*.py")):
        if path.name == "demo.py":
            continue
        bad = _engine_imports(path) - ALLOWED
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}
