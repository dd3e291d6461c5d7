"""memrl's import graph, read from the source (every ``import memrl...``/``from memrl...``, those
inside functions and under ``TYPE_CHECKING`` included): the reward, service and training modules
are in no import cycle, and the service does not import the training driver."""

from __future__ import annotations

import ast
from pathlib import Path

import memrl

SRC = Path(memrl.__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "memrl").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over memrl's modules (``from memrl.x import name`` counts as
    an import of ``memrl.x.name`` when that is a module, else of ``memrl.x``)."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for name in names:
                target = owner(name) if name.startswith("memrl") else None
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_rewards_serve_and_training_modules_are_in_no_import_cycle():
    graph = import_graph()
    assert "memrl.rewards.semantics" in graph and "memrl.grpo.train" in graph["memrl.grpo.cli"]
    ours = ("memrl.rewards", "memrl.serve", "memrl.grpo", "memrl.names", "memrl.options")
    assert [c for c in cycles(graph) if any(m.startswith(ours) for m in c)] == []


def test_the_service_does_not_import_the_training_driver():
    graph = import_graph()
    for module, imported in graph.items():
        if module.startswith("memrl.serve"):
            assert "memrl.grpo.train" not in imported, module
