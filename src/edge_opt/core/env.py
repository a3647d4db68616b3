"""Small shared helper: describe the machine and software a measurement ran on."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "cpu_model", "environment", "git_commit", "package_versions"]

PACKAGES = (
    "torch",
    "onnxruntime",
    "onnx",
    "onnxscript",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "torch-pruning",
    "pydantic",
    "matplotlib",
    "rich",
    "edge-opt",
    "mlcommons-loadgen",
    "openvino",
    "nncf",
    "executorch",
    "litert-torch",
    "ai-edge-litert",
)


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the numbers (read once per process)."""
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    for name in PACKAGES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, None))
    return tuple(out)


def git_commit(path: str | Path = ".") -> str | None:
    """The git commit of ``path``'s checkout, or None outside git."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(threads: int | None = None) -> dict[str, Any]:
    """Host identity and software versions recorded with every measurement."""
    import torch

    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "versions": package_versions(),
    }
