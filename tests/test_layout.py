"""The package's layout rules, read from the source with `ast` (nothing is imported or run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlhf_hf"
# The concrete embedded tasks and tiny base: only `rlhf_hf.tasks` may import them (others ask `get_task`).
EMBEDDED = ("rlhf_hf.tasks.tiny_sort", "rlhf_hf.tasks.chat", "rlhf_hf.tasks.tiny")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The rlhf_hf modules `name` imports: at module level, inside functions (they run sooner or later) and for
    type checking only (a module does not reach up to the one that uses it, not even for a type)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            # `from pkg import submodule` imports the submodule; `from module import name`, the module
            targets = submodules + ([base] if not all(m in MODULES for m in submodules) else [])
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


def test_no_import_cycles():
    graph = {name: imports_of(name) for name in MODULES}
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_walk_sees_imports():  # the cycle test is only as good as the graph it walks
    assert "rlhf_hf.modeling" in imports_of("rlhf_hf.sft")
    assert "rlhf_hf.tasks.tiny_sort" in imports_of("rlhf_hf.tasks")  # a function-level import
    assert "rlhf_hf.pipeline_config" in imports_of("rlhf_hf.report")


def test_from_pretrained_is_called_only_in_modeling():
    callers = sorted(
        name
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "from_pretrained"
        and name != "rlhf_hf.modeling"
    )
    assert callers == []


def test_only_tasks_imports_the_embedded_task():
    leaks = sorted(
        f"{name} imports {target}"
        for name in MODULES
        if not name.startswith("rlhf_hf.tasks")
        for target in imports_of(name)
        if target.startswith(EMBEDDED)
    )
    assert leaks == []
