"""The interactive report.html in headless Chromium (Playwright driving the system's Debian ``chromium``):
sort, filter, click the recommended point and read its details, all checked against sweep_results.csv, with
every request that would leave the page blocked and counted; the page without JavaScript; a 200-row page's
load-to-interactive time."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (the test extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "headless Chromium is not installed (Debian package 'chromium'; make browser installs it)",
        allow_module_level=True,
    )
ARTIFACTS = Path(os.environ.get("EDGE_OPT_TEST_ARTIFACTS", "test-artifacts"))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Page:
    """One page opened from disk, offline, with every non-file request aborted and recorded."""

    def __init__(self, browser, path: Path, javascript: bool = True):
        self.ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, java_script_enabled=javascript)
        self.ctx.set_offline(True)
        self.left: list[str] = []
        self.errors: list[str] = []
        self.ctx.route("**/*", self._route)
        self.page = self.ctx.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        t0 = time.perf_counter()
        self.page.goto(path.as_uri())
        if javascript:
            self.page.wait_for_selector(".edge-sweep-table .slick-row", timeout=30_000)
        self.load_s = time.perf_counter() - t0

    def _route(self, route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            self.left.append(url)
            route.abort()

    def js(self, code: str):
        return self.page.evaluate(code)

    def details_key(self) -> str:
        return self.page.locator("#details").get_attribute("data-key") or ""

    def rows_shown(self) -> int:
        return int(self.js("() => document.documentElement.dataset.rowsShown || -1"))

    def click_point(self, name: str) -> None:
        """Click the first point of the named Bokeh renderer where the browser draws it."""
        self.js(f"() => Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name({name!r})).parent.el.scrollIntoView()")
        x, y = self.js(
            f"""() => {{
            const r = Bokeh.documents[0].get_model_by_name({name!r}), v = Bokeh.index.get_one(r);
            const i = r.view.filter.indices[0], d = r.data_source.data;
            const fx = r.glyph.x.field, fy = r.glyph.y.field;
            const box = v.parent.canvas_view.el.getBoundingClientRect();
            return [box.left + v.coordinates.x_scale.compute(d[fx][i]),
                    box.top + v.coordinates.y_scale.compute(d[fy][i])];
            }}"""
        )
        self.page.mouse.click(x, y)

    def close(self) -> None:
        self.ctx.close()


def _shoot(page, name: str) -> None:
    """A screenshot for the test artifacts (EDGE_OPT_TEST_ARTIFACTS, default ./test-artifacts; not in the repo)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _texts(frame: pd.DataFrame) -> pd.Series:
    return frame.apply(lambda r: " ".join("" if pd.isna(v) else str(v) for v in r).lower(), axis=1)


def _sweep(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "sweep_results.csv")


