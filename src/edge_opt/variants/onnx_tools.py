"""ONNX tooling shared by the ONNX-based backends: export, ORT session options, the optimised
graph ORT really runs (op types, weight dtypes, bytes), and a verified ``Variant`` of an ONNX file."""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import batch_parts
from ..inputs import onnx_weight_bytes
from .base import BuildContext, Replicas, Variant, VariantBuildError
from .layers import LayerInfo, layer_report, ort_layer_precisions

__all__ = [
    "ONNX_EXPORTERS",
    "QDQ_OPS",
    "QUANT_COMPUTE_OPS",
    "CalibrationReader",
    "export_onnx",
    "exporter_label",
    "fp32_onnx_path",
    "onnx_initializer_bytes",
    "onnx_input_name",
    "onnx_input_names",
    "ort_feed",
    "ort_outputs",
    "optimized_graph",
    "onnx_variant",
    "optimized_graph_ops",
    "ort_kernel_precision",
    "ort_session_options",
]

QUANT_COMPUTE_OPS = frozenset(
    {
        "QLinearConv",
        "QGemm",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "QLinearAdd",
        "QLinearMul",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QAttention",
    }
)
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_COMPUTE_OPS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"})
_ONNX_FLOAT_NAMES = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}


ONNX_EXPORTERS = ("torchscript", "dynamo")


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, exporter: str = "torchscript") -> Path:
    """Export ``model`` to ONNX with one input ``input`` (dynamic batch dimension) and one output ``logits``.

    ``exporter``: ``torchscript`` traces the module (``torch.onnx.export(dynamo=False)``, ~0.02 s for the default
    CNN); ``dynamo`` captures it with ``torch.export`` (``dynamo=True``) — it handles what tracing cannot but
    costs ~1.5 s per export here, most of it rebuilding its op registry from torchlib each time. Both leave the
    graph unoptimised (no constant folding, BatchNorm not fused: every runtime optimises the graph when it loads
    it), so weight initializers keep their module names (``conv1.weight``). A failing export raises; nothing
    falls back to the other exporter.
    """
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"exporter must be one of {list(ONNX_EXPORTERS)}; got {exporter!r}")
    path = Path(path)
    m = copy.deepcopy(model).float().eval()
    x = example_input[:2].float() if len(example_input) >= 2 else torch.cat([example_input.float()] * 2)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                m,
                (x,),
                str(path),
                dynamo=False,
                do_constant_folding=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        else:
            from torch.export import Dim

            torch.onnx.export(
                m,
                (x,),
                str(path),
                dynamo=True,
                external_data=False,
                verbose=False,
                optimize=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: Dim("batch", min=1)},),
            )
    return path


def exporter_label(exporter: str) -> str:
    """How the parent's ONNX file was made, as recorded in a variant's metadata."""
    return f"torch.onnx.export(dynamo={exporter == 'dynamo'})"


def ort_session_options(threads: int) -> Any:
    """The fixed session options every ORT variant is measured with."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def optimized_session(model_path: str | Path, threads: int = 1) -> tuple[Any, tuple[Any, int]]:
    """An ORT session with the fixed options, and the graph it really runs (after ORT_ENABLE_ALL
    optimisation, written out by this same session) with the bytes of that graph's initializers."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort_session_options(threads)
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        # the optimised file may name the input's external data files, which are not beside it here: not read
        graph = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
        return sess, (graph, onnx_initializer_bytes(so.optimized_model_filepath))


def optimized_graph(model_path: str | Path, threads: int = 1) -> tuple[Any, int]:
    """The graph ORT really runs (after ORT_ENABLE_ALL optimisation) and the bytes of its initializers."""
    return optimized_session(model_path, threads)[1]


