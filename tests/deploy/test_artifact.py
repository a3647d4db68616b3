"""The artifact's manifest records where the shipped file comes from: the user's ONNX file is not called an export."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from edge_opt.core import load_manifest, sha256_file
from edge_opt.deploy.artifact import export_artifact
from edge_opt.variants import BuildContext
from edge_opt.variants.onnx_tools import export_onnx


def _ctx(data, workdir, **kw) -> BuildContext:
    calib = data.calibration_batches(2)
    return BuildContext(calibration=calib, example_input=calib[0][:2], workdir=workdir, **kw)


def _export(out, parent, precision, data, ctx, source="registry:small_cnn", level=0.0):
    row = {"precision": precision, "backend": "onnxruntime", "pruning_level": level, "model_source": source}
    return export_artifact(
        out, parent, row, data, ctx, goals_met=True, failed_goals=[], config_point={"precision": precision}
    )


@pytest.fixture
def user_onnx(trained_small, digits8, tmp_path):
    """An ONNX file as a user brings it: made by another tool, which its producer fields name."""
    path = export_onnx(trained_small, digits8.calibration_batches(1)[0][:2], tmp_path / "user.onnx")
    proto = onnx.load(str(path))
    proto.producer_name, proto.producer_version = "tf2onnx", "1.16.1"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_users_onnx_model_is_not_called_a_torch_export(user_onnx, digits8, tmp_path, precision):
    ctx = _ctx(digits8, tmp_path / "work", cache={("onnx_fp32", "model"): user_onnx})  # as the study seeds it
    manifest = _export(tmp_path / "model", None, precision, digits8, ctx, source="onnx:user.onnx")
    assert manifest["export"]["exporter"] is None
    assert "torch" not in json.dumps({k: manifest[k] for k in ("export", "provenance")})
    prov = manifest["provenance"]
    assert prov["source_format"] == "onnx" and prov["source_producer"] == {"name": "tf2onnx", "version": "1.16.1"}
    if precision == "fp32":  # the user's file itself is shipped
        assert prov["transformation"] == [] and manifest["sha256"] == sha256_file(user_onnx)
        assert prov["model_file_producer"] == {"name": "tf2onnx", "version": "1.16.1"}
    else:  # a derivative: ONNX Runtime's quantizer names itself in the file
        assert prov["transformation"] == ["quantized"] and manifest["sha256"] != sha256_file(user_onnx)
        assert prov["model_file_producer"]["name"] == onnx.load(str(tmp_path / "model" / "model.onnx")).producer_name
        assert prov["model_file_producer"]["name"] != "tf2onnx"
    assert load_manifest(tmp_path / "model")["provenance"] == prov  # what predict reads back


def test_a_torch_models_manifest_keeps_its_exporter_and_names_the_producer(trained_small, digits8, tmp_path):
    manifest = _export(tmp_path / "model", trained_small, "fp16", digits8, _ctx(digits8, tmp_path / "work"), level=0.5)
    assert manifest["export"]["exporter"] == "torch.onnx.export(dynamo=False)"
    prov = manifest["provenance"]
    assert prov["source_format"] == "pytorch" and prov["source_producer"]["name"] == "pytorch"
    assert torch.__version__.startswith(prov["source_producer"]["version"])  # e.g. 2.13.0 of 2.13.0+cpu
    assert prov["transformation"] == ["pruned", "exported", "converted"]  # fp16 conversion of the export
    assert prov["model_file_producer"] == {
        k: v for k, v in zip(("name", "version"), _producer(tmp_path / "model" / "model.onnx"), strict=True)
    }


def _producer(path) -> tuple[str, str]:
    proto = onnx.load(str(path))
    return proto.producer_name, proto.producer_version


def test_an_openvino_artifact_says_it_was_converted_from_the_export(trained_small, digits8, tmp_path):
    pytest.importorskip("openvino")
    row = {"precision": "fp32", "backend": "openvino", "pruning_level": 0.0, "model_source": "registry:small_cnn"}
    ctx = _ctx(digits8, tmp_path / "work")
    manifest = export_artifact(
        tmp_path / "model", trained_small, row, digits8, ctx, goals_met=True, failed_goals=[], config_point={}
    )
    prov = manifest["provenance"]
    assert manifest["runtime"] == "openvino" and prov["transformation"] == ["exported", "converted"]
    assert prov["source_producer"]["name"] == "pytorch" and prov["model_file_producer"] is None
