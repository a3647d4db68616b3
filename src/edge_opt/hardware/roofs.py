"""The machine's roofs, measured with the best kernels the installed libraries have.

Compute roofs per precision: fp32 is the best of ``torch.matmul`` over several large shapes, ONNX Runtime's
MatMul and ONNX Runtime's 3×3 convolutions (on an AMD EPYC its direct convolution kernels sustained 53 GMAC/s where
its and torch's GEMMs read 45–49, and a wide CNN's convolutions ran 2–5 % above a GEMM-only roof); int8 the
best of ``torch._int_mm`` over those shapes and ONNX Runtime's
MatMulInteger with uint8 activations × int8 weights (the VNNI/AMX paths where the CPU has them); bf16 and
fp16 are ``torch.matmul`` in that dtype (reported only when faster than fp32, i.e. when the CPU has
native kernels). Memory roofs per cache level: a sweep of copies whose working sets (source + destination)
are a quarter and a half of each cache level the host reports (``/sys/devices/system/cpu/cpu0/cache``), and
a 256 MB set for DRAM. A copy's time less that of a 1 KB copy (the call's fixed overhead, about 0.6 µs with
torch here) is the time its bytes took; without that subtraction an L1-sized copy is mostly call overhead
and read 37 GB/s here where the difference reads about 300. A level's roof is the best of its sweep points.
The CPU's nominal fp32 peak (cores × SIMD lanes × 2 FMA units × clock) is reported beside the measured one.
A variant is placed against the compute roof of the precision its kernels run and the memory roof of the
smallest level its working set (weights + largest activation) fits in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.benchmark import Timer

from ..measure import torch_threads

__all__ = [
    "COPY_BASE_BYTES",
    "DRAM_SET",
    "GEMM_SHAPES",
    "MAX_LEVEL_SET",
    "cache_levels",
    "copy_sweep",
    "measure_roofs",
    "nominal_peak_gmacs",
    "place",
]

GEMM_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (512, 4096, 512))  # (m, k, n)
MAX_LEVEL_SET = 32 << 20  # a virtual machine may report a huge shared cache; its copy set stays bounded
DRAM_SET = 256 << 20
COPY_BASE_BYTES = 1 << 10  # a copy this small is all call overhead: its time is taken off every sweep point
_RESOLVABLE = 0.05  # a copy whose own bytes take less than this share of its time gives only a lower bound
_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


def _size(text: str) -> int:
    m = re.match(r"(\d+)\s*([KMG]?)", text.strip())
    if not m:
        return 0
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]


def cache_levels(root: Path = _CACHE) -> list[tuple[str, int]]:
    """(name, bytes) of the data/unified cache levels the host reports, smallest first (empty when unknown)."""
    levels = []
    for index in sorted(root.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = _size((index / "size").read_text())
        except OSError:
            continue
        if kind in ("Data", "Unified") and size > 0:
            levels.append((f"L{level}" + ("d" if kind == "Data" else ""), size))
    return sorted(levels, key=lambda t: t[1])


def nominal_peak_gmacs(threads: int) -> dict[str, Any]:
    """The CPU's nominal fp32 MAC rate: threads × SIMD fp32 lanes × 2 FMA units × clock (from /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"nominal_peak_gmacs": math.nan, "nominal_method": "unknown (/proc/cpuinfo unreadable)"}
    found = re.search(r"^flags\s*:\s*(.*)$", info, re.M)
    flags = set(found.group(1).split()) if found else set()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)
    ghz = float(mhz.group(1)) / 1e3 if mhz else math.nan
    return {
        "nominal_peak_gmacs": threads * lanes * 2 * ghz,
        "nominal_method": f"{threads} thread(s) × {lanes} fp32 lanes × 2 FMA units × {ghz:.2f} GHz (reported clock)",
    }


def _rate(stmt: str, env: dict[str, Any], macs: float, threads: int, min_run_time: float) -> float:
    t = Timer(stmt, globals=env, num_threads=threads).blocked_autorange(min_run_time=min_run_time)
    return macs / t.median / 1e9


def _torch_gemm(
    dtype: torch.dtype, threads: int, min_run_time: float, shapes: tuple[tuple[int, int, int], ...] = GEMM_SHAPES
) -> float:
    best = 0.0
    for m, k, n in shapes:
        if dtype == torch.int8:
            a, b = torch.randint(-64, 64, (m, k), dtype=dtype), torch.randint(-64, 64, (k, n), dtype=dtype)
            stmt = "torch._int_mm(a, b)"
        else:
            a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
            stmt = "torch.matmul(a, b)"
        best = max(best, _rate(stmt, {"torch": torch, "a": a, "b": b}, m * k * n, threads, min_run_time))
    return best


