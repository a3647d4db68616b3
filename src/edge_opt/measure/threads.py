"""torch's intra-op thread count of the process, set for a while and put back: the one place it changes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with torch's intra-op thread count at ``n``; the count it had is put back on every exit, an
    exception's included (nested uses restore in turn)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
