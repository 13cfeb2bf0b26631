"""The import graph of ``src/evothesis`` has the shape README's "Layout" describes.

Read from the source with ``ast`` (nothing is imported), so the check also covers imports
inside functions. Two rules:

* packages form layers, and a package imports only from its own layer or those below it:
  the composition root (``services``) sits above every feature it wires, settings sit
  below it, and no feature imports the settings or the root;
* no module imports itself back through others: the graph of modules has no cycle.

``python -m pytest tests/unit/test_architecture.py`` runs the check.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src"

#: Lowest first. Top-level modules count as packages of their own.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"evothesis", "domain", "durations", "schedules", "clock", "heap", "logs"}),
    frozenset({"errors"}),
    frozenset({"privacy", "enrich"}),
    frozenset({"storage", "objects"}),
    frozenset({"registry"}),
    frozenset({"export"}),
    frozenset({"gdpr", "billing"}),
    frozenset({"ingest"}),
    frozenset({"config"}),
    frozenset({"services"}),
    frozenset({"tracker", "embedded"}),
    frozenset({"api"}),
    frozenset({"app", "pixel_management", "server"}),
    frozenset({"cli"}),
    frozenset({"__main__"}),
)


def modules() -> dict[str, Path]:
    found = {}
    for path in (SOURCE / "evothesis").rglob("*.py"):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The evothesis modules ``path`` imports (a name imported from a package counts as its
    submodule when it is one)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "evothesis":
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in known else node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "evothesis":
                    yield alias.name


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports(path, known)) - {name} for name, path in known.items()}


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer(module: str) -> int:
    name = package(module)
    for index, members in enumerate(LAYERS):
        if name in members:
            return index
    raise AssertionError(f"{module}: package {name!r} is in no layer; add it to LAYERS")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_read() -> None:
    known = modules()
    assert "evothesis.services" in known and "evothesis.cli.main" in known
    assert len(known) > 80


def test_packages_import_only_their_own_layer_or_below() -> None:
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if layer(target) > layer(source)
    )
    assert upward == []


def test_modules_form_no_cycle() -> None:
    assert cycles(graph()) == []


def test_features_never_read_the_settings() -> None:
    """Settings become objects in ``services`` only; features take their own small values."""
    below_config = {name for members in LAYERS[: layer("evothesis.config")] for name in members}
    readers = sorted(
        source
        for source, targets in graph().items()
        if "evothesis.config" in targets and package(source) in below_config
    )
    assert readers == []


def test_the_check_sees_an_upward_import_and_a_cycle() -> None:
    """The rules are not vacuous: planted violations are found."""
    edges = {"evothesis.domain": {"evothesis.services"}, "evothesis.services": set()}
    assert [e for s, ts in edges.items() for e in ts if layer(e) > layer(s)]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
