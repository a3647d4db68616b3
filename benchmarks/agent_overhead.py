"""The default study measured on the host and on a local device agent pinned to another core: host vs agent
latency of the recommended variant, simulation vs measurement, and the agent's per-request overhead.

    python benchmarks/agent_overhead.py     # prints JSON (about a minute)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from edge_opt.device.remote import AgentClient, AgentError  # noqa: E402
from edge_opt.pipeline import load_study_config, run_study  # noqa: E402

TOKEN = "agent-overhead-token-0123456789"


def start_agent(tmp: Path) -> tuple[subprocess.Popen, str]:
    (tmp / "token").write_text(TOKEN)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
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
            "--cores",
            "0",
        ]
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            AgentClient(url, TOKEN, 2).info()
            return proc, url
        except AgentError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the agent did not start")


def overhead(url: str, onnx: Path, n: int = 5) -> tuple[list[float], float]:
    """Round trip of a measure request minus the agent's own load + measure time (ms), and of /info (ms)."""
    client, out = AgentClient(url, TOKEN), []
    for _ in range(n):
        t0 = time.perf_counter()
        ans = client.measure(
            "onnxruntime",
            {"model.onnx": onnx},
            "model.onnx",
            (1, 1, 28, 28),
            {"repeats": 5, "trials": 10, "min_sample_ms": 5.0, "target_rel_ci": 0.0},
        )
        out.append((time.perf_counter() - t0 - ans["load_s"] - ans["measure_s"]) * 1e3)
    t0 = time.perf_counter()
    for _ in range(20):
        client.info()
    return out, (time.perf_counter() - t0) / 20 * 1e3


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="edge_opt_agent_"))
    proc, url = start_agent(tmp)
    try:
        os.environ["AGENT_TOKEN"] = TOKEN
        cfg = load_study_config(
            ROOT / "configs" / "default.yaml",
            {
                "output_dir": str(tmp / "study"),
                "measure_on": ["host", "local-agent"],
                "recommend_for": "local-agent",
                "targets": [{"name": "local-agent", "url": url, "token_env": "AGENT_TOKEN"}],
            },
        )
        t0 = time.perf_counter()
        res = run_study(cfg, fresh=True)
        wall = time.perf_counter() - t0
        df, rec = res.sweep, res.summary["recommended"]
        same = (df.backend == rec["backend"]) & (df.precision == rec["precision"])
        host = df[same & (df.pruning_level == rec["pruning_level"]) & (df.measured_on == "host")].iloc[0]
        agent = df[df.key == rec["key"]].iloc[0]
        per_request, info_ms = overhead(url, tmp / "study" / "model" / "model.onnx")
        gap = res.summary["targets"]["local-agent"]["simulation_vs_measured"]
        print(
            json.dumps(
                {
                    "study_wall_s": wall,
                    "recommended": {k: rec[k] for k in ("backend", "precision", "pruning_level")},
                    "host_ms": [float(host.latency_ms), float(host.latency_ci95_ms)],
                    "agent_ms": [float(agent.latency_ms), float(agent.latency_ci95_ms)],
                    "simulated_over_measured": {k: v for k, v in gap.items() if k != "per_point"},
                    "measure_request_overhead_ms": per_request,
                    "info_round_trip_ms": info_ms,
                },
                indent=1,
            )
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
