"""The ddae package's import graph has no cycle (issue 14: launch ↔ finetune had one, dodged with
a lazy import). Every `import ddae...` / `from ddae... import` counts, at module level or inside
a function, so a cycle cannot hide behind a deferred import either.

The planning layer (issue 21: the config classes of `ddae.settings`, `ddae.pipeline`,
`ddae.config_checks`) imports no torch, numpy, pandas, diffusers or timm at module level,
through any chain of ddae modules; tests/test_planning_imports.py checks a real ``snakemake -n``.
"""

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


# Packages planning must not load, and the ddae modules Snakemake imports while it plans.
HEAVY = {"torch", "numpy", "pandas", "diffusers", "timm", "PIL", "scipy", "matplotlib"}
PLANNING_LAYER = ("ddae.settings", "ddae.pipeline", "ddae.config_checks")


def _module_level(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when a module is imported (not in functions or classes,
    not under ``if TYPE_CHECKING:``)."""
    found = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            found += _module_level(node.body) + _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            blocks = [node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)]
            found += [statement for block in blocks for statement in _module_level(block)]
    return found


def module_level_imports() -> dict[str, set[str]]:
    """Every ddae module -> the modules (ddae or not) its import runs, parent packages included."""
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        names = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for node in _module_level(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif node.module and node.level == 0:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {n for n in names if n in files or n.split(".")[0] != "ddae"}
    return graph


def heavy_chain(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A chain of module-level imports from ``start`` to a `HEAVY` package, or None."""
    parents = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph.get(node, ())):
            if nxt.split(".")[0] in HEAVY:
                chain = [nxt, node]
                while parents[chain[-1]] is not None:
                    chain.append(parents[chain[-1]])
                return chain[::-1]
            if nxt not in parents and nxt in graph:
                parents[nxt] = node
                queue.append(nxt)
    return None


def test_heavy_chain_follows_module_level_imports_only():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
    source += "def f():\n    import numpy\ntry:\n    import yaml\nexcept ImportError:\n    pass\n"
    assert [ast.unparse(node) for node in _module_level(ast.parse(source).body)] == [
        "from typing import TYPE_CHECKING",
        "import yaml",
    ]
    graph = {"a": {"b", "yaml"}, "b": {"c"}, "c": {"torch.nn"}, "d": {"a"}}
    assert heavy_chain(graph, "d") == ["d", "a", "b", "c", "torch.nn"]
    assert heavy_chain({"a": {"yaml"}}, "a") is None


def test_the_planning_layer_imports_no_torch_numpy_or_pandas():
    graph = module_level_imports()
    planning = [name for name in graph if name.startswith(PLANNING_LAYER)]
    assert "ddae.settings.networks" in planning and "ddae.config_checks" in planning
    chains = {name: heavy_chain(graph, name) for name in sorted(planning)}
    assert {name: chain for name, chain in chains.items() if chain} == {}


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
