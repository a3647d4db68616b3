"""The interactive part of ``report.html`` and ``comparison.html``, built with Bokeh (standalone, JS inlined).

Bokeh was chosen over Plotly and Vega-Lite: it has a sortable data table, filter widgets and one shared data
source for plots and table (selecting a point selects its row) in ~1.9 MB of inlined JavaScript, where Plotly's
bundle alone is ~4.5 MB and has no sortable table, and Vega-Lite has no table at all. The few lines of JavaScript
here (``_APPLY_JS``, ``_DETAILS_JS``) are Bokeh ``CustomJS`` callbacks: the filter predicate and the details panel,
which no library offers for our columns.

Everything is built from the sweep table's columns as they come: a column added by another stage (flash, RAM,
recovery, ...) shows in the table, the search index and the details without a change here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from bokeh.embed import components
from bokeh.layouts import column, gridplot, row
from bokeh.models import (
    CDSView,
    ColumnDataSource,
    CustomJS,
    FactorRange,
    GroupFilter,
    HoverTool,
    IndexFilter,
    IntersectionFilter,
    Range1d,
    TapTool,
)
from bokeh.models.annotations import Legend, LegendItem, Slope, Span, Whisker
from bokeh.models.widgets import (
    DataTable,
    Div,
    MultiChoice,
    ScientificFormatter,
    Select,
    StringFormatter,
    TableColumn,
    TextInput,
)
from bokeh.palettes import Category10_10
from bokeh.plotting import figure
from bokeh.resources import Component, Resources
from bokeh.transform import linear_cmap

__all__ = [
    "BOKEH_COMPONENTS",
    "InteractivePage",
    "bokeh_resources",
    "compare_page",
    "page_extras",
    "search_page",
    "sweep_page",
]

# Only the Bokeh bundles the page uses (no WebGL, no MathJax): ~1.9 MB inlined.
BOKEH_COMPONENTS: list[Component] = ["bokeh", "bokeh-widgets", "bokeh-tables"]
# (no star: the recommended point is the one star)
MARKERS = ["circle", "square", "triangle", "diamond", "inverted_triangle", "hex", "triangle_pin", "plus", "square_pin"]
# x axes of the Pareto plots, in order (each only when the table has it): column, name, CI column, and the units
# it may be shown in, smallest first, with their factor from the column's unit
X_AXES = (
    ("latency_ms", "latency", "latency_ci95_ms", (("µs", 1e3), ("ms", 1.0))),
    ("energy_proxy_j", "energy", "energy_ci95_j", (("µJ", 1e6), ("mJ", 1e3), ("J", 1.0))),
    ("memory_mb", "memory", None, (("kB", 1e3), ("MB", 1.0))),
)
FROZEN = ["status", "backend", "precision", "pruning_level"]  # the table's first columns, kept in view
LEAD = ["latency_ms", "latency_ci95_ms", "memory_mb", "energy_proxy_j", "measured_on", "rejected_reason"]


@dataclass(frozen=True)
class InteractivePage:
    """Bokeh's ``<script>`` (the document) and the ``<div>`` it renders into."""

    script: str
    div: str


def bokeh_resources() -> str:
    """The inlined Bokeh JavaScript (``<script>`` tags, no URL)."""
    return str(Resources(mode="inline", components=BOKEH_COMPONENTS).render_js())


def _cell(v: Any) -> Any:
    """A value as the data source carries it: NaN/None → NaN for numbers, '' for anything else."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return math.nan
    if isinstance(v, bool | int | float | str):
        return v
    return str(v)


def _source_data(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """Column → values; text columns get '' for missing values, numbers keep NaN."""
    data: dict[str, list[Any]] = {}
    for c in frame.columns:
        s = frame[c]
        if s.isna().all():  # an empty column (e.g. calibration of a grid without it) reads as text
            data[str(c)] = [""] * len(s)
        elif pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            data[str(c)] = [_cell(v) for v in s.tolist()]
        else:
            data[str(c)] = ["" if pd.isna(v) else str(v) for v in s.tolist()]
    return data


def _status(frame: pd.DataFrame, rec_key: str | None) -> list[str]:
    """★ recommended, ✓ accepted, ✗ + the budget a rejected row broke, or the error."""
    out = []
    for _, r in frame.iterrows():
        err, why = r.get("error"), r.get("rejected_reason")
        if rec_key is not None and r.get("key") == rec_key:
            out.append("★ recommended")
        elif isinstance(err, str) and err:
            out.append(f"error: {err}")
        elif bool(r.get("accepted")):
            out.append("✓ accepted")
        else:
            out.append(f"✗ {why}" if isinstance(why, str) and why else "✗ rejected")
    return out


def _search_text(frame: pd.DataFrame) -> list[str]:
    """Each row's values as one lower-case string (what the text search matches)."""
    return [" ".join("" if pd.isna(v) else str(v) for v in r).lower() for r in frame.itertuples(index=False)]


