import math

import numpy as np
import pytest

from conftest import tiny_config_dict
from edge_opt.config import config_from_dict
from edge_opt.measure.records import VariantResult
from edge_opt.study.selection import assess_results, recommend
from edge_opt.study.store import StudyStore
from edge_opt.study.sweep import ConfigPoint, Sweep, point_key, run_sweep, sweep_points
from edge_opt.variants import BACKENDS, Variant


def test_bad_precision_is_error_row_others_complete(trained_small, digits8, tmp_path):
    cfg = config_from_dict(tiny_config_dict(tmp_path, pruning_levels=[0.0], backends=["torch"]))
    points = [ConfigPoint(0.0, "fp32", "torch"), ConfigPoint(0.0, "int3", "torch"), ConfigPoint(0.0, "int8", "torch")]
    results = Sweep(trained_small, digits8, cfg, tmp_path).run(points)
    assessed = assess_results(results, cfg, results[0])
    bad = assessed[1]
    assert "int3" in bad.result.error and not bad.accepted and math.isnan(bad.metrics.accuracy)
    assert bad.result.traceback and bad.result.measurement is None
    for good in (assessed[0], assessed[2]):
        assert good.result.error is None and good.metrics.accuracy > 0.5


@pytest.fixture
def nan_backend():
    name = "nan_test_backend"
    if name not in BACKENDS:

        @BACKENDS.register(name)
        def _nan(model, precision, ctx):
            return Variant(
                backend=name,
                precision=precision,
                kernel_precision=precision,
                parameter_bytes=10,
                metadata={},
                prepare=lambda x: x,
                run=lambda x: x,
                to_logits=lambda x: np.full((len(x), 10), np.nan, np.float32),
            )

    yield name


def test_nan_metrics_become_error_rows_and_never_recommended(trained_small, digits8, tmp_path, nan_backend):
    cfg = config_from_dict(
        tiny_config_dict(tmp_path, pruning_levels=[0.0], precisions=["fp32"], active_memory_budget_mb=100)
    )
    results = Sweep(trained_small, digits8, cfg, tmp_path).run(
        [ConfigPoint(0.0, "fp32", "torch"), ConfigPoint(0.0, "fp32", nan_backend)]
    )
    assessed = assess_results(results, cfg, results[0])
    nan = assessed[1]
    assert "non-finite" in nan.result.error and not nan.accepted
    rec, _ = recommend(assessed, results[0].metrics.accuracy, 0.5)
    assert rec is not None and rec.point.backend == "torch"


@pytest.mark.slow
def test_run_sweep_grid_budgets_and_store(trained_small, digits8, tmp_path):
    cfg = config_from_dict(tiny_config_dict(tmp_path, active_memory_budget_mb=0.008))
    with StudyStore(tmp_path / "s.sqlite") as store:
        df = run_sweep(trained_small, digits8, cfg, tmp_path, store=store)
        assert len(df) == len(sweep_points(cfg)) == 12 and store.count() == 12
        assert df["accepted"].any() and (~df["accepted"]).any()
        rej = df[~df["accepted"]].iloc[0]
        assert "budget" in rej["rejected_reason"] and rej["memory_mb"] > 0.008
        for col in (
            "violates_0.01mb",
            "violates_0.1mb",
            "speedup_vs_fp32",
            "slower_than_fp32",
            "device_latency_ms",
            "kernel_precision",
            "energy_proxy_j",
            "latency_std_ms",
            "latency_p95_ms",
            "throughput_sps",
        ):
            assert col in df.columns
        assert (df["device_latency_ms"] == df["latency_ms"] * 2).all()
        int8 = df[(df["precision"] == "int8") & (df["pruning_level"] == 0.0) & (df["backend"] == "torch")].iloc[0]
        assert (tmp_path / int8["metadata_file"]).exists()
        # the store gives back the record, raw samples included
        stored = VariantResult.from_dict(store.get(int8["key"]))
        assert stored.point == ConfigPoint(0.0, "int8", "torch") and len(stored.measurement.latency.samples_ms) >= 3
        assert stored.metrics.latency_ms == pytest.approx(int8["latency_ms"])
        # a second sweep reuses everything
        s = Sweep(trained_small, digits8, cfg, tmp_path, store)
        s.run()
        assert s.reused == 12 and s.computed == 0


