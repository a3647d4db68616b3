"""ONNX files as other tools write them: the files a model is made of, and the bytes of its weights.

An ONNX model may keep its weights in three places: graph initializers (inline ``raw_data`` or typed fields),
``Constant`` nodes (Paddle2ONNX, tf2onnx and older exporters), or external data files beside the model
(``torch.onnx.export``'s default in torch 2.13 writes ``model.onnx.data``). Every stage that needs the model's
files (artifact export, manifest hashes, agent upload) or its weight bytes (``memory_mb``) asks here.

``normalise_onnx`` gives the graph a study builds its variants from (``model.simplify``): the input run once through
onnxslim (Constant weights folded into initializers, BatchNorm into convolutions), cached in the output folder and
checked against the input on validation images.

The counting is written here because ``onnx`` offers no byte count across the three storage forms (its
``external_data_helper`` lists external tensors only), and ``onnx-tool`` reports zero parameters for
``Constant`` weights.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import ArtifactError, atomic, batch_len, batch_parts, onnx_data_files, sha256_file

__all__ = [
    "batch_free",
    "check_batch_free",
    "fixed_batch",
    "GraphTransform",
    "MissingExternalData",
    "normalise_onnx",
    "onnx_model_files",
    "onnx_weight_bytes",
    "onnxslim_label",
]

_LIST_FIELDS = {"value_floats": 4, "value_ints": 8}


def _subgraphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph of its control-flow nodes (If, Loop, Scan), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _subgraphs(attr.g)
            for sub in attr.graphs:
                yield from _subgraphs(sub)


def _tensor_bytes(t: Any) -> int:
    """Bytes of a TensorProto at its stored dtype, from its dims (external data need not be loaded)."""
    from onnx import helper

    n = int(np.prod(tuple(t.dims), dtype=np.int64)) if len(t.dims) else 1
    if t.data_type == 8:  # STRING: no fixed width
        return sum(len(s) for s in t.string_data)
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return n * itemsize


def _constant_bytes(node: Any) -> int:
    """Bytes of the value a ``Constant`` node holds (tensor, sparse tensor or a list attribute)."""
    total = 0
    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            total += _tensor_bytes(attr.t)
        elif attr.name == "sparse_value" and attr.HasField("sparse_tensor"):
            total += _tensor_bytes(attr.sparse_tensor.values) + _tensor_bytes(attr.sparse_tensor.indices)
        elif attr.name in _LIST_FIELDS:
            total += len(attr.floats if attr.name == "value_floats" else attr.ints) * _LIST_FIELDS[attr.name]
        elif attr.name in ("value_float", "value_int"):
            total += 4 if attr.name == "value_float" else 8
    return total


def onnx_weight_bytes(model: Any) -> int:
    """Bytes of every weight the graph holds, wherever it keeps it: initializers (inline or external),
    sparse initializers and ``Constant`` nodes, in the main graph and in control-flow subgraphs.

    Args:
        model: an ``onnx.ModelProto`` or the path of an ``.onnx`` file (external data is not read: sizes come
            from the tensors' dims and dtypes).
    """
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    total = 0
    for g in _subgraphs(proto.graph):
        total += sum(_tensor_bytes(t) for t in g.initializer)
        total += sum(_tensor_bytes(s.values) + _tensor_bytes(s.indices) for s in g.sparse_initializer)
        total += sum(_constant_bytes(n) for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx"))
    return total


def onnx_model_files(path: str | Path) -> tuple[Path, ...]:
    """The files an ONNX model is made of: the model file first, then each external data file its tensors
    name (resolved beside the model file, each once, in the order first named).

    Raises:
        MissingExternalData: an external data file the model names is not beside it (a ``FileNotFoundError``
            naming the model, the file and where it was looked for).
        ValueError: an external data location that leaves the model's folder.
    """
    p = Path(path)
    try:
        names = onnx_data_files(p)
    except ArtifactError as exc:
        raise ValueError(str(exc)) from None
    folder = p.resolve().parent
    found = [folder / name for name in names]
    for name, target in zip(names, found):
        if not target.is_file():
            raise MissingExternalData(p, name, target)
    return (p, *found)


class MissingExternalData(FileNotFoundError):
    """An external data file a model names is not beside it.

    Attributes:
        model: the model file; location: the name the model gives;
        expected: where it is looked for (beside the model file, whatever the working folder).
    """

    def __init__(self, model: Path, location: str, expected: Path) -> None:
        super().__init__(
            f"The ONNX file {str(model)!r} keeps weights in the external data file {location!r}, "
            f"expected at {str(expected)!r} (beside the model file), which does not exist."
        )
        self.model, self.location, self.expected = model, location, expected


# --- the normalised graph (model.simplify) ------------------------------------------------------------------

# Largest |difference| of the normalised graph's fp32 logits allowed, relative to the largest |logit| (folding
# BatchNorm into a convolution changes the rounding of a few ulps, never more).
SLIM_TOLERANCE = 1e-4
SLIM_CHECK_IMAGES = 16  # validation images the normalised graph is checked on
PROTOBUF_LIMIT = 2**31  # bytes: a larger model keeps its weights in an external data file


@dataclass(frozen=True)
class GraphTransform:
    """What the study did to an ONNX input's graph before building its variants.

    Attributes:
        label: the rows' ``graph_transform``: ``onnxslim-<version>`` (the normalised graph is used) or ``none``.
        path: the graph the variants are built from (the normalised copy, or the input as given).
        details: ``summary.json``'s ``graph_transform`` object (nodes before/after, Constants and BatchNorms
            folded, weight bytes, the check's largest difference, seconds).
        warning: why the normalised graph is not used although ``model.simplify`` asked for it (None otherwise).
    """

    label: str
    path: Path
    details: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None


@functools.lru_cache(maxsize=1)
def onnxslim_label() -> str:
    """``onnxslim-<version>``: the rows' ``graph_transform`` of a normalised graph (part of the points' keys)."""
    from importlib import metadata

    try:
        return f"onnxslim-{metadata.version('onnxslim')}"
    except metadata.PackageNotFoundError:
        return "onnxslim-missing"


def fixed_batch(model: Any) -> int | None:
    """The batch size an ONNX model's (first) input fixes, or None when its batch dimension is dynamic.

    Args:
        model: an ``onnx.ModelProto`` or the path of an ``.onnx`` file.
    """
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    size = int(dims[0].dim_value) if len(dims) and dims[0].HasField("dim_value") else 0
    return size if size > 0 else None  # Paddle2ONNX writes -1 for a dynamic dimension


def batch_free(path: str | Path) -> Any:
    """The model of ``path`` (weights loaded) with its input's and outputs' fixed batch dimension made dynamic,
    for a study that runs batches: an exporter that fixed the batch at 1 often computes nothing from it, and the
    caller checks the rewrite on real images. A graph that hard-codes the batch (e.g. ``Reshape`` to ``[1, -1]``)
    fails that check. None when the batch is already dynamic."""
    import onnx

    model = onnx.load(str(path))  # external data read beside the model file
    if fixed_batch(model) is None:
        return None
    inits = {t.name for t in model.graph.initializer}
    for v in [*(i for i in model.graph.input if i.name not in inits), *model.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == fixed_batch(model):
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]  # shapes inferred at the fixed batch
    return model


def check_batch_free(model: Any, sample: np.ndarray, where: str) -> float:
    """Largest |difference| between ``model`` run on ``sample`` as one batch and image by image (ONNX Runtime).

    Raises:
        ValueError: it does not run on a batch, or the two differ beyond ``SLIM_TOLERANCE`` (names ``where``).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    x = np.ascontiguousarray(sample[:SLIM_CHECK_IMAGES], dtype=np.float32)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        whole = np.asarray(sess.run(None, {name: x})[0], dtype=np.float64)
        alone = np.concatenate([np.asarray(sess.run(None, {name: x[i : i + 1]})[0]) for i in range(len(x))])
    except Exception as exc:  # noqa: BLE001 — ONNX Runtime's reason (e.g. a Reshape to the fixed batch) is named
        raise ValueError(
            f"{where} takes a fixed batch of {fixed_batch(model) or 1} and its graph does not run on a batch of "
            f"{len(x)} once that dimension is made dynamic ({type(exc).__name__}: {str(exc)[:200]}); export it "
            "with a dynamic batch dimension (e.g. torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
        ) from None
    diff = float(np.max(np.abs(whole - alone))) if whole.size else 0.0
    if not diff <= SLIM_TOLERANCE * max(1.0, float(np.max(np.abs(alone))) if alone.size else 1.0):
        raise ValueError(
            f"{where} takes a fixed batch and gives other outputs on a batch than image by image once that dimension "
            f"is made dynamic (largest |difference| {diff:.3g}); export it with a dynamic batch dimension"
        )
    return diff


