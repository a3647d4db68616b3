"""Study configuration: YAML (``yaml.safe_load``) validated into an immutable pydantic model.

Every invalid value becomes one line naming the key, what is allowed and what was
given, in scikit-learn's style. Names that live in registries (model, dataset,
backends, precisions) are checked against them by ``edge_opt.pipeline.load_study_config``
so that this module stays at the bottom of the stack.
"""

from __future__ import annotations

import math
import reprlib
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "CONFIG_RELATIVE_KEYS",
    "CONFIG_SECTIONS",
    "BudgetSettings",
    "DeploySettings",
    "HardwareSettings",
    "InputSettings",
    "MeasureSettings",
    "RunSettings",
    "SearchSettings",
    "TargetSettings",
    "TrainingSettings",
    "VariantSettings",
    "LEGACY_QUANTIZATION_KEYS",
    "LOSS_NAMES",
    "SCENARIO_NAMES",
    "ConfigError",
    "DeploymentConfig",
    "MlflowConfig",
    "ModelConfig",
    "QuantizationConfig",
    "RayConfig",
    "Scenario",
    "SearchConfig",
    "SearchObjective",
    "StudyConfig",
    "TargetConfig",
    "TrackingConfig",
    "config_from_dict",
    "config_from_yaml",
    "format_validation_error",
    "load_config",
    "nearest_existing",
    "short_repr",
]


class ConfigError(ValueError):
    """Invalid study configuration. ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


MODEL_SOURCES = ("name", "onnx", "factory", "exported", "python")
LOSS_NAMES = ("cross_entropy", "mse", "bce")  # the built-in training losses (inputs.training)
# model.simplify's default: chosen by measurement (docs/bring-your-own.md, "ONNX files").
SIMPLIFY_DEFAULT = True
MAX_PARAM_VALUES = 10_000
MAX_CONFIG_VALUES = 100_000


def nearest_existing(path: Path) -> Path:
    """``path`` when it exists, else its nearest parent that does (the root when none does)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def _count_values(value: Any, budget: int) -> int:
    """How many values ``value`` holds, nested ones included (stops counting past ``budget``)."""
    count, stack = 0, [value]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


class ModelConfig(BaseModel):
    """Where the model comes from: exactly one source key.

    ``name`` (+ ``params``): a registered model, trained by the study. ``onnx``: a trained ONNX file.
    ``factory`` (``package.module:callable``, + ``params``, + ``weights``: a state dict): a PyTorch module
    built by the user's code. ``exported``: a ``torch.export.save`` program (``.pt2``). ``python``: an
    in-memory module handed to ``edge_opt.optimize`` (set by it; not usable from a YAML file).
    """

    model_config = _STRICT
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    onnx: str | None = Field(default=None, min_length=1)
    factory: str | None = Field(default=None, min_length=1)
    weights: str | None = Field(default=None, min_length=1)
    exported: str | None = Field(default=None, min_length=1)
    python: str | None = Field(default=None, min_length=1)
    simplify: bool | None = Field(
        default=None,
        description="`onnx` only: build the variants from the graph onnxslim normalises (Constant weights folded "
        "into initializers, BatchNorm into convolutions), checked against the file on validation images; the "
        f"rows' `graph_transform` says which graph ran. Default: {str(SIMPLIFY_DEFAULT).lower()}.",
    )

    @field_validator("params")
    @classmethod
    def _small_params(cls, v: dict[str, Any]) -> dict[str, Any]:
        if _count_values(v, MAX_PARAM_VALUES) > MAX_PARAM_VALUES:
            raise ValueError(f"must be a small mapping (at most {MAX_PARAM_VALUES:,} values, nested ones included)")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        given = [k for k in MODEL_SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"must give exactly one of the model sources {list(MODEL_SOURCES[:4])} (name with "
                f"params; onnx; factory with params and weights; exported); got {given or 'none'}"
            )
        if self.params and self.kind not in ("name", "factory"):
            raise ValueError(f"'params' goes with 'name' or 'factory', not with '{self.kind}'")
        if self.weights is not None and self.kind not in ("name", "factory"):
            raise ValueError(f"'weights' goes with 'name' or 'factory', not with '{self.kind}'")
        if self.factory is not None and ":" not in self.factory:
            raise ValueError(f"'factory' must be 'package.module:callable' (got {self.factory!r})")
        if self.simplify is not None and self.kind != "onnx":
            raise ValueError(f"'simplify' goes with 'onnx' (an ONNX graph to normalise), not with '{self.kind}'")
        return self

    @property
    def kind(self) -> str:
        """Which source key is set: name, onnx, factory, exported or python."""
        return next(k for k in MODEL_SOURCES if getattr(self, k) is not None)

    @property
    def trained(self) -> bool:
        """A model that arrives trained (weights, a file, or a module): no baseline training by default."""
        return self.kind in ("onnx", "exported", "python") or self.weights is not None

    @property
    def torch_free(self) -> bool:
        """An ONNX model: the file itself (ONNX Runtime fp32) is the baseline; the torch backends and pruning run on
        the PyTorch module converted from it, when it converts."""
        return self.kind == "onnx"

    @property
    def simplify_graph(self) -> bool:
        """An ONNX model whose graph onnxslim normalises before the variants are built (``simplify``, default
        ``SIMPLIFY_DEFAULT``)."""
        return self.kind == "onnx" and (SIMPLIFY_DEFAULT if self.simplify is None else self.simplify)


