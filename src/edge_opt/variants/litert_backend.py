"""LiteRT backend: ``litert-torch`` converts the model to ``.tflite``, ``ai-edge-litert``'s ``Interpreter`` runs it
with the XNNPACK delegate at the study's ``threads``.

fp32 converts the float parent; fp16 stores the weights in float16 (ai-edge-quantizer's fp16 recipe, the only fp16
the converter offers: the kernels compute in float32 on the dequantized weights, and the row says so); int8 is
full-integer static quantization for microcontrollers and NPUs: PT2E (``prepare_pt2e`` / ``convert_pt2e`` with
litert-torch's ``PT2EQuantizer``, symmetric weights, per channel unless ``quantization.per_channel: false``)
calibrated on the study's calibration batches, with int8 inputs and outputs whose scale and zero point the metadata
records (inputs are quantized and outputs dequantized outside the timed call). A ``.tflite`` has static shapes, so
one file is converted per batch size the study runs (a smaller batch is padded, a larger one split).

Kernel truth comes from the file: its operators, the types of the tensors each compute op reads (``tflite_file``),
and which operators the XNNPACK delegate took (the ops behind its DELEGATE nodes). The microcontroller numbers are
the file's bytes (``flash_bytes``) and the tensor arena estimate (``peak_ram_bytes``) of the smallest-batch file.
A model the converter cannot lower is skipped with the converter's first error line (``VariantNotApplicable``).

Needs the optional extra: ``pip install 'edge-opt[litert]'``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import muted_native_stderr, package_versions
from .base import BuildContext, Replicas, Variant, VariantBuildError, VariantNotApplicable
from .calibration import calibration_samples
from .layers import coverage
from .precisions import add_hook, get_precision
from .registry import register_backend
from .tflite_file import TfliteGraph, arena_bytes, layer_precisions, read_tflite

__all__ = [
    "EXTRA",
    "TfliteProgram",
    "delegated_ops",
    "file_summary",
    "litert_backend",
    "load_interpreter",
    "tflite_io",
]

EXTRA = "litert"


def _require() -> None:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError:
        raise VariantBuildError("backend 'litert' needs LiteRT: pip install 'edge-opt[litert]'") from None


@dataclass(frozen=True)
class TfliteProgram:
    """One ``.tflite`` file (static batch) and what it holds (``file_summary``)."""

    path: Path
    batch: int
    summary: dict[str, Any]


def load_interpreter(path: str | Path, threads: int) -> Any:
    """An ``ai_edge_litert`` interpreter over ``path`` with the default XNNPACK delegate at ``threads``, allocated."""
    from ai_edge_litert.interpreter import Interpreter

    with muted_native_stderr():  # the delegate logs its creation
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter


def delegated_ops(interpreter: Any) -> set[int]:
    """Indices of the operators an allocated interpreter's delegate(s) took: every op reached backwards from a
    DELEGATE node's outputs without crossing its inputs (the region the delegate kernel replaced).

    Hand-written because the interpreter names no delegated ops: its operator list (``_get_ops_details``, the
    only listing ai-edge-litert 2.3 has) keeps the replaced ops beside the DELEGATE nodes that now run them."""
    ops = [op for op in interpreter._get_ops_details()]
    producer = {int(t): op["index"] for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    taken: set[int] = set()
    for node in (op for op in ops if op["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in node["inputs"]}
        todo = [int(t) for t in node["outputs"]]
        while todo:
            t = todo.pop()
            src = producer.get(t)
            if t in boundary or src is None or src in taken:
                continue
            taken.add(src)
            todo.extend(int(x) for x in ops[src]["inputs"] if int(x) >= 0)
    return taken


def tflite_io(graph: TfliteGraph) -> dict[str, list[dict[str, Any]]]:
    """The file's inputs and outputs: name, type, shape and (int8) scale and zero point."""

    def one(i: int) -> dict[str, Any]:
        t = graph.tensors[i]
        q = {"scale": t.scales[0], "zero_point": t.zero_points[0]} if t.scales else {}
        return {"name": t.name, "dtype": t.dtype.lower(), "shape": list(t.shape), **q}

    return {"inputs": [one(i) for i in graph.inputs], "outputs": [one(i) for i in graph.outputs]}