def _prepared(frame: pd.DataFrame, rec_key: str | None) -> pd.DataFrame:
    """The sweep rows with the page's helper columns: status, a text index for search, the level as a label."""
    f = frame.reset_index(drop=True).copy()
    f.insert(0, "status", _status(f, rec_key))
    f["_text"] = _search_text(f)
    f["_level"] = [_level_label(v) for v in f.get("pruning_level", [""] * len(f))]
    if "measured_on" not in f.columns:
        f["measured_on"] = "host"
    return f


def _level_label(v: Any) -> str:
    """A pruning level as the page shows it and keys its parent's sensitivity by (0.5, not 0.50)."""
    return f"{v:g}" if isinstance(v, float | int) else str(v)


def _levels(values: Iterable[Any]) -> list[str]:
    """The distinct values as text, numbers in numeric order (0, 0.25, 0.5), then the rest."""

    def order(s: str) -> tuple[float, str]:
        try:
            return float(s), s
        except ValueError:
            return math.inf, s

    return sorted({str(v) for v in values}, key=order)


def _columns(frame: pd.DataFrame, first: Sequence[str]) -> list[TableColumn]:
    """A table column per data column (helpers starting with '_' left out): the given ones first, then the rest."""
    names = [c for c in first if c in frame.columns]
    names += [c for c in frame.columns if c not in names and not str(c).startswith("_")]
    cols = []
    for c in names:
        numeric = pd.api.types.is_float_dtype(frame[c]) and frame[c].notna().any()  # (empty ones are text)
        fmt = ScientificFormatter(precision=4, power_limit_high=6, power_limit_low=-4) if numeric else StringFormatter()
        width = 260 if c in ("status", "rejected_reason", "error", "why") else 110
        cols.append(TableColumn(field=str(c), title=str(c), formatter=fmt, width=width))
    return cols


@dataclass(frozen=True)
class _Axis:
    """An x axis of the Pareto plots: the source's column of values in ``unit`` (and of their CIs, if any)."""

    column: str
    field: str
    label: str
    ci_field: str | None


def _unit(values: pd.Series, units: Sequence[tuple[str, float]]) -> tuple[str, float]:
    """The smallest unit in which the largest value stays under 1000 (the largest unit when none does)."""
    top = float(pd.to_numeric(values, errors="coerce").abs().max())
    return next(((u, k) for u, k in units if top * k < 1000), units[-1])


def _axes(src: ColumnDataSource, frame: pd.DataFrame) -> list[_Axis]:
    """The x axes the table has values for, each with its values (and CIs) in a unit that fits them added to
    ``src`` (µs for sub-millisecond latencies, mJ, kB, ...)."""
    axes = []
    for col, name, ci, units in X_AXES:
        if not _has_values(frame, col):
            continue
        unit, k = _unit(frame[col], units)
        src.data[f"_x_{col}"] = [_cell(v * k) for v in pd.to_numeric(frame[col], errors="coerce")]
        ci_field = f"_ci_{col}" if ci is not None and ci in frame.columns else None
        if ci_field is not None:
            src.data[ci_field] = [_cell(v * k) for v in pd.to_numeric(frame[str(ci)], errors="coerce")]
        axes.append(_Axis(col, f"_x_{col}", f"{name} ({unit})", ci_field))
    return axes


