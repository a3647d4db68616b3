"""One repeated-benchmark run (the documented ``benchmark_one_setup``): train an MLP in a precision
mode and measure train time, latency, peak memory, accuracy and energy."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.benchmark import Timer
from torch.utils.data import DataLoader

from ..inputs import (
    DataBundle,
    RawDataset,
    create_model,
    digits_dataset,
    make_loaders,
    set_deterministic,
    synthetic_dataset,
    train_model,
)
from ..measure import RaplReader, measure_energy
from ..variants import from_seed_name, get_precision, is_quantized_module, quantize_torch_int8, seed_names

__all__ = ["PRECISION_MODES", "benchmark_one_setup"]

# The ``edge-opt bench`` precision-mode names of the registered precisions (float32, float16, bfloat16, int8); the
# mapping to the study's names (fp32, fp16, bf16, int8) lives in one place: ``edge_opt.variants.precisions``.
PRECISION_MODES = tuple(seed_names())


def _rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return math.nan


def _mlp_data(classes: int, n_samples: int, seed: int) -> tuple[RawDataset, str]:
    """Digits when the MLP has 10 outputs and enough samples exist, else a seeded synthetic problem."""
    if classes == 10 and n_samples <= 1797:
        raw = digits_dataset(image_size=8)
        idx = np.random.default_rng(seed).permutation(len(raw.labels))[:n_samples]
        return RawDataset(raw.images[idx], raw.labels[idx], 10, raw.source), "digits"
    return synthetic_dataset(image_size=8, seed=seed, n_samples=n_samples, num_classes=classes), "synthetic"


def _inference_model(
    model: torch.nn.Module, data: DataBundle, quantized: bool, autocast: torch.dtype | None
) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The trained MLP as it runs inference in the mode: int8-quantized, cast to a float dtype, or as is."""
    if quantized:
        return quantize_torch_int8(model, data.calibration_batches(2)), (lambda x: x.float())
    if autocast is not None:
        dtype = autocast
        return copy.deepcopy(model).to(dtype), (lambda x: x.to(dtype))
    return model, (lambda x: x)


def _evaluate_and_time(
    infer: torch.nn.Module, prep: Callable[[torch.Tensor], torch.Tensor], data: DataBundle
) -> tuple[int, int, Any, torch.Tensor]:
    """Validation hits and count, and a ``blocked_autorange`` measurement of one batch."""
    correct = total = 0
    with torch.inference_mode():
        for x, y in data.val_loader:
            correct += int((infer(prep(x)).float().argmax(1) == y).sum())
            total += len(y)
        xb = prep(next(iter(data.val_loader))[0])
        m = Timer("f(x)", globals={"f": infer, "x": xb}, num_threads=torch.get_num_threads()).blocked_autorange(
            min_run_time=0.1
        )
    return correct, total, m, xb


def _data_and_model(
    layer_sizes: Sequence[int], activations: Sequence[str], n_samples: int, batch_size: int, seed: int
) -> tuple[DataBundle, DataLoader, str, torch.nn.Module]:
    """Seeded data, loaders (the training loader checked non-empty), the dataset's name and the untrained MLP."""
    if n_samples < 8:
        raise ValueError(f"The 'n_samples' parameter must be at least 8. Got {n_samples!r} instead.")
    set_deterministic(seed)
    raw, dataset = _mlp_data(int(layer_sizes[-1]), n_samples, seed)
    data = make_loaders(raw, batch_size=batch_size, dataloader_seed=seed, val_fraction=0.25)
    train_loader = data.train_loader
    if train_loader is None:
        raise ValueError(f"The 'n_samples' parameter leaves no training samples. Got {n_samples!r}.")
    model = create_model(
        "mlp", data.input_shape, data.num_classes, layer_sizes=list(layer_sizes), activations=list(activations)
    )
    return data, train_loader, dataset, model


