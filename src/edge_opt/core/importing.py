"""Import the user's ``package.module:callable`` (model factories, data set callables)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CallableImportError", "import_callable"]


class CallableImportError(ValueError):
    """The callable does not import (names the key, the module and why)."""


def import_callable(spec: str, key: str, search: Sequence[str | Path | None] = ()) -> Callable[..., Any]:
    """Import ``package.module:callable``, looking in the ``search`` folders first, then ``sys.path``.

    Raises:
        CallableImportError: naming the module that does not import or the missing attribute.
    """
    module_name, _, attr = spec.partition(":")
    extra = [str(Path(s).resolve()) for s in search if s]
    added = [p for p in extra if p not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 — any import failure of user code is a config error
        raise CallableImportError(
            f"The '{key}' callable {spec!r}: module {module_name!r} does not import ({type(exc).__name__}: {exc})."
        ) from None
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise CallableImportError(f"The '{key}' callable {spec!r}: module {module_name!r} has no callable {attr!r}.")
    return fn