def test_sort_filter_click_recommended(tiny_study, browser):
    _, res = tiny_study
    out = res.output_dir
    sweep = _sweep(out)
    rec_key = json.loads((out / "summary.json").read_text())["recommended"]["key"]
    pg = Page(browser, out / "report.html")
    try:
        assert pg.rows_shown() in (-1, len(sweep))
        # 1. sort by latency: the first row of the table is the row with the lowest latency
        header = pg.page.locator(".edge-sweep-table .slick-header-column").filter(
            has=pg.page.locator(".slick-column-name", has_text="latency_ms")
        )
        header.filter(has_text="latency_ms").first.click()
        pg.page.locator(".edge-sweep-table .slick-row").first.locator(".slick-cell").nth(1).click()
        fastest = sweep.loc[sweep["latency_ms"].idxmin(), "key"]
        assert pg.details_key() == fastest
        # 2. filter to int8 + one backend: the row count and the rows shown are the CSV's
        backend = "onnxruntime" if "onnxruntime" in set(sweep["backend"]) else str(sweep["backend"].iloc[0])
        want = sweep[(sweep["precision"] == "int8") & (sweep["backend"] == backend)]
        for nth, value in ((0, backend), (1, "int8")):  # the backend and precision multi-choices, as a user types
            choices = pg.page.locator(".choices").nth(nth)
            choices.click()
            choices.locator(f".choices__item--choice[data-value='{value}']").click()
        pg.page.keyboard.press("Escape")
        assert pg.js("() => Bokeh.documents[0].get_model_by_name('f_precision').value") == ["int8"]
        assert pg.rows_shown() == len(want) > 0
        assert pg.page.locator("[data-root-id]").get_by_text(f"{len(want)} of {len(sweep)} rows shown").count() == 1
        # 3. click the recommended point: the details name its row, with the CSV's values
        pg.click_point("recommended:latency_ms:host")
        pg.page.wait_for_function("() => document.getElementById('details').dataset.key !== ''")
        assert pg.details_key() == rec_key
        row = sweep[sweep["key"] == rec_key].iloc[0]
        details = pg.page.locator("#details")
        assert details.locator("td[data-col='backend']").inner_text() == row["backend"]
        assert details.locator("td[data-col='precision']").inner_text() == row["precision"]
        shown = float(details.locator("td[data-col='latency_ms']").inner_text())
        assert shown == pytest.approx(row["latency_ms"], rel=1e-5)
        assert "recommended" in details.locator(".status").inner_text()
        assert "LoadGen scenarios" in details.inner_text()  # the recommended row's deployment
        _shoot(pg.page, "report_filtered_plots")
        details.scroll_into_view_if_needed()
        _shoot(pg.page, "report_details_recommended")
        # 4. nothing left the page, and nothing failed in it
        assert pg.left == [] and pg.errors == []
    finally:
        pg.close()


@pytest.fixture(scope="module")
def default_study(tmp_path_factory):
    """configs/default.yaml (what ``edge-opt`` runs with no arguments) run once into a temporary folder: its grid,
    data, model and training as they are, with OpenVINO beside its torch and onnxruntime backends (so the page
    can be filtered to int8 + openvino), shorter latency measurements and LoadGen runs (~50 s on 2 cores)."""
    from conftest import ROOT
    from edge_opt.pipeline import load_study_config, run_study

    base = tmp_path_factory.mktemp("default_study")
    over = {
        "output_dir": str(base / "out"),
        "backends": ["torch", "onnxruntime", "openvino"],
        "benchmark_repeats": 5,
        "benchmark_trials": 2,
        "benchmark_warmup": 1,
        "deployment": {"min_queries": 20, "min_duration_s": 0.05},
    }
    with pytest.MonkeyPatch.context() as mp:  # its own per-host cache, as every test gets
        mp.setenv("EDGE_OPT_CACHE_DIR", str(base / "host_cache"))
        return run_study(load_study_config(ROOT / "configs" / "default.yaml", over)).output_dir


def _keys(pg: Page, indices: str) -> list[str]:
    """The sweep rows' keys at the given indices (a JS expression over ``doc``), in that order."""
    return pg.js(
        "() => { const doc = Bokeh.documents[0], key = doc.get_model_by_name('sweep_source').data.key;"
        f" return [...{indices}].map((i) => key[i]); }}"
    )


TABLE_ORDER = "Bokeh.index.get_one(doc.get_model_by_name('sweep_table')).data.index"  # the rows as the table shows


def _sort_by_latency(pg: Page, sweep: pd.DataFrame) -> None:
    """Click the latency_ms header: the table's rows are the CSV's sorted by latency, the first one the fastest."""
    header = pg.page.locator(".edge-sweep-table .slick-header-column").filter(
        has=pg.page.get_by_text("latency_ms", exact=True)
    )
    header.click()
    by_latency = sweep.sort_values("latency_ms", kind="mergesort")["key"].tolist()
    assert _keys(pg, TABLE_ORDER) == by_latency
    pg.page.locator(".edge-sweep-table .slick-row").first.locator(".slick-cell").nth(1).click()
    assert pg.details_key() == by_latency[0]


def _filter(pg: Page, backend: str, precision: str) -> None:
    """Pick the backend and the precision in their multi-choice boxes, as a user does."""
    for nth, value in ((0, backend), (1, precision)):
        choices = pg.page.locator(".choices").nth(nth)
        choices.click()
        choices.locator(f".choices__item--choice[data-value='{value}']").click()
    pg.page.keyboard.press("Escape")


