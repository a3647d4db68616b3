"""OpenVINO (CPU plugin) backend: the parent's ONNX export read by OpenVINO, int8 through NNCF.

Precisions: fp32 and fp16/bf16 through the ``INFERENCE_PRECISION_HINT`` (fp16 weights stored
compressed in the IR), int8 through NNCF post-training quantization on the study's calibration
batches. What the kernels compute is read from the compiled model's runtime graph (the
``runtimePrecision`` of its Convolution / FullyConnected / MatMul nodes), never assumed: on a CPU
without native fp16, the ``f16`` hint runs ``bf16`` kernels and the row says ``bf16``. An int8 row also says
per layer (named as in the parent's ONNX graph, see ``onnx_layers``) what its runtime node runs:
``layer_precisions``, ``float_layers`` and ``int8_mac_fraction``.

Needs the optional extra: ``pip install 'edge-opt[openvino]'`` (openvino, nncf).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import batch_parts, batch_runs
from .base import BuildContext, Replicas, Variant, VariantBuildError
from .calibration import calibration_samples
from .layers import LayerInfo, layer_report
from .onnx_tools import fp32_onnx_path
from .onnxruntime_backend import parent_onnx_layers
from .precisions import CALIBRATION_RUN_VALUES, add_hook, get_precision
from .registry import register_backend

__all__ = [
    "EXTRA",
    "compile_ir",
    "ir_kernel_precision",
    "openvino_backend",
    "openvino_layer_precisions",
    "openvino_runtime_ops",
    "save_ir",
]

EXTRA = "openvino"
COMPUTE_TYPES = {"Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"}
_PRECISION_NAMES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i8": "int8", "u8": "int8"}
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}  # int8: what stays float runs fp32


def _ov() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise VariantBuildError("backend 'openvino' needs OpenVINO: pip install 'edge-opt[openvino]'") from None
    return ov


def openvino_runtime_ops(compiled: Any) -> list[tuple[str, str]]:
    """(layer type, runtime precision) of every node of a compiled model's runtime graph."""
    out = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
        out.append((layer, prec))
    return out


# Nodes OpenVINO fuses into the convolution/linear node whose output they read (and may name the result after).
_FUSED_INTO_PRODUCER = frozenset({"BatchNormalization", "Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh"})


def _layer_names(onnx_path: str | Path, layers: Sequence[LayerInfo]) -> dict[str, tuple[list[str], list[str]]]:
    """Per layer, the names its runtime node may carry: (its ONNX node; that node's outputs and the normalisation/
    activation nodes reading them, which OpenVINO fuses into it and may name the fused node after)."""
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    by_name = {(n.name or n.output[0]): n for n in g.node}
    readers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    out = {}
    for layer in layers:
        node = by_name.get(str(layer.node))
        aliases = []
        for o in node.output if node is not None else ():
            aliases.append(o)
            aliases += [r.name or r.output[0] for r in readers.get(o, []) if r.op_type in _FUSED_INTO_PRODUCER]
        out[layer.name] = ([str(layer.node)], aliases)
    return out


def openvino_layer_precisions(compiled: Any, layers: Sequence[LayerInfo], onnx_path: str | Path) -> dict[str, str]:
    """Per layer (``onnx_layers`` of ``onnx_path``, the ONNX graph OpenVINO read), what its compute node in the
    compiled model's runtime graph runs (``int8`` for a u8/i8 ``runtimePrecision``, else the float type).

    A runtime node names the graph nodes it was made of in ``originalLayersNames``; the ONNX frontend names a
    node after the ONNX node (``<node>``, or ``<node>/WithoutBiases``… for the parts it splits off). A layer's
    runtime node is the compute node whose names hold ``<node>`` (or start with ``<node>/``), else — where a fusion
    renamed it — one whose names hold the node's output or a batch norm / activation reading it. A layer found in
    no compute node is ``unknown (not in OpenVINO's runtime graph)``, not counted as int8.
    """
    compute = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if kind not in COMPUTE_TYPES:
            continue
        names = info["originalLayersNames"].astype(str).split(",") if "originalLayersNames" in info else []
        prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
        compute.append(({*names, op.get_friendly_name()}, _PRECISION_NAMES.get(prec, prec)))

    def find(keys: list[str]) -> str | None:
        return next(
            (p for names, p in compute if any(n == k or n.startswith(k + "/") for k in keys for n in names)), None
        )

    out = {}
    for name, (nodes, aliases) in _layer_names(onnx_path, layers).items():
        out[name] = find(nodes) or find(aliases) or "unknown (not in OpenVINO's runtime graph)"
    return out


