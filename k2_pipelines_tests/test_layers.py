"""K2's layers, read from the import statements of every module (nothing is imported): cli -> defs -> lib, lib never
imports Dagster, and K2's packages (lib/<package>, defs/<package>) import one another one way only, without a loop.
Environment variables are read in settings.py only."""

import ast
from collections import defaultdict
from pathlib import Path

import k2_pipelines

ROOT = Path(k2_pipelines.__file__).parent
FORBIDDEN = {"lib": ("dagster", "k2_pipelines.defs", "k2_pipelines.definitions", "k2_pipelines.cli"),
             "defs": ("k2_pipelines.cli",)}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, line) of each import in the file, anywhere in it; `from a import b` names a and a.b (b may be a
    module)."""
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package up
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(base, node.lineno), *((f"{base}.{alias.name}", node.lineno) for alias in node.names)]
    return found


def _package(module: str) -> str | None:
    """lib.<package> or defs.<package> (a module directly in lib/ or defs/ is a package of its own), else None."""
    parts = module.split(".")
    if parts[0] == "k2_pipelines" and len(parts) >= 3 and parts[1] in ("lib", "defs"):
        return f"{parts[1]}.{parts[2]}"
    return None


def _all_imports() -> list[tuple[str, str, int, str]]:
    """(importing module, file, line, imported module) of every import in k2_pipelines."""
    return [(_module(path), str(path.relative_to(ROOT.parent)), line, imported)
            for path in sorted(ROOT.rglob("*.py")) for imported, line in _imports(path)]


def _loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                loops.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return loops


def test_lib_never_imports_dagster_defs_or_cli_and_defs_never_imports_cli():
    broken = [f"{file}:{line} imports {imported}" for module, file, line, imported in _all_imports()
              for layer, forbidden in FORBIDDEN.items() if module.startswith(f"k2_pipelines.{layer}.")
              and any(imported == name or imported.startswith(f"{name}.") for name in forbidden)]
    assert not broken, "\n".join(broken)


def test_no_import_loop_between_packages():
    edges: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, file, line, imported in _all_imports():
        source, target = _package(module), _package(imported)
        if source and target and source != target:
            edges[source].add(target)
            where[source, target].append(f"{file}:{line}")
    loops = _loops(edges)
    assert not loops, "\n".join(
        f"loop {' <-> '.join(loop)}: " + "; ".join(f"{a} -> {b} at {', '.join(sorted(set(where[a, b])))}"
                                                    for a in loop for b in loop if (a, b) in where)
        for loop in loops)


def _reads_a_variable(node: ast.AST) -> bool:
    """os.environ[...] read, os.environ.get(...) or os.getenv(...); passing the whole environment on to a child
    process, or setting a variable, reads none."""
    def is_environ(value: ast.AST) -> bool:
        return isinstance(value, ast.Attribute) and value.attr == "environ" and isinstance(value.value, ast.Name) \
            and value.value.id == "os"
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return is_environ(node.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return (node.func.attr == "get" and is_environ(node.func.value)) or (
            node.func.attr == "getenv" and isinstance(node.func.value, ast.Name) and node.func.value.id == "os")
    return False


def test_environment_variables_are_read_in_settings_only():
    readers = [f"{path.relative_to(ROOT.parent)}:{node.lineno}" for path in sorted(ROOT.rglob("*.py"))
               if path != ROOT / "settings.py" for node in ast.walk(ast.parse(path.read_text(), str(path)))
               if _reads_a_variable(node)]
    assert not readers, "read k2_pipelines.settings instead:\n" + "\n".join(readers)
