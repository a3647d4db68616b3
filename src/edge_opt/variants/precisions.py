"""Precisions as registry entries that carry their behaviour (torchao's config → handler idea).

Each ``Precision`` owns its options (int8: the ``quantization:`` section), the fields it adds
to a config point's key, the ``edge-opt bench`` precision-mode name it answers to, and one build hook per kind of
backend: ``torch`` (a module and the input conversion) and ``onnx`` (an ONNX file from the
parent's fp32 export). A backend asks the precision for its hook; a precision without a hook
for that kind is an error row naming the precision and the backend. Adding a precision is
one ``register_precision`` call here; the backends that support it need nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import QuantizationConfig
from ..core import Registry, batch_map, batch_parts, batch_runs
from .base import BuildContext, VariantBuildError
from .calibration import CALIBRATION_RUN_VALUES, calibration_samples
from .layers import layer_report, torch_layer_precisions, torch_layers
from .onnx_tools import CalibrationReader, onnx_input_names
from .quantize import (
    CalibratedInt8,
    calibrate_torch_int8,
    convert_torch_int8,
    is_quantized_module,
    quantization_metadata,
)

__all__ = [
    "CALIBRATION_RUN_VALUES",
    "PRECISIONS",
    "Precision",
    "add_hook",
    "PrecisionSpec",
    "TorchBuild",
    "int8_onnx_file",
    "from_seed_name",
    "get_precision",
    "list_precisions",
    "ort_calibration_cache",
    "register_precision",
    "seed_names",
    "to_seed_name",
    "torch_int8_calibration",
]


@dataclass(frozen=True)
class TorchBuild:
    """What a precision's torch hook returns: the module to run, the input conversion and metadata."""

    module: nn.Module
    prepare: Callable[[torch.Tensor], torch.Tensor]
    metadata: dict[str, Any]


TorchHook = Callable[[nn.Module, BuildContext, bool], TorchBuild]
OnnxHook = Callable[[Path, BuildContext], tuple[Path, dict[str, Any]]]


@dataclass(frozen=True)
class Precision:
    """A numeric precision a study can request, with its behaviour.

    Attributes:
        name: the study's name (fp32, fp16, bf16, int8).
        bytes_per_value: bytes of one weight/activation value (roofline and layer tables read it).
        description: one line for docs and errors.
        seed_name: its ``edge-opt bench`` precision-mode name (float32, float16, bfloat16, int8).
        quantized: reads the ``quantization:`` options (and adds them to the point key).
        torch_dtype: the float dtype a torch module runs in (None for quantized precisions).
        hooks: build hook per backend kind ("torch", "onnx").
    """

    name: str
    bytes_per_value: float
    description: str
    seed_name: str
    quantized: bool = False
    torch_dtype: torch.dtype | None = None
    searches: bool = False  # the build searches against the accuracy budget (int8_mixed)
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict, compare=False)

    def key_fields(self, options: QuantizationConfig, max_accuracy_drop: float = 0.01) -> dict[str, Any]:
        """What this precision adds to a config point's key (only what changes its numbers)."""
        if not self.quantized:
            return {"calibration": None}
        fields: dict[str, Any] = {
            "calibration": [options.calibration_batches, options.calibration_method, options.engine]
        }
        if not options.per_channel:  # the default (per-channel) keeps the keys of earlier stores
            fields["per_channel"] = False
        if options.calibration_method == "percentile":
            fields["percentile"] = options.percentile
        if options.calibration_method == "minmax":  # the samples min/max needs (``calibration``)
            fields["calibration_tolerance"] = options.calibration_tolerance
        if self.searches:
            fields["search"] = [max_accuracy_drop, options.max_float_mac_fraction]
        if options.recovery != "none":  # no recovery keeps the keys of earlier stores
            fields["recovery"] = (
                [options.recovery, options.qat_epochs] if options.recovery == "qat" else options.recovery
            )
        return fields

    def hook(self, kind: str, backend: str) -> Callable[..., Any]:
        """The build hook for a kind of backend.

        Raises:
            VariantBuildError: naming the precision, the backend and the precisions it supports.
        """
        if kind not in self.hooks:
            able = [p.name for p in (PRECISIONS.get(n) for n in PRECISIONS.names()) if kind in p.hooks]
            raise VariantBuildError(
                f"backend {backend!r} does not support precision {self.name!r} (it supports {able})."
            )
        return self.hooks[kind]


PrecisionSpec = Precision  # the name of earlier releases
PRECISIONS: Registry[Precision] = Registry("precision", "precisions")


