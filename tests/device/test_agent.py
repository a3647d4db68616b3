"""The device agent: its request parser (fuzzed), its refusals (token, size, SHA-256) and a real measurement
through the client, with the agent started as its own process on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.request

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_process import TOKEN, free_port, start_agent, write_token
from edge_opt.core.runtime import sha256_file
from edge_opt.device.agent import AgentState, RequestError, parse_measure_request
from edge_opt.device.remote import AgentClient, AgentError

SHA = "a" * 64


def _good() -> dict:
    return {
        "runtime": "onnxruntime",
        "files": {"model.onnx": SHA},
        "model_file": "model.onnx",
        "input": {"shape": [1, 1, 8, 8], "dtype": "float32"},
        "settings": {"repeats": 5, "trials": 2},
    }


def test_a_valid_request_parses():
    req = parse_measure_request(json.dumps(_good()).encode())
    assert req.runtime == "onnxruntime" and req.input_shape == (1, 1, 8, 8) and req.rules.repeats == 5


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"runtime": "python"}, "'runtime' must be one of"),
        ({"files": {"../etc/passwd": SHA}}, "plain name"),
        ({"files": {"model.onnx": "xyz"}}, "SHA-256"),
        ({"model_file": "other.onnx"}, "'model_file'"),
        ({"input": {"shape": [0, 3]}}, "'input.shape'"),
        ({"input": {"shape": [1, 3], "dtype": "int8"}}, "'input'"),
        ({"settings": {"repeats": 10**9}}, "setting 'repeats'"),
        ({"settings": {"exec": "rm"}}, "unknown measurement settings"),
        ({"settings": {"interrupted_factor": 0.5}}, "setting 'interrupted_factor' must be 0 or above 1"),
        ({"command": "ls"}, "unknown keys"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(change, needle):
    with pytest.raises(RequestError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_measure_request(json.dumps(_good() | change).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_any_bytes_give_a_request_or_a_request_error(body):
    try:
        parse_measure_request(body)
    except RequestError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(_good()) + ["threads", "validation", "batch_size", "x"]), _json, max_size=8)
)
def test_fuzz_json_objects_give_a_request_or_a_request_error(doc):
    try:
        parse_measure_request(json.dumps({**_good(), **doc}).encode())
    except RequestError:
        pass


def test_an_oversized_body_is_refused_before_parsing():
    with pytest.raises(RequestError, match="over"):
        parse_measure_request(b"{" + b" " * (2 << 20) + b"}")


# --- the agent as a process ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    proc, url = start_agent(tmp_path_factory.mktemp("agent"))
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    import torch

    from edge_opt.variants.onnx_tools import export_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10)
    )
    return export_onnx(model, torch.randn(2, 1, 8, 8), tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_a_wrong_token_is_401(agent):
    with pytest.raises(AgentError, match="401 unauthorized"):
        AgentClient(agent, "wrong-token-wrong-token").info()


def test_the_fingerprint_names_the_device_and_no_torch(agent):
    info = AgentClient(agent, TOKEN).info()
    assert info["cpu_model"] and info["cores"] >= 1 and info["runtimes"]["onnxruntime"]
    assert info["torch_imported"] is False


def test_a_blob_of_another_sha256_is_refused(agent, tmp_path):
    import urllib.request

    req = urllib.request.Request(
        f"{agent}/blobs/{'b' * 64}",
        data=b"not that content",
        method="PUT",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400 and b"SHA-256 mismatch" in err.value.read()


def test_a_blob_over_the_bound_is_refused(agent, tmp_path):
    import http.client

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 << 20))  # the agent takes 4 MB: the client does not even send it
    with pytest.raises(AgentError, match="413"):
        AgentClient(agent, TOKEN).send(big)
    host, port = agent.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)  # the agent itself refuses what is declared
    conn.putrequest("PUT", f"/blobs/{'c' * 64}")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(5 << 20))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and b"over the bound" in resp.read()


def test_a_measurement_returns_raw_samples_a_ci_accuracy_and_the_fingerprint(agent, tiny_onnx, tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.zeros(20, dtype=np.int64))
    client = AgentClient(agent, TOKEN)
    out = client.measure(
        "onnxruntime",
        {"model.onnx": tiny_onnx},
        "model.onnx",
        (1, 1, 8, 8),
        {"repeats": 5, "trials": 2, "min_sample_ms": 1.0, "warmup": 2},
        validation=(tmp_path / "x.npy", tmp_path / "y.npy"),
    )
    assert len(out["samples_ms"]) >= 5 and out["ci95_ms"] > 0 and out["runs_per_sample"] >= 2
    assert 0.0 <= out["accuracy"] <= 1.0 and out["n_eval"] == 20
    assert out["fingerprint"]["hostname"] and out["fingerprint"]["torch_imported"] is False
    # sent once: the second measurement finds the file cached
    assert client._call("HEAD", f"/blobs/{sha256_file(tiny_onnx)}")[0] == 200


def test_an_unreachable_agent_is_connection_refused():
    with pytest.raises(AgentError, match="connection refused"):
        AgentClient(f"http://127.0.0.1:{free_port()}", TOKEN, 5).info()


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--cores", "99999"], "--cores must be among"),
        (["--cores", "x"], "--cores must be core numbers"),
        (["--port", "0"], "--port must be in"),
        (["--max-artifact-mb", "0"], "--max-artifact-mb"),
        (["--max-request-s", "0"], "--max-request-s must be in"),
    ],
)
def test_bad_agent_arguments_exit_2_naming_the_option(tmp_path, capsys, extra, needle):
    from edge_opt.cli import main

    assert main(["agent", "--token-file", str(write_token(tmp_path / "token")), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err


def test_an_agent_token_that_is_short_missing_or_a_port_in_use_exit_2(tmp_path, capsys):
    from edge_opt.cli import main

    assert main(["agent", "--token-file", str(write_token(tmp_path / "short", "abc"))]) == 2
    assert main(["agent", "--token-file", str(tmp_path)]) == 2  # a folder, not a file
    write_token(tmp_path / "token")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["agent", "--token-file", str(tmp_path / "token"), "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "at least 16 characters" in err[0] and "not readable" in err[1] and "cannot listen" in err[2]


def test_the_agent_sets_an_interrupted_sample_aside_and_takes_another():
    from edge_opt.core.stats import TimingRules, time_calls

    calls = {"n": 0}

    def run():
        calls["n"] += 1
        if calls["n"] == 30:  # inside the timed samples (2 warm-up + 1 sizing call before them)
            time.sleep(0.03)
        sum(range(200))

    rules = TimingRules(warmup=2, trials=5, repeats=10, min_sample_ms=0.0, target_rel_ci=0.0, max_extra_rounds=1)
    t = time_calls(run, rules)
    kept, per_sample, interrupted = t.samples, t.calls, t.interrupted
    assert len(interrupted) >= 1 and max(interrupted) > 1.0 and len(kept) == 10 and per_sample == 5  # 30 ms / 5 calls
    assert interrupted[0] > 1.5 * float(np.median(kept)) and max(kept) <= 1.5 * float(np.median(kept + interrupted))
    everything = TimingRules(
        warmup=2, trials=5, repeats=10, min_sample_ms=0.0, target_rel_ci=0.0, max_extra_rounds=1, interrupted_factor=0.0
    )
    calls["n"] = 0
    t = time_calls(run, everything)
    assert t.interrupted == [] and len(t.samples) == 10 and max(t.samples) > 1.5 * float(np.median(t.samples))


def test_the_agent_stops_its_samples_at_the_time_budget_and_says_so():
    """``max_s`` (protocol 3): a call that lasts 20 ms under rules asking for 200 samples stops at about the budget,
    flagged; the same rules without the budget would take 4 s. A bad budget is refused naming the setting."""
    from edge_opt.core.stats import TimingRules, time_calls
    from edge_opt.device.agent import planned_s

    rules = dict(warmup=1, trials=1, repeats=200, min_sample_ms=0.0, target_rel_ci=0.0, max_extra_rounds=0)
    t0 = time.perf_counter()
    t = time_calls(lambda: time.sleep(0.02), TimingRules.from_dict({**rules, "max_s": 0.3}))
    assert time.perf_counter() - t0 < 1.5 and 2 <= len(t.samples) < 200 and t.budget_hit and t.spent_s >= 0.3
    assert planned_s(TimingRules(**rules, max_s=0.3), 0.02) < planned_s(TimingRules(**rules), 0.02)
    with pytest.raises(ValueError, match="max_s"):
        TimingRules.from_dict({"max_s": 0})
    quick = time_calls(lambda: None, TimingRules(repeats=5, trials=1, min_sample_ms=0.0, target_rel_ci=0.0, max_s=5))
    assert not quick.budget_hit and len(quick.samples) == 5


# --- hardening: the token's scheme and file, the bind address, the time one request may hold the agent ----------


def test_the_token_counts_only_with_the_exact_bearer_scheme(agent, tmp_path):
    state = AgentState(TOKEN, tmp_path)
    assert state.authorised(f"Bearer {TOKEN}")
    for header in (TOKEN, f"bearer {TOKEN}", f"Token {TOKEN}", f"Bearer  {TOKEN}", f"Bearer {TOKEN}x", "", None):
        assert not state.authorised(header), header
    bare = urllib.request.Request(f"{agent}/info", headers={"Authorization": TOKEN})  # no scheme: refused
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bare, timeout=10)
    assert err.value.code == 401


@pytest.fixture
def served(monkeypatch):
    """``edge-opt agent`` checks its arguments, then calls this instead of serving (what it was given)."""
    calls: list = []
    monkeypatch.setattr("edge_opt.device.serve", lambda *a, **k: calls.append((a, k)))
    return calls


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_a_token_file_open_to_group_or_others_is_refused_like_an_ssh_key(tmp_path, capsys, served, mode):
    from edge_opt.cli import main

    token = write_token(tmp_path / "token")
    token.chmod(mode)
    assert main(["agent", "--token-file", str(token), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.splitlines()
    assert served == [] and len(err) == 1 and err[0].startswith("error: --token-file")
    assert str(token) in err[0] and f"mode {mode:04o}" in err[0] and f"chmod 600 {token}" in err[0]


def test_a_non_loopback_host_is_warned_about_and_loopback_is_not(tmp_path, capsys, served):
    from edge_opt.cli import main

    token = str(write_token(tmp_path / "token"))
    assert main(["agent", "--token-file", token, "--port", str(free_port()), "--host", "0.0.0.0"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "0.0.0.0" in warning[0] and "reachable from the network" in warning[0]
    assert "token" in warning[0] and "plain HTTP" in warning[0] and served[0][1]["max_request_s"] == 600.0
    assert main(["agent", "--token-file", token, "--port", str(free_port()), "--max-request-s", "30"]) == 0
    assert "warning" not in capsys.readouterr().err and served[1][1]["max_request_s"] == 30.0


def _measure_body(sha: str, settings: dict) -> bytes:
    return json.dumps(
        {
            "runtime": "onnxruntime",
            "files": {"model.onnx": sha},
            "model_file": "model.onnx",
            "input": {"shape": [1, 1, 8, 8]},
            "settings": settings,
        }
    ).encode()


# within the bounds of a request and of the default limit (500 s of timing), and far longer than any test
LONG = {"repeats": 10_000, "min_sample_ms": 50.0, "trials": 1, "warmup": 0, "target_rel_ci": 0.0}
QUICK = {"repeats": 5, "trials": 2, "min_sample_ms": 1.0, "warmup": 2}


def _post(url: str, body: bytes) -> http.client.HTTPConnection:
    """Send ``POST /measure`` without waiting for the answer (the connection stays open until closed)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/measure", body, {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    return conn


