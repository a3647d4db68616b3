"""What a ``.tflite`` file holds, read from the flatbuffer itself: its operators in execution order, the tensors they
read and write (type, shape, constant or activation), the compute layers with their MACs and the precision their
kernels compute in, and the two numbers a microcontroller budget needs — flash (the file's bytes) and the tensor
arena (``arena_bytes``).

Read with the flatbuffer schema ``ai-edge-litert`` ships (``schema_py_generated``); nothing here needs torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAC_OPS", "TfliteGraph", "TfliteOp", "TfliteTensor", "arena_bytes", "layer_precisions", "read_tflite"]

# Compute ops whose multiply-accumulates count (their weight is input 1)
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D")
_ITEMSIZE = {
    "FLOAT32": 4,
    "FLOAT16": 2,
    "BFLOAT16": 2,
    "INT32": 4,
    "UINT32": 4,
    "UINT8": 1,
    "INT8": 1,
    "INT16": 2,
    "UINT16": 2,
    "INT64": 8,
    "UINT64": 8,
    "FLOAT64": 8,
    "BOOL": 1,
    "COMPLEX64": 8,
    "INT4": 1,
}


@dataclass(frozen=True)
class TfliteTensor:
    """One tensor of the main subgraph: name, element type (``INT8``, ``FLOAT32`` …), shape, whether its data is
    in the file (a constant: weights, biases, shapes) and its quantization (scales, zero points; empty for float)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    constant: bool
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _ITEMSIZE.get(self.dtype, 4) if self.shape else 0


@dataclass(frozen=True)
class TfliteOp:
    """One operator of the main subgraph, in the interpreter's execution order."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TfliteGraph:
    """The main subgraph of a ``.tflite`` file."""

    tensors: tuple[TfliteTensor, ...]
    ops: tuple[TfliteOp, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    file_bytes: int

    def producer(self) -> dict[int, int]:
        """Tensor index → the op that writes it."""
        return {t: op.index for op in self.ops for t in op.outputs}


def _enum_names(enum_class: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


def read_tflite(path: str | Path) -> TfliteGraph:
    """Parse the main subgraph of a ``.tflite`` file (operators, tensors, which tensors are constants)."""
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    op_names, type_names = _enum_names(schema.BuiltinOperator), _enum_names(schema.TensorType)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        codes.append(op_names.get(builtin, f"BUILTIN_{builtin}") if builtin != 32 else f"CUSTOM:{code.CustomCode()}")
    graph = model.Subgraphs(0)
    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        b = model.Buffers(t.Buffer()) if t.Buffer() > 0 else None
        q = t.Quantization()
        tensors.append(
            TfliteTensor(
                name=(t.Name() or b"").decode(),
                dtype=type_names.get(t.Type(), str(t.Type())),
                shape=tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else (),
                constant=b is not None and (b.DataLength() > 0 or b.Offset() > 1),
                scales=tuple(float(s) for s in q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else (),
                zero_points=tuple(int(z) for z in q.ZeroPointAsNumpy())
                if q is not None and q.ZeroPointLength()
                else (),
            )
        )
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        ins = tuple(int(x) for x in op.InputsAsNumpy()) if op.InputsLength() else ()
        outs = tuple(int(x) for x in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        ops.append(TfliteOp(i, codes[op.OpcodeIndex()], ins, outs))
    return TfliteGraph(
        tensors=tuple(tensors),
        ops=tuple(ops),
        inputs=tuple(int(x) for x in graph.InputsAsNumpy()),
        outputs=tuple(int(x) for x in graph.OutputsAsNumpy()),
        file_bytes=len(buf),
    )


def arena_bytes(graph: TfliteGraph) -> int:
    """Peak RAM of the tensor arena: the largest sum of activation bytes live at once over the execution order.

    An activation (a tensor whose data is not in the file) lives from the op that writes it (a graph input: from
    the start) to the last op that reads it (a graph output: to the end). Hand-written because nothing shipped for
    Python plans a TFLite Micro arena: TFLM's memory planner is C++ inside tflite-micro, and ai-edge-litert's
    interpreter (XNNPACK) reports no arena size. This is the lower bound such a planner reaches without
    fragmentation; kernels' scratch buffers and the interpreter's own structures come on top.
    """
    n = len(graph.ops)
    first: dict[int, int] = {t: -1 for t in graph.inputs}
    last: dict[int, int] = {t: n for t in graph.outputs}
    for op in graph.ops:
        for t in op.outputs:
            first.setdefault(t, op.index)
        for t in op.inputs:
            if t >= 0:
                last[t] = max(last.get(t, op.index), op.index)
    live = [t for t in set(first) | set(last) if t >= 0 and not graph.tensors[t].constant]
    peak = 0
    for step in range(n):
        peak = max(
            peak,
            sum(graph.tensors[t].nbytes for t in live if first.get(t, step) <= step <= last.get(t, step)),
        )
    return peak


def _weight_kind(graph: TfliteGraph, weight: int, producer: dict[int, int]) -> tuple[str, tuple[int, ...]]:
    """The stored type of a MAC op's weight (through a DEQUANTIZE: the type it dequantizes from) and its shape."""
    tensor = graph.tensors[weight]
    src = producer.get(weight)
    if src is not None and graph.ops[src].name == "DEQUANTIZE":
        return graph.tensors[graph.ops[src].inputs[0]].dtype, tensor.shape
    return tensor.dtype, tensor.shape