def _click_recommended(pg: Page) -> None:
    """Click the recommended star in the plot where no other shown point lies under it, so the click selects
    that row alone."""
    for x in ("latency_ms", "energy_proxy_j", "memory_mb"):
        pg.click_point(f"recommended:{x}:host")
        if pg.js("() => Bokeh.documents[0].get_model_by_name('sweep_source').selected.indices.length") == 1:
            return
    raise AssertionError("the recommended point overlaps another point in every plot")


def test_default_study_sort_filter_recommended(default_study, browser):
    """The default study's page, checked against its sweep_results.csv: sort by latency, filter to int8 on
    openvino, click the recommended point and read its details; no request leaves the page, which opens from
    disk with the network off."""
    out = default_study
    sweep = _sweep(out)
    rec = sweep[sweep["key"] == json.loads((out / "summary.json").read_text())["recommended"]["key"]]
    assert len(rec) == 1
    pg = Page(browser, out / "report.html")
    try:
        explore = pg.page.locator("[data-root-id]").first
        assert explore.get_by_text(f"{len(sweep)} of {len(sweep)} rows shown").count() == 1
        _shoot(pg.page, "default_report")
        _sort_by_latency(pg, sweep)
        _filter(pg, "openvino", "int8")
        want = sweep[(sweep["precision"] == "int8") & (sweep["backend"] == "openvino")]
        assert pg.rows_shown() == len(want) > 0
        assert explore.get_by_text(f"{len(want)} of {len(sweep)} rows shown").count() == 1
        assert sorted(_keys(pg, TABLE_ORDER)) == sorted(want["key"])
        assert pg.page.locator(".edge-sweep-table .grid-canvas-left .slick-row").count() == len(want)  # (frozen pane)
        pg.js("() => document.getElementById('explore').scrollIntoView()")
        _shoot(pg.page, "default_report_filtered")
        _click_recommended(pg)
        pg.page.wait_for_function(f"() => document.getElementById('details').dataset.key === {rec['key'].iloc[0]!r}")
        _check_details(pg, rec.iloc[0])
        assert pg.left == [] and pg.errors == []
    finally:
        pg.close()


def _check_details(pg: Page, row: pd.Series) -> None:
    """The details panel shows the CSV's recommended row: its point, latency, float layers, build time."""
    details = pg.page.locator("#details")
    for col in ("backend", "precision", "key"):
        assert details.locator(f"td[data-col='{col}']").inner_text() == str(row[col])
    for col in ("latency_ms", "memory_mb", "build_s"):
        assert float(details.locator(f"td[data-col='{col}']").inner_text()) == pytest.approx(row[col], rel=1e-5)
    assert "recommended" in details.locator(".status").inner_text()
    floats = "none recorded" if pd.isna(row["float_layers"]) else ", ".join(str(row["float_layers"]).split(";"))
    assert details.locator(".float-layers").inner_text() == f"Layers running float: {floats}"
    assert details.locator(".build-time").inner_text().startswith("Build time:")
    assert "LoadGen scenarios" in details.inner_text()
    pg.js("() => document.getElementById('details').scrollIntoView()")
    _shoot(pg.page, "default_report_details_recommended")


def test_legend_toggle_hides_rows(tiny_study, browser):
    _, res = tiny_study
    sweep = _sweep(res.output_dir)
    pg = Page(browser, res.output_dir / "report.html")
    try:
        torch_rows = int((sweep["backend"] == "torch").sum())
        pg.js(
            "() => { const doc = Bokeh.documents[0]; for (const m of doc.all_models) {"
            " if (m.name === 'torch' && 'visible' in m) { m.visible = false; } } }"
        )
        assert pg.rows_shown() == len(sweep) - torch_rows
        pg.page.locator("input[placeholder='any text in a row']").fill("int8")
        want = sweep[(sweep["backend"] != "torch") & _texts(sweep).str.contains("int8")]
        assert pg.rows_shown() == len(want) > 0
        pg.page.locator("select:has(option[value='rejected'])").select_option(
            "rejected"
        )  # accepted: rejected rows only
        assert pg.rows_shown() == int((~want["accepted"].astype(bool)).sum())
        assert pg.errors == []
    finally:
        pg.close()


