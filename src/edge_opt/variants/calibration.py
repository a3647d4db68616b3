"""How many calibration samples a parent's min/max calibration needs (issue 34: calibration cost from what it needs).

Min/max calibration gives each activation the range from its smallest to its largest value over the calibration
samples; a value outside that range at run time saturates. Once the samples cover the data, more of them barely
move a range (its extremes keep creeping out like any sample maximum, a few percent per doubling) while each costs
a real-size network ~16 ms per backend on one core. ``converged_calibration`` feeds the parent's float model the
calibration samples in order and stops at the first doubling of samples (16, 32, 64, …) in which no more than
``quantization.calibration_tolerance`` of all the activation values fell outside the ranges of the samples before
it (the values those ranges would have saturated; the default 1e-5 matches percentile calibration's 99.999 %).
Every backend then calibrates on exactly that prefix, so the count depends on the parent, the data and the options
only, never on which runtimes the study builds or in which order. The histogram methods (entropy, percentile) take
every batch: their bins, not the extremes, set the scale. Written here because no quantization library offers a
stopping rule: ORT, NNCF and torch.ao calibrate on every sample they are given.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import batch_len, batch_runs, batch_slice
from .base import BuildContext

__all__ = [
    "CALIBRATION_RUN_VALUES",
    "FIRST_CHECK_SAMPLES",
    "RangeTally",
    "calibration_samples",
    "converged_calibration",
]

# Input values of one calibration run: 3 samples of 3×224×224, a whole batch of 128 digits (8×8). A run's
# activations are all held until it ends (~160 MB per MobileNetV2 sample at 224² in ORT's augmented graph).
CALIBRATION_RUN_VALUES = 1 << 19
FIRST_CHECK_SAMPLES = 16  # the first range snapshot; then every doubling is checked against the one before


class RangeTally:
    """Every activation's min/max so far, and how many values since the last ``snapshot`` fell outside the ranges
    it took."""

    def __init__(self) -> None:
        self.ranges: dict[str, tuple[float, float]] = {}
        self._ref: dict[str, tuple[float, float]] | None = None
        self.outside = 0
        self.values = 0

    def add(self, name: str, t: torch.Tensor) -> None:
        """Record one output tensor of the activation ``name``."""
        if not t.is_floating_point() or not t.numel():
            return
        lo, hi = (float(v) for v in torch.aminmax(t))
        if self._ref is not None:
            ref = self._ref.get(name)
            self.values += t.numel()
            if ref is None:
                self.outside += t.numel()
            elif lo < ref[0] or hi > ref[1]:  # counted only where the extremes say some value is outside
                self.outside += int((t < ref[0]).sum() + (t > ref[1]).sum())
        old = self.ranges.get(name)
        self.ranges[name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    def outside_fraction(self) -> float | None:
        """The share of values since the snapshot outside its ranges (None before the first snapshot)."""
        return None if self._ref is None else self.outside / max(1, self.values)

    def snapshot(self) -> None:
        """Take the current ranges as the reference and start counting again."""
        self._ref, self.outside, self.values = dict(self.ranges), 0, 0


def calibration_samples(ctx: BuildContext) -> int:
    """How many samples ``ctx``'s calibration holds (part of the names of cached int8 builds)."""
    return sum(batch_len(b) for b in ctx.calibration)


def converged_calibration(model: nn.Module | None, ctx: BuildContext, onnx_path: Callable[[], Path]) -> BuildContext:
    """``ctx`` with ``calibration`` cut to the samples the parent's min/max ranges need (module docstring), and
    ``calibration_stop`` saying where it stopped and why. Unchanged (every batch) for the histogram methods, a
    tolerance of 0, or too few samples to check one doubling. ``model`` is probed with forward hooks; a parent
    with no PyTorch model (an ONNX file) through ONNX Runtime on ``onnx_path()``. Memoised per parent and options."""
    q = ctx.quantization
    total = calibration_samples(ctx)
    tol = q.calibration_tolerance
    if q.method != "minmax" or tol == 0 or total < 2 * FIRST_CHECK_SAMPLES:
        why = "a histogram method" if q.method != "minmax" else "tolerance 0" if tol == 0 else "too few to check"
        return dataclasses.replace(ctx, calibration_stop=f"every sample ({total}: {why})")
    slot = ("calibration_needed", ctx.parent_key, tol, id(ctx.calibration))
    if slot not in ctx.cache:
        runs = batch_runs(list(ctx.calibration), CALIBRATION_RUN_VALUES)
        observe = _torch_observer(model) if model is not None else _ort_observer(onnx_path(), ctx.threads)
        needed, why = _needed(runs, observe, tol, total)
        ctx.cache[slot] = (_prefix(ctx.calibration, needed), why)  # one list: caches keyed on it stay hits
    samples, why = ctx.cache[slot]
    return dataclasses.replace(ctx, calibration=samples, calibration_stop=why)


