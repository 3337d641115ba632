"""The ddae package's import graph has no cycle (issue 14: launch ↔ finetune had one, dodged with
a lazy import). Every `import ddae...` / `from ddae... import` counts, at module level or inside
a function, so a cycle cannot hide behind a deferred import either."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ddae"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """ddae modules a file imports (`from ddae.x import y` counts ddae.x.y when y is a module)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {name: _imported(ast.parse(path.read_text()), modules) for name, path in files.items()}
    for name in graph:  # a package's __init__ is not an edge to its own submodules' users
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_ddae_has_no_import_cycle():
    graph = import_graph()
    assert "ddae.finetune" in graph and "ddae.launch" in graph["ddae.finetune"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