# Per legend entry (every legend of the page), how many pixels of its marker canvas are drawn.
LEGEND_PIXELS = """() => [...Bokeh.documents[0].all_models].filter((m) => m.type === 'Legend')
  .flatMap((m) => Bokeh.index.get_one(m).entries).map(({glyph}) => {
    const c = glyph.canvas, px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < px.length; i += 4) { n += px[i] > 0; }
    return n;
  })"""


def test_legend_markers_survive_filtering(tiny_study, browser):
    """Filtering (a widget, then a legend toggle) leaves every legend entry's marker drawn: Bokeh rebuilds a
    legend's entries, blank, when a model reachable from its renderers changes, so they must not reach the
    filter."""
    _, res = tiny_study
    pg = Page(browser, res.output_dir / "report.html")
    try:
        before = pg.js(LEGEND_PIXELS)
        assert before and min(before) > 0
        pg.js("() => { Bokeh.documents[0].get_model_by_name('f_precision').value = ['int8']; }")
        pg.page.wait_for_function("() => document.documentElement.dataset.rowsShown !== undefined")
        pg.js(
            "() => [...Bokeh.documents[0].all_models].filter((m) => m.name === 'torch' && 'visible' in m)"
            ".forEach((m) => { m.visible = false; })"
        )
        pg.page.wait_for_timeout(200)
        assert pg.js(LEGEND_PIXELS) == before
        assert pg.errors == []
    finally:
        pg.close()


def test_without_javascript_static_tables(tiny_study, browser):
    _, res = tiny_study
    sweep = _sweep(res.output_dir)
    pg = Page(browser, res.output_dir / "report.html", javascript=False)
    try:
        assert pg.page.locator("#sweep tr.variant").count() == len(sweep)
        assert pg.page.locator("#recommended").is_visible()
        widths = pg.page.eval_on_selector_all("img.frontier", "(els) => els.map((e) => e.naturalWidth)")
        assert widths and min(widths) > 0
        _shoot(pg.page, "report_without_javascript")
        assert pg.left == []
    finally:
        pg.close()


