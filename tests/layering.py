"""Figures of the house's import structure, from the code: ``python tests/layering.py [CHECKOUT]``.

Prints the rooms (``stress.<room>``, ``perturbations``, ``scenarios``), how many of them sit in a strongly connected
group, the file-level import circles, the imports that run against the declared layers, and the project imports
made inside functions. tests/test_layers.py asserts the figures of this checkout; docs/architecture.md quotes them
(before: the checkout of a909785, the last commit before the layers; after: HEAD).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import grimp

PACKAGES = ("stress", "perturbations", "scenarios")
# the declared layers, top first (pyproject.toml's [tool.importlinter]): used here only to count upward imports in
# checkouts that predate the contracts; a room of another name (an old layout's) is placed by LEGACY_ROOMS
LAYERS = (("stress.cli",), ("stress.report", "stress.bench"), ("scenarios", "stress.training"), ("stress.runners",),
          ("stress.measurement", "stress.store"), ("stress.policies", "stress.envs"), ("perturbations",), ("stress.core",))
LEGACY_ROOMS = {"stress.bench_aloha": "stress.bench", "stress.bench_remote": "stress.bench", "stress.bench_robosuite": "stress.bench",
                "stress.runner": "stress.runners", "stress.runner_ray": "stress.runners", "stress.schedule": "stress.runners",
                "stress.replay": "stress.runners", "stress.groundtruth": "stress.measurement", "stress.signatures": "stress.measurement",
                "stress.errors": "stress.core", "stress.metrics": "stress.core", "scenarios.spec": "stress.core",
                "stress.policies.base": "stress.core", "stress.envs.cameras": "stress.core",
                "stress.policies.reference.data": "stress.training", "stress.policies.reference.train": "stress.training",
                "stress.policies.reference.build": "stress.training", "stress.policies.reference.evaluate": "stress.training"}


def room(module: str) -> str:
    """A module's room: ``stress.<child>`` inside stress, else its top-level package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "stress" and len(parts) > 1 else parts[0]


def layer_of(module: str) -> int | None:
    """Index of the module's layer (0 = top), or None for the package roots (the public API's lazy names)."""
    for name, target in sorted(LEGACY_ROOMS.items(), key=lambda kv: -len(kv[0])):
        if module == name or module.startswith(name + "."):
            module = target
            break
    for index, rooms in enumerate(LAYERS):
        if any(module == r or module.startswith(r + ".") for r in rooms):
            return index
    return None


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's groups of more than one node."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    sys.setrecursionlimit(10_000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return groups


def function_imports(root: Path) -> list[str]:
    """``path:line module`` of every project import made inside a function."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for inner in ast.walk(node):
                    names = []
                    if isinstance(inner, ast.Import):
                        names = [a.name for a in inner.names]
                    elif isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                        names = [inner.module]
                    for name in names:
                        if name.split(".")[0] in PACKAGES:
                            out.append(f"{path.relative_to(root)}:{inner.lineno} {name}")
    return sorted(set(out))


def figures(root: Path) -> dict:
    sys.path.insert(0, str(root))
    try:
        graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    finally:
        sys.path.remove(str(root))
    module_edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    room_edges: dict[str, set[str]] = {}
    for m, targets in module_edges.items():
        room_edges.setdefault(room(m), set()).update(room(t) for t in targets if room(t) != room(m))
    upward = sorted(f"{m} -> {t}" for m, targets in module_edges.items() for t in targets
                    if layer_of(m) is not None and layer_of(t) is not None and layer_of(t) < layer_of(m))
    sideways = sorted(f"{m} -> {t}" for m, targets in module_edges.items() for t in targets
                      if layer_of(m) is not None and layer_of(m) == layer_of(t) and room(m) != room(t) and len(LAYERS[layer_of(m)]) > 1
                      and room(LEGACY_ROOMS.get(m, m)) != room(LEGACY_ROOMS.get(t, t)))
    rooms = sorted(room_edges)
    tangled = max((len(g) for g in strongly_connected(room_edges)), default=0)
    cli = root / "stress" / "cli.py"
    simulator_class = next(node for node in ast.walk(ast.parse((root / "stress" / "envs" / "base.py").read_text()))
                           if isinstance(node, ast.ClassDef) and node.name == "SimEnv")
    return {
        "modules": len(graph.modules),
        "lines": sum(len(p.read_text().splitlines()) for package in PACKAGES for p in (root / package).rglob("*.py")),
        "rooms": len(rooms),
        "rooms_in_largest_cycle": tangled,
        "file_circles": sorted(sorted(g) for g in strongly_connected(module_edges)),
        "upward_imports": upward,
        "sideways_imports": sideways,
        "function_imports": function_imports(root),
        "simulator_protocol_methods": sum(isinstance(n, ast.FunctionDef) for n in simulator_class.body),
        "simulator_protocol_lines": simulator_class.end_lineno - simulator_class.lineno + 1,
        "largest_cli_module_lines": max(len(p.read_text().splitlines()) for p in ([cli] if cli.is_file() else (root / "stress" / "cli").glob("*.py"))),
    }


if __name__ == "__main__":
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    found = figures(root)
    summary = {k: (len(v) if isinstance(v, list) else v) for k, v in found.items()}
    print(json.dumps(summary, indent=1))
    for key in ("file_circles", "upward_imports", "sideways_imports", "function_imports"):
        for item in found[key]:
            print(f"{key}: {item}")