def _ort_gemm(threads: int, min_run_time: float, n: int = 2048, op: str = "MatMul") -> float:
    """ONNX Runtime's MLAS kernels on an n×n×n product: ``MatMul`` in fp32, or ``MatMulInteger`` with uint8
    activations and int8 weights (the layout its x86 int8 kernels take, VNNI/AMX where the CPU has them)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    integer = op == "MatMulInteger"
    w = rng.integers(-64, 64, (n, n)).astype(np.int8) if integer else rng.standard_normal((n, n)).astype(np.float32)
    a = rng.integers(0, 128, (n, n)).astype(np.uint8) if integer else rng.standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8 if integer else TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32 if integer else TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(w, "b")],
    )
    sess = _ort_session(graph, threads)
    return _rate("sess.run(None, {'a': a})", {"sess": sess, "a": a}, n**3, threads, min_run_time)


def _ort_session(graph: Any, threads: int) -> Any:
    """An ONNX Runtime CPU session of a one-node probe ``graph`` (opset 17) on ``threads`` intra-op threads."""
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


CONV_SHAPES = ((8, 128, 28), (8, 256, 14))  # (batch, channels in = out, height = width) of a 3×3, pad 1 convolution


def _ort_conv(threads: int, min_run_time: float, shapes: tuple[tuple[int, int, int], ...] = CONV_SHAPES) -> float:
    """ONNX Runtime's fp32 ``Conv`` (3×3, stride 1, same padding), the best rate over ``shapes``: the kernels a
    CNN's convolutions run on, which on some CPUs sustain more than its GEMMs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    best = 0.0
    for n, c, hw in shapes:
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        graph = helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
            "conv",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, hw, hw])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, hw, hw])],
            [numpy_helper.from_array(w, "w")],
        )
        sess = _ort_session(graph, threads)
        x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
        macs = n * c * hw * hw * c * 9
        best = max(best, _rate("sess.run(None, {'x': x})", {"sess": sess, "x": x}, macs, threads, min_run_time))
    return best