class PreprocessConfig(BaseModel):
    """``x = (raw × scale − mean) / std``, per channel when mean/std are lists; recorded in the artifact's manifest."""

    model_config = _STRICT
    scale: float | None = Field(default=None, gt=0)
    mean: float | list[float] | None = None
    std: float | list[float] | None = None

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: float | list[float] | None) -> float | list[float] | None:
        values = v if isinstance(v, list) else [v] if v is not None else []
        if any(not x > 0 for x in values):
            raise ValueError("must be positive")
        return v


CalibrationMethod = Literal["minmax", "entropy", "percentile"]
Recovery = Literal["none", "bias_correction", "cle", "qat"]
RECOVERIES: tuple[str, ...] = ("none", "bias_correction", "cle", "qat")


class QuantizationConfig(BaseModel):
    """Post-training int8 options (read by the precisions that quantize; part of their point key).

    ``calibration_method``, ``per_channel``, ``calibration_batches`` and ``recovery`` take a value or a list of
    values: each combination of the lists is its own config point of every quantized precision (``choices()``).
    ``recovery`` is how int8 accuracy is recovered while every layer stays int8: ``none``, ``bias_correction``
    (NNCF's bias correction), ``cle`` (cross-layer equalization with bias absorption, on the float model before
    any backend builds it) or ``qat`` (quantization-aware training for ``qat_epochs``). ``calibration_tolerance``:
    min/max calibration uses the first samples of the ``calibration_batches`` whose ranges would have saturated at
    most this share of the next samples' activation values (the same prefix on every backend; ``variants.calibration``).
    """

    model_config = _STRICT
    calibration_method: CalibrationMethod | list[CalibrationMethod] = "minmax"
    calibration_batches: int | list[int] = 8
    calibration_tolerance: float = Field(
        default=1e-5,
        ge=0,
        le=1,
        description="min/max calibration stops at the first doubling of samples (16, 32, 64, …) in which at most "
        "this share of the activation values fell outside the ranges of the samples before (0: every batch)",
    )
    per_channel: bool | list[bool] = True
    percentile: float = Field(default=99.999, gt=50, le=100)
    engine: Literal["x86", "fbgemm", "qnnpack"] = "x86"
    max_float_mac_fraction: float = Field(default=0.5, gt=0, le=1)
    recovery: Recovery | list[Recovery] = "none"
    qat_epochs: int = Field(default=1, ge=1, le=1000)

    @field_validator("recovery", mode="before")
    @classmethod
    def _known_recovery(cls, v: Any) -> Any:
        bad = [r for r in (v if isinstance(v, list) else [v]) if isinstance(r, str) and r not in RECOVERIES]
        if bad:
            raise ValueError(
                f"must be one of {list(RECOVERIES)} or a list of them ({bad} unknown; adaround is not offered: no "
                "maintained implementation imports beside this torch, e.g. AIMET's import fails on torchvision)"
            )
        return v

    @field_validator("calibration_method", "calibration_batches", "per_channel", "recovery")
    @classmethod
    def _one_or_list(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("must be a value or a non-empty list of values")
            if len({repr(x) for x in v}) != len(v):
                raise ValueError("must not repeat a value")
            return v[0] if len(v) == 1 else v
        return v

    @field_validator("calibration_batches")
    @classmethod
    def _batches_in_range(cls, v: int | list[int]) -> int | list[int]:
        bad = [b for b in (v if isinstance(v, list) else [v]) if not 1 <= b <= 100_000]
        if bad:
            raise ValueError(f"must be between 1 and 100000 ({bad} out of range)")
        return v

    @property
    def swept(self) -> bool:
        """More than one calibration choice (each becomes its own config point)."""
        return any(
            isinstance(v, list)
            for v in (self.calibration_method, self.calibration_batches, self.per_channel, self.recovery)
        )

    @property
    def labelled(self) -> bool:
        """Quantized points carry their choice's label: several choices, or a recovery other than ``none`` (so a
        row says how it was recovered)."""
        return self.swept or any(
            r != "none" for r in (self.recovery if isinstance(self.recovery, list) else [self.recovery])
        )

    def choices(self) -> list[QuantizationConfig]:
        """Every combination of the listed options, as single-valued configs (method outermost, recovery
        innermost)."""

        def values(v: Any) -> list[Any]:
            return v if isinstance(v, list) else [v]

        return [
            self.model_copy(
                update={"calibration_method": m, "per_channel": pc, "calibration_batches": b, "recovery": r}
            )
            for m in values(self.calibration_method)
            for pc in values(self.per_channel)
            for b in values(self.calibration_batches)
            for r in values(self.recovery)
        ]

    def _one(self, name: str) -> Any:
        value = getattr(self, name)
        if isinstance(value, list):
            raise ValueError(f"'quantization.{name}' lists {value}: build with one of choices()")
        return value

    @property
    def method(self) -> str:
        """The calibration method of a single choice."""
        return str(self._one("calibration_method"))

    @property
    def channelwise(self) -> bool:
        """Per-channel weight scales, of a single choice."""
        return bool(self._one("per_channel"))

    @property
    def batches(self) -> int:
        """Calibration batches of a single choice."""
        return int(self._one("calibration_batches"))

    @property
    def recovery_method(self) -> str:
        """The accuracy recovery of a single choice (``none``, ``bias_correction``, ``cle``, ``qat``)."""
        return str(self._one("recovery"))

    @property
    def label(self) -> str:
        """A single choice's name in config points and rows: ``percentile99.999/per-tensor/8`` (+ ``/cle``, the
        recovery, when not ``none``; ``/qat2`` for two QAT epochs)."""
        method = (
            f"percentile{self.percentile:g}" if self.calibration_method == "percentile" else self.calibration_method
        )
        label = f"{method}/{'per-channel' if self.per_channel else 'per-tensor'}/{self.calibration_batches}"
        if self.recovery == "qat":
            return f"{label}/qat{self.qat_epochs}"
        return label if self.recovery == "none" else f"{label}/{self.recovery}"


# Flat int8 keys of earlier releases → their place in the ``quantization:`` section.
LEGACY_QUANTIZATION_KEYS = {
    "calibration_method": "calibration_method",
    "calibration_batches": "calibration_batches",
    "quantization_backend": "engine",
}


Scenario = Literal["single_stream", "multi_stream", "server", "offline", "batch"]
SCENARIO_NAMES: tuple[Scenario, ...] = ("single_stream", "multi_stream", "server", "offline", "batch")


class DeploymentConfig(BaseModel):
    """Deployment scenarios, run by MLPerf LoadGen: ``min_queries`` / ``min_duration_s`` are LoadGen's
    min_query_count / min_duration of each run (early stopping judges whether enough queries ran)."""

    model_config = _STRICT
    scenarios: list[Scenario] = Field(default_factory=lambda: list(SCENARIO_NAMES), min_length=1)
    min_queries: int = Field(default=64, ge=1, le=10_000_000)
    min_duration_s: float = Field(default=1.0, gt=0, le=3600)
    server_target_qps: float | None = Field(default=None, gt=0)
    server_search_steps: int = Field(default=5, ge=1, le=50)
    multi_stream_samples_per_query: int = Field(default=8, ge=1, le=4096)
    performance_sample_count: int = Field(default=1024, ge=1, le=10_000_000)
    latency_model: Literal["linear", "roofline"] = "roofline"
    offline_batch_size: int = Field(
        default=256,
        ge=1,
        le=1_000_000,
        description="Batch of the offline scenario; not set: 256, at most the study's `batch_size`.",
    )
    max_s: float | None = Field(
        default=20.0,
        gt=0,
        le=86_400,
        description="Time budget (s) of one model's scenarios: one whose length planned from the model's latency "
        "does not fit in what is left is skipped, saying why; null: none.",
    )


class MlflowConfig(BaseModel):
    """Where to log a study with MLflow (a local ``sqlite:`` or ``file:`` URI needs no server)."""

    model_config = _STRICT
    uri: str = Field(min_length=1)
    experiment: str = Field(default="edge_opt", min_length=1)
    # Where a new experiment stores artifacts; default for sqlite: a folder "mlartifacts" beside the database.
    artifact_location: str | None = None


class TrackingConfig(BaseModel):
    """Experiment tracking; off unless a tracker is configured."""

    model_config = _STRICT
    mlflow: MlflowConfig | None = None


class RayConfig(BaseModel):
    """Where and how to run config points on Ray."""

    model_config = _STRICT
    address: str = Field(default="local", min_length=1)  # "local" starts one in-process; "auto" or "ray://host:port"
    cpus_per_task: int | None = Field(default=None, ge=1, le=4096)  # default: a node's CPU count
    num_cpus: int | None = Field(default=None, ge=1, le=4096)  # CPUs of a "local" cluster (default: all)
    max_retries: int = Field(default=2, ge=0, le=100)


class TargetConfig(BaseModel):
    """A device running ``edge-opt agent``: where it listens and which environment variable holds its token."""

    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    token_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    timeout_s: float = Field(default=120.0, gt=0, le=86_400)

    @field_validator("name")
    @classmethod
    def _not_host(cls, v: str) -> str:
        if v == "host":
            raise ValueError("'host' names the machine running the study; give the target another name")
        return v


SearchObjective = Literal["accuracy", "latency", "memory"]
DEFAULT_OBJECTIVES: tuple[SearchObjective, ...] = ("accuracy", "latency")


class SearchConfig(BaseModel):
    """How config points are chosen: every point of the grid (default), or an Optuna search over the same space
    (NSGA-II or TPE) that stops after ``n_trials`` distinct points, ``timeout_s`` seconds, or — with
    ``stop_when: goals_met`` — once a point meets every budget and no better one was found for ``patience`` trials."""

    model_config = _STRICT
    strategy: Literal["grid", "nsga2", "tpe"] = "grid"
    n_trials: int | None = Field(default=None, ge=1, le=1_000_000)
    timeout_s: float | None = Field(default=None, gt=0, le=30 * 24 * 3600)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    objectives: list[SearchObjective] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES), min_length=2)
    stop_when: Literal["budget", "goals_met"] = "budget"
    patience: int = Field(default=0, ge=0, le=1_000_000)
    population_size: int | None = Field(default=None, ge=2, le=10_000)

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("must not repeat an objective")
        missing = [o for o in ("accuracy", "latency") if o not in v]
        if missing:
            raise ValueError(f"must include 'accuracy' and 'latency' (memory is optional); missing {missing}")
        return v

    @model_validator(mode="after")
    def _budget(self) -> SearchConfig:
        if self.strategy != "grid" and self.n_trials is None and self.timeout_s is None:
            raise ValueError(
                f"search strategy {self.strategy!r} needs 'n_trials' or 'timeout_s' (or both); got neither"
            )
        return self


