"""The package's shape, measured: no import circles, no import that runs back up the data flow
(recipe -> data -> models -> evaluation -> training -> inference -> hub/importers -> commands), commands imported
by nothing, and the boundaries users rely on (models without data code, training without the Hub)."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fer_hf"
# Each part of the package and its floor in the data flow: a module imports only its own part or lower floors.
FLOORS = {
    "cli": 0, "labels": 0, "outputs": 0, "runlock": 0, "devices": 0, "launch_check": 0, "logs": 0,
    "recipe_values": 0, "repo_ids": 0,
    "data": 1, "exports": 1,
    "configs": 2,
    "recipe_parser": 3,
    "models": 4,
    "evaluation": 5,
    "training": 6,
    "inference": 7,
    "hub": 8, "importers": 8, "fer_metric": 8,
}  # fmt: skip
# The commands users type (`python -m fer_hf.<name>`): thin mains over the parts, imported by no module of the package
# (bench, the harness that times them, and the commands' own package entry points excepted).
COMMANDS = {
    "train", "evaluate", "predict", "explain", "export", "runtime", "ensemble", "compare", "cv", "calibrate",
}  # fmt: skip
TOP = 9  # the commands' floor, and bench's


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _without_type_checking(tree: ast.Module) -> ast.Module:
    """`if TYPE_CHECKING:` imports are annotations only: nothing is imported when the code runs."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            node.body = []
    return tree


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere (top level or inside a function), from the source."""
    files = {_module(p): p for p in PACKAGE.rglob("*.py") if "assets" not in p.parts}
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(_without_type_checking(ast.parse(path.read_text()))):
            if isinstance(node, ast.ImportFrom):
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                target = node.module or ""
                if node.level:
                    target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                found |= {target, *(f"{target}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def floor_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) == 1:
        return "fer_hf", TOP  # the package's lazy front door
    part = parts[1]
    if part in COMMANDS or part == "bench":
        return part, TOP
    if part not in FLOORS:
        pytest.fail(f"{module}: a new part of the package; give {part!r} a floor in FLOORS (or make it a command)")
    return part, FLOORS[part]


def test_no_import_circles():
    graph, done, circles = import_graph(), set(), []

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            circles.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_no_import_runs_back_up_the_data_flow():
    upward = []
    for module, imported in import_graph().items():
        part, floor = floor_of(module)
        for other in imported:
            other_part, other_floor = floor_of(other)
            if other_part in COMMANDS and part not in (other_part, "bench"):
                upward.append(f"{module} imports the command {other}")
            elif other_floor > floor or (other_floor == floor and other_part != part and floor > 0 and floor < TOP):
                upward.append(f"{module} (floor {floor}) imports {other} (floor {other_floor})")
    assert upward == []


def test_fewer_floors_than_before_the_redesign():
    graph = import_graph()

    heights: dict[str, int] = {}

    def height(module: str, below: frozenset = frozenset()) -> int:  # the longest import chain from a module down
        if module not in heights:  # (an import circle counts once: test_no_import_circles reports it)
            heights[module] = 1 + max((height(m, below | {module}) for m in graph[module] - below), default=0)
        return heights[module]

    assert max(height(m) for m in graph) < 12  # 12 before the second redesign step


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("fer_hf.models", ["datasets", "cv2", "fer_hf.data.transforms", "fer_hf.data.sources"]),
        ("fer_hf.training.run", ["fer_hf.hub", "fer_hf.hub.card", "fer_hf.hub.publish"]),
        ("fer_hf.data.images", ["torch", "datasets"]),
    ],
)
def test_importing_a_part_loads_only_what_it_needs(module, absent):
    """Checked in a fresh interpreter: what importing `module` loads, transitively, at run time."""
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    )
    assert module in loaded
    assert sorted(set(absent) & loaded) == []
