"""Protocol 2 of the device agent: ``"outputs": true`` returns the model's raw outputs on the validation inputs
(fetched from the agent's blob store, checked against their SHA-256), bounded by ``MAX_OUTPUT_BYTES``; a protocol-1
agent is named as such; version-1 requests are answered as before (tests/device/test_agent.py)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from agent_process import TOKEN, start_agent
from edge_opt.device import MAX_OUTPUT_BYTES, PROTOCOL_VERSION, OutputsRefused
from edge_opt.device.agent import RequestError, parse_measure_request
from edge_opt.device.remote import AgentClient, AgentError

SHA = "b" * 64
FAST = {"repeats": 2, "trials": 1, "min_sample_ms": 0.0, "warmup": 0}


def _request(**over) -> bytes:
    d = {
        "runtime": "onnxruntime",
        "files": {"model.onnx": SHA},
        "model_file": "model.onnx",
        "input": {"shape": [1, 1, 8, 8], "dtype": "float32"},
        "outputs": True,
        "validation": {"inputs": SHA},
    }
    return json.dumps({**d, **over}).encode()


def test_an_outputs_request_sends_inputs_only():
    req = parse_measure_request(_request())
    assert req.outputs and req.validation == {"inputs": SHA}
    assert not parse_measure_request(_request(outputs=False, validation=None)).outputs


@pytest.mark.parametrize(
    "over,needle",
    [
        ({"outputs": "yes"}, "'outputs' must be true or false"),
        ({"validation": None}, "with 'outputs'"),
        ({"validation": {"inputs": SHA, "labels": SHA}}, "with 'outputs'"),
        ({"outputs": False, "validation": {"inputs": SHA}}, "labels: sha256"),
    ],
)
def test_bad_outputs_requests_are_refused(over, needle):
    with pytest.raises(RequestError, match=needle):
        parse_measure_request(_request(**over))


def _model(path, repeat: int = 1):
    """x (N, 1, 8, 8) → two outputs: 2·x tiled ``repeat`` times along the last axis, and its sum per sample."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    big = helper.make_tensor_value_info("big", TensorProto.FLOAT, ["N", 1, 8, 8 * repeat])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N", 1])
    nodes = [
        helper.make_node("Add", ["x", "x"], ["twice"]),
        helper.make_node("Tile", ["twice", "reps"], ["big"]),
        helper.make_node("ReduceSum", ["twice", "axes"], ["total"], keepdims=0),
    ]
    inits = [
        helper.make_tensor("reps", TensorProto.INT64, [4], [1, 1, 1, repeat]),
        helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [big, total], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    proc, url = start_agent(tmp_path_factory.mktemp("agent"))
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_the_agent_returns_every_output_as_the_runtime_gives_it(agent, tmp_path):
    model = _model(tmp_path / "two.onnx")
    x = np.random.default_rng(1).standard_normal((37, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    client = AgentClient(agent, TOKEN)
    assert client.info()["protocol"] == PROTOCOL_VERSION == 3
    ans = client.measure(
        "onnxruntime",
        {"m.onnx": model},
        "m.onnx",
        (4, 1, 8, 8),
        FAST,
        validation=(tmp_path / "x.npy", None),
        outputs=True,
    )
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = ans["output_arrays"]
    assert len(got) == 2 and ans["n_eval"] == 37 and "accuracy" not in ans and "correct" not in ans
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and np.array_equal(g, e)  # batches of 256: the one call the runtime makes here
    assert ans["outputs"]["shapes"] == [[37, 1, 8, 8], [37, 1]]


def test_outputs_over_the_bound_are_refused_before_the_timing(agent, tmp_path):
    repeat = 4096  # one sample's first output: 64 × 4096 float32 = 1 MiB
    model = _model(tmp_path / "big.onnx", repeat)
    samples = MAX_OUTPUT_BYTES // (1 << 20) + 1
    np.save(tmp_path / "x.npy", np.zeros((samples, 1, 8, 8), np.float32))
    with pytest.raises(OutputsRefused, match="413 request too large: the outputs on the 65 validation samples") as e:
        AgentClient(agent, TOKEN).measure(
            "onnxruntime",
            {"m.onnx": model},
            "m.onnx",
            (1, 1, 8, 8),
            {**FAST, "repeats": 50, "min_sample_ms": 500},
            validation=(tmp_path / "x.npy", None),
            outputs=True,
            timeout_s=20,
        )
    assert "MAX_OUTPUT_BYTES" in str(e.value) and isinstance(e.value, AgentError)


def test_a_protocol_1_agent_is_not_asked_for_outputs(monkeypatch, tmp_path):
    monkeypatch.setattr(AgentClient, "info", lambda self: {"cpu_model": "old"})  # an agent before protocol 2
    with pytest.raises(AgentError, match="the agent speaks protocol 1; .* needs protocol 2"):
        AgentClient("http://127.0.0.1:9", TOKEN).measure(
            "onnxruntime", {}, "m.onnx", (1, 1, 8, 8), FAST, validation=(tmp_path / "x.npy", None), outputs=True
        )


def test_declared_outputs_over_the_bound_are_not_fetched():
    with pytest.raises(OutputsRefused, match="over MAX_OUTPUT_BYTES"):
        AgentClient("http://127.0.0.1:9", TOKEN).fetch_outputs({"sha256": SHA, "bytes": MAX_OUTPUT_BYTES + 1})
