"""Client of ``edge-opt agent``: send an artifact's files once (content-addressed), ask for a measurement,
and turn every failure into an ``AgentError`` whose text says what happened (``connection refused``,
``timeout after N s``, ``401 unauthorized``, the agent's own refusal)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import sha256_file

__all__ = ["AgentClient", "AgentError"]


class AgentError(RuntimeError):
    """The agent could not be reached or refused the request; the text is the reason for the error row."""


@dataclass(frozen=True)
class AgentClient:
    """One agent: its base URL, token and how long a request may take."""

    url: str
    token: str
    timeout_s: float = 60.0

    def _call(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        content_type: str | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                **({"Content-Type": content_type} if content_type else {}),
            },
        )
        timeout = timeout_s or self.timeout_s
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method == "HEAD":
                return 404, b""
            raise AgentError(_http_reason(exc)) from None
        except TimeoutError:
            raise AgentError(f"timeout after {timeout:g} s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError):
                raise AgentError("connection refused") from None
            if isinstance(reason, TimeoutError | socket.timeout):
                raise AgentError(f"timeout after {timeout:g} s") from None
            raise AgentError(f"cannot reach the agent: {reason}") from None
        except (ConnectionError, OSError) as exc:
            raise AgentError(f"connection failed: {type(exc).__name__}: {exc}") from None

    def info(self) -> dict[str, Any]:
        """The device fingerprint."""
        return json.loads(self._call("GET", "/info")[1])

    def send(self, path: str | Path) -> str:
        """Upload a file unless the agent has it already; returns its SHA-256."""
        sha = sha256_file(path)
        size = Path(path).stat().st_size
        if size > 1 << 20:  # a large file: check the agent's bound before sending it
            bound = self.info().get("max_blob_bytes")
            if isinstance(bound, int) and size > bound:
                raise AgentError(
                    f"413 request too large: {Path(path).name} is {size} bytes, the agent takes at most {bound}"
                )
        if self._call("HEAD", f"/blobs/{sha}")[0] != 200:
            self._call("PUT", f"/blobs/{sha}", Path(path).read_bytes(), "application/octet-stream")
        return sha

    def measure(
        self,
        runtime: str,
        files: dict[str, Path],
        model_file: str,
        input_shape: tuple[int, ...],
        settings: dict[str, Any],
        threads: int = 1,
        precision_hint: str = "f32",
        validation: tuple[Path, Path] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Send what is missing, then measure; the agent's answer (samples, CI, accuracy, fingerprint)."""
        shas = {name: self.send(p) for name, p in files.items()}
        body: dict[str, Any] = {
            "runtime": runtime,
            "files": shas,
            "model_file": model_file,
            "input": {"shape": list(input_shape), "dtype": "float32"},
            "settings": settings,
            "threads": threads,
            "precision_hint": precision_hint,
        }
        if validation is not None:
            body["validation"] = {"inputs": self.send(validation[0]), "labels": self.send(validation[1])}
        return json.loads(self._call("POST", "/measure", json.dumps(body).encode(), "application/json", timeout_s)[1])


def _http_reason(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read() or b"{}").get("error", "")
    except (ValueError, AttributeError, OSError):
        detail = ""
    label = {401: "401 unauthorized", 413: "413 request too large"}.get(exc.code, f"{exc.code} {exc.reason}")
    return f"{label}: {detail}" if detail and exc.code != 401 else label