def test_a_request_that_cannot_fit_the_time_limit_is_refused_up_front(agent, tiny_onnx):
    client = AgentClient(agent, TOKEN, 10)
    t0 = time.perf_counter()
    with pytest.raises(AgentError, match=r"422.*at least 600000 s.*limit of 600 s.*--max-request-s"):
        client.measure(
            "onnxruntime", {"model.onnx": tiny_onnx}, "model.onnx", (1, 1, 8, 8), LONG | {"min_sample_ms": 60000}
        )
    assert time.perf_counter() - t0 < 5
    big_calls = LONG | {"min_sample_ms": 0.0, "trials": 1_000_000}  # fits by its plan; its first call says it cannot
    with pytest.raises(AgentError, match=r"422.*one call took.*limit of 600 s.*--max-request-s"):
        client.measure("onnxruntime", {"model.onnx": tiny_onnx}, "model.onnx", (1, 1, 8, 8), big_calls)
    assert time.perf_counter() - t0 < 5


def test_a_client_that_disconnects_stops_its_measurement_and_frees_the_agent(agent, tiny_onnx):
    client = AgentClient(agent, TOKEN, 10)
    conn = _post(agent, _measure_body(client.send(tiny_onnx), LONG))
    time.sleep(0.5)
    with pytest.raises(AgentError, match="timeout"):  # the long one holds the agent: this one waits (and gives up)
        AgentClient(agent, TOKEN, 1).measure(
            "onnxruntime", {"model.onnx": tiny_onnx}, "model.onnx", (1, 1, 8, 8), QUICK
        )
    conn.close()
    t0 = time.perf_counter()
    out = client.measure("onnxruntime", {"model.onnx": tiny_onnx}, "model.onnx", (1, 1, 8, 8), QUICK)
    assert len(out["samples_ms"]) >= 5 and time.perf_counter() - t0 < 3