class InputSettings(BaseModel):
    """Inputs: where the model comes from and the data it is trained, calibrated and judged on."""

    model_config = _STRICT
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig(name="small_cnn"),
        description="One model source: `{name, params}` (a registry model, `list_models()`), `{factory, params, "
        "weights}`, `{onnx}` or `{exported}` (see bring-your-own.md). Default: `small_cnn` with "
        "`conv1_channels=16, conv2_channels=32, hidden_units=None` (a pooled head).",
    )
    dataset: str = Field(
        default="digits",
        description="`digits` (bundled), `mnist`, `fashion-mnist` (IDX files in `data_dir`), `synthetic`; your data: "
        "`npz`, `image_folder` or `package.module:callable`.",
    )
    data_dir: str = Field(default="data", description="Folder with the IDX files, or the image folder.")
    data_path: str | None = Field(default=None, min_length=1, description="Your data's `.npz` file.")
    layout: Literal["auto", "NCHW", "NHWC", "NHW"] = Field(default="auto", description="Layout of your images.")
    preprocess: PreprocessConfig | None = Field(
        default=None, description="`x = (raw × scale − mean) / std`; recorded in the artifact's manifest."
    )
    calibration_data_path: str | None = Field(
        default=None, min_length=1, description="Images for int8 calibration (default: training batches)."
    )
    config_dir: str | None = Field(
        default=None, description="Where relative paths resolve (set to the YAML file's folder when loaded)."
    )
    image_size: int | None = Field(
        default=None, ge=4, le=1024, description="Images are resized to image_size² (28 for registered data sets)."
    )
    val_fraction: float = Field(default=0.25, gt=0, lt=1, description="Validation share of the split.")
    batch_size: int = Field(default=128, ge=1, le=65536, description="Training, evaluation and throughput batch.")
    train_subset: int | None = Field(default=None, ge=1, description="Optional training subset size.")
    val_subset: int | None = Field(default=None, ge=1, description="Optional validation subset size.")
    num_workers: int = Field(default=0, ge=0, le=64, description="Data loader workers.")
    dataloader_seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seed of the data split and shuffle.")