def _tooltips(frame: pd.DataFrame, y: str, axes: Sequence[_Axis]) -> list[tuple[str, str]]:
    """Hover lines for the columns the table has: config point, kernels, int8 MAC share, the values (in their
    axes' units) with CIs."""
    want = [
        ("point", "@backend @precision p=@_level @calibration"),
        ("where", "@measured_on"),
        ("status", "@status"),
        ("kernels", "@kernel_precision"),
        ("int8 MAC share", "@{int8_mac_fraction}{0.00}"),
        (y, f"@{{{y}}}{{0.0000}}"),
    ]
    needs = {"kernels": "kernel_precision", "int8 MAC share": "int8_mac_fraction"}
    tips = [(k, v) for k, v in want if needs.get(k, "status") in frame.columns]
    for a in axes:
        ci = f" ± @{{{a.ci_field}}}{{0.000}}" if a.ci_field else ""
        tips.append((a.label, f"@{{{a.field}}}{{0.000}}{ci}"))
    return tips


def _has_values(frame: pd.DataFrame, c: str) -> bool:
    return c in frame.columns and pd.to_numeric(frame[c], errors="coerce").notna().any()


def _legend_panel(
    title: str, values: list[str], colors: dict[str, str] | None, markers: dict[str, str] | None
) -> tuple[Any, list[Any]]:
    """A small figure holding one legend whose entries toggle a filter: each entry's renderer draws nothing in
    the plot (one NaN point); clicking the entry hides it, which the filter callback reads (Bokeh legends hide
    renderers, not rows of a shared source)."""
    p = figure(
        width=170,
        height=48 + 24 * len(values),
        toolbar_location=None,
        outline_line_color=None,
        tools="",
        min_border=0,
        x_range=Range1d(start=0, end=1),
        y_range=Range1d(start=0, end=1),
    )
    p.axis.visible = False
    p.grid.visible = False
    items, rends = [], []
    for v in values:
        r: Any = p.scatter(
            x=[math.nan],
            y=[math.nan],
            size=10,
            name=v,
            marker=(markers or {}).get(v, "circle"),
            color=(colors or {}).get(v, "#777777"),
        )
        rends.append(r)
        items.append(LegendItem(label=v, renderers=[r]))
    p.add_layout(Legend(items=items, title=title, click_policy="hide", location="top_left", border_line_alpha=0))
    return p, rends


_APPLY_JS = """
const d = src.data, n = d.status.length;
const off = (rs) => new Set(rs.filter((r) => !r.visible).map((r) => r.name));
const hb = off(legend_backend), hp = off(legend_precision), hl = off(legend_level);
const q = (search.value_input || search.value || '').trim().toLowerCase();
const idx = [];
for (let i = 0; i < n; i++) {
  const b = String(d.backend[i]), p = String(d.precision[i]);
  if (hb.has(b) || hp.has(p) || hl.has(String(d._level[i]))) continue;
  if (backend.value.length && !backend.value.includes(b)) continue;
  if (precision.value.length && !precision.value.includes(p)) continue;
  const acc = d.accepted ? Boolean(d.accepted[i]) : true;
  if (accepted.value === 'accepted' && !acc) continue;
  if (accepted.value === 'rejected' && acc) continue;
  if (target.value !== 'all' && String(d.measured_on[i]) !== target.value) continue;
  if (q && !d._text[i].includes(q)) continue;
  idx.push(i);
}
filt.indices = idx;
count.text = `${idx.length} of ${n} rows shown`;
document.documentElement.dataset.rowsShown = String(idx.length);
"""

# A legend entry's click runs the filter callback found by name. Bokeh's Legend rebuilds its entries (and their
# marker canvases, which then stay blank) whenever a model reachable from its renderers changes: a renderer
# holding the filter callback itself would reach the filter, the widgets and the source, and every filter change
# would blank the legends.
APPLY_NAME = "sweep_apply"
_TOGGLE_JS = f"""
const apply = cb_obj.document.get_model_by_name('{APPLY_NAME}');
if (apply !== null) {{ apply.execute(cb_obj); }}
"""

