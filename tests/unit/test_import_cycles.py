"""No import cycles among the project's modules, nor among its components, found by parsing every
import (lazy ones inside functions included) of ``exchange/``, ``agents/`` and ``protocols/`` with
``ast`` into a graph and looking for its strongly connected components; and the protocol's
message modules import only the standard library and msgspec, so that any client can vendor them.

A cycle makes the import order matter (a partly initialised module, an attribute missing at import
time) and ties layers together that should stand on their own: the CLI runs the integrations, so
the integrations must not import the CLI back.
"""

import ast
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("exchange", "agents", "protocols")
# Modules of protocols/ for the Python side that need more than msgspec: the request client
# (nats-py, anyio, structlog) and the shared logging configuration (structlog). Every other module
# is plain data and rules.
PROTOCOLS_IO_MODULES = frozenset({"protocols.client", "protocols.logs"})

Graph = Mapping[str, frozenset[str]]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every module name ``name`` imports, resolved against nothing: absolute dotted names.

    ``from P import N`` yields P, and P.N too (N may be a submodule): it reads P's namespace,
    which is what makes ``from pkg import sibling`` inside ``pkg``'s own modules a cycle with
    ``pkg/__init__.py``.
    """
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _module_graph() -> Graph:
    sources = _sources()
    return {
        name: frozenset(
            target for target in _imports(name, path) if target in sources and target != name
        )
        for name, path in sources.items()
    }


def _component(name: str) -> str:
    """``agents`` and ``protocols`` are one component each; ``exchange`` is one per subpackage
    (``exchange.cli``, ``exchange.journal``...) and per top-level module (``exchange.locate``)."""
    parts = name.split(".")
    if parts[0] != "exchange" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def _component_graph(modules: Graph) -> Graph:
    edges: dict[str, set[str]] = {}
    for name, targets in modules.items():
        edges.setdefault(_component(name), set()).update(_component(t) for t in targets)
    return {source: frozenset(targets - {source}) for source, targets in edges.items()}


def _cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, frozenset())):
            if target not in index:
                visit(target)
                lowlink[node] = min(lowlink[node], lowlink[target])
            elif target in on_stack:
                lowlink[node] = min(lowlink[node], index[target])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(graph: Graph, cycles: list[list[str]]) -> str:
    lines = []
    for members in cycles:
        lines.append("cycle: " + ", ".join(members))
        for member in members:
            inside = sorted(graph[member] & set(members))
            lines.append(f"  {member} imports {', '.join(inside)}")
    return "\n".join(lines)


def test_the_graph_sees_the_project() -> None:
    modules = _module_graph()
    assert len(modules) >= 100
    assert "exchange.integrations.cli" in modules["exchange.cli.main"], "lazy imports count"
    assert "protocols.client" in modules["agents.bus"]


def test_no_module_imports_itself_back() -> None:
    modules = _module_graph()
    cycles = _cycles(modules)
    assert not cycles, _describe(modules, cycles)


def test_no_component_imports_itself_back() -> None:
    components = _component_graph(_module_graph())
    assert {"exchange.cli", "exchange.integrations", "agents", "protocols"} <= set(components)
    cycles = _cycles(components)
    assert not cycles, _describe(components, cycles)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name in _sources()
        if name.startswith("protocols") and name not in PROTOCOLS_IO_MODULES
    ),
)
def test_protocol_modules_need_only_the_standard_library_and_msgspec(name: str) -> None:
    path = _sources()[name]
    for module in _imports(name, path):
        root = module.split(".")[0]
        assert root in sys.stdlib_module_names or root in ("msgspec", "protocols"), (name, module)
