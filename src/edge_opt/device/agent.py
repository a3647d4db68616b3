"""``edge-opt agent``: a small HTTP server that runs on the edge device and measures artifacts there.

It needs only what a runtime needs (Starlette + uvicorn, numpy, and ONNX Runtime / OpenVINO / the ExecuTorch
runtime for the artifacts it is sent) — never torch for ONNX or OpenVINO artifacts. It does one thing: load an
artifact in a runtime and time it with the study's rules (``edge_opt.core.stats``), optionally computing the
top-1 accuracy on validation arrays sent with it — or, for a study scored by another metric, returning the model's
raw outputs on them so that the host computes the metric — and return the raw samples with a fingerprint of the
device.

Protocol (every request needs exactly ``Authorization: Bearer <token>``, compared in constant time; 401 otherwise):

- ``GET /info`` → the device fingerprint and the agent's ``protocol`` (``PROTOCOL_VERSION``; an agent that
  does not say is version 1).
- ``HEAD /blobs/<sha256>`` → 200 when the file is cached, else 404 (a file is sent once).
- ``PUT /blobs/<sha256>`` with the file as the body → stored when its SHA-256 matches, else 400.
- ``GET /blobs/<sha256>`` → the file (protocol 2: how the client fetches the outputs a measurement returned).
- ``POST /measure`` with a JSON request (``parse_measure_request``) → samples, CI, accuracy, fingerprint. With
  ``"outputs": true`` (protocol 2) the agent runs the validation inputs and keeps every output of the model in an
  ``.npz`` blob (``output_0`` … in the model's output order, no pickles) instead of computing an accuracy; the
  answer names the blob (``outputs: {sha256, bytes, shapes}``). Outputs over ``MAX_OUTPUT_BYTES`` are refused
  (413, ``refused: outputs``) after one probe call, before the timing starts. The
  request's files (every file of the model: an ONNX model's external data too) are copied side by side under their
  plain names into a folder of the agent's own; an ONNX model naming a data file outside that folder or not sent
  is refused (400) before its runtime opens it. Protocol 3: the settings may hold ``max_s``, a time budget for the
  latency samples (they stop at the CI target, at the latest there); the answer says ``budget_hit`` and
  ``latency_measure_s``.

Bodies are bounded (``max_blob_bytes``; 1 MB for JSON); the server binds to 127.0.0.1 unless told otherwise.
One measurement runs at a time, for at most ``max_request_s`` of wall time (``edge-opt agent --max-request-s``,
600 s by default): a request whose planned timing cannot fit is refused up front (422, naming the limit), and a
running one is stopped — checked before every call of the artifact — when the limit passes (422), when its client
disconnects, or when the agent is told to stop (SIGTERM / SIGINT: 503, then the agent exits); the measurement lock
is released in every case.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import math
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..core import STATIC_BATCH_RUNTIMES, TimingRules, ci95_half_width, time_calls

__all__ = [
    "AGENT_RUNTIMES",
    "DEFAULT_MAX_REQUEST_S",
    "MAX_JSON_BYTES",
    "MAX_OUTPUT_BYTES",
    "PROTOCOL_VERSION",
    "AgentState",
    "MeasureRequest",
    "MeasurementStopped",
    "OutputsTooLarge",
    "RequestError",
    "StopSignal",
    "create_app",
    "device_fingerprint",
    "parse_measure_request",
    "serve",
]

AGENT_RUNTIMES = ("onnxruntime", "openvino", "executorch", "litert")
MAX_JSON_BYTES = 1 << 20
PROTOCOL_VERSION = 3
"""1: timing and top-1 accuracy on the device. 2: also ``"outputs": true`` (the raw outputs on the validation
inputs, fetched with ``GET /blobs/<sha256>``); a version-2 agent answers version-1 requests as before."""
MAX_OUTPUT_BYTES = 64 << 20
"""The most bytes of outputs one measurement returns (64 MiB, all outputs of all validation samples): a request
whose outputs would take more is refused up front (the study skips that point on the target, saying why)."""
DEFAULT_MAX_REQUEST_S = 600.0
SHUTDOWN_GRACE_S = 3
_SHA = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RequestError(ValueError):
    """A request the agent refuses (400), with the reason."""


class OutputsTooLarge(RequestError):
    """The outputs asked for would take more than ``MAX_OUTPUT_BYTES`` (413, ``refused: outputs``)."""


class MeasurementStopped(RuntimeError):
    """A measurement refused or stopped for its time: over the agent's limit (422), its client gone or the agent
    shutting down (503); ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class StopSignal:
    """Why one measurement must stop now (``None``: it may go on); set once — the first reason wins — by the
    wall-time limit's timer, the client's disconnect or the agent's shutdown, and read before every call of the
    artifact. A plain attribute rather than a ``threading.Event``: it is set from a signal handler too, which
    must not take a lock."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.status = 422

    def set(self, reason: str, status: int = 422) -> None:
        if self.reason is None:
            self.status, self.reason = status, reason

    def check(self) -> None:
        """Raise ``MeasurementStopped`` once set."""
        if self.reason is not None:
            raise MeasurementStopped(self.reason, self.status)


def _limit_hint(limit_s: float) -> str:
    return (
        f"the agent's limit of {limit_s:g} s per request (edge-opt agent --max-request-s); ask for fewer "
        "repeats, trials or max_extra_rounds, or a shorter min_sample_ms"
    )


def planned_s(rules: TimingRules, call_s: float = 0.0) -> float:
    """The least wall time timing under ``rules`` takes when one call takes ``call_s``: the warm-up and sizing
    calls, then ``repeats`` samples of at least ``trials`` calls and ``min_sample_ms`` each (more passes may
    follow while the CI is too wide; the accuracy pass comes on top); with ``max_s``, at most that and two
    samples (the series stops at its time budget once it holds two)."""
    calls = (rules.warmup + 1) * call_s
    sample = max(rules.min_sample_ms / 1e3, rules.trials * call_s)
    need = calls + rules.repeats * sample
    return need if rules.max_s is None else min(need, max(rules.max_s, calls + 2 * sample))


@dataclass(frozen=True)
class MeasureRequest:
    """A validated ``POST /measure`` request."""

    runtime: str
    files: dict[str, str]  # file name → SHA-256 of a stored blob
    model_file: str
    input_shape: tuple[int, ...]
    rules: TimingRules
    threads: int = 1
    precision_hint: str = "f32"
    validation: dict[str, str] | None = None  # {"inputs": sha, "labels": sha} of .npy blobs (labels: not with outputs)
    batch_size: int = 256
    outputs: bool = False  # protocol 2: return the raw outputs on the validation inputs, compute no accuracy


def _sha(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SHA.match(value):
        raise RequestError(f"{where} must be a lowercase hex SHA-256 (64 characters)")
    return value


def _files(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not 1 <= len(value) <= 8:
        raise RequestError("'files' must map 1 to 8 file names to their SHA-256")
    out = {}
    for name, sha in value.items():
        if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
            raise RequestError(f"file name {str(name)[:40]!r} must be a plain name (letters, digits, . _ -)")
        out[name] = _sha(sha, f"files[{name!r}]")
    return out


def _shape(value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= 6
        or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 65536 for d in value)
        or math.prod(value) > 64 << 20
    ):
        raise RequestError("'input.shape' must be 1 to 6 positive integers (at most 64 Mi values in all)")
    return tuple(value)


def _int(d: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise RequestError(f"{key!r} must be an integer in [{low}, {high}]; got {str(v)[:40]!r}")
    return v


_KEYS = {
    "runtime",
    "files",
    "model_file",
    "input",
    "settings",
    "threads",
    "precision_hint",
    "validation",
    "batch_size",
    "outputs",
}


def _validation(d: dict[str, Any]) -> tuple[dict[str, str] | None, bool]:
    """The request's validation blobs and whether it asks for the outputs: ``{inputs, labels}`` for the accuracy,
    ``{inputs}`` (labels are the host's business) with ``outputs: true``."""
    outputs = d.get("outputs", False)
    if not isinstance(outputs, bool):
        raise RequestError("'outputs' must be true or false")
    val = d.get("validation")
    keys = {"inputs"} if outputs else {"inputs", "labels"}
    if (val is None and outputs) or (val is not None and (not isinstance(val, dict) or set(val) != keys)):
        raise RequestError(
            "'validation' must be {inputs: sha256} with 'outputs'"
            if outputs
            else "'validation' must be {inputs: sha256, labels: sha256}"
        )
    return ({k: _sha(v, f"validation.{k}") for k, v in val.items()} if val is not None else None), outputs


def parse_measure_request(body: bytes) -> MeasureRequest:
    """Validate a ``POST /measure`` body; any problem is a ``RequestError`` naming it (never another exception)."""
    if len(body) > MAX_JSON_BYTES:
        raise RequestError(f"request body over {MAX_JSON_BYTES} bytes")
    try:
        d = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError("request body is not JSON") from None
    if not isinstance(d, dict):
        raise RequestError("request body must be a JSON object")
    unknown = sorted(str(k)[:40] for k in set(d) - _KEYS)
    if unknown:
        raise RequestError(f"unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    runtime = d.get("runtime")
    if not isinstance(runtime, str) or runtime not in AGENT_RUNTIMES:
        raise RequestError(f"'runtime' must be one of {list(AGENT_RUNTIMES)}; got {str(runtime)[:40]!r}")
    files = _files(d.get("files"))
    model_file = d.get("model_file")
    if not isinstance(model_file, str) or model_file not in files:
        raise RequestError("'model_file' must be one of the names in 'files'")
    inp = d.get("input")
    if not isinstance(inp, dict) or inp.get("dtype", "float32") != "float32":
        raise RequestError("'input' must be {shape: [...], dtype: float32}")
    settings = d.get("settings", {})
    if not isinstance(settings, dict):
        raise RequestError("'settings' must be an object")
    try:
        rules = TimingRules.from_dict(settings)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    hint = d.get("precision_hint", "f32")
    if not isinstance(hint, str) or hint not in ("f32", "bf16", "f16"):
        raise RequestError(f"'precision_hint' must be f32, bf16 or f16; got {str(hint)[:20]!r}")
    validation, outputs = _validation(d)
    return MeasureRequest(
        runtime,
        files,
        model_file,
        _shape(inp.get("shape")),
        rules,
        _int(d, "threads", 1, 1, 256),
        hint,
        validation,
        _int(d, "batch_size", 256, 1, 65536),
        outputs,
    )


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _cpu_model() -> str:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith(("model name", "hardware", "processor")) and ":" in line:
            value = line.split(":", 1)[1].strip()
            if value and not value.isdigit():
                return value
    return platform.processor() or platform.machine()


def _temperature_c() -> float | None:
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp")):
        raw = _read(str(zone))
        if raw and raw.lstrip("-").isdigit():
            return int(raw) / 1000.0
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def device_fingerprint() -> dict[str, Any]:
    """What the device is and how it runs right now (fields it cannot read are None)."""
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_allowed": affinity,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "clock_mhz": int(freq) / 1000.0 if freq and freq.isdigit() else None,
        "temperature_c": _temperature_c(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtimes": {r: _version(r) for r in ("onnxruntime", "openvino", "executorch", "ai-edge-litert")},
        "torch_imported": "torch" in sys.modules,
        "pid": os.getpid(),
    }


@dataclass
class AgentState:
    """The agent's settings and its content-addressed blob cache."""

    token: str
    cache_dir: Path
    max_blob_bytes: int = 512 << 20
    max_request_s: float = DEFAULT_MAX_REQUEST_S
    max_output_bytes: int = MAX_OUTPUT_BYTES
    lock: threading.Lock = field(default_factory=threading.Lock)
    stops: set[StopSignal] = field(default_factory=set)  # the measurements running or waiting for the lock
    stopping: bool = False

    def authorised(self, header: str | None) -> bool:
        """Whether ``header`` is exactly ``Bearer <token>`` (constant-time comparison; no other scheme)."""
        return hmac.compare_digest((header or "").encode(), f"Bearer {self.token}".encode())

    def shut_down(self) -> None:
        """Stop every measurement at its next call and refuse new ones (safe to call from a signal handler)."""
        self.stopping = True
        for stop in list(self.stops):
            stop.set("the agent is shutting down", 503)

    def check_fits(self, rules: TimingRules, call_s: float = 0.0, spent_s: float = 0.0) -> None:
        """Refuse (``MeasurementStopped``, 422) timing whose least planned time cannot fit the limit."""
        need = planned_s(rules, call_s)
        if spent_s + need > self.max_request_s:
            took = f"; one call took {call_s * 1e3:.3g} ms" if call_s else ""
            raise MeasurementStopped(
                f"the timing asked for takes at least {need:.6g} s (repeats {rules.repeats} × "
                f"max(min_sample_ms {rules.min_sample_ms:g}, trials {rules.trials} × one call){took}), over "
                + _limit_hint(self.max_request_s)
            )

    def blob(self, sha: str) -> Path:
        return self.cache_dir / "blobs" / sha

    def store(self, sha: str, chunks: Any) -> None:
        """Write a blob from ``chunks`` (bytes), refusing it when over the bound or of another SHA-256."""
        folder = self.cache_dir / "blobs"
        folder.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload.")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_blob_bytes:
                        raise RequestError(f"blob over the bound of {self.max_blob_bytes} bytes")
                    digest.update(chunk)
                    fh.write(chunk)
            if digest.hexdigest() != sha:
                raise RequestError(f"SHA-256 mismatch: the body hashes to {digest.hexdigest()}, not {sha}")
            os.replace(tmp, self.blob(sha))
        finally:
            Path(tmp).unlink(missing_ok=True)


def _materialise(state: AgentState, req: MeasureRequest) -> Path:
    missing = [n for n, sha in req.files.items() if not state.blob(sha).is_file()]
    if missing:
        raise RequestError(f"files not uploaded yet: {missing} (PUT /blobs/<sha256> first)")
    key = hashlib.sha256(json.dumps(sorted(req.files.items())).encode()).hexdigest()[:24]
    folder = state.cache_dir / "models" / key
    if not folder.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=state.cache_dir, prefix=".model."))
        for name, sha in req.files.items():
            shutil.copyfile(state.blob(sha), tmp / name)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # made meanwhile by another request
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _check_data_files(folder: Path, req: MeasureRequest) -> None:
    """An ONNX model's external data files must be among the files sent with it, beside it: a location that is
    absolute or leaves the folder (a hostile model reaching for the agent's own files) or a file not sent is
    refused before the runtime opens the model."""
    from ..core import ArtifactError, onnx_data_files

    try:
        names = onnx_data_files(folder / req.model_file)
    except ArtifactError as exc:
        raise RequestError(str(exc).replace(str(folder), "<model folder>")) from None
    missing = [n for n in names if n not in req.files]
    if missing:
        raise RequestError(
            f"{req.model_file!r} keeps weights in {missing}, not among the files sent ({sorted(req.files)}): send "
            "every file of the model"
        )


