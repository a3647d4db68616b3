"""``edge-opt agent`` started as a process on a free loopback port, for the tests of the agent and of targets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import cli_env
from edge_opt.device.remote import AgentClient, AgentError

TOKEN = "t0ken-for-the-tests-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_token(path: Path, token: str = TOKEN) -> Path:
    """A token file as the agent takes it: readable and writable by its owner alone (mode 0600)."""
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def start_agent(
    tmp: Path, token: str = TOKEN, max_mb: float = 4.0, extra: list[str] | None = None
) -> tuple[subprocess.Popen, str]:
    """The agent on a free loopback port (``extra``: more ``edge-opt agent`` options), once it answers ``/info``."""
    tmp.mkdir(parents=True, exist_ok=True)
    write_token(tmp / "token", token)
    port = free_port()
    cores = sorted(os.sched_getaffinity(0))[:1] if hasattr(os, "sched_getaffinity") else []
    cmd = [
        sys.executable,
        "-m",
        "edge_opt.cli",
        "agent",
        "--port",
        str(port),
        "--token-file",
        str(tmp / "token"),
        "--cache-dir",
        str(tmp / "cache"),
        "--max-artifact-mb",
        str(max_mb),
        *(extra or []),
    ]
    if cores:
        cmd += ["--cores", ",".join(map(str, cores))]
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            AgentClient(url, token, 2).info()
            return proc, url
        except AgentError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read() if proc.stderr else "agent exited") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("agent did not start")