def _macs(op: TfliteOp, graph: TfliteGraph, weight_shape: Sequence[int]) -> int:
    """Multiply-accumulates per sample of one compute op (output elements × the reduction each one does)."""
    out = graph.tensors[op.outputs[0]].shape
    per_sample = int(np.prod(out[1:], dtype=np.int64)) if len(out) > 1 else int(np.prod(out, dtype=np.int64))
    w = list(weight_shape)
    if not w:
        return 0
    if op.name == "DEPTHWISE_CONV_2D":
        return per_sample * int(np.prod(w[1:3]))
    if op.name in ("CONV_2D", "CONV_3D"):
        return per_sample * int(np.prod(w[1:]))
    if op.name == "TRANSPOSE_CONV":
        inp = graph.tensors[op.inputs[2]].shape
        return int(np.prod(inp[1:], dtype=np.int64)) * int(np.prod(w[:3]))
    if op.name == "BATCH_MATMUL":
        return per_sample * int(w[-2])
    return per_sample * int(w[-1])  # FULLY_CONNECTED: weights (out, in)


def layer_precisions(graph: TfliteGraph) -> list[dict[str, Any]]:
    """Every compute op: its name (op index, op, output tensor), MACs per sample and the precision it computes in —
    ``int8`` (int8 activations and weights), ``fp32``, ``fp32 (fp16 weights)`` or ``fp32 (int8 weights)``
    (float kernels on dequantized weights)."""
    producer = graph.producer()
    layers = []
    for op in graph.ops:
        if op.name not in MAC_OPS or len(op.inputs) < 2:
            continue
        wtype, wshape = _weight_kind(graph, op.inputs[1], producer)
        atype = graph.tensors[op.inputs[0]].dtype
        if atype in ("INT8", "INT16") and wtype in ("INT8", "INT4"):
            precision = "int8"
        elif wtype in ("FLOAT16", "INT8", "INT4"):
            precision = f"fp32 ({wtype.lower().replace('float', 'fp')} weights)"
        else:
            precision = "fp32"
        parts = [s for s in graph.tensors[op.outputs[0]].name.split(";") if s]  # fused ops: the compute op last
        out_name = next((p for p in reversed(parts) if any(c.isalpha() for c in p)), "").split("/")[-1]
        layers.append(
            {
                "name": f"{op.index}:{op.name} {out_name}".strip(),
                "op": op.name,
                "macs": _macs(op, graph, wshape),
                "precision": precision,
            }
        )
    return layers
