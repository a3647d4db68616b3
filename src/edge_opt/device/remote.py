"""Client of ``edge-opt agent``: send an artifact's files once (content-addressed), ask for a measurement (and,
from a protocol-2 agent, fetch the raw outputs it kept), and turn every failure into an ``AgentError`` whose text
says what happened (``connection refused``, ``timeout after N s``, ``401 unauthorized``, the agent's own
refusal)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import sha256_file
from .agent import MAX_OUTPUT_BYTES, PROTOCOL_VERSION

__all__ = ["AgentClient", "AgentError", "OutputsRefused"]


class AgentError(RuntimeError):
    """The agent could not be reached or refused the request; the text is the reason for the error row."""


class OutputsRefused(AgentError):
    """The outputs asked for are over ``MAX_OUTPUT_BYTES`` (the agent's 413 ``refused: outputs``, or an answer that
    declares more): the point cannot be scored there — a reason to skip it, not a failure of the target."""


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
            text, refused = _http_reason(exc)
            raise (OutputsRefused if refused == "outputs" else AgentError)(text) from None
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
        validation: tuple[Path, Path | None] | None = None,
        timeout_s: float | None = None,
        outputs: bool = False,
    ) -> dict[str, Any]:
        """Send what is missing, then measure; the agent's answer (samples, CI, accuracy, fingerprint).

        ``outputs``: ask (protocol 2) for the model's raw outputs on the validation inputs instead of an accuracy
        (no labels are sent); the answer's ``output_arrays`` holds them, one array per model output.

        Raises:
            AgentError: unreachable, refused, or an agent of protocol 1 asked for outputs. OutputsRefused: the
                outputs are over ``MAX_OUTPUT_BYTES``.
        """
        if outputs:
            self._needs_protocol(2, "return a model's outputs (a study scored by another metric than top1)")
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
            body["validation"] = {"inputs": self.send(validation[0])}
            if not outputs and validation[1] is not None:
                body["validation"]["labels"] = self.send(validation[1])
        if outputs:
            body["outputs"] = True
        ans = json.loads(self._call("POST", "/measure", json.dumps(body).encode(), "application/json", timeout_s)[1])
        if outputs:
            ans["output_arrays"] = self.fetch_outputs(ans.get("outputs"))
        return ans

    def _needs_protocol(self, version: int, what: str) -> None:
        have = self.info().get("protocol", 1)
        if not isinstance(have, int) or have < version:
            raise AgentError(
                f"the agent speaks protocol {have}; to {what} it needs protocol {version} "
                f"(this client speaks {PROTOCOL_VERSION}): update edge-opt on the device"
            )

    def fetch_outputs(self, declared: Any) -> list[np.ndarray]:
        """The outputs a measurement kept (``{sha256, bytes}`` of an ``.npz`` blob), one array per model output,
        checked against their SHA-256 and read without pickles.

        Raises:
            OutputsRefused: declared over ``MAX_OUTPUT_BYTES``. AgentError: missing, corrupt or unreadable.
        """
        if not isinstance(declared, dict) or not isinstance(declared.get("sha256"), str):
            raise AgentError("the agent's answer names no outputs (expected outputs: {sha256, bytes, shapes})")
        size = declared.get("bytes")
        if not isinstance(size, int) or size > MAX_OUTPUT_BYTES:
            raise OutputsRefused(f"the agent's outputs take {size} bytes, over MAX_OUTPUT_BYTES ({MAX_OUTPUT_BYTES})")
        data = self._call("GET", f"/blobs/{declared['sha256']}")[1]
        if hashlib.sha256(data).hexdigest() != declared["sha256"]:
            raise AgentError("the outputs fetched from the agent do not match their SHA-256")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                names = sorted(npz.files, key=lambda n: int(n.rpartition("_")[2]))
                return [np.asarray(npz[n]) for n in names]
        except (ValueError, OSError) as exc:
            raise AgentError(f"the agent's outputs are unreadable: {type(exc).__name__}: {exc}") from None


def _http_reason(exc: urllib.error.HTTPError) -> tuple[str, str | None]:
    """The reason text of an HTTP error, and what the agent says it refused (``outputs``; None otherwise)."""
    try:
        doc = json.loads(exc.read() or b"{}")
        detail, refused = str(doc.get("error", "")), doc.get("refused")
    except (ValueError, AttributeError, OSError):
        detail, refused = "", None
    label = {401: "401 unauthorized", 413: "413 request too large"}.get(exc.code, f"{exc.code} {exc.reason}")
    return (f"{label}: {detail}" if detail and exc.code != 401 else label), refused if exc.code == 413 else None