class TrainingSettings(BaseModel):
    """Training: the baseline (for a registry model) and the fine-tuning after each pruning level."""

    model_config = _STRICT
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Training seed.")
    epochs: int | None = Field(
        default=None, ge=0, le=10_000, description="Baseline epochs (default 8; 0 for a model that arrives trained)."
    )
    learning_rate: float = Field(
        default=2e-3, gt=0, le=10, description="Adam learning rate of training and fine-tuning (with `loss`)."
    )
    fine_tune_epochs: int = Field(default=2, ge=0, le=10_000, description="Fine-tuning epochs after pruning.")
    device: Literal["cpu", "cuda", "mps", "auto"] = Field(
        default="cpu", description="Training device (`auto` falls back to cpu with a warning)."
    )
    loss: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="Training and fine-tuning loss: `cross_entropy`, `mse`, `bce` or your "
        "`package.module:function(outputs, targets) -> scalar tensor`. Default: `cross_entropy` with metric `top1` "
        "or `top5` and for a model the study trains; a model that arrives trained and is scored by another metric "
        "has its pruned points skipped without one (see scoring.md).",
    )

    @field_validator("loss")
    @classmethod
    def _loss_spec(cls, v: str | None) -> str | None:
        if v is None or v in LOSS_NAMES:
            return v
        module, _, function = v.partition(":")
        if not module.strip() or not function.strip() or ":" in function or v != v.strip():
            raise ValueError(f"must be one of {', '.join(LOSS_NAMES)} or package.module:function")
        return v


