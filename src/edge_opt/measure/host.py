"""Measure stage: the host around a measurement — how busy it was, whether the runtimes' threads stayed on the
pinned cores, how much memory the study's processes peaked at and how much is left for instances of a variant.

How busy: ``watch_host`` wraps a measurement (inside ``pinned``) and records a fixed probe (``probe``: the same
single-thread torch work every time, ≈21 ms on a quiet core) before and after it, and the share of the wall time
the measuring thread got the CPU while it ran. ``host_loads`` turns those into the ``host_load`` of each row, a
slowdown factor ≥ 1 against the quietest probe the study saw; ``HostLoad`` names the rows measured while the
host was busy and whether the recommendation rests on them.

Memory: ``StageMemory`` reads the peak RSS of this process (and of its child processes) for each stage, and
``instance_bytes_budget`` bounds the memory given to extra instances of a variant by what is available.

Written by hand on ``/proc`` (Linux) and ``resource``: psutil is not a dependency, reads no per-stage peak (the
kernel's ``clear_refs`` reset) and ignores a cgroup's memory limit; elsewhere each figure is None or the fixed
budget, never a guess.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import os
import resource
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .threads import torch_threads

__all__ = [
    "HOST_LOAD_THRESHOLD",
    "HostLoad",
    "HostWatch",
    "StageMemory",
    "available_memory_bytes",
    "host_columns",
    "host_loads",
    "instance_bytes_budget",
    "probe",
    "release_freed_memory",
    "watch_host",
]

HOST_LOAD_THRESHOLD = 0.15  # a row whose host_load passes 1 + this was measured on a busy host
_PROBE_ROUNDS = 100  # ≈21 ms on one quiet core of the 2-core Xeon this was written on
_MB = 1e6


@functools.cache
def _probe_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The probe's fixed inputs: a 128×128 matrix (compute) and a 4 MB buffer with its copy target (memory)."""
    a = torch.linspace(-1.0, 1.0, 128 * 128).reshape(128, 128)
    buf = torch.linspace(0.0, 1.0, 1 << 20)
    return a, buf, torch.empty_like(buf)


def probe() -> tuple[float, float]:
    """(wall ms, CPU ms of this thread) of a fixed piece of work: ``_PROBE_ROUNDS`` × (a 128×128 matrix product and
    a 4 MB copy) in one torch thread on the calling thread's cores — the same work every time, so its wall time
    moves only with the host (other processes on the core, the caches and memory bus they share)."""
    a, buf, dst = _probe_inputs()
    with torch_threads(1):
        torch.mm(a, a)  # first call outside the timing (lazy kernel selection)
        c0, t0 = time.thread_time(), time.perf_counter()
        for _ in range(_PROBE_ROUNDS):
            torch.mm(a, a)
            dst.copy_(buf)
        t1, c1 = time.perf_counter(), time.thread_time()
    return (t1 - t0) * 1e3, (c1 - c0) * 1e3


@dataclass
class HostWatch:
    """What ``watch_host`` saw around one measurement (filled when the measurement ends)."""

    cores: tuple[int, ...] | None
    probe_ms: list[float] = field(default_factory=list)  # wall time of the probe before and after
    probe_cpu_ms: list[float] = field(default_factory=list)  # its CPU time (the quiet reference's candidates)
    cpu_share: float = math.nan  # CPU time of the measuring thread / wall time while it measured
    off_core_threads: int | None = None  # threads allowed off the pinned cores at the end (None: not pinned)

    def environment(self) -> dict[str, Any]:
        """The record's ``environment`` entries (``host_columns`` reads them back)."""
        return {
            "host_probe_ms": [round(p, 4) for p in self.probe_ms],
            "host_probe_cpu_ms": [round(p, 4) for p in self.probe_cpu_ms],
            "host_cpu_share": round(self.cpu_share, 4) if math.isfinite(self.cpu_share) else None,
            "off_core_threads": self.off_core_threads,
        }


def _off_core_threads(cores: tuple[int, ...]) -> int:
    """Threads of this process allowed on a core outside ``cores`` (a runtime that re-pins its threads itself,
    as OpenVINO's CPU plugin does with ``ENABLE_CPU_PINNING``, moves them, the calling thread included)."""
    allowed = set(cores)
    n = 0
    for tid in _task_ids():
        with contextlib.suppress(OSError):
            n += not os.sched_getaffinity(tid) <= allowed
    return n


def _task_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []


@contextlib.contextmanager
def watch_host(cores: tuple[int, ...] | None) -> Iterator[HostWatch]:
    """Watch the host around the body (a measurement on the pinned ``cores``, None: not pinned): ``probe``
    before and after, the measuring thread's CPU share in between, and at the end how many threads are allowed
    off the pinned cores. An exception in the body passes through with nothing after it measured."""
    watch = HostWatch(cores)
    wall, cpu = probe()
    watch.probe_ms.append(wall)
    watch.probe_cpu_ms.append(cpu)
    c0, t0 = time.thread_time(), time.perf_counter()
    yield watch
    t1, c1 = time.perf_counter(), time.thread_time()
    watch.cpu_share = (c1 - c0) / (t1 - t0) if t1 > t0 else math.nan
    if cores and hasattr(os, "sched_getaffinity"):
        watch.off_core_threads = _off_core_threads(cores)
    wall, cpu = probe()
    watch.probe_ms.append(wall)
    watch.probe_cpu_ms.append(cpu)


