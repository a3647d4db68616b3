"""An ONNX graph at one input shape: per node its MACs, weights and activation bytes, from ONNX shape inference.

The graph is read as other tools write it: weights in initializers (inline or in external data files beside the
model, which ``onnx.load`` reads from the model's folder), in ``Constant`` nodes, or reached through nodes a
runtime folds (a ``Transpose``/``Cast``/``DequantizeLinear`` of a weight); dynamic dimensions (batch, height,
width) are fixed at the given input shape before ``onnx.shape_inference`` runs, and a shape it cannot infer is an
error, never a guess.

The counting is written here rather than taken from onnx-tool because onnx-tool counts a ``Constant`` node's
weight as zero parameters and adds bias and element-wise FLOPs to its MACs, so its totals do not compare with the
PyTorch layer table (``edge_opt.hardware``), which counts the products of convolution and linear layers only
(what ``torch.utils.flop_counter`` counts as FLOPs / 2): here too MACs are those of Conv, ConvTranspose, Gemm and
MatMul (output elements × the reduction length), and every other node counts 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAC_OPS", "TABLE_OPS", "OnnxNodeStats", "onnx_node_stats"]

MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# What a layer table lists besides the MAC producers: what the PyTorch table hooks (pooling, normalisation,
# activations) and the element-wise arithmetic a graph spells out as nodes (residual Add, SE Mul).
TABLE_OPS = MAC_OPS | frozenset(
    {
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "LpPool",
        "ReduceMean",
        "ReduceMax",
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "InstanceNormalization",
        "Relu",
        "Clip",
        "Gelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "LeakyRelu",
        "PRelu",
        "Elu",
        "Selu",
        "Mish",
        "Softplus",
        "Softmax",
        "Add",
        "Sub",
        "Mul",
        "Div",
    }
)


@dataclass(frozen=True)
class OnnxNodeStats:
    """One node of the graph at the given input shape.

    Attributes:
        node: the node's name (its first output's name when it has none).
        op_type: the ONNX operator.
        weight: the tensor its weight comes from (initializer or ``Constant`` output), MAC producers only.
        macs: multiply-accumulates of the whole batch (0 for all but Conv, ConvTranspose, Gemm, MatMul).
        params: elements of its constant inputs (weights, bias, normalisation statistics).
        parameter_bytes: bytes of those at their stored dtype.
        input_elements: elements of its non-constant inputs.
        input_bytes: bytes of those at their dtype.
        output_elements: elements of its (first) output.
        output_bytes: bytes of that at its dtype.
    """

    node: str
    op_type: str
    weight: str | None
    macs: int
    params: int
    parameter_bytes: int
    input_elements: int
    input_bytes: int
    output_elements: int
    output_bytes: int


@dataclass(frozen=True)
class _Tensor:
    shape: tuple[int | None, ...] | None
    elem_type: int
    root: str | None = None  # a constant: the weight it comes from


def input_shapes(input_shape: Sequence[Any]) -> list[tuple[int, ...]]:
    """One full shape per graph input: ``input_shape`` is one shape (the first input's, e.g. (1, 1, 28, 28)) or a
    sequence of shapes, one per input in the graph's order."""
    if input_shape and isinstance(input_shape[0], (tuple, list)):
        return [tuple(int(d) for d in s) for s in input_shape]
    return [tuple(int(d) for d in input_shape)]


def _load_fixed(path: str | Path, input_shape: Sequence[Any]) -> Any:
    """The model (external data read from its folder) with its graph inputs fixed at ``input_shape`` (one shape,
    the first input's, or one per input), local functions inlined and stale value_info dropped, then
    shape-inferred (strict: an inconsistent graph raises)."""
    import onnx

    model = onnx.load(str(path))
    if len(model.functions):
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if not inputs:
        raise ValueError(f"The ONNX model {str(path)!r} has no graph input.")
    shapes = input_shapes(input_shape)
    for graph_input, shape in zip(inputs, shapes, strict=False):
        _fix_input(path, graph_input, shape)
    del g.value_info[:]
    for out in g.output:  # a -1 written for a dynamic dimension (Paddle2ONNX) would contradict the inferred size
        for d in out.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value <= 0:
                d.Clear()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise ValueError(
            f"ONNX shape inference failed on {str(path)!r} at input shape {tuple(input_shape)}: {exc}"
        ) from None
    return _fill_by_running(inferred, inputs[: len(shapes)], shapes)


def _fix_input(path: str | Path, graph_input: Any, input_shape: tuple[int, ...]) -> None:
    """Set one graph input's dimensions to ``input_shape`` (its fixed ones must agree)."""
    import onnx

    tensor_type = graph_input.type.tensor_type
    if not tensor_type.HasField("shape"):  # rank not given: the shape asked for is taken as it
        tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in input_shape)
    dims = tensor_type.shape.dim
    if len(dims) != len(input_shape):
        raise ValueError(
            f"The ONNX model {str(path)!r} takes a rank-{len(dims)} input {graph_input.name!r}; the layer table was "
            f"asked for shape {tuple(input_shape)}."
        )
    for d, size in zip(dims, input_shape, strict=True):
        if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != size:  # -1: dynamic (Paddle2ONNX)
            raise ValueError(
                f"The ONNX model {str(path)!r} takes input {graph_input.name!r} of fixed shape "
                f"{tuple(x.dim_value or x.dim_param for x in dims)}; the layer table was asked for "
                f"{tuple(input_shape)}."
            )
        d.Clear()
        d.dim_value = int(size)