def test_build_context_is_made_once_from_the_config(trained_small, digits8, tmp_path):
    cfg = config_from_dict(
        tiny_config_dict(tmp_path, threads=1, quantization={"calibration_method": "entropy", "calibration_batches": 3})
    )
    s = Sweep(trained_small, digits8, cfg, tmp_path)
    ctx = s.build_context(0.5)
    assert ctx.quantization.calibration_method == "entropy" and len(ctx.calibration) == 3
    assert ctx.threads == 1 and ctx.workdir == tmp_path / "onnx"
    with pytest.raises(AttributeError):
        ctx.threads = 2  # frozen: a variation is dataclasses.replace(ctx, threads=2)


def test_point_key_changes_only_with_what_matters(tmp_path):
    base = config_from_dict({"output_dir": str(tmp_path)})
    p = ConfigPoint(0.5, "int8", "onnxruntime")
    same = config_from_dict({"output_dir": str(tmp_path / "x"), "active_memory_budget_mb": 7})
    assert point_key(base, p) == point_key(same, p)  # budgets/output folder do not invalidate measurements
    for change in (
        {"quantization": {"calibration_batches": 3}},
        {"quantization": {"per_channel": False}},
        {"quantization": {"calibration_method": "percentile"}},
        {"epochs": 1},
        {"seed": 5},
        {"fine_tune_epochs": 0},
    ):
        assert point_key(base, p) != point_key(config_from_dict(change), p)
    fp32 = ConfigPoint(0.5, "fp32", "onnxruntime")
    assert point_key(base, fp32) == point_key(config_from_dict({"quantization": {"calibration_batches": 3}}), fp32)
    # the flat keys of earlier releases mean the same as the quantization section
    assert point_key(config_from_dict({"calibration_batches": 3}), p) == point_key(
        config_from_dict({"quantization": {"calibration_batches": 3}}), p
    )


def test_the_onnx_exporter_is_part_of_the_key_of_onnx_built_points_only(tmp_path):
    base = config_from_dict({"output_dir": str(tmp_path)})
    dynamo = config_from_dict({"output_dir": str(tmp_path), "onnx_exporter": "dynamo"})
    assert point_key(base, ConfigPoint(0.5, "fp32", "onnxruntime")) != point_key(
        dynamo, ConfigPoint(0.5, "fp32", "onnxruntime")
    )
    assert point_key(base, ConfigPoint(0.5, "fp32", "torch")) == point_key(dynamo, ConfigPoint(0.5, "fp32", "torch"))


def test_a_group_spans_pruning_levels_and_its_variants_are_timed_together(trained_small, digits8, tmp_path):
    cfg = config_from_dict(tiny_config_dict(tmp_path, benchmark_group_size=8))
    points = sweep_points(cfg)
    s = Sweep(trained_small, digits8, cfg, tmp_path)
    results = s.run()
    together = [r.measurement.environment["interleaved_with"] for r in results if r.measurement is not None]
    levels = sorted({p.pruning_level for p in points[:8]})
    assert len(levels) > 1  # the first group holds points of two parents
    assert len(results) == len(points) == 12 and together == [8] * 8 + [4] * 4  # the last group: what is left
    assert {r.measurement.latency.instances for r in results if r.measurement is not None} == {4}  # the default


def test_the_instance_count_is_part_of_the_point_key_and_of_each_row(trained_small, digits8, tmp_path):
    base = config_from_dict({"output_dir": str(tmp_path)})
    two = config_from_dict({"output_dir": str(tmp_path), "benchmark_instances": 2})
    assert point_key(base, ConfigPoint(0.5, "fp32", "torch")) != point_key(two, ConfigPoint(0.5, "fp32", "torch"))
    cfg = config_from_dict(tiny_config_dict(tmp_path, benchmark_instances=2, pruning_levels=[0.0]))
    rows = [r.row() for r in Sweep(trained_small, digits8, cfg, tmp_path).run()]
    assert rows and {row["latency_instances"] for row in rows if row.get("error") is None} == {2}


def test_progress_names_each_variant_as_it_is_built(trained_small, digits8, tmp_path):
    cfg = config_from_dict(tiny_config_dict(tmp_path))
    events: list[tuple[str, object]] = []
    s = Sweep(
        trained_small,
        digits8,
        cfg,
        tmp_path,
        on_event=lambda kind, **info: events.append((kind, info.get("index", info.get("level")))),
    )
    s.run()
    kinds = [k for k, _ in events if k in ("variant", "prune")]
    first_pruned = next(i for i, (k, _) in enumerate(events) if k == "variant" and _ == 7)  # the first p0.5 point
    assert kinds.count("variant") == 12 and events[first_pruned + 1][0] == "prune"  # pruned while it is built
    assert [i for k, i in events if k == "variant"] == list(range(1, 13))