def _copy_seconds(nbytes: int, threads: int, min_run_time: float) -> float:
    """Median seconds of one ``dst.copy_(src)`` where source and destination together fill ``nbytes``."""
    n = max(nbytes // 2 // 4, 16)
    src, dst = torch.randn(n), torch.empty(n)
    t = Timer("dst.copy_(src)", globals={"src": src, "dst": dst}, num_threads=threads)
    return float(t.blocked_autorange(min_run_time=min_run_time).median)


def _sweep_point(nbytes: int, seconds: float, base_seconds: float) -> dict[str, Any]:
    """One working set's bandwidth: its bytes over its time less the call overhead (a 1 KB copy's time); when
    that difference is too small to resolve, the whole time (a lower bound, and said so)."""
    extra = seconds - base_seconds
    if extra > _RESOLVABLE * seconds:
        return {
            "working_set_bytes": nbytes,
            "seconds": seconds,
            "gbps": (nbytes - COPY_BASE_BYTES) / extra / 1e9,
            "method": "copy time less a 1 KB copy's",
        }
    return {
        "working_set_bytes": nbytes,
        "seconds": seconds,
        "gbps": nbytes / seconds / 1e9,
        "method": "whole copy time (call overhead not separable): a lower bound",
    }


def _level_sets(levels: list[tuple[str, int]]) -> list[tuple[str, int | None, tuple[int, ...]]]:
    """(level, size, working sets of its sweep): a quarter and a half of each level (above the level below it,
    at most ``MAX_LEVEL_SET``), then DRAM."""
    out: list[tuple[str, int | None, tuple[int, ...]]] = []
    below = 0
    for name, size in levels:
        top = min(size // 2, MAX_LEVEL_SET)
        out.append((name, size, tuple(sorted({w for w in (top // 2, top) if w > below} or {top}))))
        below = size
    return [*out, ("DRAM", None, (DRAM_SET,))]


def copy_sweep(threads: int, min_run_time: float, levels: list[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """Memory roofs, smallest level first and DRAM last: each level's best sweep point (``level``,
    ``size_bytes``, ``working_set_bytes``, ``gbps``, ``method``) with every point it took (``sweep``)."""
    base = _copy_seconds(COPY_BASE_BYTES, threads, min_run_time)
    roofs = []
    for name, size, sets in _level_sets(cache_levels() if levels is None else levels):
        points = [_sweep_point(w, _copy_seconds(w, threads, min_run_time), base) for w in sets]
        best = max(points, key=lambda p: p["gbps"])
        roofs.append(
            {
                "level": name,
                "size_bytes": size,
                "working_set_bytes": best["working_set_bytes"],
                "gbps": best["gbps"],
                "method": best["method"],
                "sweep": points,
            }
        )
    return roofs


def _gemm_at(dtype: torch.dtype, threads: int, min_run_time: float) -> Callable[[], float]:
    """The GEMM rate of a reduced-precision dtype on the first shape (an emulated dtype is slow: one shape)."""
    return lambda: _torch_gemm(dtype, threads, min_run_time, GEMM_SHAPES[:1])


def _measured(fn: Callable[[], float]) -> float | None:
    try:
        value = fn()
    except (RuntimeError, ImportError, ValueError, OSError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def measure_roofs(threads: int = 1, min_run_time: float = 0.1) -> dict[str, Any]:
    """Compute roofs per precision, memory roofs per cache level and DRAM, the nominal fp32 peak."""
    with torch_threads(threads):
        torch_fp32 = _torch_gemm(torch.float32, threads, min_run_time)
        ort_fp32 = _measured(lambda: _ort_gemm(threads, min_run_time)) or 0.0
        ort_conv = _measured(lambda: _ort_conv(threads, min_run_time)) or 0.0
        torch_int8 = _measured(lambda: _torch_gemm(torch.int8, threads, min_run_time))
        ort_int8 = _measured(lambda: _ort_gemm(threads, min_run_time, op="MatMulInteger"))
        compute: dict[str, float | None] = {
            "fp32": max(torch_fp32, ort_fp32, ort_conv),
            "int8": max((r for r in (torch_int8, ort_int8) if r), default=None),
        }
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            rate = _measured(_gemm_at(dtype, threads, min_run_time))
            compute[name] = rate if rate and rate > torch_fp32 else None  # no native kernels: no roof
        memory = copy_sweep(threads, min_run_time)
    return {
        "compute_roofs_gmacs": compute,
        "memory_roofs": memory,
        "fp32_peak_sources": {
            "torch.matmul best of shapes": torch_fp32,
            "onnxruntime MatMul 2048³": ort_fp32,
            "onnxruntime Conv 3×3 best of shapes": ort_conv,
        },
        "int8_peak_sources": {
            "torch._int_mm best of shapes": torch_int8,
            "onnxruntime MatMulInteger uint8 × int8 2048³": ort_int8,
        },
        **nominal_peak_gmacs(threads),
    }


def place(kernel_precision: str | None, working_set_bytes: float, machine: dict[str, Any]) -> dict[str, Any]:
    """The roofs a variant runs against: the highest compute roof among its kernels' precisions (fp32 + int8
    runs against the int8 roof, the conservative choice for an efficiency ≤ 1) and the memory roof of the
    smallest level its working set fits in (the machine's single roofs when no per-level ones were measured)."""
    compute = machine.get("compute_roofs_gmacs") or {}
    roofs = {"fp32": float(machine["peak_compute_gmacs"])}
    roofs.update({k: float(v) for k, v in compute.items() if k != "fp32" and v})
    kernels = [k for k in str(kernel_precision or "fp32").split("+") if k in roofs] or ["fp32"]
    roof_precision = max(kernels, key=lambda k: roofs[k])
    out = {"compute_roof_gmacs": roofs[roof_precision], "compute_roof_precision": roof_precision}
    if machine.get("bandwidth_source") == "configured" or not machine.get("memory_roofs"):
        return {**out, "memory_roof_gbps": float(machine["memory_bandwidth_gbps"]), "memory_level": "DRAM"}
    levels = machine["memory_roofs"]  # smallest first, DRAM last
    first = next(
        (i for i, m in enumerate(levels) if m["size_bytes"] and working_set_bytes <= m["size_bytes"]), len(levels) - 1
    )
    # data that fits a level fits every larger one too: its roof is the fastest of those (a level whose copy
    # time could not be told from the call overhead has only a lower bound, which may sit below L2's)
    best = max(levels[first:], key=lambda m: m["gbps"])
    return {**out, "memory_roof_gbps": float(best["gbps"]), "memory_level": levels[first]["level"]}