def file_summary(path: Path, threads: int) -> dict[str, Any]:
    """What a ``.tflite`` holds and how XNNPACK runs it: operator counts delegated / left to the built-in kernels,
    the compute layers with MACs and precision, the tensor types, inputs/outputs and the MCU numbers."""
    graph = read_tflite(path)
    taken = delegated_ops(load_interpreter(path, threads))
    delegated: dict[str, int] = {}
    builtin: dict[str, int] = {}
    for op in graph.ops:
        counts = delegated if op.index in taken else builtin
        counts[op.name] = counts.get(op.name, 0) + 1
    layers = layer_precisions(graph)
    for layer in layers:
        layer["delegated"] = int(layer["name"].split(":")[0]) in taken
    types: dict[str, int] = {}
    for t in graph.tensors:
        types[t.dtype] = types.get(t.dtype, 0) + 1
    return {
        "xnnpack_delegated_ops": delegated,
        "builtin_kernel_ops": builtin,
        "layers": layers,
        "tensor_types": types,
        **tflite_io(graph),
        "flash_bytes": graph.file_bytes,
        "peak_ram_bytes": arena_bytes(graph),
    }


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _convert(module: nn.Module, example: torch.Tensor, path: Path, quant_config: Any = None) -> None:
    """Convert ``module`` at ``example``'s static shape and write the ``.tflite`` (a conversion failure: the
    point does not apply, skipped with the converter's first error line)."""
    import litert_torch

    litert_torch.config.show_progress = False  # its per-pass progress lines would flood the study's output
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), muted_native_stderr():
            warnings.simplefilter("ignore")
            litert_torch.convert(module, (example,), quant_config=quant_config).export(str(path))
    except Exception as exc:  # any converter failure means this model has no .tflite here (re-raised as a skip)
        raise VariantNotApplicable(f"litert-torch cannot convert this model: {_first_line(exc)}") from exc