def ir_kernel_precision(ops: list[tuple[str, str]]) -> str:
    """What the compute nodes run in (``int8``, ``bf16``, ``fp32+int8`` …), from ``openvino_runtime_ops``."""
    found = sorted({_PRECISION_NAMES.get(p, p) for t, p in ops if t in COMPUTE_TYPES})
    return "+".join(found) or "fp32"


def compile_ir(xml: str | Path, hint: str, threads: int) -> Any:
    """Compile an IR (or ONNX) file for the CPU with the study's settings: precision hint, threads, latency mode."""
    ov = _ov()
    core = ov.Core()
    return core.compile_model(
        core.read_model(str(xml)),
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": int(threads),
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # its own pinning (on by default on Linux) moves the calling thread off the measuring core at every call
            "ENABLE_CPU_PINNING": False,
        },
    )


def save_ir(model: Any, xml: Path, compress_to_fp16: bool) -> Path:
    """Write ``model`` as IR (``.xml`` + ``.bin``) next to nothing else; returns the ``.xml`` path."""
    ov = _ov()
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
    return xml


# NNCF's defaults apply its fast bias correction; ``recovery: bias_correction`` runs its full BiasCorrection instead.
BIAS_CORRECTION_FAST = "NNCF's fast bias correction (nncf.quantize's default)"
BIAS_CORRECTION_FULL = "NNCF's full bias correction (fast_bias_correction=False)"


def _ir_name(ctx: BuildContext, precision: str) -> str:
    q = ctx.quantization
    options = f"{q.method}_{q.channelwise}_{calibration_samples(ctx)}_{CALIBRATION_RUN_VALUES}"
    options = options if get_precision(precision).quantized else ""
    if options and q.recovery_method == "bias_correction":
        options += "_bias_correction"
    tag = hashlib.sha256(options.encode()).hexdigest()[:8] if options else "float"
    return f"{ctx.parent_key}_{precision}_{tag}.xml"


def _float_ir(model: nn.Module | None, precision: str, ctx: BuildContext) -> tuple[Path, dict[str, Any]]:
    ov = _ov()
    xml = ctx.workdir / "openvino" / _ir_name(ctx, precision)
    if not xml.exists():  # cached per parent and precision; a resumed study reads it back
        save_ir(ov.Core().read_model(str(fp32_onnx_path(model, ctx))), xml, compress_to_fp16=precision == "fp16")
    return xml, {"weights_stored_as": "fp16" if precision == "fp16" else "fp32"}


def _int8_ir(model: nn.Module | None, precision: str, ctx: BuildContext) -> tuple[Path, dict[str, Any]]:
    ov = _ov()
    xml = ctx.workdir / "openvino" / _ir_name(ctx, precision)
    full = ctx.quantization.recovery_method == "bias_correction"
    meta = {
        "quantizer": "nncf.quantize (post-training, OpenVINO IR)",
        "calibration_batches": len(ctx.calibration),
        "calibration_samples": calibration_samples(ctx),
        "calibration_stop": ctx.calibration_stop,
        "calibration_items": len(batch_runs(ctx.calibration, CALIBRATION_RUN_VALUES)),
        "calibration_method": "NNCF defaults: min/max activations, per-channel symmetric int8 weights",
        "bias_correction": BIAS_CORRECTION_FULL if full else BIAS_CORRECTION_FAST,
    }
    if xml.exists():
        return xml, meta
    try:
        import nncf
    except ImportError:
        raise VariantBuildError("int8 on 'openvino' needs NNCF: pip install 'edge-opt[openvino]'") from None
    if not ctx.calibration:
        raise VariantBuildError("int8 on 'openvino' needs calibration batches.")
    fp32 = ov.Core().read_model(str(fp32_onnx_path(model, ctx)))
    # each as the runtime's infer takes it, in runs of bounded size (``core.batch_runs``, as ORT's min/max
    # calibration): NNCF runs an item with every statistic point as an extra output, so its memory grows with the
    # item (a 32-image item of MobileNetV2 at 224² took 1.3 GB more here); the same samples are seen
    batches = [_ov_inputs(b) for b in batch_runs(ctx.calibration, CALIBRATION_RUN_VALUES)]
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws a progress bar on stdout
        quantized = nncf.quantize(  # subset = dataset items
            fp32, nncf.Dataset(batches), subset_size=len(batches), fast_bias_correction=not full
        )
    save_ir(quantized, xml, compress_to_fp16=False)
    return xml, meta