def normalise_onnx(path: str | Path, cache_dir: str | Path, sample: Any, enabled: bool = True) -> GraphTransform:
    """The graph a study builds its variants from: with ``enabled``, the input run through onnxslim (Constant
    weights folded into initializers, BatchNorm into convolutions, shape arithmetic folded) into ``cache_dir``,
    once per input and onnxslim version (``input_slim_<key>.onnx`` and its record ``.json``, reused by a resume),
    and checked against the input: its fp32 logits on ``sample`` (preprocessed validation images) within
    ``SLIM_TOLERANCE``. A graph that differs, or onnxslim failing, leaves the input as given, with a warning.

    The rewrite is onnxslim's; only the check and the cache are written here.
    """
    p, batch = _batch_free_copy(Path(path), Path(cache_dir), sample)
    if not enabled:
        off: dict[str, Any] = {"applied": False, "reason": "model.simplify is false", **batch}
        return GraphTransform("batch-free" if batch else "none", p, off)
    label = onnxslim_label()
    key = hashlib.sha256(json.dumps([label, *(sha256_file(f) for f in onnx_model_files(p))]).encode()).hexdigest()
    out = Path(cache_dir) / f"input_slim_{key[:16]}.onnx"
    record = out.with_suffix(".json")
    details = _cached_record(record, out)
    reused = details is not None
    if details is None:
        out.parent.mkdir(parents=True, exist_ok=True)
        details = {"tool": label, "input": p.name, "key": key[:16], **_slim(p, out, sample)}
        atomic.write_json(record, details)
    details = {**details, "reused": reused, **batch}
    if details["applied"]:
        return GraphTransform(label, out, {**details, "graph": out.name})
    why = f"model.simplify: {details['reason']}; the study builds its variants from {p.name!r} as given"
    return GraphTransform("none", p, details, why)