def _needed(runs: Sequence[Any], observe: Callable[[Any, RangeTally], None], tol: float, total: int) -> tuple[int, str]:
    """(samples needed, why) from feeding ``runs`` in order to ``observe``, checking at every doubling."""
    tally, seen, check, last = RangeTally(), 0, FIRST_CHECK_SAMPLES, 0
    for run in runs:
        observe(run, tally)
        seen += batch_len(run)
        if seen < check or seen >= total:
            continue
        frac = tally.outside_fraction()
        if frac is not None and frac <= tol:
            return (
                seen,
                (
                    f"{seen} of {total} samples: {frac:.1e} of samples {last + 1}–{seen}'s activation values outside "
                    f"the earlier ranges (≤ {tol:g})"
                ),
            )
        tally.snapshot()
        last, check = seen, 2 * seen
    return (
        total,
        f"every sample ({total}): each doubling put more than {tol:g} of the activation values outside the "
        "earlier ranges",
    )


def _prefix(batches: Sequence[Any], n: int) -> list[Any]:
    """The first ``n`` samples of ``batches``, in the same batches (the last one cut)."""
    out, left = [], n
    for b in batches:
        if left <= 0:
            break
        k = batch_len(b)
        out.append(b if k <= left else batch_slice(b, 0, left))
        left -= k
    return out


def _torch_observer(model: nn.Module) -> Callable[[Any, RangeTally], None]:
    """Feeds a run to ``model``, every leaf module's tensor output going to the tally."""
    leaves = [(n, m) for n, m in model.named_modules() if n and not any(m.children())]

    def observe(run: Any, tally: RangeTally) -> None:
        def hook(name: str) -> Callable[..., None]:
            def record(_m: nn.Module, _i: Any, out: Any) -> None:
                for i, t in enumerate(out if isinstance(out, (tuple, list)) else [out]):
                    if isinstance(t, torch.Tensor):
                        tally.add(f"{name}:{i}", t.detach())

            return record

        handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
        try:
            with torch.inference_mode():
                model(*run) if isinstance(run, (tuple, list)) else model(run)
        finally:
            for h in handles:
                h.remove()

    return observe


def _ort_observer(fp32: Path, threads: int) -> Callable[[Any, RangeTally], None]:
    """Feeds a run to ONNX Runtime on ``fp32`` with every tensor ORT's quantizer calibrates made an output (ORT's
    own augmented graph, as its histogram calibrators build it), each output going to the tally."""
    import onnxruntime as ort
    from onnxruntime.quantization import calibrate
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from .onnx_tools import CalibrationReader, onnx_input_names

    tmp = tempfile.TemporaryDirectory(prefix="edge_opt_probe.")
    calibrator = calibrate.create_calibrator(
        fp32,
        list(set(QLinearOpsRegistry) | set(QDQRegistry)),
        augmented_model_path=str(Path(tmp.name) / "augmented.onnx"),
        calibrate_method=calibrate.CalibrationMethod.Entropy,
    )
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(calibrator.augmented_model_path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inputs = onnx_input_names(fp32)
    del calibrator

    def observe(run: Any, tally: RangeTally) -> None:
        _ = tmp  # the augmented graph's folder lives as long as the observer
        feed = CalibrationReader([run], inputs).get_next() or {}
        _add_arrays(tally, zip(names, session.run(None, feed)))

    return observe


def _add_arrays(tally: RangeTally, outputs: Iterable[tuple[str, Any]]) -> None:
    for name, value in outputs:
        if hasattr(value, "dtype") and value.dtype.kind == "f":
            tally.add(name, torch.from_numpy(value))
