"""Runtime backends behind one registry, and the ``Variant`` every backend returns.

A backend takes a (pruned) float model and a precision and returns a ``Variant``:
something that runs a batch and returns logits, and says what it is — backend,
requested precision, the precision its kernels really compute in, parameter
bytes, metadata. ``edge_opt.metrics.collect_metrics`` measures any variant the
same way. Register a new backend with ``@register_backend("name")``; the sweep
does not change.
"""
from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..registry import Registry
from .quantize import is_quantized_module, quantization_metadata, quantize_torch_int8


@dataclass(frozen=True)
class PrecisionSpec:
    """A numeric precision a study can request."""

    name: str
    bytes_per_value: float
    description: str


PRECISIONS: Registry[PrecisionSpec] = Registry("precision", "precisions")
for _p in (
    PrecisionSpec("fp32", 4, "32-bit float (training precision)"),
    PrecisionSpec("fp16", 2, "16-bit float weights and activations"),
    PrecisionSpec("int8", 1, "static post-training int8 quantization with calibration"),
):
    PRECISIONS.register(_p.name)(_p)


def list_precisions() -> list[str]:
    """Names of the registered precisions."""
    return PRECISIONS.names()


class VariantBuildError(RuntimeError):
    """A variant could not be built as requested (becomes a row with ``error`` set)."""


@dataclass
class BuildContext:
    """What a backend may need to build a variant.

    Attributes:
        calibration: exactly the batches int8 calibration uses.
        example_input: one input batch (shape and dtype reference).
        workdir: where files (ONNX graphs, metadata) go.
        parent_key: identifies the float parent (pruning level etc.) so exports are shared.
        ort_op_types_to_quantize: None = ORT's default set; used by tests to force an unquantized graph.
    """

    calibration: Sequence[torch.Tensor]
    example_input: torch.Tensor
    workdir: Path
    parent_key: str = "model"
    quantization_backend: str = "x86"
    calibration_method: str = "minmax"
    threads: int = 1
    ort_op_types_to_quantize: Optional[list[str]] = None
    cache: dict = field(default_factory=dict)


@dataclass(eq=False)
class Variant:
    """A runnable, self-describing build of one config point.

    ``prepare`` converts a float32 NCHW tensor to the backend's native input once, outside
    any timed region; ``run`` executes one prepared batch; ``predict`` returns float32 logits.
    """

    backend: str
    precision: str
    kernel_precision: str
    parameter_bytes: int
    metadata: dict[str, Any]
    prepare: Callable[[torch.Tensor], Any]
    run: Callable[[Any], Any]
    to_logits: Callable[[Any], np.ndarray]
    module: Optional[nn.Module] = None
    onnx_path: Optional[Path] = None

    def predict(self, x: torch.Tensor) -> np.ndarray:
        """Float32 logits for a float32 NCHW batch."""
        return self.to_logits(self.run(self.prepare(x)))


BackendBuilder = Callable[[nn.Module, str, BuildContext], Variant]
BACKENDS: Registry[BackendBuilder] = Registry("backend", "backends")
register_backend = BACKENDS.register


def list_backends() -> list[str]:
    """Names of the registered backends."""
    return BACKENDS.names()