def _floats(value: Any) -> list[float]:
    if not isinstance(value, (list, tuple)):
        return []
    return [float(v) for v in value if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]


def host_columns(env: Mapping[str, Any]) -> dict[str, Any]:
    """A row's host columns from its record's environment: the slowest probe around its measurement
    (``host_probe_ms``), the fastest probe's CPU time (``host_probe_cpu_ms``), the measuring thread's CPU share
    (``host_cpu_share``) and ``off_core_threads``; NaN / None for a record measured before they were kept."""
    walls, cpus = _floats(env.get("host_probe_ms")), _floats(env.get("host_probe_cpu_ms"))
    share = env.get("host_cpu_share")
    return {
        "host_probe_ms": max(walls) if walls else math.nan,
        "host_probe_cpu_ms": min(cpus) if cpus else math.nan,
        "host_cpu_share": float(share) if isinstance(share, (int, float)) else math.nan,
        "off_core_threads": env.get("off_core_threads"),
    }


def host_loads(probe_ms: Sequence[float], probe_cpu_ms: Sequence[float], cpu_share: Sequence[float]) -> list[float]:
    """Each row's ``host_load``: the larger of its probe's wall time over the study's quiet reference (the
    least probe time seen, wall or CPU: the CPU time of the work is what a quiet core takes, so a study that was
    busy from start to end still shows it) and 1 / its measuring thread's CPU share; NaN without a probe."""
    seen = [p for p in (*probe_ms, *probe_cpu_ms) if math.isfinite(p) and p > 0]
    reference = min(seen) if seen else math.nan
    out = []
    for wall, share in zip(probe_ms, cpu_share, strict=True):
        if not (math.isfinite(wall) and wall > 0):
            out.append(math.nan)
            continue
        stolen = 1.0 / share if math.isfinite(share) and share > 0 else 1.0
        out.append(max(wall / reference, min(stolen, 1e3)))
    return out


@dataclass(frozen=True)
class HostLoad:
    """How busy the host was over a study's rows (``of``): the quiet reference, each row's load, the rows past
    the threshold, and whether the recommendation rests on them."""

    reference_ms: float
    loads: Mapping[str, float]  # row label -> host_load
    threshold: float = HOST_LOAD_THRESHOLD
    off_core: Mapping[str, int] = field(default_factory=dict)  # row label -> threads off the pinned cores

    @classmethod
    def of(cls, rows: Sequence[tuple[str, Mapping[str, Any]]], threshold: float = HOST_LOAD_THRESHOLD) -> HostLoad:
        """From (label, record environment) of each measured host row."""
        cols = [host_columns(env) for _, env in rows]
        loads = host_loads(
            [c["host_probe_ms"] for c in cols],
            [c["host_probe_cpu_ms"] for c in cols],
            [c["host_cpu_share"] for c in cols],
        )
        seen = [p for c in cols for p in (c["host_probe_ms"], c["host_probe_cpu_ms"]) if math.isfinite(p)]
        off = {
            label: int(c["off_core_threads"]) for (label, _), c in zip(rows, cols, strict=True) if c["off_core_threads"]
        }
        return cls(
            min(seen) if seen else math.nan,
            {label: v for (label, _), v in zip(rows, loads, strict=True) if math.isfinite(v)},
            threshold,
            off,
        )

    @property
    def busy_rows(self) -> list[str]:
        """The rows measured while the host was busy (``host_load`` past 1 + ``threshold``)."""
        return [label for label, v in self.loads.items() if v > 1.0 + self.threshold]

    @property
    def peak(self) -> float:
        return max(self.loads.values(), default=math.nan)

    def to_dict(self, recommended: str | None = None) -> dict[str, Any]:
        """summary.json's ``host_load``."""
        return {
            "reference_probe_ms": self.reference_ms if math.isfinite(self.reference_ms) else None,
            "max": self.peak if self.loads else None,
            "threshold": self.threshold,
            "busy_rows": self.busy_rows,
            "recommended_on_busy_host": recommended is not None and bool(self.busy_rows),
            "off_core_threads": dict(self.off_core),
        }

    def warnings(self, recommended: str | None = None) -> list[str]:
        """The study's warnings: the rows measured on a busy host, a recommendation made then, threads that left
        the pinned cores."""
        out = []
        busy = self.busy_rows
        if busy:
            out.append(
                f"the host was busy while measuring: host_load up to {self.peak:.2f}× (a fixed probe against its "
                f"quietest {self.reference_ms:.1f} ms, and the CPU share the measuring thread got; threshold "
                f"{1 + self.threshold:.2f}×) for {len(busy)} row{'s' if len(busy) != 1 else ''}: {', '.join(busy)}; "
                "runtimes suffer contention unalike, so their ranking may differ on a quiet host"
            )
            if recommended is not None:
                out.append(
                    f"the recommendation ({recommended}) was made while the host was busy: measure again on a quiet "
                    "host (edge-opt run --fresh) before relying on it"
                )
        if self.off_core:
            rows = ", ".join(f"{label} ({n})" for label, n in self.off_core.items())
            out.append(f"threads left the pinned cores while measuring (a runtime re-pinned them): {rows}")
        return out


