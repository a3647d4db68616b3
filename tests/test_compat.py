"""The import paths of earlier releases keep working: every name of the old README's API table ("where the documented
names live", as of commit 281376e) still imports from the module path it gave, now aliased by ``edge_opt.compat``
or re-exported by the stage package that took the old module's place."""

from __future__ import annotations

import importlib

import pytest

# Module path → the names the old API table gave it (copied verbatim from that table).
OLD_API: dict[str, list[str]] = {
    "edge_opt.metrics": [
        "PerfMetrics",
        "collect_metrics",
        "evaluate_accuracy",
        "measure_latency",
        "measure_latency_distribution",
        "model_memory_mb",
        "memory_violations",
        "measure_variant",
        "measure_variants",
        "pinned",
        "MeasurementRecord",
        "BenchmarkSettings",
        "latency_differs",
    ],
    "edge_opt.reporting": ["build_summary", "write_outputs", "write_plots", "to_frame"],
    "edge_opt.hardware": [
        "LayerEstimate",
        "estimate_layerwise_stats",
        "summarize_hardware",
        "precision_tradeoff_table",
        "save_hardware_artifacts",
        "machine_calibration",
    ],
    "edge_opt.statistics": [
        "run_repeated_benchmarks",
        "ci95",
        "bootstrap_ci",
        "aggregate_multi_seed",
        "latency_differs",
    ],
    "edge_opt.benchmark": ["benchmark_one_setup", "PRECISION_MODES"],
    "edge_opt.sweep": ["run_sweep", "Sweep", "ConfigPoint", "point_key", "sweep_points", "load_stored_study"],
    "edge_opt.pareto": ["pareto_frontier"],
    "edge_opt.deploy": ["deployment_simulation", "DeploymentSettings", "simulate_deployment"],
    "edge_opt.training": ["train_model", "set_deterministic", "resolve_device"],
    "edge_opt.models": ["create_model", "list_models", "register_model"],
    "edge_opt.data": ["load_data", "load_study_data", "list_datasets", "register_dataset"],
    "edge_opt.variants.backends": [
        "build_variant",
        "list_backends",
        "register_backend",
        "backend_supports",
        "list_precisions",
        "BuildContext",
        "Variant",
    ],
    "edge_opt.variants.precisions": [
        "Precision",
        "register_precision",
        "get_precision",
        "list_precisions",
        "seed_names",
        "from_seed_name",
        "to_seed_name",
    ],
    "edge_opt.results": ["ConfigPoint", "VariantResult"],
    "edge_opt.selection": [
        "assess_results",
        "Assessment",
        "recommend",
        "select_recommendation",
        "Selection",
        "to_frame",
    ],
    "edge_opt.executors": ["RayExecutor"],
    "edge_opt.runner": ["Sweep", "LocalExecutor", "Executor", "point_key"],
    "edge_opt.pipeline": ["load_study_config", "run_study", "rebuild_report", "StudyResult"],
    "edge_opt": ["optimize"],
    "edge_opt.sources": ["load_model_source", "ModelSource", "check_model_fits"],
    "edge_opt.readers": ["read_npz", "read_image_folder", "call_dataset"],
    "edge_opt.variants.sensitivity": ["layer_sensitivity", "mixed_search", "SensitivityReport"],
    "edge_opt.variants.layers": ["torch_layers", "onnx_layers", "coverage"],
    "edge_opt.search": ["run_search", "search_space", "judge_with", "load_search", "hypervolume_2d", "SearchOutcome"],
    "edge_opt.remote": ["AgentClient", "AgentError"],
    "edge_opt.agent": ["create_app", "parse_measure_request", "device_fingerprint", "serve"],
    "edge_opt.vendor_logs": [
        "read_vendor_log",
        "parse_benchmark_app_json",
        "parse_benchmark_model_log",
        "VendorMeasurement",
    ],
}


@pytest.mark.parametrize("path", sorted(OLD_API))
def test_old_import_path_has_its_names(path):
    module = importlib.import_module(path)
    missing = [n for n in OLD_API[path] if not hasattr(module, n)]
    assert not missing, f"{path} no longer gives {missing}"


def test_old_path_is_the_module_itself():
    """An old path is the new module object, not a copy: patching one patches the other."""
    from edge_opt.measure import metrics

    assert importlib.import_module("edge_opt.metrics") is metrics
    assert importlib.import_module("edge_opt.metrics").collect_metrics is metrics.collect_metrics
