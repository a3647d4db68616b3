"""ONNX → PyTorch: a ``torch.fx`` module whose layers are real ``nn`` modules, so an ONNX input can be pruned and
run on the torch and ExecuTorch backends.

``convert_onnx(path, sample)`` turns the file into a ``torch.fx.GraphModule``: every ``Conv`` becomes an
``nn.Conv2d``, every ``BatchNormalization`` an ``nn.BatchNorm2d`` / ``nn.BatchNorm1d``, every ``Gemm`` (and
``MatMul`` by a weight, with a following bias ``Add``) an ``nn.Linear``, holding the file's weights wherever the
file keeps them (initializers, ``Constant`` nodes, external data read from the model's folder); the other common
CNN/MLP operators become torch functions. Torch-Pruning then prunes those modules as it prunes a hand-written
model. A model with another operator is not converted: the reason names the operator types.

The converted module is then checked: its outputs on the study's validation images against ONNX Runtime's on the
same images. It matches when ``max |torch − ORT| ≤ 1e-4 × max(1, max |ORT|)`` (fp32 kernels of two runtimes
differ in summation order, a few 1e-6 on logits of order 10; a wrong layer differs by far more). A module that
does not match is not used.

Why a converter of our own (the maintained ones checked for issue 32): onnx2torch 1.5.15 (and its fork
onnx2torch-py313 1.6.0) and onnx2pytorch 0.6.0 import torchvision when they are imported (their NMS / RoIAlign
operators; torchvision is a required dependency of both), which the project does not depend on; onnx2pytorch
also takes layer weights from initializers only, so ``Constant``-node weights stay run-time values; onnx2fx
0.0.1 emits functional ``conv2d`` calls on weight tensors, which Torch-Pruning cannot prune (it prunes
``nn.Conv2d`` / ``nn.Linear`` modules). Shapes computed from the input
(``Shape`` → ``Gather`` → ``Concat`` → ``Reshape``, as the dynamo exporter writes a flatten) are evaluated on
the sample while building, so a flatten becomes ``torch.flatten`` and the graph keeps no channel count that
pruning would invalidate.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

__all__ = [
    "CHECK_IMAGES",
    "ONNX_CONVERTER",
    "OnnxConversion",
    "OnnxModule",
    "convert_onnx",
    "onnx_torch_module",
    "RELATIVE_TOLERANCE",
]

ONNX_CONVERTER = "edge_opt.onnx_convert 1"  # name and version: part of the key of every point that uses the module
RELATIVE_TOLERANCE = 1e-4
CHECK_IMAGES = 64  # validation images the converted module is checked on


@dataclass(frozen=True)
class OnnxConversion:
    """The ONNX file converted to PyTorch and checked against ONNX Runtime.

    Attributes:
        module: the converted module (None when the file could not be converted or its outputs differ).
        reason: why there is no module ("" when there is one).
        max_abs_diff: largest |torch − ONNX Runtime| over the checked outputs (NaN when not checked).
        tolerance: the bound that diff had to stay within.
        checked_on: how many validation images were compared.
        converter: the converter's name and version.
    """

    module: nn.Module | None
    reason: str
    max_abs_diff: float = math.nan
    tolerance: float = math.nan
    checked_on: int = 0
    converter: str = ONNX_CONVERTER

    @property
    def ok(self) -> bool:
        return self.module is not None

    def to_dict(self) -> dict[str, Any]:
        """What ``summary.json`` records under ``onnx_conversion``."""
        finite = math.isfinite(self.max_abs_diff)
        return {
            "converter": self.converter,
            "converted": self.ok,
            "max_abs_diff": self.max_abs_diff if finite else None,
            "tolerance": self.tolerance if math.isfinite(self.tolerance) else None,
            "checked_on": self.checked_on,
            "reason": self.reason or None,
        }

    def note(self) -> str:
        """One line for the study's warnings."""
        if self.ok:
            return (
                f"the ONNX model was converted to PyTorch ({self.converter}) for the torch/ExecuTorch backends and "
                f"pruning: outputs match ONNX Runtime's within {self.max_abs_diff:.2g} (tolerance "
                f"{self.tolerance:.2g}) on {self.checked_on} validation images"
            )
        return f"the ONNX model could not be converted to PyTorch: {self.reason}"