def _wide_study(src: Path, dst: Path, n: int = 200) -> pd.DataFrame:
    """A copy of the tiny study whose sweep table has ``n`` rows (the real rows, repeated with distinct keys and
    pruning levels, latencies spread)."""
    from edge_opt.report import write_html_report

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.sqlite", "checkpoints", "onnx", "model"))
    base = _sweep(src)
    reps = [base.assign(key=base["key"] + f"-{i}", pruning_level=(i % 10) / 10) for i in range(n // len(base) + 1)]
    wide = pd.concat(reps, ignore_index=True).iloc[:n]
    wide["latency_ms"] = wide["latency_ms"] * (1 + wide.index / n)
    wide.to_csv(dst / "sweep_results.csv", index=False)
    write_html_report(dst)
    return wide


def test_200_rows_load_to_interactive(tiny_study, browser, tmp_path):
    _, res = tiny_study
    wide = _wide_study(res.output_dir, tmp_path / "wide")
    pg = Page(browser, tmp_path / "wide" / "report.html")
    try:
        t0 = time.perf_counter()
        pg.js("() => { Bokeh.documents[0].get_model_by_name('f_precision').value = ['int8']; }")
        filter_s = time.perf_counter() - t0
        assert pg.rows_shown() == int((wide["precision"] == "int8").sum())
        size_mb = (tmp_path / "wide" / "report.html").stat().st_size / 1e6
        print(f"200 rows: load→interactive {pg.load_s:.2f} s, filter {filter_s * 1000:.0f} ms, page {size_mb:.2f} MB")
        assert pg.load_s < 15 and filter_s < 2 and pg.left == [] and pg.errors == []
    finally:
        pg.close()


def test_compare_page(tiny_study, browser, tmp_path):
    from edge_opt.report import compare_studies

    _, res = tiny_study
    twin = tmp_path / "twin"
    shutil.copytree(res.output_dir, twin)
    compare_studies(res.output_dir, twin, tmp_path / "cmp")
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    left: list[str] = []
    ctx.route(
        "**/*",
        lambda r: r.continue_() if r.request.url.startswith("file:") else (left.append(r.request.url), r.abort()),
    )
    page = ctx.new_page()
    try:
        page.goto((tmp_path / "cmp" / "comparison.html").as_uri())
        page.wait_for_selector(".edge-comparison-table .slick-row", timeout=30_000)
        n = page.evaluate("() => Bokeh.documents[0].get_model_by_name('comparison_filter').indices.length")
        assert n == len(table) == len(res.sweep)
        page.locator("input[placeholder='any text in a row']").fill("int8")
        n = page.evaluate("() => Bokeh.documents[0].get_model_by_name('comparison_filter').indices.length")
        assert n == int((table["precision"] == "int8").sum()) > 0
        assert "The configs are the same" in page.inner_text("body")
        _shoot(page, "comparison")
        assert left == []
    finally:
        ctx.close()


def test_search_history_view(tiny_study, browser, tmp_path):
    """A study whose summary says a search ran shows its trials as small multiples (synthetic history here: the
    view reads search_history.csv as any search writes it)."""
    from edge_opt.report import write_html_report

    _, res = tiny_study
    out = tmp_path / "searched"
    shutil.copytree(res.output_dir, out, ignore=shutil.ignore_patterns("*.sqlite", "checkpoints", "onnx", "model"))
    sweep = _sweep(out)
    history = sweep[["pruning_level", "precision", "backend", "calibration", "accuracy", "latency_ms", "memory_mb"]]
    history = history.assign(trial=range(len(history)), how="measured", feasible=sweep["accepted"], reason="")
    history.to_csv(out / "search_history.csv", index=False)
    summary = json.loads((out / "summary.json").read_text())
    summary["search"] = {"strategy": "tpe", "space_size": 12, "trials": len(history), "distinct_points": 12}
    (out / "summary.json").write_text(json.dumps(summary))
    write_html_report(out)
    pg = Page(browser, out / "report.html")
    try:
        n = pg.js(
            "() => Bokeh.documents.map((d) => d.get_model_by_name('search_source')).find((m) => m).data.trial.length"
        )
        assert n == len(history)
        assert pg.page.locator("#search-history canvas").count() >= 1
        pg.page.locator("#search-history").scroll_into_view_if_needed()
        _shoot(pg.page, "report_search_history")
        assert pg.left == [] and pg.errors == []
    finally:
        pg.close()


def test_target_rows_get_their_plots_and_fingerprint(tiny_study, browser, tmp_path):
    """Rows measured on a target (synthetic copies of the host rows here) get their own row of plots, and their
    details show the target's fingerprint from summary.json."""
    from edge_opt.report import write_html_report

    _, res = tiny_study
    out = tmp_path / "targets"
    shutil.copytree(res.output_dir, out, ignore=shutil.ignore_patterns("*.sqlite", "checkpoints", "onnx", "model"))
    host = _sweep(out)
    board = host.assign(measured_on="board", key=host["key"] + "@board", latency_ms=host["latency_ms"] * 3)
    pd.concat([host, board], ignore_index=True).to_csv(out / "sweep_results.csv", index=False)
    summary = json.loads((out / "summary.json").read_text())
    summary["targets"] = {
        "board": {
            "fingerprint": {"cpu_model": "Cortex-A76", "cores": 4},
            "rows": len(board),
            "measured_now": len(board),
            "errors": [],
            "skipped": [],
            "recommended": None,
            "simulation_vs_measured": {"points": 0, "per_point": []},
        }
    }
    (out / "summary.json").write_text(json.dumps(summary))
    write_html_report(out)
    pg = Page(browser, out / "report.html")
    try:
        assert pg.js("() => Bokeh.documents[0].get_model_by_name('points:latency_ms:board') !== null")
        i = len(host)  # the first board row
        pg.js(f"() => {{ Bokeh.documents[0].get_model_by_name('sweep_source').selected.indices = [{i}]; }}")
        details = pg.page.locator("#details")
        assert pg.details_key() == board["key"].iloc[0]
        assert "Target fingerprint" in details.inner_text() and "Cortex-A76" in details.inner_text()
        assert pg.left == [] and pg.errors == []
    finally:
        pg.close()
