"""A model's input batch and its outputs as every stage passes them.

A batch is one array-like (a torch tensor or a NumPy array) for a model with one input, or a tuple of them, one
per model input in the model's input order, for a model with several (token ids and an attention mask, say).
Outputs are one array, or a tuple of arrays for a model with several outputs. These helpers are the only place
that knows the two forms, so the stages stay written for "a batch" whatever the model takes. Written here
because no library defines this convention (torch's default collate produces the tuple form, and nothing reads it
back).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "batch_len",
    "batch_map",
    "batch_parts",
    "batch_runs",
    "batch_slice",
    "concat_outputs",
    "output_arrays",
    "sample_shapes",
]


def batch_parts(x: Any) -> tuple[Any, ...]:
    """The inputs of a batch: ``(x,)`` for one input, the tuple itself (a list read as a tuple) for several."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def batch_len(x: Any) -> int:
    """The number of samples in a batch (the first dimension of its first input).

    Raises:
        ValueError: a batch with no inputs, or inputs of different lengths.
    """
    parts = batch_parts(x)
    if not parts:
        raise ValueError("A batch must hold at least one input. Got an empty tuple.")
    n = len(parts[0])
    if any(len(p) != n for p in parts[1:]):
        raise ValueError(f"The inputs of a batch must hold as many samples each. Got {[len(p) for p in parts]}.")
    return n


def batch_map(x: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to each input of a batch, in the batch's own form (one value, or a tuple)."""
    if isinstance(x, (tuple, list)):
        return tuple(fn(p) for p in x)
    return fn(x)


def sample_shapes(x: Any) -> Any:
    """A batch's shape per sample: ``(C, H, W)``-like for one input, a tuple of such shapes for several."""
    shapes = tuple(tuple(int(d) for d in p.shape[1:]) for p in batch_parts(x))
    return shapes[0] if len(shapes) == 1 else shapes


def batch_slice(x: Any, start: int, stop: int) -> Any:
    """Samples ``start:stop`` of every input of a batch, in the batch's own form."""
    return batch_map(x, lambda p: p[start:stop])


def batch_runs(batches: Sequence[Any], max_values: int) -> list[Any]:
    """The same samples in the same order, each batch cut into runs of at most ``max_values`` input values (one
    sample at least; a batch within the bound stays whole, as given). A calibration pass collects min/max ranges,
    which do not depend on how the samples are grouped, while its memory and a real-size model's time per sample
    grow with the run's size (activations of every layer held at once)."""
    runs: list[Any] = []
    for b in batches:
        per_sample = max(1, sum(math.prod(tuple(p.shape)[1:]) for p in batch_parts(b)))
        step = max(1, max_values // per_sample)
        n = batch_len(b)
        runs += [b] if step >= n else [batch_slice(b, i, min(i + step, n)) for i in range(0, n, step)]
    return runs


def output_arrays(out: Any) -> list[np.ndarray]:
    """A model's outputs as a list of arrays, one per output (one array, or a tuple/list of them)."""
    if isinstance(out, (tuple, list)):
        return [np.asarray(o) for o in out]
    return [np.asarray(out)]


def concat_outputs(chunks: Sequence[Any]) -> list[np.ndarray]:
    """Per-batch outputs (each one array or a tuple) concatenated along the samples, one array per output.

    Raises:
        ValueError: no chunks, or chunks with different numbers of outputs.
    """
    lists = [output_arrays(c) for c in chunks]
    if not lists:
        raise ValueError("No outputs to concatenate.")
    k = len(lists[0])
    if any(len(ls) != k for ls in lists):
        raise ValueError(f"Every batch must give as many outputs. Got {sorted({len(ls) for ls in lists})}.")
    return [np.concatenate([ls[i] for ls in lists]) for i in range(k)]