def optimized_graph_ops(
    model_path: str | Path, threads: int = 1, graph: Any = None
) -> tuple[list[str], dict[str, int], int]:
    """Op types of the graph ORT really runs (after ORT_ENABLE_ALL optimisation), the element
    type of each compute node's weight initializer (ONNX TensorProto enum), and the bytes of
    that graph's initializers (what the weights occupy at run time)."""
    g, runtime_bytes = graph if graph is not None else optimized_graph(model_path, threads)
    inits = {i.name: i.data_type for i in g.initializer}
    ops = [n.op_type for n in g.node]
    weight_types = {}
    for n in g.node:
        if n.op_type in _COMPUTE_OPS and len(n.input) > 1 and n.input[1] in inits:
            weight_types[n.name or n.op_type] = inits[n.input[1]]
    return ops, weight_types, runtime_bytes


def onnx_initializer_bytes(model_path: str | Path) -> int:
    """Bytes of every weight the file holds at its stored dtype (weights, biases, scales), wherever the graph keeps
    them: initializers inline or in external data files, ``Constant`` nodes (``onnx_weight_bytes``; external data is
    not read)."""
    return onnx_weight_bytes(model_path)


def onnx_input_name(path: str | Path) -> str:
    """Name of the (first) graph input that is not an initializer."""
    return onnx_input_names(path)[0]