class _Unsupported(Exception):
    """The graph holds something the converter does not handle (the message says what)."""


# ---------------------------------------------------------------------------------------------- graph functions
# Functions the converted graph calls besides torch's own (module level: a GraphModule's code imports them).


def hard_sigmoid(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """ONNX ``HardSigmoid``: ``clamp(alpha·x + beta, 0, 1)``."""
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


def reshape_batch(x: torch.Tensor, rest: tuple[int, ...]) -> torch.Tensor:
    """Reshape keeping the batch dimension whatever its size."""
    return x.reshape(x.shape[0], *rest)


def gather(x: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX ``Gather``: ``take`` along ``axis`` (negative indices count from the end)."""
    idx = torch.where(indices < 0, indices + x.shape[axis], indices)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]))


def slice_axes(
    x: torch.Tensor, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int], steps: Sequence[int]
) -> torch.Tensor:
    """ONNX ``Slice`` with constant bounds (positive steps)."""
    index: list[slice] = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[a] = slice(s, e, st)
    return x[tuple(index)]


def cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ONNX ``Cast``."""
    return x.to(dtype)


class OnnxModule(fx.GraphModule):
    """The converted graph. A per-channel weight outside the layers (e.g. a ``Mul`` by a (1, C, 1, 1) constant) is
    an ``nn.Parameter`` that Torch-Pruning prunes with its channels; loading a state dict resizes such weights to the
    incoming shapes (as ``apply_layer_shapes`` resizes the layers), so a pruned checkpoint reloads into a fresh copy.
    """

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        for name, p in list(self._parameters.items()):
            got = state_dict.get(prefix + name)
            if p is not None and isinstance(got, torch.Tensor) and got.shape != p.shape:
                self._parameters[name] = nn.Parameter(torch.empty(got.shape, dtype=p.dtype), p.requires_grad)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ---------------------------------------------------------------------------------------------------- the builder


@dataclass
class _Val:
    """An ONNX value while building: its value on the sample, and the graph node that computes it at run time
    (None: a weight, or a value computed from the input's shape only)."""

    value: torch.Tensor
    node: fx.Node | None = None
    from_shape: bool = False
    label: str = ""  # a weight's name in the file

    @property
    def runtime(self) -> bool:
        return self.node is not None


class _Builder:
    """Walks the ONNX graph in order, emitting the fx graph and evaluating every value on the sample."""

    def __init__(self, uses: dict[str, int]) -> None:
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.values: dict[str, _Val] = {}
        self.uses = uses
        self._names: set[str] = set()
        self._attrs: dict[int, fx.Node] = {}

    def name(self, hint: str, prefix: str) -> str:
        base = re.sub(r"\W+", "_", hint).strip("_") or prefix
        if base[0].isdigit():
            base = f"{prefix}_{base}"
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def fx_arg(self, a: Any) -> Any:
        """``a`` as a graph argument: a node, a Python number for a one-element weight, else a buffer."""
        if isinstance(a, (list, tuple)):
            return type(a)(self.fx_arg(v) for v in a)
        if not isinstance(a, _Val):
            return a
        if a.node is not None:
            return a.node
        if a.from_shape:
            raise _Unsupported("a value computed from the input's shape feeds a layer")
        if a.value.numel() == 1 and a.value.ndim <= 1 and a.value.is_floating_point():
            return float(a.value.reshape(()).item())
        if id(a) not in self._attrs:
            name = self.name(a.label or "const", "const")
            if _per_channel(a.value):  # a parameter: Torch-Pruning prunes it with the channels it scales
                self.root.register_parameter(name, nn.Parameter(a.value.clone()))
            else:
                self.root.register_buffer(name, a.value.clone())
            self._attrs[id(a)] = self.graph.get_attr(name)
        return self._attrs[id(a)]

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> _Val:
        """``fn(*args, **kwargs)`` on the sample's values; emitted into the graph when an argument is a run-time
        value (folded to a weight otherwise)."""
        vals = [v for v in _flat((*args, *kwargs.values())) if isinstance(v, _Val)]
        value = fn(*_concrete(args), **{k: _concrete(v) for k, v in kwargs.items()})
        if not any(v.runtime for v in vals):
            return _Val(value, None, any(v.from_shape for v in vals))
        node = self.graph.call_function(fn, self.fx_arg(args), {k: self.fx_arg(v) for k, v in kwargs.items()})
        return _Val(value, node)

    def module(self, hint: str, mod: nn.Module, x: _Val) -> _Val:
        """Apply the layer ``mod`` (registered under a name made from ``hint``) to ``x``."""
        mod.eval()
        with torch.no_grad():
            value = mod(x.value)
        if not x.runtime:
            raise _Unsupported("a layer applied to a constant")
        name = self.name(hint, type(mod).__name__.lower())
        self.root.add_module(name, mod)
        return _Val(value, self.graph.call_module(name, (x.node,)))


def _per_channel(t: torch.Tensor) -> bool:
    """A float weight of shape (1, C, 1, …): one value per channel of an (N, C, …) activation."""
    return t.is_floating_point() and t.ndim >= 2 and t.shape[1] > 1 and t.numel() == t.shape[1] and t.shape[0] == 1


def _flat(items: Iterable[Any]) -> Iterable[Any]:
    for a in items:
        if isinstance(a, (list, tuple)):
            yield from _flat(a)
        else:
            yield a


def _concrete(a: Any) -> Any:
    if isinstance(a, (list, tuple)):
        return type(a)(_concrete(v) for v in a)
    return a.value if isinstance(a, _Val) else a


def _weight(v: _Val, what: str) -> torch.Tensor:
    """A layer's weight: a value the file holds (never one computed at run time)."""
    if v.runtime or v.from_shape:
        raise _Unsupported(f"its {what} is computed at run time (only weights held in the file are converted)")
    return v.value.detach().clone().float()


def _scalar(v: _Val, what: str) -> float:
    return float(_weight(v, what).reshape(()).item())


def _opt_weight(v: _Val | None, what: str) -> torch.Tensor | None:
    return None if v is None else _weight(v, what)


def _ints(v: _Val | None, what: str) -> list[int]:
    if v is None:
        return []
    if v.runtime:
        raise _Unsupported(f"its {what} is computed at run time")
    return [int(i) for i in v.value.reshape(-1).tolist()]


# ----------------------------------------------------------------------------------------------------- layers


def _pads2d(at: dict[str, Any], x: _Val, kernel: Sequence[int], strides: Sequence[int], dil: Sequence[int]):
    """(top, left, bottom, right) of a 2-D convolution or pooling."""
    auto = at.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(at.get("pads", [0, 0, 0, 0]))
        return pads[0], pads[1], pads[2], pads[3]
    if auto == "VALID":
        return 0, 0, 0, 0
    out: list[int] = []
    for size, k, s, d in zip(x.value.shape[2:], kernel, strides, dil):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
        out += [begin, total - begin]
    return out[0], out[2], out[1], out[3]


def _padded(b: _Builder, x: _Val, pads: tuple[int, int, int, int], value: float = 0.0) -> tuple[_Val, Any]:
    """``x`` and the symmetric padding a layer applies itself (asymmetric padding becomes an ``F.pad``)."""
    top, left, bottom, right = pads
    if top == bottom and left == right:
        return x, (top, left)
    return b.call(F.pad, x, (left, right, top, bottom), value=value), (0, 0)


def _conv(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    w, bias = _weight(_need(ins, 1), "weight"), _opt_weight(_opt(ins, 2), "bias")
    if w.ndim != 4 or x.value.ndim != 4:
        raise _Unsupported(f"a {w.ndim - 2}-D convolution (only 2-D convolutions are converted)")
    strides, dil = list(at.get("strides", [1, 1])), list(at.get("dilations", [1, 1]))
    x, padding = _padded(b, x, _pads2d(at, x, w.shape[2:], strides, dil))
    groups = int(at.get("group", 1))
    kernel: tuple[int, int] = (w.shape[2], w.shape[3])
    conv = nn.Conv2d(
        w.shape[1] * groups,
        w.shape[0],
        kernel,
        (strides[0], strides[1]),
        padding,
        (dil[0], dil[1]),
        groups,
        bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(w)
        if bias is not None and conv.bias is not None:
            conv.bias.copy_(bias.reshape(-1))
    return [b.module(node.name or "conv", conv, x)]


def _batch_norm(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    scale, shift, mean, var = (_weight(_need(ins, i), n) for i, n in enumerate(("scale", "bias", "mean", "var"), 1))
    if at.get("training_mode", 0) or [o for o in node.output[1:] if o]:
        raise _Unsupported("BatchNormalization in training mode")
    cls = {4: nn.BatchNorm2d, 2: nn.BatchNorm1d, 3: nn.BatchNorm1d}.get(x.value.ndim)
    if cls is None:
        raise _Unsupported(f"BatchNormalization of a rank-{x.value.ndim} input")
    bn = cls(scale.numel(), eps=float(at.get("epsilon", 1e-5)), momentum=1.0 - float(at.get("momentum", 0.9)))
    with torch.no_grad():
        bn.weight.copy_(scale)
        bn.bias.copy_(shift)
        for name, value in (("running_mean", mean), ("running_var", var)):
            getattr(bn, name).copy_(value)
    return [b.module(node.name or "bn", bn, x)]


def _linear(b: _Builder, hint: str, x: _Val, weight: torch.Tensor, bias: torch.Tensor | None) -> _Val:
    if x.value.ndim < 2:
        raise _Unsupported("a matrix product of a rank-1 input")
    fc = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        fc.weight.copy_(weight)
        if bias is not None and fc.bias is not None:
            fc.bias.copy_(
                torch.broadcast_to(bias.reshape(-1) if bias.numel() > 1 else bias.reshape(()), (fc.out_features,))
            )
    return b.module(hint or "linear", fc, x)


def _gemm(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x, w = _need(ins, 0), _weight(_need(ins, 1), "weight (B)")
    c = _opt_weight(_opt(ins, 2), "bias (C)")
    if at.get("transA", 0):
        raise _Unsupported("Gemm with transA=1")
    weight = (w if at.get("transB", 0) else w.T) * float(at.get("alpha", 1.0))
    bias = c * float(at.get("beta", 1.0)) if c is not None else None
    if bias is not None and bias.numel() not in (1, weight.shape[0]):
        raise _Unsupported(f"Gemm with a bias of shape {tuple(bias.shape)}")
    return [_linear(b, node.name, x, weight, bias)]


def _matmul(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x, w = _need(ins, 0), _need(ins, 1)
    if x.runtime and not w.runtime and not w.from_shape and w.value.ndim == 2:
        return [_linear(b, node.name, x, w.value.detach().clone().float().T, None)]
    return [b.call(torch.matmul, x, w)]


def _linear_without_bias(b: _Builder, v: _Val) -> nn.Linear | None:
    if v.node is None or v.node.op != "call_module":
        return None
    mod = b.root.get_submodule(str(v.node.target))
    return mod if isinstance(mod, nn.Linear) and mod.bias is None else None


def _add(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    """``Add``; a weight vector added to a bias-free ``nn.Linear`` used only here becomes its bias."""
    x, y = _need(ins, 0), _need(ins, 1)
    for (lin, name), other in (((x, node.input[0]), y), ((y, node.input[1]), x)):
        fc = _linear_without_bias(b, lin)
        if fc is not None and b.uses.get(name) == 1 and not other.runtime and not other.from_shape:
            vec = other.value.float()
            if vec.numel() == fc.out_features and vec.shape[-1] == fc.out_features and vec.ndim <= 2:
                fc.bias = nn.Parameter(vec.reshape(-1).clone())
                return [_Val(lin.value + vec, lin.node)]
    return [b.call(operator.add, x, y)]


# -------------------------------------------------------------------------------------------- other operators


def _pool(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    kernel = list(at["kernel_shape"])
    if len(kernel) != 2 or x.value.ndim != 4:
        raise _Unsupported(f"a {len(kernel)}-D pooling (only 2-D pooling is converted)")
    strides, dil = list(at.get("strides", [1, 1])), list(at.get("dilations", [1, 1]))
    if [o for o in node.output[1:] if o]:
        raise _Unsupported("MaxPool's indices output")
    pads = _pads2d(at, x, kernel, strides, dil)
    ceil = bool(at.get("ceil_mode", 0))
    if node.op_type == "MaxPool":
        x, padding = _padded(b, x, pads, value=-math.inf)
        return [b.call(F.max_pool2d, x, kernel, strides, padding, dil, ceil_mode=ceil)]
    if dil != [1, 1]:
        raise _Unsupported("AveragePool with dilations")
    include = bool(at.get("count_include_pad", 0))
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise _Unsupported("AveragePool with asymmetric pads")
    return [b.call(F.avg_pool2d, x, kernel, strides, (pads[0], pads[1]), ceil, include)]


def _global_pool(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    if x.value.ndim == 4:
        fn = F.adaptive_avg_pool2d if node.op_type == "GlobalAveragePool" else F.adaptive_max_pool2d
        return [b.call(fn, x, 1)]
    dims = tuple(range(2, x.value.ndim))
    if node.op_type == "GlobalAveragePool":
        return [b.call(torch.mean, x, dims, keepdim=True)]
    return [b.call(torch.amax, x, dims, keepdim=True)]


def _axes(ins: list[_Val | None], at: dict[str, Any], index: int = 1) -> list[int] | None:
    """Axes from the attribute (older opsets) or the input (newer); None when not given."""
    if "axes" in at:
        return [int(a) for a in at["axes"]]
    v = _opt(ins, index)
    return _ints(v, "axes") if v is not None else None


def _reduce(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    axes = _axes(ins, at)
    keep = bool(at.get("keepdims", 1))
    if not axes:
        if at.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.value.ndim))
    fn: dict[str, Callable[..., Any]] = {
        "ReduceMean": torch.mean,
        "ReduceSum": torch.sum,
        "ReduceMax": torch.amax,
        "ReduceMin": torch.amin,
    }
    dims = tuple(a % x.value.ndim for a in axes)
    if node.op_type == "ReduceMean" and x.value.ndim == 4 and sorted(dims) == [2, 3] and keep:
        return [b.call(F.adaptive_avg_pool2d, x, 1)]  # a spatial mean is a global average pool
    return [b.call(fn[node.op_type], x, dims, keepdim=keep)]


def _flatten(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    axis = int(at.get("axis", 1)) % max(x.value.ndim, 1)
    if axis == 0:
        return [b.call(torch.reshape, x, (1, -1))]
    if axis > 1:
        x = b.call(torch.flatten, x, 0, axis - 1)
    return [b.call(torch.flatten, x, 1)]


def _reshape(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    """``Reshape`` by its effect on the sample: a flatten of trailing dims stays one when channels change."""
    x, shape = _need(ins, 0), _need(ins, 1)
    if shape.runtime:
        raise _Unsupported("its target shape is computed from run-time values")
    target = [int(s) for s in shape.value.tolist()]
    if not at.get("allowzero", 0):
        target = [x.value.shape[i] if s == 0 and i < x.value.ndim else s for i, s in enumerate(target)]
    if not x.runtime:
        return [b.call(torch.reshape, x, tuple(target))]
    src, out = tuple(x.value.shape), tuple(x.value.reshape(target).shape)
    for k in range(1, len(src)):
        if out == (*src[:k], math.prod(src[k:])):
            return [b.call(torch.flatten, x, k)]
    if out and src and out[0] == src[0]:
        return [b.call(reshape_batch, x, out[1:])]
    return [b.call(torch.reshape, x, out)]


def _squeeze(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    axes = _axes(ins, at)
    dims = tuple(a % x.value.ndim for a in axes) if axes else tuple(i for i, s in enumerate(x.value.shape) if s == 1)
    return [b.call(torch.squeeze, x, dims)]


def _unsqueeze(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    axes = _axes(ins, at) or []
    rank = x.value.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = b.call(torch.unsqueeze, x, a)
    return [x]


def _concat(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    parts = [v for v in ins if v is not None]
    return [b.call(torch.cat, parts, int(at["axis"]))]


def _transpose(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    perm = at.get("perm") or list(reversed(range(x.value.ndim)))
    return [b.call(torch.permute, x, tuple(int(p) for p in perm))]


def _shape(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    dims = list(x.value.shape)[int(at.get("start", 0)) : at.get("end")]
    return [_Val(torch.tensor(dims, dtype=torch.int64), None, x.runtime or x.from_shape)]


def _gather(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x, idx = _need(ins, 0), _need(ins, 1)
    axis = int(at.get("axis", 0)) % max(x.value.ndim, 1)
    return [b.call(gather, x, idx, axis)]


def _slice(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    if "starts" in at:  # opset < 10
        starts, ends, axes = list(at["starts"]), list(at["ends"]), list(at.get("axes", range(len(at["starts"]))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(ins[1], "starts"), _ints(ins[2], "ends")
        axes = _ints(_opt(ins, 3), "axes") or list(range(len(starts)))
        steps = _ints(_opt(ins, 4), "steps") or [1] * len(starts)
    if any(s <= 0 for s in steps):
        raise _Unsupported("Slice with a negative step")
    axes = [a % x.value.ndim for a in axes]
    return [b.call(slice_axes, x, tuple(starts), tuple(ends), tuple(axes), tuple(steps))]


_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64}


def _cast(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x, to = _need(ins, 0), int(at["to"])
    if to not in _DTYPES:
        raise _Unsupported(f"Cast to ONNX data type {to}")
    return [b.call(cast, x, _DTYPES[to])]


def _clip(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    lo, hi = at.get("min"), at.get("max")
    if lo is None and _opt(ins, 1) is not None:
        lo = _scalar(_need(ins, 1), "min")
    if hi is None and _opt(ins, 2) is not None:
        hi = _scalar(_need(ins, 2), "max")
    if lo == 0.0 and hi == 6.0:
        return [b.call(F.relu6, x)]
    return [b.call(torch.clamp, x, lo, hi)]


def _softmax(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any], opset: int) -> list[_Val]:
    x = _need(ins, 0)
    axis = int(at.get("axis", -1 if opset >= 13 else 1)) % x.value.ndim
    if opset < 13 and axis != x.value.ndim - 1:
        raise _Unsupported(f"{node.op_type} before opset 13 over axes {axis}.. of a rank-{x.value.ndim} input")
    fn = torch.softmax if node.op_type == "Softmax" else torch.log_softmax
    return [b.call(fn, x, axis)]


def _pad(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    x = _need(ins, 0)
    pads = list(at["pads"]) if "pads" in at else _ints(ins[1], "pads")
    value = float(at.get("value", 0.0))
    if _opt(ins, 2) is not None:
        value = _scalar(_need(ins, 2), "value")
    if _opt(ins, 3) is not None:
        raise _Unsupported("Pad with axes")
    mode = str(at.get("mode", "constant"))
    mode = {"edge": "replicate"}.get(mode, mode)
    n = len(pads) // 2
    torch_pads: list[int] = []
    for d in reversed(range(n)):
        torch_pads += [pads[d], pads[d + n]]
    while torch_pads and mode == "constant" and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    if mode == "constant":
        return [b.call(F.pad, x, tuple(torch_pads), value=value)]
    return [b.call(F.pad, x, tuple(torch_pads), mode=mode)]


def _need(ins: list[_Val | None], i: int) -> _Val:
    v = ins[i] if i < len(ins) else None
    if v is None:
        raise _Unsupported(f"input {i} is missing")
    return v


def _opt(ins: list[_Val | None], i: int) -> _Val | None:
    return ins[i] if i < len(ins) else None


def _unary(fn: Callable[..., Any], **fixed: Any) -> Callable[..., list[_Val]]:
    return lambda b, node, ins, at: [b.call(fn, _need(ins, 0), **fixed)]


def _binary(fn: Callable[..., Any]) -> Callable[..., list[_Val]]:
    return lambda b, node, ins, at: [b.call(fn, _need(ins, 0), _need(ins, 1))]


def _passthrough(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    return [_need(ins, 0)]


def _hard_sigmoid(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    alpha, beta = float(at.get("alpha", 0.2)), float(at.get("beta", 0.5))
    if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5:
        return [b.call(F.hardsigmoid, _need(ins, 0))]
    return [b.call(hard_sigmoid, _need(ins, 0), alpha, beta)]


def _leaky(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    return [b.call(F.leaky_relu, _need(ins, 0), float(at.get("alpha", 0.01)))]


def _gelu(b: _Builder, node: Any, ins: list[_Val | None], at: dict[str, Any]) -> list[_Val]:
    return [b.call(F.gelu, _need(ins, 0), approximate=str(at.get("approximate", "none")))]


_Handler = Callable[[_Builder, Any, list[_Val | None], dict[str, Any]], list[_Val]]
_OPS: dict[str, _Handler] = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "Sub": _binary(operator.sub),
    "Mul": _binary(operator.mul),
    "Div": _binary(operator.truediv),
    "Pow": _binary(torch.pow),
    "Relu": _unary(F.relu),
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "HardSwish": _unary(F.hardswish),
    "HardSigmoid": _hard_sigmoid,
    "LeakyRelu": _leaky,
    "Gelu": _gelu,
    "Erf": _unary(torch.erf),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Clip": _clip,
    "Identity": _passthrough,
    "Dropout": _passthrough,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "ReduceMean": _reduce,
    "ReduceSum": _reduce,
    "ReduceMax": _reduce,
    "ReduceMin": _reduce,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Transpose": _transpose,
    "Shape": _shape,
    "Gather": _gather,
    "Slice": _slice,
    "Cast": _cast,
    "Pad": _pad,
}
_WITH_OPSET = {"Softmax": _softmax, "LogSoftmax": _softmax}


# ------------------------------------------------------------------------------------------------ the conversion


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _tensor(proto: Any) -> torch.Tensor:
    from onnx import numpy_helper

    return torch.from_numpy(np.array(numpy_helper.to_array(proto), copy=True))


def _constant(node: Any) -> torch.Tensor:
    """The value of a ``Constant`` node, whichever attribute holds it."""
    from onnx import numpy_helper

    at = {a.name: a for a in node.attribute}
    if "value" in at:
        return _tensor(at["value"].t)
    if "sparse_value" in at:
        return torch.from_numpy(np.array(numpy_helper.to_array(at["sparse_value"].sparse_tensor), copy=True))
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32)):
        if name in at:
            return torch.from_numpy(np.array(_attributes(node)[name], dtype=dtype))
    for name in ("value_int", "value_ints"):
        if name in at:
            return torch.from_numpy(np.array(_attributes(node)[name], dtype=np.int64))
    raise _Unsupported("a Constant node holding strings")


def _unsupported_ops(model: Any) -> list[str]:
    """The op types (outside the default domain: domain::op) the converter has no handler for."""
    out = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            out.add(f"{node.domain}::{node.op_type}")
        elif node.op_type != "Constant" and node.op_type not in _OPS and node.op_type not in _WITH_OPSET:
            out.add(node.op_type)
    return sorted(out)


def _uses(model: Any) -> dict[str, int]:
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for out in model.graph.output:
        uses[out.name] = uses.get(out.name, 0) + 1
    return uses


def _run_node(b: _Builder, node: Any, opset: int) -> None:
    if node.op_type == "Constant":
        b.values[node.output[0]] = _Val(_constant(node), label=node.output[0])
        return
    ins = [b.values[name] if name else None for name in node.input]
    at = _attributes(node)
    outs = _WITH_OPSET[node.op_type](b, node, ins, at, opset) if node.op_type in _WITH_OPSET else None
    if outs is None:
        outs = _OPS[node.op_type](b, node, ins, at)
    for name, v in zip(node.output, outs):
        if name:
            b.values[name] = v


def onnx_torch_module(path: str | Path, sample: torch.Tensor) -> nn.Module:
    """The ONNX file as a ``torch.fx.GraphModule`` (eval mode); ``sample``: one input batch the graph is traced on.

    Raises:
        ValueError: the graph holds an operator or a form of one the converter does not handle (named).
    """
    import onnx

    model = onnx.load(str(path))  # external data from the model's folder
    unsupported = _unsupported_ops(model)
    if unsupported:
        raise ValueError(f"unsupported ONNX op types {', '.join(unsupported)}")
    if len(model.graph.output) != 1:
        raise ValueError(f"the graph has {len(model.graph.output)} outputs (one is converted)")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    b = _Builder(_uses(model))
    for init in model.graph.initializer:
        b.values[init.name] = _Val(_tensor(init), label=init.name)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"the graph has {len(inputs)} inputs (one is converted)")
    b.values[inputs[0].name] = _Val(sample.float(), b.graph.placeholder(b.name(inputs[0].name, "x")))
    for i, node in enumerate(model.graph.node):
        where = f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node #{i}"
        try:
            _run_node(b, node, opset)
        except _Unsupported as exc:
            raise ValueError(f"{where}: {exc}") from None
        except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as exc:
            raise ValueError(f"{where} failed: {type(exc).__name__}: {exc}") from None
    out = b.values[model.graph.output[0].name]
    if not out.runtime:
        raise ValueError("the graph's output does not depend on its input")
    b.graph.output(out.node)
    gm = OnnxModule(b.root, b.graph, class_name="OnnxModule")
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()


def _ort_outputs(path: str | Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])


def convert_onnx(path: str | Path, sample: np.ndarray) -> OnnxConversion:
    """Convert the ONNX file at ``path`` to PyTorch and check it against ONNX Runtime on ``sample``.

    Args:
        path: the ONNX model (external data files beside it).
        sample: float32 (N, C, H, W) inputs as the model takes them (the study passes up to ``CHECK_IMAGES``
            preprocessed validation images).
    Returns:
        The conversion: the module when its outputs match (``max |torch − ORT| ≤ RELATIVE_TOLERANCE ×
        max(1, max |ORT|)``), else None and the reason.
    Raises:
        ValueError: ``sample`` is not a non-empty 4-D array.
    """
    x = np.ascontiguousarray(sample, dtype=np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"The sample must be a non-empty (N, C, H, W) array. Got shape {x.shape}.")
    try:
        module = onnx_torch_module(path, torch.from_numpy(x))
    except ValueError as exc:
        return OnnxConversion(None, str(exc))
    try:
        ref = _ort_outputs(path, x)
        with torch.no_grad():
            got = module(torch.from_numpy(x)).float().numpy()
    except Exception as exc:  # noqa: BLE001 — any failure to run either side means no usable module
        return OnnxConversion(None, f"the converted module could not be checked ({type(exc).__name__}: {exc})")
    tol = RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    if got.shape != ref.shape:
        return OnnxConversion(None, f"the converted module outputs {got.shape}, ONNX Runtime {ref.shape}")
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not diff <= tol:
        return OnnxConversion(
            None,
            f"the converted module's outputs differ from ONNX Runtime's by up to {diff:.3g} (tolerance {tol:.3g}) "
            f"on {len(x)} validation images",
            diff,
            tol,
            len(x),
        )
    return OnnxConversion(module, "", diff, tol, len(x))