class VariantSettings(BaseModel):
    """Variants: structured pruning levels × precisions × runtime backends, and the int8 options."""

    model_config = _STRICT
    pruning_levels: list[float] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75],
        min_length=1,
        max_length=1000,
        description="Structured L1 channel pruning levels in [0, 1) (Torch-Pruning's dependency graph).",
    )
    pruning_range: tuple[float, float] | None = Field(
        default=None,
        description="`[low, high]` with `pruning_step`: the levels low, low + step, … ≤ high instead of listing "
        "`pruning_levels` (giving both is an error).",
    )
    pruning_step: float = Field(default=0.05, gt=0, lt=1, description="Step of `pruning_range`.")
    precisions: list[str] = Field(
        default_factory=lambda: ["fp32", "fp16", "int8"],
        min_length=1,
        max_length=100,
        description="From the precision registry (`list_precisions()`): fp32, fp16, bf16, int8, int8_mixed.",
    )
    backends: list[str] = Field(
        default_factory=lambda: ["torch", "onnxruntime"],
        min_length=1,
        max_length=100,
        description="From the backend registry: torch, torch_channels_last, onnxruntime, openvino, executorch, litert.",
    )
    quantization: QuantizationConfig = Field(
        default_factory=QuantizationConfig, description="int8 options; lists sweep every combination."
    )
    onnx_exporter: Literal["torchscript", "dynamo"] = Field(
        default="torchscript",
        description="How a PyTorch parent becomes the ONNX file the ONNX-based runtimes load.",
    )

    @field_validator("pruning_levels")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not (0.0 <= x < 1.0)]
        if bad:
            raise ValueError(f"must be a list of floats in [0, 1) ({bad} out of range)")
        if len(set(v)) != len(v):
            raise ValueError("must not repeat a level")
        return v

    @field_validator("precisions", "backends")
    @classmethod
    def _no_dupes(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("must not repeat an entry")
        return v

    @model_validator(mode="after")
    def _range(self) -> Self:
        """``pruning_range`` + ``pruning_step`` become the listed levels (giving both forms is an error)."""
        if self.pruning_range is None:
            return self
        low, high = self.pruning_range
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(f"'pruning_range' must be [low, high] with 0 <= low <= high < 1; got {[low, high]}")
        n = int(math.floor((high - low) / self.pruning_step + 1e-9)) + 1
        if n > 1000:
            raise ValueError(f"'pruning_range' with 'pruning_step' {self.pruning_step} gives {n} levels; at most 1000")
        levels = [round(low + i * self.pruning_step, 6) for i in range(n)]
        # a recorded config holds both (the levels expanded): fine when they agree
        if "pruning_levels" in self.model_fields_set and self.pruning_levels != levels:
            raise ValueError("give either 'pruning_levels' or 'pruning_range' (+ 'pruning_step'), not both")
        object.__setattr__(self, "pruning_levels", levels)
        return self


class MeasureSettings(BaseModel):
    """Measurement: threads, the latency sampling rules and the energy proxy, the same for every variant."""

    model_config = _STRICT
    threads: int = Field(
        default=1, ge=1, le=1024, description="Intra-op threads of every measurement (torch and the runtimes)."
    )
    benchmark_repeats: int = Field(
        default=40, ge=2, le=100_000, description="Latency samples, one per interleaved round."
    )
    benchmark_trials: int = Field(
        default=10,
        ge=1,
        le=100_000,
        description="Calls per latency sample when `benchmark_min_sample_ms` is 0 (otherwise the calls are sized to "
        "last that long).",
    )
    benchmark_warmup: int = Field(default=5, ge=0, le=100_000, description="Warm-up calls before timing.")
    benchmark_min_sample_ms: float = Field(
        default=5.0,
        ge=0,
        le=10_000,
        description="Calls per sample grow until a sample lasts this long (one call when a call already does).",
    )
    benchmark_max_s: float | None = Field(
        default=3.0,
        gt=0,
        le=86_400,
        description="Per-variant time budget of the latency rounds (s): they stop at the CI target, at the latest "
        "here (`latency_budget_hit` says so); null: none.",
    )
    benchmark_target_rel_ci: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="More rounds (up to 4 × `benchmark_repeats`) while the 95 % CI is wider than this share "
        "of the mean.",
    )
    latency_batch_size: int = Field(
        default=1, ge=1, le=65536, description="Batch of the latency measurement (at most `batch_size`)."
    )
    benchmark_interrupted_factor: float = Field(
        default=1.5,
        ge=0,
        le=100,
        description="A sample longer than this × the variant's median was interrupted: set aside and retaken "
        "(0 keeps all).",
    )
    benchmark_instances: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Latency rounds rotate over this many independent instances of each variant.",
    )
    benchmark_group_size: int = Field(
        default=32,
        ge=1,
        le=100_000,
        description="At most this many new variants are built, then timed together in interleaved rounds, then stored.",
    )
    power_watts: float = Field(default=15.0, gt=0, le=100_000, description="Device power of the energy proxy.")
    host_load_threshold: float = Field(
        default=0.15,
        gt=0,
        le=10,
        description="A row whose `host_load` (a fixed probe against its quietest time in the study, and the CPU "
        "share the measuring thread got) passes 1 + this was measured on a busy host: the study warns, naming it.",
    )

    @field_validator("benchmark_interrupted_factor")
    @classmethod
    def _interrupted_factor(cls, v: float) -> float:
        if 0 < v <= 1:
            raise ValueError(f"must be 0 (keep every sample) or above 1 (got {v}: it would set aside typical samples)")
        return v

    @model_validator(mode="after")
    def _sample_count(self) -> Self:
        if self.benchmark_trials * self.benchmark_repeats > 10_000_000:
            raise ValueError("benchmark_repeats × benchmark_trials must be at most 10,000,000")
        return self