def _batch_free_copy(p: Path, cache_dir: Path, sample: Any) -> tuple[Path, dict[str, Any]]:
    """``p`` itself when its batch is dynamic; else its batch-free copy in ``cache_dir`` (``input_batch_<key>.onnx``,
    written once, checked on ``sample``) and what was done (``summary.json``'s ``batch_made_dynamic``)."""
    if fixed_batch(p) is None:
        return p, {}
    key = hashlib.sha256(json.dumps(["batch", *(sha256_file(f) for f in onnx_model_files(p))]).encode()).hexdigest()
    out = cache_dir / f"input_batch_{key[:16]}.onnx"
    model = batch_free(p)
    diff = check_batch_free(model, sample, f"The 'model.onnx' file {str(p)!r}")
    if not out.is_file():
        import onnx

        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_with(out, lambda tmp: onnx.save(model, str(tmp)))
    note = {"from": fixed_batch(p), "graph": out.name, "max_abs_diff": diff}
    return out, {"batch_made_dynamic": note}


def _cached_record(record: Path, graph: Path) -> dict[str, Any] | None:
    """The record of an earlier normalisation of the same input (None when absent, unreadable or its graph is gone)."""
    try:
        doc = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("applied"), bool):
        return None
    return doc if not doc["applied"] or graph.is_file() else None


def _slim(p: Path, out: Path, sample: Any) -> dict[str, Any]:
    """Run onnxslim on ``p`` into ``out`` and check it; what changed and whether it is used."""
    import onnx

    before = onnx.load(str(p), load_external_data=False)
    try:
        seconds = _run_onnxslim(p, out)
    except Exception as exc:  # noqa: BLE001 — a graph onnxslim cannot rewrite is used as given, with a warning
        return {"applied": False, "reason": f"onnxslim failed ({type(exc).__name__}: {str(exc)[:200]})"}
    after = onnx.load(str(out), load_external_data=False)
    found: dict[str, Any] = {**_changes(before, after), "seconds": round(seconds, 3)}
    found["check_images"] = int(min(batch_len(sample), SLIM_CHECK_IMAGES))
    try:
        diff, tol = _largest_difference(p, out, sample)
    except Exception as exc:  # noqa: BLE001 — a graph ONNX Runtime cannot run is not used, with a warning
        _discard(out)
        why = f"ONNX Runtime cannot run onnxslim's graph ({type(exc).__name__}: {str(exc)[:200]})"
        return {**found, "applied": False, "reason": why}
    found.update(max_abs_diff=diff, tolerance=tol)
    if not diff <= tol:  # NaN counts as a difference
        _discard(out)
        return {
            **found,
            "applied": False,
            "reason": f"onnxslim's graph differs from the input on {found['check_images']} validation images "
            f"(largest |difference| of the fp32 logits {diff:.3g} > tolerance {tol:.3g})",
        }
    return {**found, "applied": True}