def build_variant(backend: str, model: nn.Module, precision: str, ctx: BuildContext) -> Variant:
    """Build ``model`` at ``precision`` on ``backend``.

    Raises:
        UnknownNameError: unknown backend or precision. VariantBuildError: the build failed its checks.
    """
    PRECISIONS.get(precision)
    return BACKENDS.get(backend)(model, precision, ctx)


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_tensor_bytes(o) for o in obj)
    return 0


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of every tensor in the state dict at its real dtype (qint8 = 1 byte, packed int8 weights included)."""
    return sum(_tensor_bytes(v) for v in model.state_dict().values())


def torch_kernel_precision(model: nn.Module) -> str:
    """What a torch module really computes in: int8 if it holds quantized modules, else its float dtype."""
    if any(is_quantized_module(m) for m in model.modules()):
        return "int8"
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}
    return "+".join(sorted(names.get(d, str(d)) for d in dtypes)) or "fp32"


def _torch_variant(model: nn.Module, precision: str, ctx: BuildContext, channels_last: bool, name: str) -> Variant:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    meta: dict[str, Any] = {"memory_format": "channels_last" if channels_last else "contiguous"}

    def to_fmt(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=fmt) if x.dim() == 4 else x

    if precision == "fp32":
        m = copy.deepcopy(model).float().eval()
        prepare = lambda x: to_fmt(x.float())  # noqa: E731
    elif precision == "fp16":
        m = copy.deepcopy(model).half().eval()
        prepare = lambda x: to_fmt(x.half())  # noqa: E731
    elif precision == "int8":
        calib = [to_fmt(b.float()) for b in ctx.calibration]
        base = copy.deepcopy(model).float().eval()
        if channels_last:
            base = base.to(memory_format=torch.channels_last)
        m = quantize_torch_int8(base, calib, ctx.quantization_backend)
        prepare = lambda x: to_fmt(x.float())  # noqa: E731
        qtypes = sorted({type(q).__name__ for q in m.modules() if is_quantized_module(q)})
        if not qtypes:
            raise VariantBuildError("int8 requested but the converted torch model holds no quantized module.")
        meta.update({
            "quantizer": "torch.ao.quantization FX (static PTQ)",
            "quantization_backend": ctx.quantization_backend,
            "calibration_batches": len(ctx.calibration),
            "calibration_samples": int(sum(len(b) for b in ctx.calibration)),
            "quantized_module_types": qtypes,
            "layers": quantization_metadata(m),
        })
    else:
        raise VariantBuildError(f"backend {name!r} does not support precision {precision!r}.")
    if channels_last and precision != "int8":
        m = m.to(memory_format=torch.channels_last)

    def run(x: Any) -> torch.Tensor:
        with torch.inference_mode():
            return m(x)

    return Variant(
        backend=name,
        precision=precision,
        kernel_precision=torch_kernel_precision(m),
        parameter_bytes=state_dict_bytes(m),
        metadata=meta,
        prepare=prepare,
        run=run,
        to_logits=lambda out: out.float().numpy(),
        module=m,
    )


def wrap_torch_module(model: nn.Module, precision: Optional[str] = None,
                      calibration: Sequence[torch.Tensor] = ()) -> Variant:
    """A ``Variant`` for a plain torch module, as it is when it already runs ``precision``.

    ``precision=None`` takes what the module computes in (int8 for a quantized module, fp16 for a
    ``.half()`` model, else fp32). A float module asked for fp16 is converted (a copy); asked for
    int8 it is quantized with ``calibration`` batches.

    Raises:
        ValueError: int8 requested for a float module without calibration batches.
    """
    kernel = torch_kernel_precision(model)
    precision = precision or ("fp32" if kernel not in ("int8", "fp16") else kernel)
    if kernel == "int8":
        precision = "int8"  # a quantized module runs (and is labelled) as what it is, whatever was asked
    if kernel == precision and precision in ("int8", "fp16"):
        dtype = torch.float16 if precision == "fp16" else torch.float32

        def run(x: Any) -> torch.Tensor:
            with torch.inference_mode():
                return model(x)

        return Variant(backend="torch", precision=precision, kernel_precision=kernel,
                       parameter_bytes=state_dict_bytes(model), metadata={"wrapped": True},
                       prepare=lambda x: x.to(dtype), run=run, to_logits=lambda out: out.float().numpy(), module=model)
    if precision == "int8" and not calibration:
        raise ValueError("The 'precision' parameter 'int8' needs calibration batches for a float module "
                         "(or pass an already quantized module).")
    example = calibration[0] if calibration else torch.zeros(1)
    ctx = BuildContext(calibration=list(calibration), example_input=example, workdir=Path("."))
    return build_variant("torch", model, precision, ctx)


@register_backend("torch")
def torch_backend(model: nn.Module, precision: str, ctx: BuildContext) -> Variant:
    """PyTorch eager, NCHW (contiguous) tensors."""
    return _torch_variant(model, precision, ctx, channels_last=False, name="torch")


@register_backend("torch_channels_last")
def torch_channels_last_backend(model: nn.Module, precision: str, ctx: BuildContext) -> Variant:
    """PyTorch eager with ``channels_last`` memory format (NHWC kernels for conv/pool)."""
    return _torch_variant(model, precision, ctx, channels_last=True, name="torch_channels_last")


# --- ONNX Runtime -------------------------------------------------------------------------

QUANT_COMPUTE_OPS = frozenset({
    "QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QLinearAdd", "QLinearMul",
    "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "QAttention",
})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_COMPUTE_OPS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"})
_ONNX_FLOAT_NAMES = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path) -> Path:
    """Export with ``torch.onnx.export(dynamo=True)``, one input ``input`` with a dynamic batch dimension."""
    from torch.export import Dim

    path = Path(path)
    m = copy.deepcopy(model).float().eval()
    x = example_input[:2].float() if len(example_input) >= 2 else torch.cat([example_input.float()] * 2)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m, (x,), str(path), dynamo=True, external_data=False, verbose=False,
            input_names=["input"], output_names=["logits"], dynamic_shapes=({0: Dim("batch", min=1)},),
        )
    return path


def ort_session_options(threads: int):
    """The fixed session options every ORT variant is measured with."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def optimized_graph_ops(model_path: str | Path, threads: int = 1) -> tuple[list[str], dict[str, int], int]:
    """Op types of the graph ORT really runs (after ORT_ENABLE_ALL optimisation), the element
    type of each compute node's weight initializer (ONNX TensorProto enum), and the bytes of
    that graph's initializers (what the weights occupy at run time)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort_session_options(threads)
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        g = onnx.load(so.optimized_model_filepath).graph
        runtime_bytes = onnx_initializer_bytes(so.optimized_model_filepath)
    inits = {i.name: i.data_type for i in g.initializer}
    ops = [n.op_type for n in g.node]
    weight_types = {}
    for n in g.node:
        if n.op_type in _COMPUTE_OPS and len(n.input) > 1 and n.input[1] in inits:
            weight_types[n.name or n.op_type] = inits[n.input[1]]
    return ops, weight_types, runtime_bytes


def onnx_initializer_bytes(model_path: str | Path) -> int:
    """Bytes of all initializers (weights, biases, scales) at their stored dtype."""
    import onnx
    from onnx import helper

    g = onnx.load(str(model_path)).graph
    total = 0
    for init in g.initializer:
        n = 1
        for d in init.dims:
            n *= d
        total += n * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    return total


def _ort_kernel_precision(ops: list[str], weight_types: dict[str, int]) -> str:
    if any(op in QUANT_COMPUTE_OPS for op in ops):
        return "int8"
    names = {_ONNX_FLOAT_NAMES.get(t, str(t)) for t in weight_types.values()}
    base = "+".join(sorted(names)) or "fp32"
    return base + " (int8 QDQ emulated)" if any(op in QDQ_OPS for op in ops) else base


class _CalibReader:
    """Feeds exactly the given batches to ORT's calibrator."""

    def __init__(self, batches: Sequence[torch.Tensor]) -> None:
        self._it = iter([{"input": b.float().numpy()} for b in batches])

    def get_next(self):
        return next(self._it, None)


