"""The project's import graph read from the source with `ast` (for tests/test_layers.py): which
project modules each module imports at its top and inside functions, which heavy libraries a
module pulls in when imported, and the import circles.

Imports under `if TYPE_CHECKING:` never run and are left out, as import-linter does with
`exclude_type_checking_imports`."""

from __future__ import annotations

import ast
import functools
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = ("engine", "tui")
# libraries whose import costs seconds or hundreds of MB (or a display): what a function-level
# import may keep out of a module's start-up
HEAVY = frozenset({"torch", "transformers", "datasets", "detoxify", "matplotlib", "ray", "mlflow",
                   "wandb", "lm_eval", "sklearn", "scipy", "safetensors", "gguf", "accelerate",
                   "bitsandbytes", "torchao", "vllm", "llama_cpp", "h5py", "huggingface_hub",
                   "tokenizers", "numpy", "rich", "textual", "profanity_check", "vaderSentiment",
                   "psutil", "sqlite_utils", "keras", "pexpect"})


@functools.lru_cache(maxsize=None)
def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and getattr(test, "id", getattr(test, "attr", "")) == "TYPE_CHECKING"


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")[: len(module.split(".")) - (0 if is_package else 1)]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" for alias in node.names] or [base]


@functools.lru_cache(maxsize=None)
def _imports(root: Path) -> tuple[dict, dict, dict]:
    """(top: module -> project modules, inner: module -> [(project module, line)],
    external: module -> top-level libraries imported at its top). `top` leaves out the parent
    packages an import also runs (see `_parents`)."""
    modules = _modules(root)
    top, inner, external = defaultdict(set), defaultdict(list), defaultdict(set)
    for module, path in modules.items():
        is_package = path.name == "__init__.py"

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if _is_type_checking(child):
                    continue
                nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    _record(module, child, is_package, in_function)
                visit(child, nested)

        def _record(module: str, node, is_package: bool, in_function: bool) -> None:
            seen = set()
            for target in _targets(module, node, is_package):
                name = target          # `from a import b`: the module a.b, else the module a
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name:
                    if name != module and name not in seen:
                        seen.add(name)
                        (inner[module].append((name, node.lineno)) if in_function else top[module].add(name))
                elif not in_function and not (isinstance(node, ast.ImportFrom) and node.level):
                    external[module].add(target.split(".")[0])

        visit(ast.parse(path.read_text()), False)
    return top, inner, external


def _parents(root: Path, module: str) -> set[str]:
    """The packages Python imports before `module` (engine.evaluation for engine.evaluation.x)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & set(_modules(root))


def heavy_libraries(root: Path, module: str) -> frozenset[str]:
    """The heavy libraries importing `module` imports (through its top-level imports)."""
    top, _, external = _imports(root)
    seen, stack, found = set(), [module], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        found |= external[name] & HEAVY
        stack.extend(top[name] | _parents(root, name))
    return frozenset(found)


def function_imports(root: Path) -> list[tuple[str, str, int]]:
    """(module, project module it imports inside a function, line), each once per line."""
    _, inner, _ = _imports(root)
    return sorted({(m, t, line) for m, pairs in inner.items() for t, line in pairs})


def keeps_heavy_out(root: Path, module: str, target: str) -> bool:
    return bool(heavy_libraries(root, target) - heavy_libraries(root, module))


def import_circles(root: Path) -> list[list[str]]:
    """Strongly connected components of two or more modules, over all imports that run."""
    top, inner, _ = _imports(root)
    edges = {m: set(top[m]) | {t for t, _ in inner[m]} for m in _modules(root)}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return circles