_DETAILS_JS = """
const i = src.selected.indices.length ? src.selected.indices[0] : null;
const box = document.getElementById('details');
if (box === null) { return; }
const ents = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'};
const esc = (v) => String(v).replace(/[&<>"']/g, (c) => ents[c]);
const fmt = (v) => (typeof v === 'number') ? (Number.isFinite(v) ? String(+v.toPrecision(6)) : '') : String(v ?? '');
const cell = (v) => esc(typeof v === 'object' ? JSON.stringify(v) : fmt(v));
const kv = (obj) => '<table class="kv">' + Object.entries(obj).filter(([k, v]) => fmt(v) !== '')
  .map(([k, v]) => `<tr><th class="l">${esc(k)}</th><td class="l" data-col="${esc(k)}">${cell(v)}</td></tr>`)
  .join('') + '</table>';
if (i === null) { box.innerHTML = '<p>Click a point or a row to see its details.</p>'; box.dataset.key = ''; return; }
const d = src.data, row = {};
for (const c of Object.keys(d)) { if (!c.startsWith('_')) { row[c] = d[c][i]; } }
const key = String(row.key ?? '');
const where = esc(row.measured_on);
let html = `<h3>${esc(row.backend)} · ${esc(row.precision)} · pruning ${esc(d._level[i])} (${where})</h3>`;
html += `<p class="status">${esc(row.status)}</p>`;
const fl = String(row.float_layers ?? '').split(/;\\s*/).filter((l) => l !== '');
html += `<p class="float-layers"><b>Layers running float:</b> ${fl.length ? esc(fl.join(', ')) : 'none recorded'}</p>`;
if (fmt(row.build_s) !== '') { html += `<p class="build-time"><b>Build time:</b> ${esc(fmt(row.build_s))} s</p>`; }
if (extras.build[key]) { html += '<h4>Build</h4>' + kv(extras.build[key]); }
const dep = extras.deployment[key];
if (dep) {
  html += '<h4>LoadGen scenarios</h4><table class="kv"><tr>'
    + dep.columns.map((c) => `<th>${esc(c)}</th>`).join('') + '</tr>'
    + dep.rows.map((r) => '<tr>' + r.map((v) => `<td>${esc(fmt(v))}</td>`).join('') + '</tr>').join('') + '</table>';
}
const fp = extras.fingerprints[String(row.measured_on)];
if (fp) { html += '<h4>Target fingerprint</h4>' + kv(fp); }
const sens = extras.sensitivity[`${d._level[i]}|${row.backend}`];
if (sens && String(row.precision).startsWith('int8')) {
  html += `<h4>int8 sensitivity of its parent (pruning ${esc(d._level[i])}, ${esc(row.backend)}), per layer</h4>`
    + '<table class="kv sensitivity"><tr>'
    + sens.columns.map((c) => `<th>${esc(c)}</th>`).join('') + '</tr>'
    + sens.rows.map((r) => '<tr>' + r.map((v) => `<td>${esc(fmt(v))}</td>`).join('') + '</tr>').join('') + '</table>';
}
html += '<h4>All columns</h4>' + kv(row);
box.innerHTML = html;
box.dataset.key = key;
box.dataset.row = String(i);
"""


def _figure(title: str, xlabel: str, ylabel: str) -> Any:
    p = figure(
        title=title,
        x_axis_label=xlabel,
        y_axis_label=ylabel,
        width=370,
        height=340,
        tools="pan,wheel_zoom,box_zoom,reset,tap,save",
        toolbar_location="above",
    )
    p.min_border_left = 60
    return p


@dataclass(frozen=True)
class _Encoding:
    colors: dict[str, str]
    markers: dict[str, str]


def _encoding(frame: pd.DataFrame) -> _Encoding:
    backends = _levels(frame["backend"])
    precisions = _levels(frame["precision"])
    return _Encoding(
        {b: Category10_10[i % 10] for i, b in enumerate(backends)},
        {p: MARKERS[i % len(MARKERS)] for i, p in enumerate(precisions)},
    )


def _plots(
    src: ColumnDataSource, frame: pd.DataFrame, filt: IndexFilter, y: str, rec_i: int | None, y_label: str
) -> tuple[list[list[Any]], Any]:
    """One row of Pareto plots (metric vs latency / energy / memory) per place measured; the first plot carries
    the legends."""
    enc = _encoding(frame)
    color = [enc.colors[str(b)] for b in frame["backend"]]
    marker = [enc.markers[str(p)] for p in frame["precision"]]
    src.data["_color"] = color
    src.data["_marker"] = marker
    grid: list[list[Any]] = []
    axes = _axes(src, frame)
    tips = _tooltips(frame, y, axes)
    wheres = list(dict.fromkeys(str(w) for w in frame["measured_on"]))
    for where in wheres:
        line = []
        view_filter = IntersectionFilter(operands=[filt, GroupFilter(column_name="measured_on", group=where)])
        for a in axes:
            title = f"{y_label} vs {a.label}" + (f" — {where}" if len(wheres) > 1 else "")
            p = _figure(title, a.label, y_label)
            r = p.scatter(
                x=a.field,
                y=y,
                source=src,
                view=CDSView(filter=view_filter),
                size=11,
                color="_color",
                marker="_marker",
                fill_alpha=0.7,
                name=f"points:{a.column}:{where}",
            )
            hover = [r]
            if rec_i is not None and str(frame["measured_on"].iloc[rec_i]) == where:
                hover.append(_star(p, src, a, y, rec_i, where))
            p.add_tools(HoverTool(renderers=hover, tooltips=tips))
            p.select_one(TapTool).renderers = hover
            line.append(p)
        grid.append(line)
    return grid, enc


