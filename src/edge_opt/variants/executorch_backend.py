"""ExecuTorch backend: ``torch.export`` → XNNPACK partitioner → ``.pte``, run by ``executorch.runtime``.

fp32 lowers the float parent; int8 goes through PT2E (``prepare_pt2e`` / ``convert_pt2e`` with the
``XNNPACKQuantizer``, per-channel symmetric weights) on the study's calibration batches. A ``.pte``
has static shapes, so one program is lowered per batch size the study runs (the latency batch and
``batch_size``); a smaller batch is padded to the next program and a larger one split. Which ops
XNNPACK took is read from the lowered program: ops left on the portable CPU kernels are listed, a
program with nothing delegated is an error.

Needs the optional extra: ``pip install 'edge-opt[executorch]'``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import muted_native_stderr, package_versions
from .base import BuildContext, Variant, VariantBuildError
from .calibration import calibration_samples
from .layers import LayerInfo, layer_report
from .precisions import add_hook, get_precision
from .registry import register_backend

__all__ = ["EXTRA", "LoweredProgram", "delegation_summary", "executorch_backend", "load_method", "lower_program"]

EXTRA = "executorch"
COMPUTE_OPS = ("convolution", "linear", "addmm", "_mm", "bmm")
STRUCTURAL_OPS = {"getitem", "Total"}
_LOADED = False  # a method has been loaded in this process (its thread pool may no longer be reset)


def _require() -> None:
    try:
        with muted_native_stderr():  # the runtime's first import probes the CPU and logs what it finds
            import executorch.runtime  # noqa: F401
    except ImportError:
        raise VariantBuildError("backend 'executorch' needs ExecuTorch: pip install 'edge-opt[executorch]'") from None


@dataclass(frozen=True)
class LoweredProgram:
    """One ``.pte`` file (static batch) and what XNNPACK took of it."""

    path: Path
    batch: int
    delegation: dict[str, Any]


def delegation_summary(frame: Any) -> dict[str, Any]:
    """Delegated / portable op counts from ExecuTorch's operator delegation table."""
    delegated: dict[str, int] = {}
    portable: dict[str, int] = {}
    for _, r in frame.iterrows():
        op = str(r["op_type"])
        if op in STRUCTURAL_OPS:
            continue
        if int(r["occurrences_in_delegated_graphs"]):
            delegated[op] = int(r["occurrences_in_delegated_graphs"])
        if int(r["occurrences_in_non_delegated_graphs"]):
            portable[op] = int(r["occurrences_in_non_delegated_graphs"])
    n_del, n_port = sum(delegated.values()), sum(portable.values())
    return {
        "delegated_ops": delegated,
        "portable_ops": portable,
        "delegated_fraction": n_del / (n_del + n_port) if n_del + n_port else 0.0,
    }


_WEIGHTED_OPS = ("aten.conv1d", "aten.conv2d", "aten.convolution", "aten.linear")


def _dequantized(arg: Any) -> bool:
    return isinstance(arg, torch.fx.Node) and arg.op == "call_function" and "dequantize_per" in str(arg.target)


