"""The package's shape: public faces, no private names across modules, short functions, one-way imports."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "edge_opt"
MODULES = sorted(SRC.rglob("*.py"))

# Pipeline stages, left to right; a module may import only from its own layer or layers to its left.
LAYERS = [
    {"registry", "atomic", "env", "energy", "runtime", "store", "config", "importing", "generation", "timing", "agent",
     "remote", "vendor_logs"},
    {"data", "readers"},
    {"models", "sources"},
    {"training"},
    {"variants", "variants.base", "variants.quantize", "variants.prune", "variants.onnx_tools",
     "variants.precisions", "variants.backends", "variants.layers", "variants.sensitivity",
     "variants.openvino_backend", "variants.executorch_backend"},
    {"metrics", "results", "runner", "executors"},
    {"selection", "pareto", "hardware", "analysis", "deploy", "statistics", "benchmark", "loadgen", "roofs",
     "search"},
    {"reporting", "html_report", "artifact", "report_stage", "tracking", "sweep", "compare", "sensitivity_report",
     "targets"},
    {"pipeline", "progress", "cli", "api", "targets_import", ""},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported edge_opt module, names) for every import in the file, lazy ones included."""
    mod = _name(path)
    package = mod.rsplit(".", 1)[0] if "." in mod or path.name == "__init__.py" else ""
    if path.name == "__init__.py":
        package = mod
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("edge_opt"):
                target = node.module.removeprefix("edge_opt").lstrip(".")
            else:
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if (SRC / (target.replace(".", "/")) / f"{n}.py").is_file()]
            out += [(f"{target}.{n}".lstrip("."), []) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest:
                out.append((target, rest))
        elif isinstance(node, ast.Import):
            out += [(a.name.removeprefix("edge_opt").lstrip("."), []) for a in node.names if a.name.startswith("edge_opt")]
    return out


def test_every_module_is_placed_in_a_layer():
    assert sorted(set(map(_name, MODULES)) - set(LEVEL)) == []


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_imports_run_one_way_and_never_take_private_names(path):
    me = _name(path)
    for target, names in _imports(path):
        assert LEVEL[target] <= LEVEL[me], f"{me} (layer {LEVEL[me]}) imports {target} (layer {LEVEL[target]})"
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert not private, f"{me} imports private names {private} from {target}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_every_module_declares_its_public_face(path):
    mod = importlib.import_module("edge_opt" + (f".{_name(path)}" if _name(path) else ""))
    assert isinstance(mod.__all__, list)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{mod.__name__}.__all__ names {missing}, which it does not define"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_functions_are_at_most_60_lines(path):
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, f"{_name(path)}: {long}"


def _readme_api_table() -> list[tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        m = re.match(r"^\| `(edge_opt[\w.]*)` \| (.+) \|$", line)
        if m:
            rows.append((m.group(1), re.findall(r"`(\w+)`", m.group(2))))
    return rows


def test_readme_api_table_is_parsed():
    rows = _readme_api_table()
    assert len(rows) >= 10 and ("edge_opt.metrics", ) == (rows[0][0], )
    assert "collect_metrics" in rows[0][1]


@pytest.mark.parametrize("module,names", _readme_api_table(), ids=lambda v: v if isinstance(v, str) else None)
def test_readme_api_names_are_public_where_the_table_says(module, names):
    mod = importlib.import_module(module)
    for name in names:
        assert hasattr(mod, name), f"{module} has no {name}"
        assert name in mod.__all__, f"{name} is not in {module}.__all__"
