"""The import direction of docs/architecture.md#layout, checked on the source (no imports executed).

Top-level folders map into the `steprl.` namespace (pyproject's package-dir), so `learners/x.py` is
`steprl.learners.x`. A new import against the grain, or a cycle, fails here with the edge that caused it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> dict[str, Path]:
    """Module name -> file, for every package the project installs."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    mods = {}
    for pkg, folder in mapping.items():
        for f in (ROOT / folder).rglob("*.py"):
            parts = list(f.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([*pkg.split("."), *parts])] = f
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every project module each module imports (module level and inside functions, not under TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rpartition(".")[0]
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):  # annotations-only imports never run: not an edge
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                target = _resolve(n, mods)
                if target and target != m and n.startswith("steprl"):
                    graph[m].add(target)
    return graph


GRAPH = _imports(_modules())


def _edges(src_prefix: str, dst_prefix: str) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in GRAPH.items() if a.startswith(src_prefix)
                  for b in targets if b.startswith(dst_prefix))


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, cycles[:3]


def test_library_folders_import_downwards_only():
    assert _edges("steprl.envs", "steprl.agents") + _edges("steprl.envs", "steprl.rollout") == []
    assert _edges("steprl.agents", "steprl.envs") + _edges("steprl.agents", "steprl.rollout") == []
    for upper in ("steprl.learners", "steprl.run", "steprl.stages", "steprl.cli", "steprl.pipeline", "steprl.config"):
        assert _edges("steprl.rollout", upper) == []
    learner_deps = {b for a, targets in GRAPH.items() if a.startswith("steprl.learners") for b in targets}
    assert {d for d in learner_deps if not d.startswith("steprl.learners")} <= {"steprl.rollout.trajectory"}


def test_learners_never_import_ray_or_envs():
    for m, f in _modules().items():
        if m.startswith("steprl.learners"):
            text = f.read_text()
            assert "import ray" not in text and "from ray" not in text and "steprl.envs" not in text, m


def test_run_core_is_a_leaf_and_stages_never_import_each_other():
    for upper in ("steprl.stages", "steprl.cli", "steprl.pipeline"):
        assert _edges("steprl.run", upper) == []
    stages = [m for m in GRAPH if m.startswith("steprl.stages.")]
    assert len(stages) == 4
    for s in stages:
        assert [t for t in GRAPH[s] if t.startswith("steprl.stages")] == [], s


RUN = ROOT / "steprl" / "run"
ROOMS = {
    "machine": (),
    "files": ("machine",),
    "learning": ("machine", "files"),
    "reporting": ("machine", "files"),
    "loop": ("machine", "files", "learning", "reporting"),
}
"""Each room of steprl/run/ -> the rooms its modules may import (docs/architecture.md#layout); acyclic by order."""
MAX_ROOM_FILES = 12


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["steprl", "run"] else None


def test_run_is_split_into_rooms_each_with_a_one_paragraph_docstring():
    assert sorted(p.name for p in RUN.glob("*.py")) == ["__init__.py"]  # every module lives in a room
    rooms = sorted(p.name for p in RUN.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert rooms == sorted(ROOMS)
    for room in rooms:
        doc = ast.get_docstring(ast.parse((RUN / room / "__init__.py").read_text()))
        assert doc and "\n\n" not in doc.strip(), f"steprl/run/{room}/__init__.py: expected a one-paragraph docstring"


def test_no_folder_under_run_holds_more_than_12_modules():
    folders = [RUN, *(p for p in RUN.rglob("*") if p.is_dir() and p.name != "__pycache__")]
    crowded = {str(f.relative_to(ROOT)): n for f in folders if (n := len(list(f.glob("*.py")))) > MAX_ROOM_FILES}
    assert crowded == {}


def test_rooms_import_downwards_only():
    against = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() if (src := _room(a))
                     for b in targets if (dst := _room(b)) and dst != src and dst not in ROOMS[src])
    assert against == []


def test_stage_mapping_matches_the_config_names():
    from steprl.config import STAGES as CONFIG_STAGES
    from steprl.stages import STAGES

    assert tuple(STAGES) == tuple(CONFIG_STAGES)