def _layer_name(node: torch.fx.Node) -> str:
    """The module a node of an exported graph came from (its ``nn_module_stack``), else the node's name."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else node.name


def _shape(module: torch.fx.GraphModule, arg: Any) -> tuple[int, ...] | None:
    """The shape of a node's value: its traced ``val``, else (a weight's dequantize op, which convert_pt2e adds
    without one) the shape of the tensor it reads."""
    if not isinstance(arg, torch.fx.Node):
        return None
    val = arg.meta.get("val")
    if val is not None:
        return tuple(int(d) for d in val.shape)
    if arg.op == "get_attr":
        value: Any = module
        for part in str(arg.target).split("."):
            value = getattr(value, part, None)
        return tuple(value.shape) if isinstance(value, torch.Tensor) else None
    return _shape(module, arg.args[0]) if _dequantized(arg) and arg.args else None


def pt2e_layer_report(module: nn.Module) -> dict[str, Any]:
    """Per-layer precision of a converted PT2E graph (``layers.layer_report``: float layers, int8 MAC share): a
    conv or linear whose input and weight both come through dequantize ops is the quantized pattern XNNPACK's
    partitioner lowers to its int8 kernel, any other runs float; MACs per sample from the weight's and the output's
    shapes. Read from the graph because ExecuTorch's delegation table counts ops by type, not by layer. Empty for
    a module that is not a graph."""
    if not isinstance(module, torch.fx.GraphModule):
        return {}
    layers: list[LayerInfo] = []
    precisions: dict[str, str] = {}
    for node in module.graph.nodes:
        if node.op != "call_function" or not any(op in str(node.target) for op in _WEIGHTED_OPS):
            continue
        weight, out = node.args[1], node.meta.get("val")
        w = _shape(module, weight)
        if w is None or out is None:
            continue
        name = _layer_name(node)
        macs = math.prod(int(d) for d in out.shape[1:]) * math.prod(w[1:])
        kind = "Linear" if "linear" in str(node.target) else "Conv"
        layers.append(LayerInfo(name if name not in precisions else f"{name}#{len(layers)}", kind, macs, math.prod(w)))
        int8 = _dequantized(node.args[0]) and _dequantized(weight)
        precisions[layers[-1].name] = "int8" if int8 else "fp32"
    return layer_report(layers, precisions) if layers else {}


def lower_program(module: nn.Module, example: torch.Tensor, path: Path) -> LoweredProgram:
    """Export ``module`` at ``example``'s (static) shape, lower it to XNNPACK and write the ``.pte``."""
    with muted_native_stderr():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.devtools.backend_debug import get_delegation_info
        from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings(), muted_native_stderr():
        warnings.simplefilter("ignore")
        edge = to_edge_transform_and_lower(torch.export.export(module, (example,)), partitioner=[XnnpackPartitioner()])
        info = delegation_summary(
            get_delegation_info(edge.exported_program().graph_module).get_operator_delegation_dataframe()
        )
        info["layers"] = pt2e_layer_report(module)  # per layer, from the quantized graph (empty for a float one)
        buffer = edge.to_executorch().buffer
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer)
    path.with_suffix(".json").write_text(json.dumps(info), encoding="utf-8")
    return LoweredProgram(path, len(example), info)


def load_method(path: str | Path) -> Any:
    """The ``forward`` method of a ``.pte`` file, loaded by ``executorch.runtime``."""
    from executorch.runtime import Runtime

    global _LOADED
    logging.getLogger("executorch").setLevel(logging.ERROR)
    with muted_native_stderr():
        method = Runtime.get().load_program(str(path)).load_method("forward")
    _LOADED = True
    return method