def _runner(folder: Path, req: MeasureRequest) -> Any:
    from ..core import artifact_runner

    if req.runtime == "onnxruntime":
        _check_data_files(folder, req)
    manifest = {
        "runtime": req.runtime,
        "model_file": req.model_file,
        "session_options": {"intra_op_num_threads": req.threads, "INFERENCE_NUM_THREADS": req.threads},
        "export": {"inference_precision_hint": req.precision_hint},
    }
    return artifact_runner(folder, manifest, all_outputs=req.outputs)  # every output, when they are returned


def _load(state: AgentState, sha: str) -> np.ndarray:
    try:
        return np.load(state.blob(sha), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RequestError(f"validation arrays unreadable: {exc}") from None


def _step(req: MeasureRequest) -> int:
    return 1 if req.runtime in STATIC_BATCH_RUNTIMES else req.batch_size


def _accuracy(state: AgentState, run: Callable[[np.ndarray], Any], req: MeasureRequest) -> dict[str, Any]:
    if req.validation is None or req.outputs:
        return {}
    x = _load(state, req.validation["inputs"]).astype(np.float32)
    y = _load(state, req.validation["labels"])
    step = _step(req)
    hits: list[np.ndarray] = []
    for i in range(0, len(x), step):
        hits.append(np.asarray(run(np.ascontiguousarray(x[i : i + step]))).argmax(1) == y[i : i + step])
    correct = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    return {
        "accuracy": float(correct.mean()) if len(correct) else math.nan,
        "n_eval": int(len(correct)),
        "correct": "".join("1" if c else "0" for c in correct),
    }


def _output_list(out: Any) -> list[np.ndarray]:
    """A runner's outputs as a list (one array per model output): one array, or a tuple/list of them."""
    return [np.asarray(o) for o in out] if isinstance(out, tuple | list) else [np.asarray(out)]


def _check_output_size(state: AgentState, need: int, samples: int) -> None:
    """Refuse (``OutputsTooLarge``) outputs of ``need`` bytes on ``samples`` samples over the agent's bound."""
    if need > state.max_output_bytes:
        raise OutputsTooLarge(
            f"the outputs on the {samples} validation samples take about {need} bytes, over the bound of "
            f"{state.max_output_bytes} bytes an agent returns (MAX_OUTPUT_BYTES); use fewer validation samples"
        )


def _outputs(state: AgentState, run: Callable[[np.ndarray], Any], req: MeasureRequest, x: np.ndarray) -> dict:
    """Every output of the model on the validation inputs ``x``, kept as an ``.npz`` blob (``output_0`` …) the
    client fetches; bounded by ``MAX_OUTPUT_BYTES`` while it grows (a dynamic output shape too)."""
    chunks: list[list[np.ndarray]] = []
    size, step = 0, _step(req)
    for i in range(0, len(x), step):
        chunks.append(_output_list(run(np.ascontiguousarray(x[i : i + step]))))
        size += sum(o.nbytes for o in chunks[-1])
        _check_output_size(state, size, len(x))
    if not chunks:
        raise RequestError("the validation inputs hold no samples")
    arrays = {f"output_{k}": np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))}
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    folder = state.cache_dir / "blobs"
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".outputs.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, state.blob(sha))  # the agent's own file: not bounded by max_blob_bytes (uploads are)
    shapes = [list(a.shape) for a in arrays.values()]
    return {"outputs": {"sha256": sha, "bytes": len(data), "shapes": shapes}, "n_eval": int(len(x))}