def _fill_by_running(model: Any, graph_inputs: Sequence[Any], shapes: Sequence[tuple[int, ...]]) -> Any:
    """``model`` with the shapes static inference left unknown filled from one ONNX Runtime run on zeros.

    ONNX's data propagation stops at ops it cannot evaluate statically (e.g. the dynamo exporter's
    Shape → Squeeze → Concat → Reshape flatten), so a Reshape's output has no shape; the runtime knows it.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper

    g = model.graph
    known = {v.name for v in [*g.value_info, *g.output, *g.input] if _known(_value_shape(v)) is not None}
    known |= {t.name for t in g.initializer}
    missing = [o for n in g.node for o in n.output if o and o not in known and n.op_type != "Constant"]
    if not missing:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name: o for o in g.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in missing if name not in outputs)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {
            i.name: np.zeros(shape, helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
            for i, shape in zip(graph_inputs, shapes, strict=True)
        }
        values = sess.run(missing, feed)
    except Exception:  # noqa: BLE001 — the shapes stay unknown; the caller names the node it cannot table
        return model
    for name, value in zip(missing, values, strict=True):
        arr = np.asarray(value)
        info = helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape))
        if name in outputs:  # a graph output: its own entry, which the table reads last, gets the shape
            outputs[name].CopyFrom(info)
        else:
            g.value_info.append(info)
    return model


def _value_shape(v: Any) -> tuple[int | None, ...] | None:
    t = v.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim)


def _tensors(g: Any) -> dict[str, _Tensor]:
    """Every named tensor: its shape and type, and for a constant (initializer, ``Constant`` output, or the output
    of a node all of whose inputs are constants) the weight it comes from (the root of its first input)."""
    out: dict[str, _Tensor] = {
        v.name: _Tensor(_value_shape(v), v.type.tensor_type.elem_type) for v in [*g.input, *g.value_info, *g.output]
    }
    for t in g.initializer:
        out[t.name] = _Tensor(tuple(t.dims), t.data_type, t.name)
    for n in g.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            value = next((a.t for a in n.attribute if a.name == "value" and a.HasField("t")), None)
            prior = out.get(n.output[0])
            shape = tuple(value.dims) if value is not None else (prior.shape if prior else None)
            elem = value.data_type if value is not None else (prior.elem_type if prior else 0)
            out[n.output[0]] = _Tensor(shape, elem, n.output[0])
            continue
        ins = [i for i in n.input if i]
        if ins and all(i in out and out[i].root is not None for i in ins):
            for name in n.output:
                prior = out.get(name, _Tensor(None, 0))
                out[name] = _Tensor(prior.shape, prior.elem_type, out[ins[0]].root)
    return out


def _known(shape: tuple[int | None, ...] | None) -> tuple[int, ...] | None:
    """The shape when every dimension is known, else None."""
    if shape is None or any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape if d is not None)


def _count(shape: tuple[int | None, ...] | None) -> int | None:
    known = _known(shape)
    return int(np.prod(known, dtype=np.int64)) if known is not None else None


def _itemsize(elem_type: int) -> int:
    from onnx import helper

    return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize) if elem_type else 0


def _macs(n: Any, a: tuple[int, ...], w: tuple[int, ...], out_elements: int) -> int:
    """Products of a MAC node (``a``: its first input's shape, ``w``: its second's): output elements × the
    reduction length (ConvTranspose: input elements × the weight's fan-out)."""
    if n.op_type == "Conv":
        return out_elements * int(np.prod(w[1:], dtype=np.int64))
    if n.op_type == "ConvTranspose":
        return int(np.prod(a, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if n.op_type == "Gemm":
        trans_a = next((int(x.i) for x in n.attribute if x.name == "transA"), 0)
        return out_elements * int(a[0] if trans_a else a[-1])
    if n.op_type == "MatMul":
        return out_elements * int(a[-1])
    return 0


_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # float, float16, double, bfloat16


def _node_stats(n: Any, tensors: dict[str, _Tensor], where: str) -> OnnxNodeStats:
    ins = [tensors.get(i, _Tensor(None, 0)) if i else _Tensor((), 0) for i in n.input]
    out = tensors.get(n.output[0], _Tensor(None, 0))
    name = n.name or n.output[0]
    needed = [out] + (ins[:2] if n.op_type in MAC_OPS else [])
    if len(needed) < (3 if n.op_type in MAC_OPS else 1) or any(_count(t.shape) is None for t in needed):
        raise ValueError(
            f"ONNX shape inference could not tell the shapes of node {name!r} ({n.op_type}) of {where}; the layer "
            "table needs every shape."
        )
    # parameters: the float constants (weights, bias, normalisation statistics), not integer axes or shapes
    consts = [t for i, t in zip(n.input, ins, strict=True) if i and t.root is not None and t.elem_type in _FLOAT_TYPES]
    data = [t for i, t in zip(n.input, ins, strict=True) if i and t.root is None]
    out_elements = _count(out.shape) or 0
    mac = n.op_type in MAC_OPS
    return OnnxNodeStats(
        node=name,
        op_type=n.op_type,
        weight=ins[1].root if mac else None,
        macs=_macs(n, _known(ins[0].shape) or (), _known(ins[1].shape) or (), out_elements) if mac else 0,
        params=sum(_count(t.shape) or 0 for t in consts),
        parameter_bytes=sum((_count(t.shape) or 0) * _itemsize(t.elem_type) for t in consts),
        input_elements=sum(_count(t.shape) or 0 for t in data),
        input_bytes=sum((_count(t.shape) or 0) * _itemsize(t.elem_type) for t in data),
        output_elements=out_elements,
        output_bytes=out_elements * _itemsize(out.elem_type),
    )


def onnx_node_stats(path: str | Path, input_shape: Sequence[Any]) -> list[OnnxNodeStats]:
    """The table nodes (``TABLE_OPS``: MAC producers, pooling, normalisation, activations, element-wise
    arithmetic) of the main graph that read at least one non-constant tensor, in graph order, at ``input_shape``.

    Args:
        path: the ``.onnx`` file (external data beside it is read).
        input_shape: the first graph input's full shape, batch included, e.g. (1, 1, 28, 28); or one full shape
            per graph input, in the graph's order.
    Raises:
        ValueError: the input's rank or fixed dimensions differ from ``input_shape``, or shape inference fails
            or leaves a listed node's shape unknown.
    """
    g = _load_fixed(path, input_shape).graph
    tensors = _tensors(g)
    where = f"{str(path)!r} at input shape {tuple(input_shape)}"
    out = []
    for n in g.node:
        if n.op_type not in TABLE_OPS or n.domain not in ("", "ai.onnx"):
            continue
        if all(not i or (i in tensors and tensors[i].root is not None) for i in n.input):
            continue  # folded into a constant by any runtime
        out.append(_node_stats(n, tensors, where))
    return out