def _int8_module(model: nn.Module, ctx: BuildContext) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not ctx.calibration:
        raise VariantBuildError("int8 on 'executorch' needs calibration batches.")
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    example = ctx.example_input[:2].float()
    biggest = max(len(b) for b in ctx.calibration)
    batch = torch.export.Dim("batch", min=1, max=max(biggest, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(
            copy.deepcopy(model).float().eval(), (example,), dynamic_shapes=({0: batch},)
        ).module()
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for b in ctx.calibration:
                prepared(b.float())
        return convert_pt2e(prepared)


def _programs(model: nn.Module | None, precision: str, ctx: BuildContext) -> list[LoweredProgram]:
    """The lowered programs of ``precision``, one per batch size (cached as files; a resume reads them)."""
    if model is None:
        raise VariantBuildError("backend 'executorch' needs a PyTorch model (torch.export).")
    q = ctx.quantization
    options = f"{q.channelwise}_{calibration_samples(ctx)}" if get_precision(precision).quantized else "float"
    tag = hashlib.sha256(options.encode()).hexdigest()[:8]
    folder = ctx.workdir / "executorch"
    paths = {b: folder / f"{ctx.parent_key}_{precision}_{tag}_b{b}.pte" for b in sorted(set(ctx.batch_sizes))}
    if all(p.exists() and p.with_suffix(".json").exists() for p in paths.values()):
        return [
            LoweredProgram(p, b, json.loads(p.with_suffix(".json").read_text(encoding="utf-8")))
            for b, p in paths.items()
        ]
    if precision != "int8":
        module = copy.deepcopy(model).float().eval()
    elif ctx.quantization.recovery_method == "qat":  # the converted PT2E module of quantization-aware training
        module = model
    else:
        module = _int8_module(model, ctx)
    shape = tuple(ctx.example_input.shape[1:])
    return [lower_program(module, torch.zeros((b, *shape)), p) for b, p in paths.items()]


for _name in ("fp32", "int8"):
    add_hook(_name, EXTRA, _programs)


def _kernel_precision(precision: str, delegation: dict[str, Any]) -> str:
    delegated, portable = delegation["delegated_ops"], delegation["portable_ops"]
    on_cpu = [op for op in portable if any(c in op for c in COMPUTE_OPS)]
    if precision != "int8":
        return "fp32"
    quantized = any("quantize_per" in op for op in delegated)
    return ("int8" if quantized else "fp32") + ("+fp32" if quantized and on_cpu else "")


def _set_threads(threads: int) -> None:
    """XNNPACK's thread pool to the study's ``threads`` (process-wide in ExecuTorch's Python runtime).

    Resetting the pool under a loaded method crashes the process, so this runs before the variant's
    methods are loaded, and only when the size differs (a study uses one ``threads`` for every variant).
    """
    try:
        with muted_native_stderr():  # importing the runtime probes the CPU and logs it
            from executorch.extension.pybindings import portable_lib

        current = portable_lib._threadpool_get_thread_count()
        if current == threads:
            return
        if _LOADED:
            raise VariantBuildError(
                f"ExecuTorch's XNNPACK thread pool is process-wide and already runs loaded "
                f"programs with {current} threads; cannot switch to {threads} in this process."
            )
        with muted_native_stderr():
            portable_lib._unsafe_reset_threadpool(threads)
    except (ImportError, AttributeError):  # an ExecuTorch without the call runs its default pool
        pass


class _Runner:
    """Runs a batch of any size on static-batch programs: pads up to the next program, splits above the largest."""

    def __init__(self, programs: list[LoweredProgram]) -> None:
        self.methods = sorted(((p.batch, load_method(p.path)) for p in programs), key=lambda t: t[0])

    def prepare(self, x: torch.Tensor) -> list[tuple[Any, torch.Tensor, int]]:
        x = torch.as_tensor(x).float().contiguous()
        largest = self.methods[-1][0]
        out = []
        for i in range(0, len(x), largest):
            chunk = x[i : i + largest]
            batch, method = next((b, m) for b, m in self.methods if b >= len(chunk))
            pad = torch.zeros((batch - len(chunk), *chunk.shape[1:])) if batch > len(chunk) else None
            out.append((method, torch.cat([chunk, pad]) if pad is not None else chunk, len(chunk)))
        return out

    @staticmethod
    def run(prepared: list[tuple[Any, torch.Tensor, int]]) -> list[tuple[torch.Tensor, int]]:
        return [(method.execute([x])[0], n) for method, x, n in prepared]

    @staticmethod
    def to_logits(outputs: list[tuple[torch.Tensor, int]]) -> np.ndarray:
        return np.concatenate([o[:n].float().numpy() for o, n in outputs])


@register_backend("executorch", kind=EXTRA)
def executorch_backend(model: nn.Module | None, precision: str, ctx: BuildContext) -> Variant:
    """ExecuTorch with the XNNPACK delegate (static-batch ``.pte`` programs)."""
    _require()
    programs = get_precision(precision).hook(EXTRA, "executorch")(model, precision, ctx)
    first = programs[0].delegation
    if not first["delegated_ops"]:
        raise VariantBuildError(
            f"nothing was delegated to XNNPACK (ops on the portable kernels: {sorted(first['portable_ops'])})."
        )
    kernel = _kernel_precision(precision, first)
    if precision == "int8" and not kernel.startswith("int8"):
        raise VariantBuildError(
            f"int8 requested but no quantized op was delegated to XNNPACK "
            f"(delegated: {sorted(first['delegated_ops'])})."
        )
    _set_threads(ctx.threads)  # before any method of these programs is loaded: a loaded method keeps its pool
    runner = _Runner(programs)
    meta = {
        "pte_files": {str(p.batch): p.path.name for p in programs},
        "delegate": "XnnpackPartitioner",
        "xnnpack_delegated_ops": first["delegated_ops"],
        "portable_ops": first["portable_ops"],
        "delegated_fraction": first["delegated_fraction"],
        "executorch_version": package_versions()["executorch"] or "unknown",
        "static_batches": [p.batch for p in programs],
        "threads": ctx.threads,
        **(first.get("layers") or {} if precision == "int8" else {}),  # int8_mac_fraction, float_layers per layer
        **(
            {
                "quantizer": "PT2E XNNPACKQuantizer, quantization-aware training "
                f"({'per-channel' if ctx.quantization.channelwise else 'per-tensor'} symmetric weights)"
                if ctx.quantization.recovery_method == "qat"
                else "PT2E XNNPACKQuantizer (per-channel symmetric weights)",
                "calibration_batches": len(ctx.calibration),
            }
            if precision == "int8"
            else {}
        ),
    }
    return Variant(
        backend="executorch",
        precision=precision,
        kernel_precision=kernel,
        parameter_bytes=programs[0].path.stat().st_size,
        metadata=meta,
        prepare=runner.prepare,
        run=runner.run,
        to_logits=runner.to_logits,
    )