def _status_kb(path: str, key: str) -> float | None:
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _descendants(pid: int) -> list[int]:
    """Live descendant processes of ``pid`` (``/proc/<pid>/task/<tid>/children``; empty where unreadable)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(k) for k in task.read_text(encoding="ascii").split()]
                out += kids
                todo += kids
    return out


class StageMemory:
    """Peak RSS per stage, in MB (10^6 bytes): ``lap()`` returns this process's peak since the last lap (Linux:
    ``VmHWM``, then reset through ``/proc/self/clear_refs`` so the next stage starts from its current RSS;
    elsewhere ``ru_maxrss``, the peak since the process started) and the summed peaks of its live descendant
    processes at the lap (process pools, Ray's workers; each counts the pages it shares with its parent).

    Not ``RUSAGE_CHILDREN``: a child started by fork or vfork then exec reports the parent's RSS at the fork as
    its own peak (a ``git`` call from a 500 MB process read 523 MB here), so every subprocess would look as large
    as the study; a child that ended before the lap is not counted."""

    def __init__(self) -> None:
        self._resets = self._reset()

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
            return True
        except OSError:
            return False

    def lap(self) -> tuple[float, float]:
        """(this process's peak RSS since the last lap, its child processes' peak RSS), MB."""
        hwm = _status_kb("/proc/self/status", "VmHWM")
        scale = 1.0 if sys.platform == "darwin" else 1024.0  # ru_maxrss: bytes on macOS, KiB on Linux
        own = hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        live = sum(_status_kb(f"/proc/{p}/status", "VmHWM") or 0.0 for p in _descendants(os.getpid())) * 1024
        if self._resets:
            self._reset()
        return own / _MB, live / _MB


@functools.cache
def _libc() -> Any:
    """The C library (glibc where ``malloc_trim`` exists), or None where it cannot be loaded."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Hand the memory the process has freed back to the system (glibc's ``malloc_trim``; False elsewhere).

    glibc keeps freed heap memory, in every thread's arena, as the process's own: a variant's runtime buffers
    dropped after its accuracy pass stayed in the study's RSS, and across a group of real-size variants those
    freed pages added up to gigabytes of peak RSS. No Python library exposes the call, hence ctypes."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim(0)
    return True


def _cgroup_free_bytes() -> int | None:
    """What the process's memory cgroup still allows: limit − usage (v2: ``memory.max`` / ``memory.current``; v1:
    ``memory.limit_in_bytes`` / ``memory.usage_in_bytes``), in its own folder or, where that is not visible (a
    container's namespace), the mounted root; None: no limit, or none readable."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    root = Path("/sys/fs/cgroup")
    candidates = []
    for line in lines:
        _, controllers, rel = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2
            candidates += [(d, "memory.max", "memory.current") for d in (root / rel.lstrip("/"), root)]
        elif "memory" in controllers.split(","):  # v1
            candidates += [
                (d, "memory.limit_in_bytes", "memory.usage_in_bytes")
                for d in (root / "memory" / rel.lstrip("/"), root / "memory")
            ]
    for folder, limit_file, usage_file in candidates:
        try:
            limit = (folder / limit_file).read_text(encoding="ascii").strip()
            usage = int((folder / usage_file).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:  # no limit (v1 writes a huge number)
            return None
        return max(0, int(limit) - usage)
    return None


def available_memory_bytes() -> int | None:
    """Memory available to this process now: ``MemAvailable`` of ``/proc/meminfo``, or less under a cgroup
    limit; None where neither is readable."""
    kb = _status_kb("/proc/meminfo", "MemAvailable")
    found = [int(kb * 1024)] if kb is not None else []
    cg = _cgroup_free_bytes()
    found += [cg] if cg is not None else []
    return min(found) if found else None


AVAILABLE_SHARE = 4  # extra instances of every variant measured together take at most 1/4 of available memory


def instance_bytes_budget(cap: int) -> int:
    """Bytes the extra instances of a variant may take: ``cap``, or a quarter of the available memory when that
    is less (the rest is for the other variants measured with it, the builds beside them and the runtimes'
    own buffers)."""
    available = available_memory_bytes()
    return cap if available is None else min(cap, available // AVAILABLE_SHARE)