def test_sigterm_stops_a_busy_agent_within_seconds(tmp_path, tiny_onnx):
    proc, url = start_agent(tmp_path / "agent")
    try:
        conn = _post(url, _measure_body(AgentClient(url, TOKEN, 10).send(tiny_onnx), LONG))
        time.sleep(0.5)
        t0 = time.perf_counter()
        proc.terminate()
        proc.wait(timeout=5)
        assert time.perf_counter() - t0 < 3
        answer = conn.getresponse()
        assert answer.status == 503 and b"shutting down" in answer.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_measurement_past_the_time_limit_is_stopped_and_frees_the_lock(tmp_path, tiny_onnx):
    from edge_opt.core import ci95_half_width
    from edge_opt.device.agent import MeasurementStopped, measure

    ci95_half_width([1.0, 2.0])  # scipy imported first: its import (seconds) is no check point
    state = AgentState(TOKEN, tmp_path, max_request_s=0.5)
    sha = sha256_file(tiny_onnx)
    state.store(sha, [tiny_onnx.read_bytes()])
    # 5 × 50 ms planned fits; the CI target it cannot meet would take up to 100 passes more
    endless = {"repeats": 5, "min_sample_ms": 50.0, "target_rel_ci": 1e-9, "max_extra_rounds": 100}
    t0 = time.perf_counter()
    with pytest.raises(MeasurementStopped, match=r"stopped after the agent's limit of 0.5 s.*--max-request-s") as err:
        measure(state, parse_measure_request(_measure_body(sha, endless)))
    assert err.value.status == 422 and time.perf_counter() - t0 < 2.5
    assert not state.lock.locked()  # free again: the next request is measured
    state.max_request_s = 60.0
    assert len(measure(state, parse_measure_request(_measure_body(sha, QUICK)))["samples_ms"]) >= 5