def _measure_locked(state: AgentState, req: MeasureRequest, stop: StopSignal) -> dict[str, Any]:
    t0 = time.perf_counter()
    run = _runner(_materialise(state, req), req)
    x = np.random.default_rng(0).standard_normal(req.input_shape).astype(np.float32)
    load_s = time.perf_counter() - t0

    def checked(batch: np.ndarray) -> Any:
        stop.check()
        return run(batch)

    def timed() -> Any:  # what is timed: one check of an attribute, then the call
        if stop.reason is not None:
            raise MeasurementStopped(stop.reason, stop.status)
        return run(x)

    t_probe = time.perf_counter()
    probe = timed()  # one probe call: with its time, a plan that cannot fit is refused before the timing starts
    state.check_fits(req.rules, time.perf_counter() - t_probe, time.perf_counter() - t0)
    x_val = _load(state, req.validation["inputs"]).astype(np.float32) if req.outputs and req.validation else None
    if x_val is not None:  # outputs too large for the host are refused before the timing too
        per_sample = sum(o.nbytes for o in _output_list(probe)) / req.input_shape[0]
        _check_output_size(state, math.ceil(per_sample * len(x_val)), len(x_val))
    times = time_calls(timed, req.rules)
    return {
        "samples_ms": times.samples,
        "runs_per_sample": times.calls,
        "rounds": times.rounds,
        "interrupted_ms": times.interrupted,
        "mean_ms": float(np.mean(times.samples)),
        "ci95_ms": ci95_half_width(times.samples),
        "budget_hit": times.budget_hit,  # protocol 3: the samples ended at a budget (max_s or the count) short of
        "latency_measure_s": round(times.spent_s, 6),  # their CI target; the seconds spent calling
        "batch_size": req.input_shape[0],
        **_accuracy(state, checked, req),
        **(_outputs(state, checked, req, x_val) if x_val is not None else {}),
        "load_s": load_s,
        "measure_s": time.perf_counter() - t0 - load_s,
        "fingerprint": device_fingerprint(),
    }