def register_precision(precision: Precision) -> Precision:
    """Add a precision to the registry (a duplicate name is an error)."""
    return PRECISIONS.register(precision.name)(precision)


def add_hook(precision: str, kind: str, hook: Callable[..., Any]) -> None:
    """Give a registered precision a build hook for another kind of backend (a runtime module adds its own)."""
    PRECISIONS.get(precision).hooks[kind] = hook


def get_precision(name: str) -> Precision:
    """The registered precision ``name``.

    Raises:
        UnknownNameError: naming the known precisions.
    """
    return PRECISIONS.get(name)


def list_precisions() -> list[str]:
    """Names of the registered precisions."""
    return PRECISIONS.names()


def seed_names() -> dict[str, str]:
    """``edge-opt bench`` precision-mode name → study name (float32 → fp32 …): where the two vocabularies meet."""
    return {PRECISIONS.get(n).seed_name: n for n in PRECISIONS.names()}


def from_seed_name(seed_name: str) -> str:
    """The study's precision for an ``edge-opt bench`` precision-mode name (``float16`` → ``fp16``)."""
    try:
        return seed_names()[seed_name]
    except KeyError:
        raise ValueError(
            f"The 'precision_mode' parameter must be one of {sorted(seed_names())}. Got {seed_name!r} instead."
        ) from None


def to_seed_name(name: str) -> str:
    """The ``edge-opt bench`` precision-mode name of a study precision (``fp16`` → ``float16``)."""
    return get_precision(name).seed_name


# --- float precisions --------------------------------------------------------------------


def _channels_last(x: torch.Tensor, on: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if on and x.dim() == 4 else x


def _float_torch_hook(dtype: torch.dtype) -> TorchHook:
    def build(model: nn.Module, ctx: BuildContext, channels_last: bool) -> TorchBuild:
        m = copy.deepcopy(model).to(dtype).eval()
        if channels_last:
            m = m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs omit it
        return TorchBuild(m, lambda x: _channels_last(x.to(dtype), channels_last), {})

    return build


def _fp32_onnx(fp32: Path, ctx: BuildContext) -> tuple[Path, dict[str, Any]]:
    return fp32, {}


def _fp16_onnx(fp32: Path, ctx: BuildContext) -> tuple[Path, dict[str, Any]]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out = ctx.workdir / f"{ctx.parent_key}_fp16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(out))
    return out, {"converter": "onnxruntime.transformers.float16 (float32 I/O kept)"}


# --- int8 ---------------------------------------------------------------------------------


def _calibration_meta(ctx: BuildContext) -> dict[str, Any]:
    return {
        "calibration_batches": len(ctx.calibration),
        "calibration_samples": calibration_samples(ctx),
        "calibration_stop": ctx.calibration_stop,
    }


def torch_int8_calibration(model: nn.Module, ctx: BuildContext, channels_last: bool = False) -> CalibratedInt8:
    """The parent's FX int8 calibration with the point's quantization options, shared by int8, the per-layer
    sensitivity pass and int8_mixed's search of that parent. One slot in ``ctx.cache`` (the latest parent's):
    a study builds a parent's variants together, and a large model's observed copies are not kept around."""
    q = ctx.quantization
    key = (ctx.parent_key, q.model_dump_json(), channels_last)
    slot = ctx.cache.get("torch_int8_calibration")
    if slot is None or slot[0] != key or slot[2] is not ctx.calibration:
        base = model  # calibrate_torch_int8 works on float copies of its own; Module.to is in place, hence a copy here
        if channels_last:
            base = copy.deepcopy(model).float().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        calib = [_channels_last(b.float(), channels_last) for b in ctx.calibration]
        if torch_observer(q) == "minmax":  # the same ranges from runs of bounded size (``core.batch_runs``): a
            calib = batch_runs(calib, CALIBRATION_RUN_VALUES)  # 32-image batch at 224² took twice a 3-image run's time
        observed = calibrate_torch_int8(base, calib, q.engine, q.channelwise, torch_observer(q))
        slot = (key, observed, ctx.calibration)
        ctx.cache["torch_int8_calibration"] = slot
    found: CalibratedInt8 = slot[1]
    return found


def torch_observer(q: QuantizationConfig) -> str:
    """torch int8's activation observer for the point's options: min/max for ``calibration_method: minmax`` (the
    default, as ONNX Runtime and NNCF calibrate), the engine's histogram observer for the histogram methods."""
    return "minmax" if q.method == "minmax" else "histogram"


def _int8_torch(model: nn.Module, ctx: BuildContext, channels_last: bool) -> TorchBuild:
    q = ctx.quantization
    calib = [_channels_last(b.float(), channels_last) for b in ctx.calibration]
    base = copy.deepcopy(model).float().eval()
    m = convert_torch_int8(torch_int8_calibration(model, ctx, channels_last))
    qtypes = sorted({type(mod).__name__ for mod in m.modules() if is_quantized_module(mod)})
    if not qtypes:
        raise VariantBuildError("int8 requested but the converted torch model holds no quantized module.")
    layers = torch_layers(base, calib[0])
    meta = {
        "quantizer": "torch.ao.quantization FX (static PTQ)",
        "quantization_backend": q.engine,
        "per_channel": q.channelwise,
        "activation_observer": torch_observer(q),
        **_calibration_meta(ctx),
        "quantized_module_types": qtypes,
        "layers": quantization_metadata(m),
        **layer_report(layers, torch_layer_precisions(m, layers)),
    }
    return TorchBuild(m, lambda x: _channels_last(x.float(), channels_last), meta)


def ort_calibration_cache(fp32: Path, ctx: BuildContext) -> Path:
    """Where ORT keeps the tensor ranges calibrated on ``fp32`` with the point's options
    (``quantize_static``'s ``calibration_cache_path``): one calibration of a parent serves int8, every layer
    of the sensitivity pass and every step of int8_mixed's search. Named by the file (path, size, mtime),
    the options, the op types quantized and the calibration batches, so a changed input is calibrated anew; a
    file that no longer reads as JSON is removed, so the next build calibrates again."""
    st = fp32.stat()
    slot = ctx.cache.get("calibration_fingerprint")  # the batches' sums: 0.8 s for 8 batches of 32×3×224², once
    if slot is None or slot[0] is not ctx.calibration:
        sums = [batch_map(b, lambda p: (tuple(p.shape), round(float(p.double().sum()), 6))) for b in ctx.calibration]
        slot = ctx.cache["calibration_fingerprint"] = (ctx.calibration, sums)
    batches = slot[1]
    text = json.dumps(
        [
            str(fp32.resolve()),
            st.st_size,
            st.st_mtime_ns,
            ctx.quantization.model_dump_json(),
            ctx.ort_op_types_to_quantize,
            batches,
        ],
        default=str,
    )
    path = ctx.workdir / "calibration" / f"{fp32.stem}_{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    try:
        if path.is_file():
            json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # damaged on disk (ORT writes it atomically): calibrate again in its place
        path.unlink(missing_ok=True)
    return path


QDQ_MIN_OPSET = 13  # per-channel (axis) QuantizeLinear/DequantizeLinear need opset 13


def _quantizable(model: Any) -> Any:
    """``model`` at an opset ORT's QDQ quantizer writes valid per-channel graphs for: an older graph (Paddle2ONNX and
    tf2onnx often write opset 11) is converted to opset 13 by ONNX's version converter first."""
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), QDQ_MIN_OPSET)
    return version_converter.convert_version(model, QDQ_MIN_OPSET) if opset < QDQ_MIN_OPSET else model


