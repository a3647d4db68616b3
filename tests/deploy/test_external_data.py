"""An ONNX model whose weights live in an external data file (torch 2.13's default export: ``model.onnx`` +
``model.onnx.data``) travels with that file everywhere: a study run from another folder, the artifact and its
manifest, ``edge-opt predict`` and the device agent; an artifact missing the file, or with another one, is refused
naming it, and an export that would not load leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent_process import TOKEN, start_agent
from conftest import ROOT
from edge_opt.cli import main
from edge_opt.config import config_from_dict
from edge_opt.core import ArtifactError, atomic, load_manifest, predict, sha256_file
from edge_opt.core.runtime import normalise
from edge_opt.deploy import artifact as artifact_module
from edge_opt.deploy.artifact import export_artifact
from edge_opt.device.remote import AgentClient, AgentError
from edge_opt.variants import BuildContext
from onnx_models import build

DIGITS = ROOT / "examples" / "bring_your_own" / "digits.npz"
TINY = {
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "deployment": {"scenarios": ["single_stream"], "min_queries": 20, "min_duration_s": 0.05},
}
MODEL_FILES = ["model.onnx", "model.onnx.data"]
OWN_FILES = ["manifest.json", "validation_inputs.npy", "validation_labels.npy"]


@pytest.fixture(scope="module")
def external(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("onnx_models"))["external"]


def _cfg(out: Path, external: Path, **over) -> dict:
    return {
        "model": {"onnx": str(external), "simplify": False},  # the file as given: its data file must travel
        "dataset": "npz",
        "data_path": str(DIGITS),
        "pruning_levels": [0.0],
        "precisions": ["fp32"],
        "backends": ["onnxruntime"],
        "memory_budgets_mb": [1.0],
        "active_memory_budget_mb": 1.0,
        "max_accuracy_drop": 0.5,
        "output_dir": str(out),
        **TINY,
        **over,
    }


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    proc, url = start_agent(tmp_path_factory.mktemp("agent"))
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def study(external, agent, tmp_path_factory):
    """A study of the external-data model, run from a folder that is not the model's, measured on an agent too."""
    from edge_opt.pipeline import run_study

    root = tmp_path_factory.mktemp("study")
    target = {"name": "local-agent", "url": agent, "token_env": "EDGE_OPT_TEST_TOKEN", "timeout_s": 60}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_OPT_TEST_TOKEN", TOKEN)
        (root / "elsewhere").mkdir()
        mp.chdir(root / "elsewhere")
        cfg = _cfg(root / "out", external, targets=[target], measure_on=["host", "local-agent"])
        return run_study(config_from_dict(cfg))


def _plain_ids(external: Path, model_dir: Path) -> np.ndarray:
    """Class ids of the validation inputs from a plain ONNX Runtime session on the user's own file."""
    import onnxruntime as ort

    manifest = json.loads((model_dir / "manifest.json").read_text())
    x = normalise(np.load(model_dir / "validation_inputs.npy"), manifest["normalisation"])
    sess = ort.InferenceSession(str(external), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1)


def _cli_ids(capsys, model: Path, inputs: Path) -> np.ndarray:
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--input", str(inputs)]) == 0
    return np.array([int(v) for v in capsys.readouterr().out.split()])


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.timeout(300)
def test_a_study_from_another_folder_ships_the_data_file_and_predict_matches_onnx_runtime(study, external, capsys):
    df = study.sweep
    assert df["error"].isna().all(), df["error"].tolist()
    model_dir = study.output_dir / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([*MODEL_FILES, *OWN_FILES])
    manifest = load_manifest(model_dir)
    assert [f["path"] for f in manifest["files"]] == MODEL_FILES
    for entry, user_file in zip(manifest["files"], [external, external.with_name("model.onnx.data")]):
        assert entry["sha256"] == sha256_file(model_dir / entry["path"]) == sha256_file(user_file)
        assert entry["bytes"] == user_file.stat().st_size
    assert manifest["model_sha256"] == sha256_file(external)  # the input model file, as before
    assert manifest["size_bytes"] == sum(f["bytes"] for f in manifest["files"])
    plain = _plain_ids(external, model_dir)
    inputs = model_dir / "validation_inputs.npy"
    assert (_cli_ids(capsys, model_dir, inputs) == plain).all()
    assert (_cli_ids(capsys, model_dir / "model.onnx", inputs) == plain).all()  # the model path works the same
    assert manifest["artifact_accuracy"] == float((plain == np.load(model_dir / "validation_labels.npy")).mean())


@pytest.mark.timeout(300)
def test_the_agent_measures_the_model_sent_with_its_data_file(study):
    on_agent = study.sweep[study.sweep["measured_on"] == "local-agent"]
    assert len(on_agent) == 1 and on_agent["error"].isna().all(), on_agent["error"].tolist()
    assert (on_agent["latency_ci95_ms"] > 0).all() and (on_agent["latency_samples"] >= 3).all()