def _star(p: Any, src: ColumnDataSource, a: _Axis, y: str, rec_i: int, where: str) -> Any:
    """The recommended point as a filled gold star on top of the others, in a view of its own: no filter or
    legend toggle hides it."""
    return p.scatter(
        x=a.field,
        y=y,
        source=src,
        view=CDSView(filter=IndexFilter(indices=[rec_i])),
        size=26,
        marker="star",
        fill_color="gold",
        fill_alpha=1.0,
        line_color="#7a5c00",
        line_width=1.5,
        name=f"recommended:{a.column}:{where}",
    )


def _widgets(frame: pd.DataFrame) -> dict[str, Any]:
    backends: list[Any] = _levels(frame["backend"])
    precisions: list[Any] = _levels(frame["precision"])
    wheres: list[Any] = ["all", *dict.fromkeys(str(w) for w in frame["measured_on"])]
    accepted: list[Any] = ["all", "accepted", "rejected"]
    return {
        "backend": MultiChoice(title="backend", options=backends, value=[], width=220, name="f_backend"),
        "precision": MultiChoice(title="precision", options=precisions, value=[], width=220, name="f_precision"),
        "accepted": Select(title="accepted", options=accepted, value="all", width=120, name="f_accepted"),
        "target": Select(title="measured on", options=wheres, value="all", width=140, name="f_target"),
        "search": TextInput(title="search", placeholder="any text in a row", width=220, name="f_search"),
    }


def _table(src: ColumnDataSource, filt: Any, cols: list[TableColumn], frozen: int, height: int, name: str) -> Any:
    """A sortable DataTable over ``src`` showing the rows ``filt`` keeps (the page's CSS class: edge-NAME-table)."""
    return DataTable(
        source=src,
        view=CDSView(filter=filt),
        columns=cols,
        frozen_columns=frozen,
        width=1300,
        height=height,
        sortable=True,
        index_position=None,
        autosize_mode="none",
        reorderable=False,
        name=f"{name}_table",
        css_classes=[f"edge-{name}-table"],
    )


def _legends(f: pd.DataFrame, enc: _Encoding) -> tuple[dict[str, list[Any]], list[Any]]:
    """The backend, precision and pruning-level legends: their toggle renderers by group, and their panels."""
    legends: dict[str, list[Any]] = {}
    panels = []
    for key, title, values, colors, markers in (
        ("backend", "backend", _levels(f["backend"]), enc.colors, None),
        ("precision", "precision", _levels(f["precision"]), None, enc.markers),
        ("level", "pruning level", _levels(f["_level"]), None, None),
    ):
        panel, legends[key] = _legend_panel(title, values, colors, markers)
        panels.append(panel)
    return legends, panels


def _wire_filters(src: ColumnDataSource, filt: IndexFilter, legends: dict[str, list[Any]], w: dict[str, Any]) -> Div:
    """Run the filter callback on every widget change and legend click; returns the "N of M rows shown" line."""
    n = len(src.data["status"])
    count = Div(text=f"{n} of {n} rows shown", name="row_count")
    apply = CustomJS(
        args={
            "src": src,
            "filt": filt,
            "count": count,
            "legend_backend": legends["backend"],
            "legend_precision": legends["precision"],
            "legend_level": legends["level"],
            **w,
        },
        code=_APPLY_JS,
        name=APPLY_NAME,
    )
    for name, widget in w.items():
        widget.js_on_change("value_input" if name == "search" else "value", apply)
    toggle = CustomJS(code=_TOGGLE_JS)  # holds no model: see _TOGGLE_JS
    for rends in legends.values():
        for r in rends:
            r.js_on_change("visible", toggle)
    return count