def onnx_input_names(path: str | Path) -> tuple[str, ...]:
    """Names of the graph inputs that are not initializers, in the graph's order."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return tuple(i.name for i in g.input if i.name not in inits)


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def ort_feed(names: Sequence[str], types: Sequence[str], x: Any) -> dict[str, np.ndarray]:
    """An ONNX Runtime feed of a batch (``core.batches``: one tensor, or one per input in the graph's order): each
    input as a contiguous array of the session's type (float inputs at their float type, others as given).

    Raises:
        VariantBuildError: the batch holds another number of inputs than the graph takes.
    """
    parts = batch_parts(x)
    if len(parts) != len(names):
        raise VariantBuildError(f"the graph takes {len(names)} inputs {list(names)}; the batch holds {len(parts)}.")
    feed = {}
    for name, kind, p in zip(names, types, parts, strict=True):
        a = p.numpy() if isinstance(p, torch.Tensor) else np.asarray(p)
        want = _ORT_TYPES.get(kind)
        feed[name] = np.ascontiguousarray(a if want is None else a.astype(want, copy=False))
    return feed


def ort_outputs(out: Sequence[Any]) -> Any:
    """What ``session.run`` gave, as a variant's outputs (``core.batches``): one array for one output, a tuple for
    several; float outputs as float32, the others as they are."""
    arrays = [np.asarray(o) for o in out]
    arrays = [a.astype(np.float32, copy=False) if np.issubdtype(a.dtype, np.floating) else a for a in arrays]
    return arrays[0] if len(arrays) == 1 else tuple(arrays)


def ort_kernel_precision(ops: list[str], weight_types: dict[str, int]) -> str:
    if any(op in QUANT_COMPUTE_OPS for op in ops):
        return "int8"
    names = {_ONNX_FLOAT_NAMES.get(t, str(t)) for t in weight_types.values()}
    base = "+".join(sorted(names)) or "fp32"
    return base + " (int8 QDQ emulated)" if any(op in QDQ_OPS for op in ops) else base


class CalibrationReader:
    """Feeds exactly the given batches to ORT's calibrator (its ``CalibrationDataReader`` protocol)."""

    def __init__(self, batches: Sequence[Any], input_name: str | Sequence[str] = "input") -> None:
        names = (input_name,) if isinstance(input_name, str) else tuple(input_name)
        self._it = iter([_calibration_feed(names, b) for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _calibration_feed(names: Sequence[str], batch: Any) -> dict[str, np.ndarray]:
    """One calibration batch as a feed: float inputs as float32, integer inputs as given."""
    parts = batch_parts(batch)
    if len(parts) != len(names):
        raise VariantBuildError(f"the graph takes {len(names)} inputs {list(names)}; calibration gives {len(parts)}.")
    return {
        n: np.ascontiguousarray((p.float() if p.is_floating_point() else p).numpy())
        for n, p in zip(names, parts, strict=True)
    }


def fp32_onnx_path(model: nn.Module | None, ctx: BuildContext) -> Path:
    """The float parent's fp32 ONNX export, once per parent (memoised in ``ctx.cache``; an ONNX model is its own)."""
    key = ("onnx_fp32", ctx.parent_key)
    if key not in ctx.cache or not Path(ctx.cache[key]).exists():
        if model is None:
            raise VariantBuildError("no PyTorch model to export and no ONNX file for this parent.")
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        ctx.cache[key] = export_onnx(
            model, ctx.example_input, ctx.workdir / f"{ctx.parent_key}_fp32.onnx", ctx.onnx_exporter
        )
    return Path(ctx.cache[key])


def _ort_metadata(
    path: Path, threads: int, runtime_bytes: int, ops: list[str], quant_ops: list[str], ort_version: str
) -> dict[str, Any]:
    """What an ONNX variant records of its file, its optimised graph and the fixed session options."""
    return {
        "onnx_file": path.name,
        "runtime_parameter_bytes": runtime_bytes,
        "optimized_op_types": sorted(set(ops)),
        "quantized_op_types": quant_ops,
        "session_options": {
            "intra_op_num_threads": threads,
            "inter_op_num_threads": 1,
            "execution_mode": "ORT_SEQUENTIAL",
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "providers": ["CPUExecutionProvider"],
        },
        "onnxruntime_version": ort_version,
    }


def _ort_runners(
    sess: Any, path: Path, threads: int
) -> tuple[Callable[[Any], Any], Callable[[], Callable[[Any], Any]]]:
    """``run`` on ``sess``, and ``replicate``: another session of the file with the same options, run alike."""
    import onnxruntime as ort

    def session_runner(session: Any) -> Callable[[Any], Any]:
        return lambda feed: session.run(None, feed)

    def replicate() -> Callable[[Any], Any]:
        return session_runner(
            ort.InferenceSession(str(path), ort_session_options(threads), providers=["CPUExecutionProvider"])
        )

    return session_runner(sess), replicate


def onnx_variant(
    path: str | Path,
    precision: str,
    threads: int = 1,
    metadata: dict | None = None,
    backend: str = "onnxruntime",
    layers: Sequence[LayerInfo] | None = None,
    must_be_float: Sequence[str] = (),
) -> Variant:
    """Wrap an ONNX file in an ORT session with the fixed options and verify its precision.

    With ``layers`` (of the fp32 parent), a quantized build records per layer what ORT's optimised graph
    runs (``layer_precisions``), the ``float_layers`` and the ``int8_mac_fraction``.

    Raises:
        VariantBuildError: int8 requested but the optimised graph holds no quantized op, or a layer in
            ``must_be_float`` runs an int8 kernel.
    """
    import onnxruntime as ort

    path = Path(path)
    sess, graph = optimized_session(path, threads)
    ops, weight_types, runtime_bytes = optimized_graph_ops(path, threads, graph)
    kernel = ort_kernel_precision(ops, weight_types)
    quant_ops = sorted({op for op in ops if op in QUANT_COMPUTE_OPS | QDQ_OPS})
    if precision.startswith("int8") and not quant_ops:
        raise VariantBuildError(
            f"int8 requested but the optimised ONNX graph holds no quantized op (ops: {sorted(set(ops))})."
        )
    meta = dict(metadata or {})
    if layers and quant_ops:
        meta.update(layer_report(layers, ort_layer_precisions(graph[0].node, layers), must_be_float))
    meta.update(_ort_metadata(path, threads, runtime_bytes, ops, quant_ops, ort.__version__))
    run, replicate = _ort_runners(sess, path, threads)
    names, types = [i.name for i in sess.get_inputs()], [i.type for i in sess.get_inputs()]
    return Variant(
        backend=backend,
        precision=precision,
        kernel_precision=kernel,
        parameter_bytes=onnx_initializer_bytes(path),
        metadata=meta,
        prepare=lambda x: ort_feed(names, types, x),
        run=run,
        to_logits=ort_outputs,
        onnx_path=path,
        replicate=Replicas(run, replicate),
    )