def _discard(graph: Path) -> None:
    """Remove a normalised graph that is not used (and its external data file, if any)."""
    for f in (graph, graph.with_name(f"{graph.name}.data")):
        f.unlink(missing_ok=True)


def _run_onnxslim(p: Path, out: Path) -> float:
    """onnxslim's whole-graph rewrite of ``p`` saved at ``out`` (external data only for a model over 2 GB); returns
    the seconds the rewrite took."""
    import onnx
    import onnxslim

    model = onnx.load(str(p))  # external data read beside the model file
    big = onnx_weight_bytes(model) >= PROTOBUF_LIMIT
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        slim = onnxslim.slim(model)
    seconds = time.perf_counter() - t0
    _initializers_need_not_be_inputs(slim)
    if big:
        onnx.save_model(slim, str(out), save_as_external_data=True, location=f"{out.name}.data")
    else:
        onnx.save_model(slim, str(out))
    return seconds


IR_INITIALIZERS_NOT_INPUTS = 4  # from IR version 4 on, an initializer need not be listed among the graph's inputs


def _initializers_need_not_be_inputs(model: Any) -> None:
    """Raise an IR 3 ``model`` (Caffe2-era exports) to IR 4 where onnxslim dropped its initializers from the
    graph's inputs: IR 3 requires them there, and ONNX's version converter refused such a graph ("Input r3_weight
    is undefined!" on the ``light_densenet121`` model the onnx package ships), so its int8 build failed. IR 4 only
    lifts that requirement; the graph is otherwise unchanged."""
    inputs = {i.name for i in model.graph.input}
    if model.ir_version < IR_INITIALIZERS_NOT_INPUTS and any(t.name not in inputs for t in model.graph.initializer):
        model.ir_version = IR_INITIALIZERS_NOT_INPUTS


def _changes(before: Any, after: Any) -> dict[str, int]:
    """Nodes before/after, Constant and BatchNormalization nodes folded, weight bytes before/after."""
    ops = [Counter(n.op_type for g in _subgraphs(m.graph) for n in g.node) for m in (before, after)]
    return {
        "nodes_before": sum(ops[0].values()),
        "nodes_after": sum(ops[1].values()),
        "constants_folded": ops[0]["Constant"] - ops[1]["Constant"],
        "batchnorm_folded": ops[0]["BatchNormalization"] - ops[1]["BatchNormalization"],
        "weight_bytes_before": onnx_weight_bytes(before),
        "weight_bytes_after": onnx_weight_bytes(after),
    }


def _largest_difference(p: Path, out: Path, sample: Any) -> tuple[float, float]:
    """Largest |difference| of the two graphs' fp32 outputs on ``sample`` (ONNX Runtime, graph optimisations off,
    so the graphs themselves are compared) and the tolerance."""
    import onnxruntime as ort

    parts = [np.ascontiguousarray(np.asarray(a)[:SLIM_CHECK_IMAGES]) for a in batch_parts(sample)]
    outs = []
    for f in (p, out):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
        feed = {i.name: a for i, a in zip(sess.get_inputs(), parts, strict=True)}
        outs.append([np.asarray(o, dtype=np.float64) for o in sess.run(None, feed)])
    if [o.shape for o in outs[0]] != [o.shape for o in outs[1]]:
        return math.inf, SLIM_TOLERANCE
    ref, new = (np.concatenate([o.ravel() for o in each]) for each in outs)
    tol = SLIM_TOLERANCE * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    if ref.shape != new.shape:
        return math.inf, tol
    return (float(np.max(np.abs(ref - new))) if ref.size else 0.0), tol