def sweep_page(
    frame: pd.DataFrame, y: str, rec_key: str | None, extras: dict[str, Any], y_label: str | None = None
) -> InteractivePage | None:
    """Pareto plots, filters, the pinned recommended row and the sortable sweep table over one shared source;
    a click on a point or a row fills ``#details`` (an element of the page) from the row and ``extras``
    (build metadata, LoadGen scenarios by row key, fingerprints by target, sensitivity).

    Returns None for a table without rows or without the columns the plots need.
    """
    need = {"backend", "precision", y}
    if frame.empty or not need <= set(frame.columns):
        return None
    f = _prepared(frame, rec_key)
    src = ColumnDataSource(_source_data(f), name="sweep_source")
    rec_idx = [i for i, s in enumerate(f["status"]) if s.startswith("★")]
    filt = IndexFilter(indices=list(range(len(f))), name="sweep_filter")
    grid, enc = _plots(src, f, filt, y, rec_idx[0] if rec_idx else None, y_label or y)
    legends, panels = _legends(f, enc)
    cols = _columns(f, [*FROZEN, y, *LEAD])
    frozen = len([c for c in FROZEN if c in f.columns])
    table = _table(src, filt, cols, frozen, 420, "sweep")
    pinned = _table(src, IndexFilter(indices=rec_idx), cols, frozen, 80, "pinned")
    pinned.sortable = False
    w = _widgets(f)
    count = _wire_filters(src, filt, legends, w)
    src.selected.js_on_change("indices", CustomJS(args={"src": src, "extras": extras}, code=_DETAILS_JS))
    parts: list[Any] = [row(column(*panels), gridplot(grid, toolbar_location="right"))] if grid else []
    parts += [
        row(*w.values()),
        count,
        Div(text="<b>Recommended</b> (pinned):" if rec_idx else "<b>No recommended row</b>"),
        pinned,
        Div(text="<b>All rows</b> (click a header to sort, a row or a point for details):"),
        table,
    ]
    return _page(column(*parts, name="explore"))


_ID = re.compile(r'"id":"(p\d+)"')
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _page(root: Any, prefix: str = "p") -> InteractivePage:
    """Bokeh's script and div for ``root``, with its ids renumbered in order of appearance (``prefix`` keeps two
    documents of one page apart).

    Bokeh numbers models from a per-process counter and names the document and root element by random UUIDs;
    renumbering them makes the same study give the same page (``edge-opt report`` rebuilds it byte for byte).
    Only Bokeh's own ids are touched: the ``"id":"p…"`` tokens of its JSON, then those tokens and the UUIDs
    wherever they stand quoted (render items, the div's attributes).
    """
    script, div = (str(x) for x in components(root))
    ids: dict[str, str] = {}
    for m in _ID.finditer(script):
        ids.setdefault(m.group(1), f"{prefix}{1000 + len(ids)}")
    for u in dict.fromkeys(_UUID.findall(div + script)):
        ids[u] = f"edge-opt-{prefix}{len(ids)}"

    def swap(text: str) -> str:
        return re.sub(r'(?<=["\'])(p\d+|[0-9a-f-]{36})(?=["\'])', lambda m: ids.get(m.group(1), m.group(1)), text)

    return InteractivePage(swap(script), swap(div))


def _search_box(src: ColumnDataSource, filt: IndexFilter, name: str) -> TextInput:
    """A text box that keeps the rows whose text (the source's ``_text``) holds what is typed."""
    search = TextInput(title="search", placeholder="any text in a row", width=260, name=f"{name}_search")
    search.js_on_change(
        "value_input",
        CustomJS(
            args={"src": src, "filt": filt, "search": search},
            code="const q = search.value_input.trim().toLowerCase(); const t = src.data._text;"
            "filt.indices = [...t.keys()].filter((i) => !q || t[i].includes(q));",
        ),
    )
    return search


def _records(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "columns": [str(c) for c in frame.columns],
        "rows": [[_json_safe(v) for v in r] for r in frame.itertuples(index=False)],
    }


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