def _ort_fp32_path(model: nn.Module, ctx: BuildContext) -> Path:
    key = ("onnx_fp32", ctx.parent_key)
    if key not in ctx.cache or not Path(ctx.cache[key]).exists():
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        ctx.cache[key] = export_onnx(model, ctx.example_input, ctx.workdir / f"{ctx.parent_key}_fp32.onnx")
    return Path(ctx.cache[key])


def build_onnx_file(model: nn.Module, precision: str, ctx: BuildContext) -> tuple[Path, dict[str, Any]]:
    """Write the ONNX graph for ``precision`` (fp32 export, fp16 conversion or int8 QDQ) and return its path + metadata."""
    fp32 = _ort_fp32_path(model, ctx)
    meta: dict[str, Any] = {"exporter": "torch.onnx.export(dynamo=True)", "dynamic_batch": True}
    if precision == "fp32":
        return fp32, meta
    if precision == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        out = ctx.workdir / f"{ctx.parent_key}_fp16.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(out))
        meta["converter"] = "onnxruntime.transformers.float16 (float32 I/O kept)"
        return out, meta
    if precision == "int8":
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        out = ctx.workdir / f"{ctx.parent_key}_int8_{ctx.calibration_method}.onnx"
        kwargs = {}
        if ctx.ort_op_types_to_quantize is not None:
            kwargs["op_types_to_quantize"] = ctx.ort_op_types_to_quantize
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ORT logs its "consider pre-processing" notice on the root logger
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(
                    str(fp32), str(out), _CalibReader(ctx.calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=methods[ctx.calibration_method], **kwargs,
                )
        finally:
            root.setLevel(level)
        meta.update({"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                     "per_channel": True, "activation_type": "QInt8", "weight_type": "QInt8",
                     "calibration_method": ctx.calibration_method, "calibration_batches": len(ctx.calibration),
                     "calibration_samples": int(sum(len(b) for b in ctx.calibration))})
        return out, meta
    raise VariantBuildError(f"backend 'onnxruntime' does not support precision {precision!r}.")


def onnx_variant(path: str | Path, precision: str, threads: int = 1, metadata: Optional[dict] = None,
                 backend: str = "onnxruntime") -> Variant:
    """Wrap an ONNX file in an ORT session with the fixed options and verify its precision.

    Raises:
        VariantBuildError: int8 requested but the optimised graph holds no quantized op.
    """
    import onnxruntime as ort

    path = Path(path)
    ops, weight_types, runtime_bytes = optimized_graph_ops(path, threads)
    kernel = _ort_kernel_precision(ops, weight_types)
    quant_ops = sorted({op for op in ops if op in QUANT_COMPUTE_OPS | QDQ_OPS})
    if precision == "int8" and not quant_ops:
        raise VariantBuildError(
            f"int8 requested but the optimised ONNX graph holds no quantized op (ops: {sorted(set(ops))})."
        )
    so = ort_session_options(threads)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    meta = dict(metadata or {})
    meta.update({
        "onnx_file": path.name,
        "runtime_parameter_bytes": runtime_bytes,
        "optimized_op_types": sorted(set(ops)),
        "quantized_op_types": quant_ops,
        "session_options": {"intra_op_num_threads": threads, "inter_op_num_threads": 1,
                            "execution_mode": "ORT_SEQUENTIAL", "graph_optimization_level": "ORT_ENABLE_ALL",
                            "providers": ["CPUExecutionProvider"]},
        "onnxruntime_version": ort.__version__,
    })
    run_ = sess.run
    return Variant(
        backend=backend,
        precision=precision,
        kernel_precision=kernel,
        parameter_bytes=onnx_initializer_bytes(path),
        metadata=meta,
        prepare=lambda x: np.ascontiguousarray(x.float().numpy()),
        run=lambda x: run_(None, {"input": x})[0],
        to_logits=lambda out: np.asarray(out, dtype=np.float32),
        onnx_path=path,
    )


@register_backend("onnxruntime")
def onnxruntime_backend(model: nn.Module, precision: str, ctx: BuildContext) -> Variant:
    """ONNX Runtime (CPU execution provider) on a dynamo-exported graph."""
    path, meta = build_onnx_file(model, precision, ctx)
    return onnx_variant(path, precision, ctx.threads, meta)