class BudgetSettings(BaseModel):
    """Budgets: what a variant must meet to be accepted, and how the recommendation is chosen."""

    model_config = _STRICT
    memory_budgets_mb: list[float] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0, 4.0],
        min_length=1,
        max_length=1000,
        description="Budgets reported as `violates_{b}mb` columns.",
    )
    active_memory_budget_mb: float = Field(default=1.0, gt=0, description="The budget rows are accepted against.")
    latency_budget_ms: float | None = Field(
        default=None, gt=0, description="Optional budget on the simulated device latency."
    )
    flash_budget_kb: float | None = Field(
        default=None,
        gt=0,
        description="Optional microcontroller flash budget in KB (1024 bytes): a row's `flash_bytes` (the `.tflite` "
        "file) must fit; rows without a `.tflite` (backends other than `litert`) are rejected while it is set.",
    )
    ram_budget_kb: float | None = Field(
        default=None,
        gt=0,
        description="Optional microcontroller RAM budget in KB: a row's `peak_ram_bytes` (the tensor arena "
        "estimate of its `.tflite`) must fit; rows without a `.tflite` are rejected while it is set.",
    )
    max_accuracy_drop: float = Field(
        default=0.01, ge=0, le=1, description="Allowed absolute accuracy drop against the baseline."
    )
    pareto_use_ci: bool = Field(default=False, description="Compare latencies by their 95 % intervals on the frontier.")
    metric: str = Field(
        default="top1",
        min_length=1,
        max_length=300,
        description="How a variant is scored: a built-in (`top1`, `top5`, `miou`, `map50`, `map50_95`, `auc`, `mae`, "
        "`rmse`, `agreement`, `sqnr_db`; see scoring.md) or your `package.module:function(outputs, targets) -> float`.",
    )
    metric_higher_is_better: bool | None = Field(
        default=None, description="The direction of a metric callable (required with one; a built-in has its own)."
    )
    metric_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Display name of a metric callable in tables and plots (default: the function's name).",
    )
    postprocess: str | None = Field(
        default=None,
        min_length=3,
        max_length=300,
        description="`package.module:function(outputs) -> Any`, run on every variant's outputs before the metric.",
    )
    max_metric_drop: float | None = Field(
        default=None,
        ge=0,
        description="Allowed drop of the metric against the baseline, in its units and direction (default with a "
        "metric other than `top1`: 0.01; with `top1` it is `max_accuracy_drop`).",
    )
    metric_drop_relative: bool = Field(
        default=False, description="`max_metric_drop` is a share of the baseline's metric (0.01 = 1 %)."
    )

    @field_validator("memory_budgets_mb")
    @classmethod
    def _budgets(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not x > 0]
        if bad:
            raise ValueError(f"must be a list of positive floats in MB ({bad} not positive)")
        return v

    @field_validator("metric", "postprocess")
    @classmethod
    def _metric_spec(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if ":" not in v and info.field_name == "metric":
            if v != v.strip():
                raise ValueError("must be a metric name or package.module:function")
            return v
        module, _, function = v.partition(":")
        if not module.strip() or not function.strip() or ":" in function:
            raise ValueError("must be written package.module:function")
        return v

    @model_validator(mode="after")
    def _metric_keys(self) -> Self:
        callable_metric = ":" in self.metric
        if callable_metric and self.metric_higher_is_better is None:
            raise ValueError(
                f"'metric_higher_is_better' must be true or false with the metric callable {self.metric!r} "
                "(is a higher value better?); got None"
            )
        if not callable_metric and self.metric_name is not None:
            raise ValueError(
                f"'metric_name' names a metric callable; the built-in {self.metric!r} has its own name "
                f"(got metric_name {self.metric_name!r})"
            )
        if self.metric_drop_relative and self.max_metric_drop is None:
            raise ValueError("'metric_drop_relative' is true but 'max_metric_drop' is not given (got None)")
        if "max_accuracy_drop" in self.model_fields_set and self.max_metric_drop is not None:
            raise ValueError(
                "give one budget: 'max_accuracy_drop' (top-1 accuracy) or 'max_metric_drop' (the metric); got "
                f"{self.max_accuracy_drop!r} and {self.max_metric_drop!r}"
            )
        if "max_accuracy_drop" in self.model_fields_set and self.metric != "top1":
            raise ValueError(
                f"'max_accuracy_drop' is the budget of metric 'top1'; with metric {self.metric!r} use "
                f"'max_metric_drop' (got max_accuracy_drop {self.max_accuracy_drop!r})"
            )
        return self

    @property
    def metric_budget(self) -> float:
        """The allowed drop of the metric: ``max_metric_drop``, else ``max_accuracy_drop`` (0.01 by default)."""
        return self.max_metric_drop if self.max_metric_drop is not None else self.max_accuracy_drop


class HardwareSettings(BaseModel):
    """Hardware analysis: the machine's figures, measured unless given."""

    model_config = _STRICT
    memory_bandwidth_gbps: float | None = Field(
        default=None, gt=0, description="Override the measured memory bandwidth."
    )
    peak_compute_gmacs: float | None = Field(default=None, gt=0, description="Override the measured compute peak.")


class DeploySettings(BaseModel):
    """Deployment: MLPerf LoadGen scenarios on a simulated slower clock."""

    model_config = _STRICT
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig, description="The LoadGen scenarios.")
    cpu_frequency_scale: float = Field(default=0.5, ge=0.001, le=1, description="Simulated device clock / host clock.")

    @property
    def latency_multiplier(self) -> float:
        """Host → simulated-device latency factor of the linear clock model (1 / cpu_frequency_scale)."""
        return 1.0 / self.cpu_frequency_scale


class TargetSettings(BaseModel):
    """Targets: devices running ``edge-opt agent`` that the variants are measured on, and whose numbers choose."""

    model_config = _STRICT
    targets: list[TargetConfig] = Field(
        default_factory=list, max_length=64, description="Devices running `edge-opt agent`."
    )
    measure_on: list[str] = Field(
        default_factory=lambda: ["host"],
        min_length=1,
        max_length=65,
        description="`host` and target names to measure on (host always included).",
    )
    recommend_for: str | None = Field(
        default=None, description="Whose numbers choose the artifact (default: the first target, else the host)."
    )

    @model_validator(mode="after")
    def _targets(self) -> Self:
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"'targets' must not repeat a name; got {names}")
        allowed = ["host", *names]
        bad = [m for m in self.measure_on if m not in allowed]
        if bad or len(set(self.measure_on)) != len(self.measure_on) or "host" not in self.measure_on:
            raise ValueError(
                f"'measure_on' must list distinct names among {allowed}, 'host' included (every "
                f"variant is built and checked here); got {self.measure_on}"
            )
        if self.recommend_for is not None and self.recommend_for not in self.measure_on:
            raise ValueError(f"'recommend_for' must be one of measure_on {self.measure_on}; got {self.recommend_for!r}")
        return self

    @property
    def recommendation_target(self) -> str:
        """Whose numbers choose the artifact: ``recommend_for``, else the first target measured on, else the host."""
        if self.recommend_for is not None:
            return self.recommend_for
        return next((m for m in self.measure_on if m != "host"), "host")

    @property
    def agent_targets(self) -> list[TargetConfig]:
        """The targets measured on, in ``measure_on`` order."""
        by_name = {t.name: t for t in self.targets}
        return [by_name[m] for m in self.measure_on if m != "host"]