def measure(state: AgentState, req: MeasureRequest, stop: StopSignal | None = None) -> dict[str, Any]:
    """Load the artifact and time it, one measurement at a time on this device, for at most
    ``state.max_request_s`` once the lock is held; ``MeasurementStopped`` when ``stop`` is set (while waiting for
    the lock too) or the limit passes. The lock is released in every case."""
    stop = stop or StopSignal()
    while not state.lock.acquire(timeout=0.05):
        stop.check()
    timer = threading.Timer(
        state.max_request_s, stop.set, ("measurement stopped after " + _limit_hint(state.max_request_s),)
    )
    timer.daemon = True
    timer.start()
    try:
        stop.check()
        return _measure_locked(state, req, stop)
    finally:
        timer.cancel()
        state.lock.release()


async def _body(request: Any, limit: int) -> bytes:
    """The request body, refused once it passes ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestError(f"body over the bound of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"body over the bound of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Routes:
    """The agent's endpoints (each checks the token first)."""

    def __init__(self, state: AgentState) -> None:
        self.state = state

    def _denied(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if not self.state.authorised(request.headers.get("authorization")):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return None

    async def info(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        return self._denied(request) or JSONResponse(
            {**device_fingerprint(), "max_blob_bytes": self.state.max_blob_bytes, "protocol": PROTOCOL_VERSION}
        )

    async def blob(self, request: Any) -> Any:
        from starlette.responses import FileResponse, JSONResponse, Response

        sha = request.path_params["sha"]
        if (refused := self._denied(request)) is not None:
            return refused
        if not _SHA.match(sha):
            return JSONResponse({"error": "not a SHA-256"}, status_code=400)
        if request.method == "HEAD":
            return Response(status_code=200 if self.state.blob(sha).is_file() else 404)
        if request.method == "GET":
            path = self.state.blob(sha)
            if not path.is_file():
                return JSONResponse({"error": "no such blob"}, status_code=404)
            return FileResponse(path, media_type="application/octet-stream")
        self.state.store(sha, [await _body(request, self.state.max_blob_bytes)])
        return JSONResponse({"stored": sha})

    async def measure(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if (refused := self._denied(request)) is not None:
            return refused
        req = parse_measure_request(await _body(request, MAX_JSON_BYTES))
        stop = StopSignal()
        self.state.stops.add(stop)
        try:
            if self.state.stopping:
                raise MeasurementStopped("the agent is shutting down", 503)
            self.state.check_fits(req.rules)
            return JSONResponse(await _until_disconnected(request, stop, self.state, req))
        except MeasurementStopped as exc:
            return JSONResponse({"error": str(exc)[:500]}, status_code=exc.status)
        except RequestError:
            raise
        except Exception as exc:  # noqa: BLE001 — a runtime that cannot load or run the artifact
            return JSONResponse({"error": f"{type(exc).__name__}: {str(exc)[:500]}"}, status_code=422)
        finally:
            self.state.stops.discard(stop)


async def _until_disconnected(request: Any, stop: StopSignal, state: AgentState, req: MeasureRequest) -> Any:
    """``measure`` in a worker thread while the client is watched: its disconnect sets ``stop``."""
    import anyio
    from starlette.concurrency import run_in_threadpool

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass  # the body was read already: the next message is the disconnect
        stop.set("the client disconnected")

    outcome: dict[str, Any] = {}
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch)
        try:
            outcome["value"] = await run_in_threadpool(measure, state, req, stop)
        except Exception as exc:  # noqa: BLE001 — raised again below, outside the task group (not in a group)
            outcome["error"] = exc
        tasks.cancel_scope.cancel()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def _refused(request: Any, exc: Exception) -> Any:
    from starlette.responses import JSONResponse

    if isinstance(exc, OutputsTooLarge):
        return JSONResponse({"error": str(exc)[:500], "refused": "outputs"}, status_code=413)
    return JSONResponse({"error": str(exc)[:500]}, status_code=413 if "over the bound" in str(exc) else 400)


def create_app(state: AgentState) -> Any:
    """The Starlette application of the agent."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    r = _Routes(state)
    routes = [
        Route("/info", r.info),
        Route("/blobs/{sha}", r.blob, methods=["HEAD", "PUT", "GET"]),
        Route("/measure", r.measure, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={RequestError: _refused})


def serve(
    host: str,
    port: int,
    token: str,
    cache_dir: Path,
    max_blob_mb: float = 512.0,
    cores: list[int] | None = None,
    max_request_s: float = DEFAULT_MAX_REQUEST_S,
) -> None:
    """Run the agent until interrupted (``cores``: pin the process to these cores first). SIGTERM / SIGINT stop
    a running measurement at its next call and the agent exits; connections still open after
    ``SHUTDOWN_GRACE_S`` (a slow upload) are dropped."""
    import uvicorn

    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cores))
    state = AgentState(token, cache_dir, int(max_blob_mb * (1 << 20)), max_request_s)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            state.shut_down()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        create_app(state),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    _Server(config).run()
