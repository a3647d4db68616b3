"""Write docs/configuration.md from the study's pydantic models, so the reference cannot drift from the code.

    python docs/gen_config_reference.py           # (re)write docs/configuration.md
    python docs/gen_config_reference.py --check   # exit 1 when docs/configuration.md is not what render() gives

``edge_opt.config.CONFIG_SECTIONS`` maps a section title to a pydantic model whose fields are that section's
top-level YAML keys, in order (its docstring introduces the section; each field's ``Field(description=...)`` is
its row). A field whose type holds a model (``quantization``, ``deployment``, ``targets`` …) gets a sub-table of
that model's keys (``quantization.calibration_method`` …). Without ``CONFIG_SECTIONS`` every ``StudyConfig`` key is
one section. Keys of ``StudyConfig`` that no section lists are rendered last, so the page always holds every key.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edge_opt import config

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "configuration.md"
COMMAND = "python docs/gen_config_reference.py"

INTRO = """\
A study is one YAML file, read with PyYAML's safe loader into an immutable pydantic model
(`edge_opt.config.StudyConfig`). Unknown keys and repeated keys are errors, and every invalid value gives one
`error:` line naming the key, what is allowed and what was given (values shortened: an error line stays short
whatever the input; a config of more than 100,000 values, YAML aliases counted each time they are used, is
refused). Names that live in registries (model, data set, backends, precisions) are checked against them, and
model parameters are checked before anything is written: a registry model is first built on PyTorch's `meta`
device, so a wrong type or a model too big to train here (training needs about 16 bytes per parameter; more
than half of the machine's memory) exits 2 at once. Any key is also a keyword of `edge_opt.optimize`.

`configs/default.yaml` is a complete example; the topic pages say what the keys do in context:
[bring your own model and data](bring-your-own.md), [what the numbers mean](numbers.md),
[runtimes and int8](runtimes.md), [search](search.md), [targets](targets.md), [deployment](deployment.md),
[tracking](tracking.md), [Ray](ray.md)."""


def sections() -> dict[str, type[BaseModel]]:
    """Section title → model of its top-level keys (``CONFIG_SECTIONS``; one section of every key without it)."""
    found = getattr(config, "CONFIG_SECTIONS", None)
    if found:
        return dict(found)
    return {"Study keys": config.StudyConfig}


def _doc(model: type[BaseModel]) -> str:
    """The model's own docstring (not an inherited one), as Markdown."""
    doc = model.__dict__.get("__doc__") or ""
    return inspect.cleandoc(doc).replace("``", "`") if doc else ""


def _cell(text: str) -> str:
    """Text that stays in one table cell."""
    return " ".join(text.replace("``", "`").split()).replace("|", "\\|")


def _number(x: Any) -> str:
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 10_000 else str(x)
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


def type_name(tp: Any) -> str:
    """A readable name for an annotation: Literal → its values, ``X | None``, ``list[X]``, a model → ``mapping``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "None"
    if tp is Any:
        return "any"
    if origin is typing.Literal:
        return " / ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is dict:
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _bounds(field: FieldInfo) -> str:
    """The field's numeric and length constraints, e.g. ``≥ 1, ≤ 1,024``."""
    out = []
    for m in field.metadata:
        for cls, attr, sign in (
            (annotated_types.Gt, "gt", ">"),
            (annotated_types.Ge, "ge", "≥"),
            (annotated_types.Lt, "lt", "<"),
            (annotated_types.Le, "le", "≤"),
        ):
            if isinstance(m, cls):
                out.append(f"{sign} {_number(getattr(m, attr))}")
        if isinstance(m, annotated_types.MinLen):
            out.append("non-empty" if m.min_length == 1 else f"at least {m.min_length} items")
        if isinstance(m, annotated_types.MaxLen):
            out.append(f"at most {_number(m.max_length)} items")
    return ", ".join(out)


def field_type(field: FieldInfo) -> str:
    """Type column: the readable type, then its constraints."""
    bounds = _bounds(field)
    return type_name(field.annotation) + (f" ({bounds})" if bounds else "")


def value(v: Any) -> str:
    """A default as YAML writes it (flow style)."""
    if v is None:
        return "null"
    if isinstance(v, BaseModel):
        return value(v.model_dump(exclude_defaults=True))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {value(x)}" for k, x in v.items()) + "}"
    return _number(v)


def default(field: FieldInfo, nested: bool) -> str:
    """Default column: the value, ``required``, or a pointer to the sub-table for a nested model."""
    if field.default_factory is not None:
        v = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        v = field.default
    if nested and isinstance(v, BaseModel) and not v.model_dump(exclude_defaults=True):
        return "see below"
    return f"`{value(v)}`"


def nested_models(tp: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    """The models an annotation holds, each with whether it sits in a list (``targets: list[TargetConfig]``)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp, False
        return
    origin = typing.get_origin(tp)
    for arg in typing.get_args(tp):
        for model, listed in nested_models(arg):
            yield model, listed or origin is list


def table(fields: dict[str, FieldInfo], prefix: str = "") -> list[str]:
    """The key | type | default | description table of some fields (keys written ``prefix + name``)."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in fields.items():
        nested = any(True for _ in nested_models(field.annotation))
        lines.append(
            f"| `{prefix}{name}` | {_cell(field_type(field))} | {_cell(default(field, nested))} "
            f"| {_cell(field.description or '')} |"
        )
    return lines


def sub_tables(fields: dict[str, FieldInfo], prefix: str = "") -> list[str]:
    """A sub-table for each nested model of these fields, and theirs in turn."""
    out: list[str] = []
    for name, field in fields.items():
        for sub, listed in nested_models(field.annotation):
            path = f"{prefix}{name}{'[]' if listed else ''}."
            out += ["", f"### `{path.rstrip('.')}` keys", ""]
            doc = _doc(sub)
            out += [doc, ""] if doc else []
            out += table(sub.model_fields, path)
            out += sub_tables(sub.model_fields, path)
    return out


def _legacy() -> list[str]:
    keys = ", ".join(f"`{old}` → `quantization.{new}`" for old, new in config.LEGACY_QUANTIZATION_KEYS.items())
    return [
        "",
        "## Flat int8 keys of earlier releases",
        "",
        f"Still read, and moved into `quantization:` ({keys}); they give the same point keys. Giving a flat key",
        "and its `quantization.` key together is an error naming both. `reproducibility.json` records the new",
        "spelling.",
    ]


def render() -> str:
    """The whole of docs/configuration.md."""
    lines = [
        f"<!-- Generated by docs/gen_config_reference.py from edge_opt.config: do not edit; run `{COMMAND}`. -->",
        "",
        "# Configuration reference",
        "",
        INTRO,
    ]
    groups = {title: (_doc(model), dict(model.model_fields)) for title, model in sections().items()}
    listed = {key for _, fields in groups.values() for key in fields}
    rest = {k: f for k, f in config.StudyConfig.model_fields.items() if k not in listed}
    if rest:
        groups["Other keys"] = ("", rest)
    for title, (doc, fields) in groups.items():
        lines += ["", f"## {title}", ""]
        lines += [doc, ""] if doc else []
        lines += table(fields)
        lines += sub_tables(fields)
    lines += _legacy()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is stale")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run `{COMMAND}` and commit the result", file=sys.stderr)
            return 1
        print(f"{TARGET.relative_to(ROOT)} is up to date")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