def int8_onnx_file(
    fp32: Path, ctx: BuildContext, out: Path, exclude: Sequence[str] = (), include: Sequence[str] | None = None
) -> dict[str, Any]:
    """ORT static QDQ int8 of ``fp32`` into ``out`` (``exclude``/``include``: ONNX node names kept float /
    the only ones quantized), calibrated once per parent and options (``ort_calibration_cache``); returns the
    build's metadata."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    q = ctx.quantization
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    kwargs: dict[str, Any] = {"nodes_to_exclude": list(exclude)}
    if q.method == "percentile":
        kwargs["extra_options"] = {"CalibPercentile": q.percentile}
    if include is not None:
        kwargs["nodes_to_quantize"] = list(include)
    if ctx.ort_op_types_to_quantize is not None:
        kwargs["op_types_to_quantize"] = list(ctx.ort_op_types_to_quantize)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT logs its "consider pre-processing" notice on the root logger
    chatter = io.StringIO()  # ORT's histogram calibrators print their progress: kept off the study's display
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            model = _quantizable(onnx.load(str(fp32)))
            cache = _calibrate_ort(model, fp32, ctx, methods[q.method], kwargs.get("extra_options", {}))
            quantize_static(
                model,  # a proto: ORT's shape-inferred copy goes to a temp folder, never beside the fp32 file
                str(out),
                None,  # the ranges are read from the calibration cache
                quant_format=QuantFormat.QDQ,
                per_channel=q.channelwise,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[q.method],
                calibration_cache_path=cache,
                **kwargs,
            )
    finally:
        root.setLevel(level)
        if chatter.getvalue():
            logging.getLogger(__name__).debug("onnxruntime calibration: %s", chatter.getvalue().strip())
    meta = {
        "quantizer": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "per_channel": q.channelwise,
        "activation_type": "QInt8",
        "weight_type": "QInt8",
        "calibration_method": q.method,
        **_calibration_meta(ctx),
        "quantization_parameters": _qdq_parameters(out),
    }
    if q.method == "percentile":
        meta["percentile"] = q.percentile
    return meta


def _calibration_runs(batches: Sequence[Any], method: str) -> list[Any]:
    """The calibration batches as ORT's calibrator runs them. Min/max ranges are the min and max over the runs,
    the same however the samples are grouped, so a batch is split into runs of at most ``CALIBRATION_RUN_VALUES``
    input values (``core.batch_runs``: bounding the run's memory; whole batches for small inputs). The histogram
    methods (entropy, percentile) widen their bins run by run, so their batches run whole, as given."""
    return batch_runs(batches, CALIBRATION_RUN_VALUES) if method == "minmax" else list(batches)


def _calibrate_ort(model: Any, fp32: Path, ctx: BuildContext, method: Any, extra: dict[str, Any]) -> Path:
    """The calibration cache of ``model`` (``ort_calibration_cache``), calibrated first unless it is there: ORT's
    calibration (what ``quantize_static`` calibrates: the same augmented graph, op types and options) written to the
    file ``quantize_static`` then reads. Done here rather than inside
    ``quantize_static`` for two settings it does not expose: the calibration session runs ``ctx.threads`` intra-op
    threads (ORT's default takes every core, the measuring one too) and min/max runs in bounded sub-batches
    (``_calibration_runs``)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import calibrate, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    cache = ort_calibration_cache(fp32, ctx)
    if cache.is_file():
        return cache
    ops = list(ctx.ort_op_types_to_quantize or set(QLinearOpsRegistry) | set(QDQRegistry))
    options = {"percentile": extra["CalibPercentile"]} if "CalibPercentile" in extra else {}
    with tempfile.TemporaryDirectory(prefix="edge_opt_calib.") as tmp:
        big = model.ByteSize() >= onnx.checker.MAXIMUM_PROTOBUF  # saving as external data moves the tensors out
        onnx.save_model(
            copy.deepcopy(model) if big else model, str(Path(tmp) / "model_input.onnx"), save_as_external_data=big
        )
        calibrator = calibrate.create_calibrator(
            Path(tmp) / "model_input.onnx",
            ops,
            augmented_model_path=str(Path(tmp) / "augmented_model.onnx"),
            calibrate_method=method,
            extra_options=options,
        )
        so = ort.SessionOptions()  # ORT's own calibration session options, with the study's thread count
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = ctx.threads
        so.inter_op_num_threads = 1
        calibrator.infer_session = ort.InferenceSession(
            calibrator.augmented_model_path, so, providers=["CPUExecutionProvider"]
        )
        runs = _calibration_runs(ctx.calibration, ctx.quantization.method)
        calibrator.collect_data(CalibrationReader(runs, onnx_input_names(fp32)))
        ranges = calibrator.compute_data()
        del calibrator, runs  # the augmented session and its collected outputs, before the quantizer loads
    save_tensors_data(ranges, cache)  # written atomically
    return cache


def _ort_basic_optimized(fp32: Path, threads: int) -> Any:
    """``fp32`` after ORT's basic (ONNX-standard) graph optimisations — BatchNorm folded into its Conv, constants
    folded — at an opset the QDQ quantizers take: the graph ORT's own ``quantize_static`` quantizes, given to NNCF so
    a conv's QDQ pair sits next to it and ORT can fuse it into an int8 kernel."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edge_opt_nncf.") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(Path(tmp) / "basic.onnx")
        so.intra_op_num_threads = threads
        ort.InferenceSession(str(fp32), so, providers=["CPUExecutionProvider"])
        return _quantizable(onnx.load(so.optimized_model_filepath))


def _ort_weight_names(model: Any, fp32: Any) -> Any:
    """NNCF's QDQ graph with each layer's int8 weight and its dequantized copy named as ORT's quantizer names them
    (``<weight>_quantized``, ``<weight>_DequantizeLinear_Output``, ``<weight>`` the float graph's weight input of
    the node of the same name), so the kernel-truth code (``layers.ort_layer_precisions``) reads which layers run
    int8 from either quantizer's graph."""
    weights = {n.name: n.input[1] for n in fp32.graph.node if len(n.input) > 1}
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    renames: dict[str, str] = {}
    for node in model.graph.node:
        dq = producer.get(node.input[1]) if len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or node.name not in weights:
            continue
        weight = weights[node.name]
        renames[dq.input[0]] = f"{weight}_quantized"
        renames[dq.output[0]] = f"{weight}_DequantizeLinear_Output"
    for init in model.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
    return model


def _qdq_parameters(path: Path) -> dict[str, list[float]]:
    """Every scale and zero point of a QDQ model (what a re-run must reproduce exactly): the initializers named so
    (ORT's quantizer), or read by a Quantize/DequantizeLinear as its scale or zero point (NNCF's)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    qdq = {
        n.input[i]
        for n in g.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear")
        for i in (1, 2)[: len(n.input) - 1]
    }
    return {
        i.name: numpy_helper.to_array(i).astype("float64").reshape(-1).tolist()
        for i in g.initializer
        if i.name.endswith(("_scale", "_zero_point")) or i.name in qdq
    }


def _int8_onnx(fp32: Path, ctx: BuildContext) -> tuple[Path, dict[str, Any]]:
    q = ctx.quantization
    tag = q.label.replace("/", "_")
    out = ctx.workdir / f"{ctx.parent_key}_int8_{tag}.onnx"
    if q.recovery_method == "bias_correction":
        return out, nncf_int8_onnx_file(fp32, ctx, out)
    return out, int8_onnx_file(fp32, ctx, out)


def nncf_int8_onnx_file(fp32: Path, ctx: BuildContext, out: Path) -> dict[str, Any]:
    """QDQ int8 of ``fp32`` into ``out`` by NNCF's ONNX quantizer with its full bias correction
    (``fast_bias_correction=False``): ``recovery: bias_correction`` on ONNX Runtime. NNCF calibrates min/max and
    quantizes weights per channel or per tensor as the point asks; returns the build's metadata.

    Raises:
        VariantBuildError: NNCF is not installed, or the point asks for another calibration method.
    """
    import onnx

    q = ctx.quantization
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    except ImportError:
        raise VariantBuildError("recovery 'bias_correction' needs NNCF: pip install 'edge-opt[openvino]'") from None
    if q.method != "minmax":
        raise VariantBuildError(
            f"recovery 'bias_correction' quantizes with NNCF, which calibrates min/max: calibration_method "
            f"{q.method!r} does not apply (list minmax)"
        )
    names = onnx_input_names(fp32)
    runs = batch_runs(ctx.calibration, CALIBRATION_RUN_VALUES)  # bounded items, as every min/max calibration here
    items = [dict(zip(names, (p.numpy() for p in batch_parts(b)), strict=True)) for b in runs]
    fused = _ort_basic_optimized(fp32, ctx.threads)
    advanced = AdvancedQuantizationParameters(
        weights_quantization_params=QuantizationParameters(per_channel=q.channelwise)
    )
    nncf.set_log_level(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bar
        warnings.simplefilter("ignore")
        model = nncf.quantize(
            fused,
            nncf.Dataset(items),
            subset_size=len(items),  # NNCF counts dataset items
            fast_bias_correction=False,
            advanced_parameters=advanced,
        )
    onnx.save(_ort_weight_names(model, onnx.load(str(fp32), load_external_data=False)), str(out))
    return {
        "quantizer": f"nncf.quantize (ONNX backend, NNCF {nncf.__version__}) on ORT's basic-optimised graph",
        "format": "QDQ",
        "per_channel": q.channelwise,
        "calibration_method": "minmax (NNCF)",
        "bias_correction": "NNCF's full bias correction (fast_bias_correction=False)",
        **_calibration_meta(ctx),
        "quantization_parameters": _qdq_parameters(out),
    }


register_precision(
    Precision(
        "fp32",
        4,
        "32-bit float (training precision)",
        "float32",
        torch_dtype=torch.float32,
        hooks={"torch": _float_torch_hook(torch.float32), "onnx": _fp32_onnx},
    )
)
register_precision(
    Precision(
        "fp16",
        2,
        "16-bit float weights and activations",
        "float16",
        torch_dtype=torch.float16,
        hooks={"torch": _float_torch_hook(torch.float16), "onnx": _fp16_onnx},
    )
)
register_precision(
    Precision(
        "bf16",
        2,
        "bfloat16 weights and activations (torch only)",
        "bfloat16",
        torch_dtype=torch.bfloat16,
        hooks={"torch": _float_torch_hook(torch.bfloat16)},
    )
)
register_precision(
    Precision(
        "int8",
        1,
        "static post-training int8 quantization with calibration",
        "int8",
        quantized=True,
        hooks={"torch": _int8_torch, "onnx": _int8_onnx},
    )
)
