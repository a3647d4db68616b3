"""The documentation stays true to the code: the generated configuration reference is current, the README stays a
short guide, links resolve, the API table names what the modules export, and the source speaks without lineage
words."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from edge_opt.config import StudyConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md", *DOCS.glob("*.md")])
README_MAX_LINES = 300

# Internal lineage references ("seed 002", "the seeds' CNN", "the seed's keys"): say what the thing is instead.
# Real random seeds (``--seeds``, ``seed:``, ``seed_<n>/``) do not match.
LINEAGE = re.compile(r"(?<![-\w])(seeds?[ -]?0{0,2}[0-4]\b|seeds'|seed's)", re.IGNORECASE)


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", DOCS / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_current():
    gen = _generator()
    current = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert current == gen.render(), "docs/configuration.md is stale: run `python docs/gen_config_reference.py`"


def test_configuration_reference_check_flag(tmp_path, monkeypatch, capsys):
    gen = _generator()
    monkeypatch.setattr(gen, "TARGET", tmp_path / "configuration.md")
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    (tmp_path / "configuration.md").write_text("old\n", encoding="utf-8")
    assert gen.main(["--check"]) == 1
    assert "run `python docs/gen_config_reference.py`" in capsys.readouterr().err
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0


def test_configuration_reference_has_every_key():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [key for key in StudyConfig.model_fields if f"| `{key}` |" not in text]
    assert not missing, f"docs/configuration.md has no row for {missing}"


def test_generator_renders_types_readably():
    gen = _generator()
    fields = StudyConfig.model_fields
    assert gen.type_name(fields["layout"].annotation) == "auto / NCHW / NHWC / NHW"
    assert gen.type_name(fields["latency_budget_ms"].annotation) == "float | None"
    assert gen.type_name(fields["pruning_levels"].annotation) == "list[float]"


def test_generator_renders_sections(monkeypatch):
    """Per section of ``CONFIG_SECTIONS``: its docstring, a row per key with its description, a sub-table per nested
    model; keys no section lists still get rows."""
    from pydantic import BaseModel, Field

    from edge_opt import config
    from edge_opt.config import QuantizationConfig

    class Measuring(BaseModel):
        """How latency is measured."""

        threads: int = Field(default=1, ge=1, description="intra-op threads of every measurement")
        layout: str = Field(default="auto", description="a | in a description stays in its cell")
        quantization: QuantizationConfig = Field(default_factory=QuantizationConfig, description="int8 options")

    monkeypatch.setattr(config, "CONFIG_SECTIONS", {"Measuring": Measuring}, raising=False)
    text = _generator().render()
    assert "## Measuring\n\nHow latency is measured.\n" in text
    assert "| `threads` | int (≥ 1) | `1` | intra-op threads of every measurement |" in text
    assert "a \\| in a description" in text
    assert "### `quantization` keys" in text and "| `quantization.engine` | x86 / fbgemm / qnnpack |" in text
    assert "## Other keys" in text and "| `seed` |" in text


def test_readme_is_a_short_guide():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it to {README_MAX_LINES}"
    opening = " ".join(lines[:20])
    for word in ("fp32", "fp16", "bf16", "int8", "int8_mixed", "PyTorch", "ONNX Runtime", "OpenVINO", "ExecuTorch"):
        assert word in opening, f"README.md's opening paragraph does not name {word}"


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code blocks hold no links
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(page):
    broken = []
    for link in _links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", link):
            continue  # a web address
        path, _, anchor = link.partition("#")
        target = page.parent / path if path else page
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(link)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files or headings: {broken}"


def api_table() -> dict[str, list[str]]:
    """docs/api.md's ``| module | names |`` table: module → names."""
    lines = (DOCS / "api.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| module | names |")
    table: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        module, names = (cell.strip() for cell in line.strip("|").split("|"))
        table[module.strip("`")] = re.findall(r"`(\w+)`", names)
    return table


def test_api_table_covers_every_face():
    faces = set(api_table())
    expected = {"edge_opt", "edge_opt.pipeline", "edge_opt.api"} | {
        f"edge_opt.{p.name}" for p in (ROOT / "src" / "edge_opt").iterdir() if (p / "__init__.py").is_file()
    }
    assert expected <= faces, f"docs/api.md's table lacks {sorted(expected - faces)}"


@pytest.mark.parametrize("module", sorted(api_table()))
def test_api_table_names_are_exported(module):
    names = api_table()[module]
    exported = importlib.import_module(module).__all__
    assert names, f"docs/api.md lists no names for {module}"
    assert not [n for n in names if n not in exported], f"{module}.__all__ lacks names docs/api.md gives it"


def test_no_lineage_words_in_the_source():
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "src" / "edge_opt").rglob("*"))
        if path.is_file() and path.suffix in (".py", ".j2", ".html", ".txt", ".md")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if LINEAGE.search(line)
    ]
    assert not hits, "say what the thing is, not where it came from:\n" + "\n".join(hits)
