"""The house's one-way flow, checked on the source: no import cycle between modules and no
import from a lower layer to a higher one (ground < cohort < scenario/io < generators <
validation < the face), deferred imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trajectories", "validation", "scenarios")

GROUND = {"errors", "progress", "parallel", "tomlfile", "hazards", "_version", "disclosure"}
LAYERS = {
    1: "ground: errors, progress, parallel, tomlfile, hazards, _version, disclosure",
    2: "the data model: trajectories.cohort",
    3: "formats: trajectories.scenario, trajectories.io, scenarios",
    4: "generators: trajectories.simulate, trajectories.fit, trajectories.sequence",
    5: "checks: validation, trajectories.inference, trajectories.privacy",
    6: "the face: trajectories (the package), cli, demo, summary",
}


def layer(module: str) -> int:
    """The layer of a module of the project (see LAYERS)."""
    parts = module.split(".")
    if parts[0] == "validation":
        return 5
    if parts[0] == "scenarios":
        return 3
    if len(parts) == 1:
        return 6  # the trajectories package itself re-exports from every layer
    room = parts[1]
    if room in GROUND:
        return 1
    if room == "cohort":
        return 2
    if room in ("scenario", "io"):
        return 3
    if room in ("simulate", "fit", "sequence"):
        return 4
    if room in ("inference", "privacy"):
        return 5
    return 6


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import sub`` counts as ``pkg.sub``
    when ``sub`` is a module, else as ``pkg``)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_lines(tree)
        targets = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skipped:
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.split(".")[: -node.level] if not path.name.startswith(
                        "__init__") else name.split(".")[: len(name.split(".")) - node.level + 1]
                    base = ".".join([*package, *([base] if base else [])])
                if base.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_cycles_and_layers():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert layer("trajectories.cohort.core") == 2 < layer("trajectories.io.meds") == 3
    assert layer("trajectories.fit.model") == 4 < layer("validation.compare") == 5
    assert layer("trajectories.cli") == 6 and layer("trajectories.errors") == 1


def test_no_import_cycle():
    cycles = _cycles(imports(_modules()))
    assert not cycles, f"import cycles: {cycles}"


def test_no_import_climbs_a_layer():
    graph = imports(_modules())
    upward = sorted(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
                    for a, targets in graph.items() for b in targets if layer(b) > layer(a))
    assert not upward, "imports that climb:\n" + "\n".join(upward)
