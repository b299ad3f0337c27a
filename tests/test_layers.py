"""Layer rules of the code base, read from the source (no imports run).

`recommender/` is a library: no app framework (Prefect, typer, FastAPI, uvicorn,
Starlette, Streamlit) and none of the app packages beside it. The apps (`flows/`,
`cli/`, `api/`, `dashboard/`) sit on top of it, and nothing has import cycles.
Every import counts, also those inside functions: a lazy import is still a
dependency. `python tests/test_layers.py` prints the graph's size (modules,
arrows, layers, cycles) for the record.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("recommender", "flows", "cli", "api", "dashboard")
APP_FRAMEWORKS = ("prefect", "prefect_dask", "typer", "fastapi", "uvicorn", "starlette", "streamlit")
# What each package may import of the others (first-party) and of the app frameworks.
ALLOWED = {
    "recommender": ((), ()),
    "flows": (("recommender",), ("prefect", "prefect_dask")),
    "api": (("recommender",), ("fastapi", "uvicorn", "starlette")),
    "dashboard": (("recommender",), ("streamlit",)),
    "cli": (("recommender", "flows", "api", "dashboard"), APP_FRAMEWORKS),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every first-party module, by dotted name."""
    out = {}
    for pkg in packages:
        for path in sorted((REPO / pkg).rglob("*.py")) if (REPO / pkg).is_dir() else ():
            out[module_name(path)] = path
    return out


def imported_names(path: Path, name: str) -> set[str]:
    """Absolute names a module imports (relative imports resolved), candidates for submodules included."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def graph(packages: tuple[str, ...] = PACKAGES) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """First-party import arrows (module -> modules) and each module's third-party top-level imports."""
    mods = modules(packages)
    arrows: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for name, path in mods.items():
        names = imported_names(path, name)
        arrows[name] = {n for n in names if n in mods and n != name}
        external[name] = {n.split(".")[0] for n in names if n.split(".")[0] not in PACKAGES}
    return arrows, external


def cycles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module."""
    names = sorted(arrows)
    index = {n: i for i, n in enumerate(names)}
    rows = [index[a] for a, bs in arrows.items() for _ in bs]
    cols = [index[b] for bs in arrows.values() for b in bs]
    m = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(m, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for n, lab in zip(names, labels):
        groups.setdefault(int(lab), []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def layers(arrows: dict[str, set[str]]) -> int:
    """Length of the longest import chain (modules in one cycle count as one layer)."""
    depth: dict[str, int] = {}

    def visit(n: str, stack: frozenset[str]) -> int:
        if n not in depth:
            depth[n] = 1 + max((visit(m, stack | {n}) for m in arrows[n] if m not in stack), default=0)
        return depth[n]

    return max((visit(n, frozenset()) for n in arrows), default=0)


def summary(packages: tuple[str, ...]) -> dict[str, int]:
    arrows, _ = graph(packages)
    return {"modules": len(arrows), "arrows": sum(map(len, arrows.values())), "layers": layers(arrows),
            "cycles": len(cycles(arrows))}


def test_library_imports_no_app_framework_and_no_app_package():
    arrows, external = graph()
    for name in arrows:
        pkg = name.split(".")[0]
        own, frameworks = ALLOWED[pkg]
        bad_fw = sorted(e for e in external[name] if e in APP_FRAMEWORKS and e not in frameworks)
        bad_pkg = sorted(m for m in arrows[name] if m.split(".")[0] not in (pkg, *own))
        assert not bad_fw, f"{name} imports {bad_fw}; only {frameworks or 'no app framework'} allowed in {pkg}/"
        assert not bad_pkg, f"{name} imports {bad_pkg}; {pkg}/ may import only {(pkg, *own)}"


def test_no_import_cycles():
    arrows, _ = graph()
    assert cycles(arrows) == []


def test_payload_module_owns_the_tier_names():
    """Tier names are spelled once, in recommender/payload.py (the enum); everything else uses it.

    ("exact" is not checked: it also names the exact query engine, a settings value.)"""
    offenders = []
    for name, path in modules(("recommender",)).items():
        if name == "recommender.payload":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ("copy", "near"):
                offenders.append(f"{name}:{node.lineno} {node.value!r}")
    assert not offenders, "use recommender.payload.Tier instead of literals: " + ", ".join(offenders)


if __name__ == "__main__":
    for pkgs in (("recommender",), PACKAGES):
        print(" + ".join(p for p in pkgs if (REPO / p).is_dir()), summary(pkgs))
    for group in cycles(graph()[0]):
        print("cycle:", " <-> ".join(group))
    sys.exit(0)
