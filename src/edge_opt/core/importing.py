"""The user's code: import a ``package.module:callable`` (model factories, data set callables) and run it.

``call_user_code`` is the one place that runs user code: whatever escapes it (an exception, ``sys.exit``,
any other ``BaseException`` but Ctrl-C) becomes a ``UserCodeError`` naming the key, so a factory that calls
``sys.exit(0)`` cannot end a study with exit 0 and nothing written.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CallableImportError", "UserCodeError", "call_user_code", "import_callable"]


class CallableImportError(ValueError):
    """The callable does not import (names the key, the module and why)."""


class UserCodeError(ValueError):
    """The user's code raised or tried to end the process (names what ran and what escaped)."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


def call_user_code(what: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run the user's ``fn(*args, **kwargs)``; anything but a Ctrl-C that escapes it is a ``UserCodeError``.

    Args:
        what: names the code in the message, e.g. ``"The 'model.factory' callable 'pkg.mod:make'"``.

    Raises:
        UserCodeError: ``fn`` raised an exception, called ``sys.exit`` or raised another ``BaseException``
            (``GeneratorExit``, a custom one). ``KeyboardInterrupt`` passes through: it is the user's Ctrl-C.
    """
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        raise UserCodeError(
            f"{what} called sys.exit({exc.code!r}); user code must return or raise an exception, not end the process.",
            exc,
        ) from None
    except BaseException as exc:  # noqa: BLE001 — every escape from user code is reported, naming it
        raise UserCodeError(f"{what} failed: {type(exc).__name__}: {str(exc)[:300]}", exc) from None


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
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 — any import failure of user code (sys.exit included) is a config error
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
