"""The package's shape: stage packages imported one way and only through their public faces.

Layers run left to right (ARCHITECTURE: config ─► inputs ─► variants ─► measure ─► study ─► hardware ─► deploy ─►
report); a module imports only from its own package or from a package of a lower layer, and only what that
package's ``__init__`` lists in ``__all__``. Lazy (function-level) imports count: they are imports all the same.
"""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "edge_opt"
MODULES = sorted(SRC.rglob("*.py"))

# Stage packages and top-level modules, bottom to top; one layer may hold several that do not import each other.
LAYERS: list[set[str]] = [
    {"core"},
    {"config"},
    {"inputs", "device"},
    {"variants"},
    {"measure"},
    {"study"},
    {"hardware"},
    {"deploy"},
    {"report", "bench"},
    {"compat"},
    {"pipeline"},
    {"api"},
    {"cli", ""},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())


def module_name(path: Path) -> str:
    """``edge_opt.study.runner`` → ``study.runner``; the package root is ``""``."""
    parts = [p for p in path.relative_to(SRC).with_suffix("").parts if p != "__init__"]
    return ".".join(parts)


def unit(module: str) -> str:
    """The stage package or top-level module a module belongs to."""
    return module.split(".")[0]


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported edge_opt module, imported names) for every import in the file, lazy ones included."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module == "edge_opt" or node.module.startswith("edge_opt.")):
                target = node.module.removeprefix("edge_opt").lstrip(".")
            else:
                continue
            if target == "":  # ``from . import compat`` in the root: the top-level module itself
                out += [(a.name, []) for a in node.names]
            else:
                out.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [
                (a.name.removeprefix("edge_opt").lstrip("."), [])
                for a in node.names
                if a.name == "edge_opt" or a.name.startswith("edge_opt.")
            ]
    return out


def test_every_package_and_top_level_module_has_a_layer():
    units = {unit(module_name(p)) for p in MODULES}
    assert sorted(units - set(LEVEL)) == []


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_run_one_way_through_public_faces(path):
    me = module_name(path)
    mine = unit(me)
    for target, names in imports(path):
        theirs = unit(target)
        if theirs == mine and me:
            continue  # inside one package: any of its modules (private names are checked below)
        if target == "__version__":
            continue  # the version string, from the root (the top layer's modules only)
        assert LEVEL[theirs] < LEVEL[mine], (
            f"{me or 'edge_opt'} (layer {LEVEL[mine]}) imports {target} (layer {LEVEL[theirs]})"
        )
        assert target == theirs, f"{me} imports {target}, a private module of {theirs}: use its public face"
        face = importlib.import_module(f"edge_opt.{theirs}")
        hidden = [n for n in names if n not in face.__all__]
        assert not hidden, f"{me} imports {hidden} from {theirs}, whose public face does not list them"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_private_name_crosses_a_module(path):
    for target, names in imports(path):
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert not private, f"{module_name(path)} imports private names {private} from {target}"


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = defaultdict(set)
    known = {module_name(p) for p in MODULES}
    for path in MODULES:
        me = module_name(path)
        for target, names in imports(path):
            subs = {f"{target}.{n}".lstrip(".") for n in names} & known
            graph[me] |= (subs or {target}) - {me}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " → ".join([*trail[trail.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(known):
        if start not in state:
            visit(start, [start])


def _faces() -> list[str]:
    return [*PACKAGES, *(p.stem for p in SRC.glob("*.py") if p.stem != "__init__")]


@pytest.mark.parametrize("face", _faces())
def test_every_public_face_lists_what_it_defines(face):
    mod = importlib.import_module(f"edge_opt.{face}")
    assert isinstance(mod.__all__, list)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"edge_opt.{face}.__all__ names {missing}, which it does not have"


def test_no_name_is_exported_from_two_faces():
    owners: dict[str, list[str]] = defaultdict(list)
    for face in _faces():
        for name in importlib.import_module(f"edge_opt.{face}").__all__:
            owners[name].append(face)
    twice = {n: f for n, f in owners.items() if len(f) > 1}
    assert twice == {}


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_functions_are_at_most_60_lines(path):
    long = [
        (n.name, n.end_lineno - n.lineno + 1)
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60
    ]
    assert not long, f"{module_name(path)}: {long}"
