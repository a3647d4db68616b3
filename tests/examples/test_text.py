"""The text example (examples/tasks/text/): a classifier with two int64 inputs, token ids and an attention mask.
Its data is one npz array per model input and split; a short study on ONNX Runtime and OpenVINO scores fp32 as a
plain ONNX Runtime session does; the same inputs handed over in memory (a dict, or a tuple in the model's order)
give the same table; inputs that do not fit the model exit 2 naming the input, the file and what it takes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from conftest import ROOT
from edge_opt import optimize
from edge_opt.cli import main
from edge_opt.config import InputSettings
from edge_opt.inputs import load_study_data, onnx_inputs
from edge_opt.pipeline import load_study_config, run_study

TEXT = ROOT / "examples" / "tasks" / "text"
TINY = {
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "quantization": {"calibration_batches": 1},
    "deployment": {"scenarios": ["single_stream"], "min_queries": 20, "min_duration_s": 0.05},
}
NAMES = ("input_ids", "attention_mask")


def _arrays(split: str) -> dict[str, np.ndarray]:
    z = np.load(TEXT / "data.npz")
    return {n: z[f"x_{split}/{n}"] for n in NAMES}


def _expected_top1() -> float:
    """The fp32 model's top-1 on the validation split, from a plain ONNX Runtime session."""
    sess = ort.InferenceSession(str(TEXT / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, _arrays("val"))[0]
    return float(np.mean(logits.argmax(1) == np.load(TEXT / "data.npz")["y_val"]))


def test_text_data_loads_one_array_per_model_input_as_the_model_takes_it():
    cfg = load_study_config(TEXT / "study.yaml")
    data = load_study_data(cfg.part(InputSettings), inputs=onnx_inputs(TEXT / "model.onnx"))
    assert data.input_names == NAMES and not data.takes_images
    assert data.input_shapes == ((24,), (24,)) and data.n_train == 128 and data.n_val == 300
    x, y = next(iter(data.val_loader))
    assert len(x) == 2 and all(t.dtype == np.int64 or str(t.dtype) == "torch.int64" for t in x)
    np.testing.assert_array_equal(x[1][:4].numpy(), _arrays("val")["attention_mask"][:4])
    assert data.preprocess.scale == 1.0 and data.preprocess.mean == 0.0  # no preprocessing of token ids


@pytest.fixture(scope="module")
def text_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "out"
    cfg = load_study_config(TEXT / "study.yaml", {**TINY, "output_dir": str(out)})
    return run_study(cfg)


def test_text_study_runs_on_onnxruntime_and_openvino_and_scores_fp32_as_a_plain_session(text_study):
    df = text_study.sweep
    assert df["error"].isna().all(), df["error"].tolist()
    assert set(zip(df["backend"], df["precision"], strict=True)) == {
        (b, p) for b in ("onnxruntime", "openvino") for p in ("fp32", "int8")
    }
    expected = _expected_top1()
    assert expected > 0.9
    for backend in ("onnxruntime", "openvino"):
        fp32 = df[(df["backend"] == backend) & (df["precision"] == "fp32")].iloc[0]
        assert fp32["accuracy"] == pytest.approx(expected, abs=1e-6)
    int8 = df[df["precision"] == "int8"]
    assert (int8["kernel_precision"].str.contains("int8")).all() and (int8["accuracy"] > 0.9).all()
    assert "metric" not in df.columns  # top1: a classifier's columns


def test_text_inputs_in_memory_as_a_dict_or_a_tuple_give_the_files_accuracy(tmp_path, text_study):
    z = np.load(TEXT / "data.npz")
    settings = {**TINY, "backends": ["onnxruntime"], "precisions": ["fp32"], "pruning_levels": [0.0]}
    as_dict = optimize(TEXT / "model.onnx", (_arrays("val"), z["y_val"]), output_dir=tmp_path / "dict", **settings)
    reversed_dict = {n: _arrays("val")[n] for n in reversed(NAMES)}  # names, not order, match a dict
    as_tuple = optimize(
        str(TEXT / "model.onnx"),
        (tuple(_arrays("val")[n] for n in NAMES), z["y_val"]),
        train_data=({n: _arrays("train")[n] for n in NAMES}, z["y_train"]),
        output_dir=tmp_path / "tuple",
        **settings,
    )
    by_name = optimize(TEXT / "model.onnx", (reversed_dict, z["y_val"]), output_dir=tmp_path / "named", **settings)
    want = _expected_top1()
    for res in (as_dict, as_tuple, by_name):
        assert res.sweep.iloc[0]["accuracy"] == pytest.approx(want, abs=1e-6)


def _bad_data(tmp_path, capsys, arrays: dict[str, np.ndarray], *needles: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    out = tmp_path / "out"
    config = tmp_path / "study.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"onnx": str(TEXT / "model.onnx")},
                "dataset": "npz",
                "data_path": str(path),
                "backends": ["onnxruntime"],
                "output_dir": str(out),
            }
        )
    )
    rc = main(["run", "--config", str(config), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists()


def test_inputs_that_do_not_fit_the_model_exit_2_naming_input_and_file(tmp_path, capsys):
    val, y = _arrays("val"), np.load(TEXT / "data.npz")["y_val"]
    _bad_data(  # an input the model does not have
        tmp_path,
        capsys,
        {
            "x_val/input_ids": val["input_ids"],
            "x_val/token_type_ids": val["input_ids"],
            "x_val/attention_mask": val["attention_mask"],
            "y_val": y,
        },
        "token_type_ids",
        "bad.npz",
        "['input_ids', 'attention_mask']",
    )
    _bad_data(
        tmp_path, capsys, {"x_val/input_ids": val["input_ids"], "y_val": y}, "attention_mask", "x_val/attention_mask"
    )
    _bad_data(  # floats for an int64 input
        tmp_path,
        capsys,
        {
            "x_val/input_ids": val["input_ids"].astype(np.float32),
            "x_val/attention_mask": val["attention_mask"],
            "y_val": y,
        },
        "x_val/input_ids",
        "float32",
        "int64",
    )
    _bad_data(  # one array for a model of two inputs
        tmp_path, capsys, {"x_val": val["input_ids"], "y_val": y}, "takes 2 inputs", "x_val/attention_mask"
    )
    _bad_data(  # a fixed dimension the model does not take (the model is exported at any length: rank instead)
        tmp_path,
        capsys,
        {"x_val/input_ids": val["input_ids"][:, :, None], "x_val/attention_mask": val["attention_mask"], "y_val": y},
        "x_val/input_ids",
        "(300, 24, 1)",
    )


def test_a_pytorch_module_with_several_inputs_is_refused_naming_the_onnx_route(tmp_path):
    import torch

    from edge_opt.config import ConfigError

    class TwoInputs(torch.nn.Module):
        def forward(self, ids, mask):
            return torch.zeros(len(ids), 3)

    z = np.load(TEXT / "data.npz")
    with pytest.raises(ConfigError, match=r"several inputs is studied from its ONNX file") as err:
        optimize(TwoInputs(), (_arrays("val"), z["y_val"]), output_dir=tmp_path / "out", **TINY)
    assert "input_ids, attention_mask" in str(err.value)
    assert not (tmp_path / "out").exists()


DATASET = '''
import numpy as np

Z = np.load({path!r})


class Items:
    """(inputs, class id) items: a dict of the two inputs per sample."""

    def __init__(self, split, as_dict):
        self.split, self.as_dict = split, as_dict

    def __len__(self):
        return len(Z["y_" + self.split])

    def __getitem__(self, i):
        ids, mask = Z["x_" + self.split + "/input_ids"][i], Z["x_" + self.split + "/attention_mask"][i]
        inputs = {{"attention_mask": mask, "input_ids": ids}} if self.as_dict else (ids, mask)
        return inputs, int(Z["y_" + self.split][i])


def make_dict():
    return Items("train", True), Items("val", True)


def make_tuple():
    return None, Items("val", False)
'''


@pytest.mark.parametrize("fn", ["make_dict", "make_tuple"])
def test_a_dataset_callable_yielding_dicts_or_tuples_of_inputs(tmp_path, fn):
    (tmp_path / "text_items.py").write_text(DATASET.format(path=str(TEXT / "data.npz")))
    config = tmp_path / "study.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"onnx": str(TEXT / "model.onnx")},
                "dataset": f"text_items:{fn}",
                "backends": ["onnxruntime"],
                "precisions": ["fp32"],
                "output_dir": str(tmp_path / "out"),
            }
        )
    )
    res = run_study(load_study_config(config, TINY))
    assert res.sweep.iloc[0]["accuracy"] == pytest.approx(_expected_top1(), abs=1e-6)
    import sys

    sys.modules.pop("text_items", None)