class SearchSettings(BaseModel):
    """Search: every point of the grid, or an Optuna search over the same space."""

    model_config = _STRICT
    search: SearchConfig = Field(default_factory=SearchConfig, description="`strategy: grid` (default), nsga2 or tpe.")


class RunSettings(BaseModel):
    """Run: where the outputs go, where points run, and experiment tracking."""

    model_config = _STRICT
    output_dir: str = Field(default="outputs", description="Where everything goes (the study's own folder).")
    executor: Literal["local", "ray"] = Field(
        default="local", description="Where config points are built and measured."
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster options (`executor: ray`).")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="`{mlflow: {uri, experiment}}`.")

    @field_validator("output_dir")
    @classmethod
    def _output_folder(cls, v: str) -> str:
        """Reported with the other keys' problems (read only: the study proves the folder writable when it
        starts): the folder, or the nearest part of its path that exists, must not be a file."""
        if "\x00" in v:
            raise ValueError("must name a writable folder (a path cannot hold a NUL character)")
        try:
            probe = nearest_existing(Path(v))
            blocked = probe.exists() and not probe.is_dir()
        except OSError as exc:  # a name too long, a folder on the way that may not be searched
            raise ValueError(f"must name a writable folder ({exc.strerror or exc})") from None
        if blocked:
            raise ValueError(f"must name a writable folder ({str(probe)!r} is not a folder)")
        return v


# The parts of a study's configuration, in the order of the stages that read them. YAML keys stay flat (a
# ``StudyConfig`` has every section's keys); a stage receives only its part: ``cfg.part(MeasureSettings)``.
CONFIG_SECTIONS: dict[str, type[BaseModel]] = {
    "Inputs": InputSettings,
    "Training": TrainingSettings,
    "Variants": VariantSettings,
    "Measurement": MeasureSettings,
    "Budgets": BudgetSettings,
    "Hardware": HardwareSettings,
    "Deployment": DeploySettings,
    "Targets": TargetSettings,
    "Search": SearchSettings,
    "Run": RunSettings,
}

SectionT = TypeVar("SectionT", bound=BaseModel)


class StudyConfig(
    RunSettings,
    SearchSettings,
    TargetSettings,
    DeploySettings,
    HardwareSettings,
    BudgetSettings,
    MeasureSettings,
    VariantSettings,
    TrainingSettings,
    InputSettings,
):
    """All keys of a study: every section's keys, flat as in the YAML file. Unknown keys are errors."""

    model_config = _STRICT

    def part(self, section: type[SectionT]) -> SectionT:
        """The keys of one section, as that section's frozen record (what a stage receives)."""
        return section.model_construct(**{name: getattr(self, name) for name in section.model_fields})

    @model_validator(mode="before")
    @classmethod
    def _legacy_quantization_keys(cls, data: Any) -> Any:
        """Move the flat int8 keys of earlier releases into ``quantization:`` (both at once is an error)."""
        if not isinstance(data, dict) or not any(k in data for k in LEGACY_QUANTIZATION_KEYS):
            return data
        data = dict(data)
        section = data.get("quantization") or {}
        if not isinstance(section, dict):
            return data  # the section's own validation reports it
        section = dict(section)
        for old, new in LEGACY_QUANTIZATION_KEYS.items():
            if old not in data:
                continue
            if new in section:
                raise ValueError(
                    f"'{old}' is the old spelling of 'quantization.{new}'; give only "
                    f"'quantization.{new}' (got {data[old]!r} and {section[new]!r})"
                )
            section[new] = data.pop(old)
        data["quantization"] = section
        return data

    @model_validator(mode="after")
    def _search_executor(self) -> StudyConfig:
        if self.search.strategy != "grid" and self.executor != "local":
            raise ValueError(
                f"search strategy {self.search.strategy!r} runs its trials one after another on the "
                f"local executor; got executor {self.executor!r} (use strategy 'grid' with Ray)"
            )
        return self

    @model_validator(mode="after")
    def _batches(self) -> StudyConfig:
        if self.latency_batch_size > self.batch_size:
            raise ValueError(
                f"'latency_batch_size' ({self.latency_batch_size}) must be at most 'batch_size' "
                f"({self.batch_size}): latency is timed on the first validation batch"
            )
        return self

    @property
    def train_epochs(self) -> int:
        """Baseline training epochs: ``epochs`` when given, else 8 for a registry model and 0 for a trained one."""
        if self.epochs is not None:
            return self.epochs
        return 0 if self.model.trained else 8

    @property
    def config_hash(self) -> str:
        """What identifies the study (not where it lives): recorded in every derived output."""
        from .core import config_hash

        return config_hash(self.model_dump(mode="json"))


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxother = 100, 100


def short_repr(value: Any, limit: int = 120) -> str:
    """A bounded ``repr`` (nested and long values elided before the text is built), for error messages."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_short = short_repr


def _union_member(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in ("bool", "int", "float", "str"))


def format_validation_error(exc: ValidationError, model: type[BaseModel] = StudyConfig) -> list[str]:
    """Turn a pydantic ``ValidationError`` into one scikit-learn-style line per problem."""
    lines: list[str] = []
    keys: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        # pydantic names the member of a union (``literal[...]``, ``list[...]``, ``bool``) after the key: drop it
        loc = tuple(p for p in err["loc"] if p not in ("function-after",) and not _union_member(p))
        key = _loc(loc) or "<config>"
        if key in seen and key != "<config>" and err["type"] != "extra_forbidden":
            continue  # one line per key: a value that fits none of a union's members
        seen.add(key)
        if err["type"] == "extra_forbidden":
            parent = model
            for part in loc[:-1]:
                field = parent.model_fields.get(part) if isinstance(part, str) else None
                ann = getattr(field, "annotation", None) if field else None
                parent = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else parent
            allowed = sorted(parent.model_fields)
            lines.append(f"Unknown key {key!r}. Allowed keys: {allowed}. Got {_short(err['input'])}.")
            keys.append(key)
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # a rule over several keys (names them itself)
            lines.append(f"The config is invalid: {msg}.")
            keys.append(key)
            continue
        lines.append(f"The {key!r} parameter is invalid: {msg}. Got {_short(err.get('input'))} instead.")
        keys.append(key)
    # a value or a list: when a list item is named, the line about the whole key adds nothing
    return [line for line, k in zip(lines, keys) if not any(o.startswith(k + "[") for o in keys)]


def config_from_dict(data: Any, allow_python: bool = True) -> StudyConfig:
    """Validate a mapping into a ``StudyConfig``.

    Raises:
        ConfigError: with one message per invalid key.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"The config must be a mapping of keys to values. Got {type(data).__name__} instead."])
    model = data.get("model")
    if isinstance(model, dict) and model.get("python") is not None and not allow_python:
        raise ConfigError(
            [
                "The 'model.python' key is set by edge_opt.optimize for an in-memory module; a config "
                "file names its model with one of 'model.name', 'model.onnx', 'model.factory', "
                f"'model.exported'. Got {model['python']!r}."
            ]
        )
    if _count_values(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise ConfigError(
            [
                f"The config must hold at most {MAX_CONFIG_VALUES:,} values (YAML aliases count each time "
                "they are used). Got more instead."
            ]
        )
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError([f"Config keys must be strings. Got {_short(bad_keys)} instead."])
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    except (RecursionError, OverflowError, ValueError, TypeError) as exc:  # pathological input
        raise ConfigError([f"The config could not be validated: {type(exc).__name__}: {exc}"]) from None


def load_config(path: str | Path, overrides: dict | None = None) -> StudyConfig:
    """Load a YAML config file (``yaml.safe_load``) and validate it.

    Args:
        path: YAML file.
        overrides: keys that replace those of the file (e.g. from the CLI).
    Returns:
        The validated, immutable config.
    Raises:
        ConfigError: unreadable file, invalid YAML, or invalid values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"The config file {str(path)!r} does not exist."]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"The config file {str(path)!r} could not be read: {exc}"]) from None
    folder = {"config_dir": str(path.resolve().parent)}  # a factory is imported from here first
    return config_from_yaml(text, {**folder, **(overrides or {})}, source=str(path))


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping names the same key twice (PyYAML would silently keep the last)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a repeated key instead of keeping the last value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen.setdefault(key, line)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise DuplicateKeyError(f"{short_repr(key)} on line {line} (first on line {first}); remove one of them")
        return super().construct_mapping(node, deep=deep)


def config_from_yaml(text: str, overrides: dict | None = None, source: str = "<string>") -> StudyConfig:
    """Parse YAML text and validate it; see ``load_config``."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except DuplicateKeyError as exc:
        raise ConfigError([f"The config file {source!r} repeats a key: {exc}"]) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError([f"The config file {source!r} is not valid YAML (safe subset): {first}"]) from None
    except (RecursionError, ValueError, OverflowError) as exc:
        raise ConfigError([f"The config file {source!r} could not be parsed: {type(exc).__name__}"]) from None
    if overrides:
        if data is None:
            data = {}
        if isinstance(data, dict):
            extra = {k: v for k, v in overrides.items() if not (k == "config_dir" and "config_dir" in data)}
            data = _resolve_paths({**data, **extra})
    return config_from_dict(data, allow_python=False)


# File keys a config file names relative to its own folder (``data_dir`` stays relative to the working folder).
CONFIG_RELATIVE_KEYS = ("data_path", "calibration_data_path", "model.onnx", "model.exported", "model.weights")


def _resolve_paths(data: dict[str, Any]) -> dict[str, Any]:
    """Make the ``CONFIG_RELATIVE_KEYS`` of a config file absolute against its folder (``config_dir``)."""
    base = data.get("config_dir")
    if not isinstance(base, str):
        return data
    data = dict(data)
    model = dict(data["model"]) if isinstance(data.get("model"), dict) else None
    for key in CONFIG_RELATIVE_KEYS:
        holder, name = (model, key.split(".", 1)[1]) if key.startswith("model.") else (data, key)
        value = holder.get(name) if holder is not None else None
        if isinstance(value, str) and value and not Path(value).is_absolute():
            holder[name] = str(Path(base) / value)  # type: ignore[index]
    if model is not None:
        data["model"] = model
    return data
