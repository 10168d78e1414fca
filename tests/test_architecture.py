"""The layout shows the architecture: the core knows nothing of the runtime, the commands, parents' formats,
simulators or robots; the runtime knows nothing of the commands; and no modules import each other in a cycle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"gpc": ROOT / "gpc", "gpc.policies": ROOT / "policies", "gpc.sims": ROOT / "sims",
           "gpc.hardware": ROOT / "hardware"}
LAYERS = {  # a package and what it may not import, lazily or not
    "gpc.core": ("gpc.runtime", "gpc.app", "gpc.policies", "gpc.sims", "gpc.hardware"),
    "gpc.runtime": ("gpc.app", "gpc.policies", "gpc.sims", "gpc.hardware"),
}


def modules() -> dict[str, set[str]]:
    """Every module of gpc and the gpc modules it imports (anywhere in its body)."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            imported = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            found[name] = {m for m in imported if m == "gpc" or m.startswith("gpc.")}
    return {name: {m for m in imported if m in found} for name, imported in found.items()}


def test_lower_layers_never_import_higher_ones():
    wrong = [(name, m) for name, imported in modules().items() for layer, banned in LAYERS.items()
             if name.startswith(layer) for m in imported if m.startswith(banned)]
    assert not wrong, f"layering broken: {wrong}"


def test_no_import_cycles():
    graph = modules()
    visiting, done, cycles = set(), set(), []

    def visit(node, path):
        if node in done:
            return
        if node in visiting:
            cycles.append(path[path.index(node):] + [node])
            return
        visiting.add(node)
        for nxt in sorted(graph[node]):
            if nxt != node:
                visit(nxt, path + [node])
        visiting.discard(node)
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
    assert not cycles, f"import cycles: {cycles[:3]}"
