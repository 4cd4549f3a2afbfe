"""The house: packages import only the layers below them, no module is in an import cycle, and
only the modules that must know Ray import it.

Every import counts, top-level and inside functions alike (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "access", "stages", "pipeline")

# (unit, rank): a module of a unit may import its own unit and units of a lower rank only.
# Units of the same rank are peers and must not import each other.
LAYERS: tuple[tuple[str, int], ...] = (
    ("schemas", 0),
    ("access", 1),
    ("stages", 2),
    ("pipeline.errors", 3),
    ("pipeline.world", 3),
    ("pipeline.run", 4),
    ("pipeline.metrics", 5),
    ("pipeline.release", 6),
    ("pipeline.build", 7),
    ("pipeline.demo_models", 7),
    ("pipeline.training", 8),
    ("pipeline.review", 8),
    ("pipeline.interchange", 8),  # importers and exporters: read releases, write manifests
    ("pipeline.cluster", 9),
    ("pipeline.cli", 10),
    ("pipeline.job_entry", 11),
    ("pipeline", 12),  # the package's own __init__
)
# Ray is known by the runner; the Jobs SDK by submission; Ray Train's input by the loader.
RAY_ALLOWED = {"pipeline.run.ray_runner", "pipeline.run.ray_stages", "pipeline.run.ray_source",
               "pipeline.run.dataset_checks",
               "pipeline.cluster.submit", "pipeline.training.release_shards"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(path: Path, name: str, is_package: bool, modules: set[str] | None = None) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved).

    ``from pkg import sub`` where ``pkg.sub`` is one of ``modules`` counts as importing ``sub``
    only: the package is then a namespace, not a dependency."""
    out: set[str] = set()
    base = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                mod = ".".join([*anchor, mod] if mod else anchor)
            subs = {f"{mod}.{alias.name}" for alias in node.names}
            found = subs & modules if modules else set()
            out.update(found)
            if found != subs:
                out.add(mod)
    return out


def unit_of(name: str) -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    for unit, rank in LAYERS:
        if (name == unit or name.startswith(unit + ".")) and (best is None or len(unit) > len(best[0])):
            best = (unit, rank)
    return best


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        raw = imports_of(path, name, path.name == "__init__.py", set(modules))
        edges[name] = {m for m in raw if m in modules and m != name}
    return edges


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in project_modules() if unit_of(m) is None)
    assert not missing, f"modules outside every layer: {missing}"


def test_no_import_goes_up_or_sideways() -> None:
    bad = []
    for src, targets in graph().items():
        s_unit, s_rank = unit_of(src) or ("?", -1)
        for dst in targets:
            d_unit, d_rank = unit_of(dst) or ("?", -1)
            if d_unit == s_unit:
                continue
            if d_rank >= s_rank:
                bad.append(f"{src} ({s_unit}, layer {s_rank}) imports {dst} ({d_unit}, layer {d_rank})")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (iterative DFS, three colours)."""
    colour = dict.fromkeys(edges, 0)
    for start in sorted(edges):
        if colour[start]:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(edges[start]))]
        colour[start] = 1
        path = [start]
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if colour.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if colour.get(nxt) == 0:
                colour[nxt] = 1
                stack.append((nxt, sorted(edges[nxt])))
                path.append(nxt)
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_runner_the_jobs_client_and_the_loader_import_ray() -> None:
    bad = []
    for name, path in project_modules().items():
        raw = imports_of(path, name, path.name == "__init__.py")
        if any(m == "ray" or m.startswith("ray.") for m in raw) and name not in RAY_ALLOWED:
            bad.append(name)
    assert not bad, f"modules that import Ray: {bad}"


@pytest.mark.parametrize("package", ["access", "pipeline", *[
    f"pipeline.{p.name}" for p in sorted((ROOT / "pipeline").iterdir()) if (p / "__init__.py").exists()]])
def test_every_package_says_what_it_owns(package: str) -> None:
    init = ROOT.joinpath(*package.split("."), "__init__.py")
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(doc) > 40, f"{init}: no docstring saying what the package owns"
    if package.startswith("pipeline."):
        assert "import" in doc, f"{init}: the docstring does not say what the package may import"