def page_extras(out: Path, sweep: pd.DataFrame, summary: dict[str, Any]) -> dict[str, Any]:
    """What the details panel shows beyond the row: each variant's build metadata (its ``metadata_file``),
    LoadGen scenarios of the recommended and baseline rows, each target's fingerprint, the sensitivity table by
    parent."""
    build: dict[str, Any] = {}
    if "metadata_file" in sweep.columns and "key" in sweep.columns:
        for key, rel in zip(sweep["key"], sweep["metadata_file"]):
            path = out / str(rel)
            if isinstance(rel, str) and path.is_file():
                meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
                build[str(key)] = {k: _json_safe(v) for k, v in meta.items()}
    return {
        "build": build,
        "deployment": _deployment_by_key(out, sweep, summary),
        "fingerprints": {n: t.get("fingerprint") or {} for n, t in (summary.get("targets") or {}).items()},
        "sensitivity": _sensitivity_by_parent(_csv(out / "sensitivity.csv")),
    }


def _sensitivity_by_parent(sens: pd.DataFrame) -> dict[str, Any]:
    """sensitivity.csv's rows by parent and backend ("0.5|onnxruntime"): a variant's details show its own parent's
    layers only (with the recovery column, when a recovered parent's pass ran too)."""
    if sens.empty or not {"pruning_level", "backend"} <= set(sens.columns):
        return {}
    groups = sens.groupby(["pruning_level", "backend"], sort=True)
    return {
        f"{_level_label(level)}|{backend}": _records(g.drop(columns=["pruning_level", "backend"]))
        for (level, backend), g in groups
    }


def _csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path).drop(columns=["config_hash"], errors="ignore")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def _deployment_by_key(out: Path, sweep: pd.DataFrame, summary: dict[str, Any]) -> dict[str, Any]:
    """deployment.csv's scenarios, under the key of the row each simulated model is (recommended, baseline)."""
    dep = _csv(out / "deployment.csv")
    if dep.empty or "model" not in dep.columns or "key" not in sweep.columns:
        return {}
    keys: dict[str, str] = {}
    rec = summary.get("recommended") or {}
    if rec.get("key"):
        keys["recommended"] = str(rec["key"])
    base = summary.get("baseline") or {}
    host = sweep[sweep["measured_on"] == "host"] if "measured_on" in sweep.columns else sweep
    match = host[
        (host["backend"] == base.get("backend"))
        & (host["precision"] == base.get("precision"))
        & (host["pruning_level"] == base.get("pruning_level"))
    ]
    if len(match):
        keys["baseline"] = str(match["key"].iloc[0])
    show = [
        c
        for c in ("scenario", "where", "p50_ms", "p99_ms", "qps", "loadgen_verdict", "batch_latency_ms")
        if c in dep.columns
    ]
    return {key: _records(dep.loc[dep["model"] == label, show]) for label, key in keys.items()}


def _diff_figure(src: ColumnDataSource, filt: IndexFilter, labels: list[str], tips: list[tuple[str, str]]) -> Any:
    """B − A latency per matched point with its 95 % CI as whiskers, a line at no change."""
    diff = figure(
        title="B − A latency (ms) with 95 % CI",
        y_range=FactorRange(factors=labels),
        width=560,
        height=max(240, 40 + 26 * len(labels)),
        tools="pan,wheel_zoom,reset,tap,save",
        toolbar_location="above",
        x_axis_label="B − A (ms)",
    )
    diff.add_layout(Span(location=0, dimension="height", line_color="#888888"))  # no change
    diff.add_layout(Whisker(source=src, base="_label", lower="_lo", upper="_hi", dimension="width"))
    r = diff.scatter("latency_diff_ms", "_label", source=src, view=CDSView(filter=filt), size=10, color="_color")
    diff.add_tools(HoverTool(renderers=[r], tooltips=tips))
    return diff