def _int8_module(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any]:
    """The PT2E-quantized graph (calibrated on the study's batches) and the quantizer config the converter reads."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not ctx.calibration:
        raise VariantBuildError("int8 on 'litert' needs calibration batches.")
    per_channel = bool(ctx.quantization.per_channel)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
    example = ctx.example_input[:2].float()
    biggest = max(len(b) for b in ctx.calibration)
    batch = torch.export.Dim("batch", min=1, max=max(biggest, 2))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.export.export(
                copy.deepcopy(model).float().eval(), (example,), dynamic_shapes=({0: batch},)
            ).module()
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for b in ctx.calibration:
                    prepared(b.float())
            converted = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    except Exception as exc:  # a model PT2E cannot export or annotate has no int8 .tflite (re-raised as a skip)
        raise VariantNotApplicable(f"PT2E quantization for LiteRT failed: {_first_line(exc)}") from exc
    return converted, QuantConfig(pt2e_quantizer=quantizer)


def _fp16_config() -> Any:
    from litert_torch.generative.quantize import quant_recipes

    return quant_recipes.full_fp16_recipe()


def _programs(model: nn.Module | None, precision: str, ctx: BuildContext) -> list[TfliteProgram]:
    """The ``.tflite`` files of ``precision``, one per batch size (cached as files; a resume reads them)."""
    if model is None:
        raise VariantBuildError("backend 'litert' needs a PyTorch model (litert-torch converts torch.export).")
    if not isinstance(ctx.example_input, torch.Tensor):
        raise VariantNotApplicable("backend 'litert' converts models with one input tensor")
    q = ctx.quantization
    options = f"{q.per_channel}_{calibration_samples(ctx)}" if get_precision(precision).quantized else "float"
    tag = hashlib.sha256(options.encode()).hexdigest()[:8]
    folder = ctx.workdir / "litert"
    paths = {b: folder / f"{ctx.parent_key}_{precision}_{tag}_b{b}.tflite" for b in sorted(set(ctx.batch_sizes))}
    if not all(p.exists() for p in paths.values()):
        if precision == "int8":
            module, config = _int8_module(model, ctx)
        else:
            module, config = copy.deepcopy(model).float().eval(), (_fp16_config() if precision == "fp16" else None)
        shape = tuple(ctx.example_input.shape[1:])
        for b, p in paths.items():
            _convert(module, torch.zeros((b, *shape)), p, config)
    out = []
    for b, p in paths.items():
        summary_file = p.with_suffix(".json")
        if not summary_file.exists():
            summary_file.write_text(json.dumps(file_summary(p, ctx.threads)), encoding="utf-8")
        out.append(TfliteProgram(p, b, json.loads(summary_file.read_text(encoding="utf-8"))))
    return out


for _name in ("fp32", "fp16", "int8"):
    add_hook(_name, EXTRA, _programs)


class _Runner:
    """Runs a batch of any size on static-batch files: pads up to the next file's batch, splits above the largest;
    int8 inputs are quantized in ``prepare`` and outputs dequantized in ``to_logits`` (outside the timed ``run``)."""

    def __init__(self, programs: list[TfliteProgram], threads: int) -> None:
        self.programs = sorted(programs, key=lambda p: p.batch)
        self.interpreters = {p.batch: load_interpreter(p.path, threads) for p in self.programs}
        io = self.programs[0].summary
        self.input = io["inputs"][0]
        self.outputs = io["outputs"]

    def prepare(self, x: Any) -> list[tuple[int, np.ndarray, int]]:
        x = torch.as_tensor(x).float().numpy()
        if self.input["dtype"] == "int8":
            x = np.clip(np.round(x / self.input["scale"]) + self.input["zero_point"], -128, 127).astype(np.int8)
        largest = self.programs[-1].batch
        out = []
        for i in range(0, len(x), largest):
            chunk = x[i : i + largest]
            batch = next(p.batch for p in self.programs if p.batch >= len(chunk))
            if batch > len(chunk):
                chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            out.append((batch, np.ascontiguousarray(chunk), min(largest, len(x) - i)))
        return out

    def run(self, prepared: list[tuple[int, np.ndarray, int]]) -> list[tuple[list[np.ndarray], int]]:
        results = []
        for batch, x, n in prepared:
            it = self.interpreters[batch]
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            results.append(([it.get_tensor(d["index"]) for d in it.get_output_details()], n))
        return results

    def to_logits(self, outputs: list[tuple[list[np.ndarray], int]]) -> Any:
        arrays = []
        for k, spec in enumerate(self.outputs):
            a = np.concatenate([o[k][:n] for o, n in outputs])
            if spec["dtype"] == "int8":
                a = (a.astype(np.float32) - spec["zero_point"]) * spec["scale"]
            arrays.append(a.astype(np.float32))
        return arrays[0] if len(arrays) == 1 else tuple(arrays)


def _kernel_precision(precision: str, layers: list[dict[str, Any]]) -> str:
    """What the compute layers compute in: int8 (with +fp32 when some stay float) or fp32."""
    kinds = {layer["precision"] for layer in layers}
    if "int8" in kinds:
        return "int8" + ("+fp32" if len(kinds) > 1 else "")
    return "fp32"


def _layer_metadata(layers: list[dict[str, Any]]) -> dict[str, Any]:
    from .layers import LayerInfo

    infos = [LayerInfo(layer["name"], layer["op"], int(layer["macs"]), 0) for layer in layers]
    precisions = {layer["name"]: layer["precision"] for layer in layers}
    float_layers, fraction = coverage(infos, precisions)
    return {
        "layer_precisions": precisions,
        "float_layers": float_layers,
        "int8_mac_fraction": fraction,
        "layer_macs": {layer["name"]: layer["macs"] for layer in layers},
    }


def _metadata(precision: str, programs: list[TfliteProgram], ctx: BuildContext) -> dict[str, Any]:
    first = programs[0].summary
    meta: dict[str, Any] = {
        "tflite_files": {str(p.batch): p.path.name for p in programs},
        "delegate": "XNNPACK",
        "xnnpack_delegated_ops": first["xnnpack_delegated_ops"],
        "builtin_kernel_ops": first["builtin_kernel_ops"],
        "tensor_types": first["tensor_types"],
        "inputs": first["inputs"],
        "outputs": first["outputs"],
        "litert_torch_version": package_versions().get("litert-torch") or "unknown",
        "ai_edge_litert_version": package_versions().get("ai-edge-litert") or "unknown",
        "static_batches": [p.batch for p in programs],
        "threads": ctx.threads,
        "flash_bytes": first["flash_bytes"],
        "peak_ram_bytes": first["peak_ram_bytes"],
        "mcu_batch": programs[0].batch,
    }
    if precision == "fp16":
        meta["weights"] = "float16 (ai-edge-quantizer fp16 recipe; kernels compute in float32)"
    if precision == "int8":
        meta |= {
            "quantizer": "PT2E litert-torch PT2EQuantizer (symmetric weights, "
            + ("per-channel" if ctx.quantization.per_channel else "per-tensor")
            + "), full-integer: int8 inputs and outputs",
            "calibration_batches": len(ctx.calibration),
        }
        meta |= _layer_metadata(first["layers"])
    return meta


def _check(precision: str, programs: list[TfliteProgram]) -> str:
    first = programs[0].summary
    if not first["xnnpack_delegated_ops"]:
        raise VariantBuildError(
            f"nothing was delegated to XNNPACK (ops on the built-in kernels: {sorted(first['builtin_kernel_ops'])})."
        )
    kernel = _kernel_precision(precision, first["layers"])
    if precision == "int8":
        if not kernel.startswith("int8"):
            raise VariantBuildError("int8 requested but no compute op of the .tflite reads int8 tensors.")
        io = [t["dtype"] for t in (*first["inputs"], *first["outputs"])]
        if any(d != "int8" for d in io):
            raise VariantBuildError(f"full-integer int8 requested but the .tflite's inputs/outputs are {io}.")
    return kernel


@register_backend("litert", kind=EXTRA)
def litert_backend(model: nn.Module | None, precision: str, ctx: BuildContext) -> Variant:
    """LiteRT (``.tflite`` from litert-torch) on ai-edge-litert's interpreter with the XNNPACK delegate."""
    _require()
    programs = get_precision(precision).hook(EXTRA, "litert")(model, precision, ctx)
    kernel = _check(precision, programs)
    runner = _Runner(programs, ctx.threads)
    run = runner.run  # one bound method: the Replicas below are of this run

    def replica() -> Callable[[Any], Any]:
        return _Runner(programs, ctx.threads).run

    return Variant(
        backend="litert",
        precision=precision,
        kernel_precision=kernel,
        parameter_bytes=programs[0].path.stat().st_size,
        metadata=_metadata(precision, programs, ctx),
        prepare=runner.prepare,
        run=run,
        to_logits=runner.to_logits,
        replicate=Replicas(run, replica),
    )