def _ov_inputs(x: Any) -> Any:
    """A batch as OpenVINO's ``infer`` takes it: ``{0: array}`` for one input, a list by position for several;
    float inputs as float32, integer inputs as given."""
    arrays = [
        np.ascontiguousarray((p.float() if p.is_floating_point() else p).numpy())
        for p in (torch.as_tensor(q) for q in batch_parts(x))
    ]
    return {0: arrays[0]} if len(arrays) == 1 else arrays


def _ov_outputs(out: Any) -> Any:
    """OpenVINO's outputs as a variant's (copied out of the request's buffers): one array, or a tuple; float
    outputs as float32."""
    arrays = [np.array(o) for o in (out if isinstance(out, tuple) else (out,))]
    arrays = [a.astype(np.float32, copy=False) if np.issubdtype(a.dtype, np.floating) else a for a in arrays]
    return arrays[0] if len(arrays) == 1 else tuple(arrays)


for _name in ("fp32", "fp16", "bf16"):
    add_hook(_name, EXTRA, _float_ir)
add_hook("int8", EXTRA, _int8_ir)


@register_backend("openvino", kind=EXTRA)
def openvino_backend(model: nn.Module | None, precision: str, ctx: BuildContext) -> Variant:
    """OpenVINO CPU plugin on the parent's ONNX export (an ONNX input model directly)."""
    ov = _ov()
    xml, meta = get_precision(precision).hook(EXTRA, "openvino")(model, precision, ctx)
    compiled = compile_ir(xml, HINTS[precision], ctx.threads)
    ops = openvino_runtime_ops(compiled)
    kernel = ir_kernel_precision(ops)
    if precision == "int8" and "int8" not in kernel:
        raise VariantBuildError(
            f"int8 requested but OpenVINO's runtime graph runs no int8 compute node "
            f"(compute nodes: {sorted({o for o in ops if o[0] in COMPUTE_TYPES})})."
        )
    bin_path = xml.with_suffix(".bin")
    request = compiled.create_infer_request()
    counts = Counter(f"{t}:{_PRECISION_NAMES.get(p, p)}" for t, p in ops if t in COMPUTE_TYPES)
    meta = {
        **meta,
        "ir_file": xml.name,
        "openvino_version": ov.get_version(),
        "inference_precision_hint": HINTS[precision],
        "runtime_compute_nodes": dict(sorted(counts.items())),
        "compile_config": {
            "INFERENCE_NUM_THREADS": ctx.threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,
        },
        "model_files": [xml.name, bin_path.name],
    }
    if get_precision(precision).quantized:  # per layer, what the runtime graph runs (named as in the ONNX graph)
        layers = parent_onnx_layers(model, ctx)
        meta.update(layer_report(layers, openvino_layer_precisions(compiled, layers, fp32_onnx_path(model, ctx))))

    run = _request_runner(request, len(compiled.outputs))

    return Variant(
        backend="openvino",
        precision=precision,
        kernel_precision=kernel,
        parameter_bytes=bin_path.stat().st_size,
        metadata=meta,
        prepare=_ov_inputs,
        run=run,
        to_logits=_ov_outputs,
        # an instance is a compiled model of its own: the CPU plugin keeps the activation memory of the largest
        # batch run in the compiled model, not in the request (0.3 GB after 32 MobileNetV2 images at 224²), and
        # gives it back only when the compiled model goes. Latency rounds use one such instance (``timed=False``):
        # with four compiled models per OpenVINO variant every row of a
        # MobileNetV2-224 study grew noisier (60–200 rounds to a 2 % CI instead of 40, AMD EPYC)
        replicate=Replicas(run, lambda: _compiled_runner(xml, HINTS[precision], ctx.threads), timed=False),
    )


def _compiled_runner(xml: Path, hint: str, threads: int) -> Callable[[Any], Any]:
    """``run`` of a new compiled model of ``xml`` (held by the ``run``: dropping it frees the model's memory)."""
    compiled = compile_ir(xml, hint, threads)
    return _request_runner(compiled.create_infer_request(), len(compiled.outputs), compiled)


def _request_runner(request: Any, outputs: int, owner: Any = None) -> Callable[[Any], Any]:
    """``run`` of one OpenVINO infer request: a prepared batch in, the output array (a tuple for several) out
    (``owner``: what the request needs kept alive)."""

    def run(x: Any) -> Any:
        _ = owner
        res = request.infer(x, share_inputs=True)
        return res[0] if outputs == 1 else tuple(res[i] for i in range(outputs))

    return run