def _precision_settings(precision: str) -> tuple[bool, torch.dtype | None]:
    """Whether the mode quantizes for inference, and the dtype of its CPU autocast (None for fp32 and int8)."""
    spec = get_precision(precision)
    # reduced float precisions train under CPU autocast and infer in that dtype
    autocast = spec.torch_dtype if spec.torch_dtype not in (None, torch.float32) else None
    return spec.quantized, autocast


def _train_measuring_energy(
    model: torch.nn.Module,
    train_loader: DataLoader,
    epochs: int,
    seed: int,
    autocast: torch.dtype | None,
    power_watts: float,
    rapl: RaplReader | None,
) -> tuple[Any, Any]:
    """Train ``model`` inside ``measure_energy``: the energy estimate (per epoch) and the training result."""
    holder: dict[str, Any] = {}

    def train() -> int:
        holder["result"] = train_model(
            model, train_loader, epochs=epochs, learning_rate=1e-2, seed=seed, autocast_dtype=autocast
        )
        return max(epochs, 1)

    energy, _elapsed, _ = measure_energy(train, power_watts=power_watts, reader=rapl)
    return energy, holder["result"]


def benchmark_one_setup(
    layer_sizes: Sequence[int],
    activations: Sequence[str],
    precision_mode: str,
    batch_size: int,
    n_samples: int,
    epochs: int,
    seed: int,
    power_watts: float = 15.0,
    rapl: RaplReader | None = None,
) -> dict[str, Any]:
    """Train and measure one MLP in one precision mode.

    Data: scikit-learn's digits when the last layer has 10 outputs and ``n_samples`` ≤ 1797,
    else a seeded synthetic problem with ``layer_sizes[-1]`` classes (the row's ``dataset`` says which).

    Args:
        layer_sizes / activations: the ``mlp`` model (one activation per layer; a final softmax is implied by the loss).
        precision_mode: float32; float16 / bfloat16 (CPU autocast training, inference in that dtype);
            int8 (fp32 training, static int8 quantization for inference).
        batch_size, n_samples, epochs, seed: training set-up.
        power_watts: for the energy proxy when RAPL is unreadable.
    Returns:
        Row with train_time (s per epoch), latency (s per sample, median), memory (MB, peak RSS growth
        during the run), accuracy (final train accuracy), val_accuracy, energy (J per epoch) and how each was measured.
    """
    precision = from_seed_name(precision_mode)  # ValueError naming the allowed modes
    data, train_loader, dataset, model = _data_and_model(layer_sizes, activations, n_samples, batch_size, seed)
    rss0 = _rss_mb()
    quantized, autocast = _precision_settings(precision)
    energy, result = _train_measuring_energy(model, train_loader, epochs, seed, autocast, power_watts, rapl)
    infer, prep = _inference_model(model, data, quantized, autocast)
    correct, total, m, xb = _evaluate_and_time(infer, prep, data)
    peak = max(_rss_mb() - rss0, 0.0)
    epoch_s = float(np.mean(result.epoch_seconds)) if result.epoch_seconds else math.nan
    joules = energy.joules if energy.source == "rapl" else power_watts * epoch_s  # proxy: power × epoch time
    return {
        "precision_mode": precision_mode,
        "seed": seed,
        "dataset": dataset,
        "n_samples": n_samples,
        "train_time": epoch_s,
        "latency": m.median / len(xb),
        "memory": peak,
        "accuracy": result.train_accuracy,
        "val_accuracy": correct / total if total else math.nan,
        "energy": joules,
        "energy_source": energy.source,
        "memory_method": "peak RSS growth during the run (/proc/self/statm)",
        "latency_method": "median of torch.utils.benchmark blocked_autorange on one batch, per sample",
        "quantized": quantized and any(is_quantized_module(q) for q in infer.modules()),
        "inference_dtype": "int8" if quantized else str(next(infer.parameters()).dtype).split(".")[-1],
    }