@pytest.fixture
def copied(study, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(study.output_dir / "model", folder)
    return folder


def test_an_artifact_missing_its_data_file_is_refused_naming_it(copied, capsys):
    (copied / "model.onnx.data").unlink()
    assert main(["predict", "--model", str(copied), "--input", str(copied / "validation_inputs.npy")]) == 2
    line = _one_error(capsys)
    assert "model.onnx.data" in line and "missing" in line


def test_an_artifact_whose_data_file_changed_is_refused_naming_it(copied):
    data = copied / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=r"SHA-256 of .*model\.onnx\.data"):
        predict(copied, np.load(copied / "validation_inputs.npy"))


def test_a_manifest_that_does_not_list_the_data_file_is_refused(copied):
    """As written before the data file travelled: the model's file alone hashed."""
    manifest = json.loads((copied / "manifest.json").read_text())
    manifest["files"] = {"model.onnx": manifest["sha256"]}
    (copied / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"keeps weights in 'model\.onnx\.data', which the manifest"):
        load_manifest(copied)


def test_the_agent_refuses_a_model_sent_without_its_data_file(external, agent):
    client = AgentClient(agent, TOKEN, 30)
    with pytest.raises(AgentError, match=r"400.*keeps weights in \['model\.onnx\.data'\], not among the files"):
        client.measure("onnxruntime", {"model.onnx": external}, "model.onnx", (1, 1, 8, 8), {"repeats": 3})


def test_the_agent_refuses_a_model_whose_data_lies_outside_its_folder(agent, tmp_path):
    hostile = _model_reaching_outside(tmp_path / "hostile.onnx")
    with pytest.raises(AgentError, match="400.*outside its own folder"):
        AgentClient(agent, TOKEN, 30).measure("onnxruntime", {"model.onnx": hostile}, "model.onnx", (1, 4), {})


def _model_reaching_outside(path: Path) -> Path:
    """A one-Gemm ONNX model whose weight claims to live in ``../../token``, outside the agent's model folder."""
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], np.zeros(8, np.float32).tobytes(), raw=True)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../token")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    path.write_bytes(helper.make_model(graph).SerializeToString())  # as sent: onnx.save would follow the location
    return path


def _ctx(data, workdir: Path, external: Path) -> BuildContext:
    calib = data.calibration_batches(2)
    return BuildContext(
        calibration=calib, example_input=calib[0][:2], workdir=workdir, cache={("onnx_fp32", "model"): external}
    )


def _export(out: Path, precision: str, data, ctx: BuildContext, backend: str = "onnxruntime") -> dict:
    row = {"precision": precision, "backend": backend, "pruning_level": 0.0, "model_source": "onnx:model.onnx"}
    return export_artifact(out, None, row, data, ctx, goals_met=True, failed_goals=[], config_point={})


@pytest.mark.parametrize(
    "backend,precision,files",
    [
        ("onnxruntime", "fp16", ["model.onnx"]),  # ONNX Runtime's tools write the weights inline
        ("onnxruntime", "int8", ["model.onnx"]),
        ("openvino", "fp32", ["model.xml", "model.bin"]),
    ],
)
def test_variants_built_from_the_external_data_model_export_runnable_files(
    external, digits8, tmp_path, backend, precision, files
):
    if backend == "openvino":
        pytest.importorskip("openvino")
    ctx = _ctx(digits8, tmp_path / "work", external)
    manifest = _export(tmp_path / "model", precision, digits8, ctx, backend)
    assert [f["path"] for f in manifest["files"]] == files
    assert {p.name for p in (tmp_path / "model").iterdir()} == {*files, *OWN_FILES}
    ids = predict(tmp_path / "model", np.load(tmp_path / "model" / "validation_inputs.npy"))
    assert float((ids == digits8.val_labels).mean()) == pytest.approx(manifest["artifact_accuracy"])
    assert sorted(p.name for p in external.parent.iterdir()) == MODEL_FILES  # nothing written beside the user's file


def test_an_export_that_does_not_load_raises_naming_the_file_and_leaves_nothing(
    external, digits8, tmp_path, monkeypatch
):
    """As before the data file travelled: the model file alone copied. The staged files do not load, so no
    ``model/`` folder (nor a staging folder) is left."""
    monkeypatch.setattr(artifact_module, "_shipped_onnx", lambda path: {"model.onnx": Path(path)})
    with pytest.raises(ArtifactError, match=r"cannot load .*model\.onnx.*model\.onnx\.data"):
        _export(tmp_path / "model", "fp32", digits8, _ctx(digits8, tmp_path / "work", external))
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob(atomic.TEMP_PREFIX + "*"))


@pytest.mark.timeout(300)
def test_a_study_whose_artifact_does_not_load_exits_2_naming_the_file(external, tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.setattr(artifact_module, "_shipped_onnx", lambda path: {"model.onnx": Path(path)})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(_cfg(tmp_path / "out", external)))
    code = main(["run", "--config", str(tmp_path / "study.yaml"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "error: artifact export failed" in err and "model.onnx.data" in err
    assert not (tmp_path / "out" / "model").exists() and (tmp_path / "out" / "summary.json").is_file()
    assert not list((tmp_path / "out").glob(atomic.TEMP_PREFIX + "*"))