def compare_page(table: pd.DataFrame) -> InteractivePage | None:
    """Two studies' matched points: B's latency against A's (the diagonal: no change), B − A per point with its
    95 % CI as whiskers, and the comparison table (sortable, searchable) over the same source.

    Returns None without matched points."""
    need = {"latency_ms_a", "latency_ms_b", "latency_diff_ms", "latency_diff_ci95_ms", "backend", "precision"}
    if table.empty or not need <= set(table.columns):
        return None
    f = table.reset_index(drop=True).copy()
    f["_label"] = [
        f"{r.backend} {r.precision} p{r.pruning_level:g}"
        + (f" {r.calibration}" if isinstance(r.calibration, str) and r.calibration else "")
        for r in f.itertuples()
    ]
    f["_lo"] = f["latency_diff_ms"] - f["latency_diff_ci95_ms"].fillna(0)
    f["_hi"] = f["latency_diff_ms"] + f["latency_diff_ci95_ms"].fillna(0)
    f["_color"] = ["#d62728" if bool(v) else "#1f77b4" for v in f.get("significant", [False] * len(f))]
    f["_text"] = _search_text(f)
    src = ColumnDataSource(_source_data(f), name="comparison_source")
    filt = IndexFilter(indices=list(range(len(f))), name="comparison_filter")
    tips = [
        ("point", "@_label"),
        ("latency A", "@{latency_ms_a}{0.0000} ± @{latency_ci95_ms_a}{0.0000} ms"),
        ("latency B", "@{latency_ms_b}{0.0000} ± @{latency_ci95_ms_b}{0.0000} ms"),
        ("B − A", "@{latency_diff_ms}{0.0000} ± @{latency_diff_ci95_ms}{0.0000} ms"),
        ("significant", "@significant"),
    ]
    ab = _figure("latency: B against A", "A latency (ms)", "B latency (ms)")
    ab.add_layout(Slope(gradient=1, y_intercept=0, line_dash="dashed", line_color="#888888"))
    r1 = ab.scatter("latency_ms_a", "latency_ms_b", source=src, view=CDSView(filter=filt), size=11, color="_color")
    ab.add_tools(HoverTool(renderers=[r1], tooltips=tips))
    diff = _diff_figure(src, filt, list(dict.fromkeys(f["_label"])), tips)
    search = _search_box(src, filt, "comparison")
    cols = _columns(f, ["backend", "precision", "pruning_level", "latency_diff_ms", "latency_diff_ci95_ms"])
    tbl = _table(src, filt, cols, 3, min(600, 60 + 28 * len(f)), "comparison")
    return _page(column(row(ab, diff), search, tbl, name="comparison"))


SEARCH_VALUES = (
    ("accuracy", "accuracy"),
    ("metric", "metric"),
    ("latency_ms", "latency (ms)"),
    ("memory_mb", "memory (MB)"),
)


def search_page(history: pd.DataFrame) -> InteractivePage | None:
    """Small multiples of a search's history: each objective against the trial number (feasible trials green,
    the rest grey; shared x axis, so zooming one zooms all) and latency against the objective coloured by trial,
    over one source (a click selects the trial in every plot). None without trials."""
    if history.empty or "trial" not in history.columns:
        return None
    f = history.reset_index(drop=True).copy()
    f["_color"] = ["#2ca02c" if bool(v) else "#999999" for v in f.get("feasible", [True] * len(f))]
    src = ColumnDataSource(_source_data(f), name="search_source")
    tips = [(c, f"@{{{c}}}") for c in ("trial", "how", "backend", "precision", "pruning_level", "reason") if c in f]
    values = [(c, label) for c, label in SEARCH_VALUES if _has_values(f, c)]
    plots: list[Any] = []
    for c, label in values:
        p = figure(
            title=f"{label} by trial",
            width=330,
            height=260,
            tools="pan,wheel_zoom,box_zoom,reset,tap",
            x_axis_label="trial",
            y_axis_label=label,
            name=f"search:{c}",
        )
        if plots:
            p.x_range = plots[0].x_range  # one trial axis: zooming one plot zooms all
        r = p.scatter("trial", c, source=src, size=8, color="_color")
        p.add_tools(HoverTool(renderers=[r], tooltips=[*tips, (label, f"@{{{c}}}")]))
        plots.append(p)
    if len(values) >= 2 and "latency_ms" in f.columns:
        y = values[0][0]
        p = figure(
            title=f"{values[0][1]} vs latency, by trial",
            width=330,
            height=260,
            tools="pan,wheel_zoom,box_zoom,reset,tap",
            x_axis_label="latency (ms)",
            y_axis_label=values[0][1],
            name="search:front",
        )
        color = linear_cmap("trial", "Viridis256", float(f["trial"].min()), float(f["trial"].max()))
        r = p.scatter("latency_ms", y, source=src, size=8, color=color)
        p.add_tools(HoverTool(renderers=[r], tooltips=tips))
        plots.append(p)
    return _page(row(*plots, name="search_history"), prefix="q") if plots else None
