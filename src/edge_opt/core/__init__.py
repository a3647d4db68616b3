"""Shared ground below every stage: atomic files, the registry idiom, the machine's description, the output
folder's generations, the torch-free statistics of timing (the t-interval and the adaptive sampling rules) and the
artifact runner.

Nothing here imports torch at import time: the device agent and ``edge-opt predict`` run on it alone.
"""

from __future__ import annotations

from . import atomic
from .batches import (
    batch_len,
    batch_map,
    batch_parts,
    batch_runs,
    batch_slice,
    concat_outputs,
    output_arrays,
    sample_shapes,
)
from .env import cpu_model, environment, git_commit, package_versions
from .generation import (
    begin_generation,
    close_cache_ledger,
    commit_generation,
    config_hash,
    foreign_entries,
    open_cache_ledger,
    remove_study,
    reusable_files,
    stamp_outputs,
)
from .importing import CallableImportError, UserCodeError, call_user_code, import_callable
from .registry import Registry
from .runtime import (
    STATIC_BATCH_RUNTIMES,
    ArtifactError,
    artifact_runner,
    class_ids,
    load_manifest,
    muted_native_stderr,
    onnx_data_files,
    predict,
    predict_outputs,
    sha256_file,
)
from .scores import class_scores
from .stats import (
    CallTimes,
    SampleSeries,
    SamplingPlan,
    TimingRules,
    ci95_from_std,
    ci95_half_width,
    sample_calls,
    sample_rounds,
    sample_std,
    split_interrupted,
    time_calls,
)

__all__ = [
    "ArtifactError",
    "CallableImportError",
    "UserCodeError",
    "Registry",
    "SampleSeries",
    "SamplingPlan",
    "CallTimes",
    "TimingRules",
    "STATIC_BATCH_RUNTIMES",
    "artifact_runner",
    "class_ids",
    "atomic",
    "batch_len",
    "batch_map",
    "batch_parts",
    "batch_runs",
    "batch_slice",
    "concat_outputs",
    "output_arrays",
    "sample_shapes",
    "begin_generation",
    "ci95_from_std",
    "ci95_half_width",
    "commit_generation",
    "config_hash",
    "cpu_model",
    "environment",
    "foreign_entries",
    "git_commit",
    "call_user_code",
    "class_scores",
    "import_callable",
    "load_manifest",
    "muted_native_stderr",
    "onnx_data_files",
    "package_versions",
    "predict",
    "predict_outputs",
    "close_cache_ledger",
    "open_cache_ledger",
    "remove_study",
    "reusable_files",
    "sample_calls",
    "sample_rounds",
    "sample_std",
    "sha256_file",
    "split_interrupted",
    "stamp_outputs",
    "time_calls",
]
