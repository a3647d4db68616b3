import math

import pydantic
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_opt.cli import main
from edge_opt.config import ConfigError, StudyConfig, config_from_dict, config_from_yaml, load_config
from edge_opt.pipeline import load_study_config


def _err(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return info.value.errors


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("pruning_levels", [0.0, 1.2], "[0, 1)"),
        ("pruning_levels", [-0.1], "[0, 1)"),
        ("pruning_levels", [1.0], "[0, 1)"),
        ("precisions", [], "at least 1"),
        ("memory_budgets_mb", [1.0, 0.0], "positive"),
        ("memory_budgets_mb", [-2.0], "positive"),
        ("active_memory_budget_mb", 0, "greater than 0"),
        ("active_memory_budget_mb", -1.5, "greater than 0"),
        ("cpu_frequency_scale", 0, "greater than or equal to 0.001"),
        ("cpu_frequency_scale", -0.5, "greater than or equal to 0.001"),
        ("cpu_frequency_scale", 1.01, "less than or equal to 1"),
        ("batch_size", 0, "greater than or equal to 1"),
        ("batch_size", "many", "integer"),
        ("power_watts", float("nan"), "finite"),
        ("learning_rate", float("inf"), "finite"),
        ("latency_budget_ms", -3, "greater than 0"),
        ("device", "tpu", "cpu"),
        ("epochs", -1, "greater than or equal to 0"),
        ("onnx_exporter", "onnx2", "torchscript"),
        ("benchmark_interrupted_factor", 0.8, "above 1"),
        ("benchmark_group_size", 0, "greater than or equal to 1"),
        ("benchmark_instances", 0, "greater than or equal to 1"),
        ("benchmark_instances", 65, "less than or equal to 64"),
    ],
)
def test_invalid_value_names_key_allowed_and_given(key, value, needle):
    errors = _err({key: value})
    assert len(errors) == 1
    msg = errors[0]
    assert repr(key) in msg and needle in msg
    assert "Got" in msg and (repr(value) in msg or (isinstance(value, float) and math.isnan(value) and "nan" in msg))


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("calibration_method", "median", "minmax"),
        ("engine", "tensorrt", "x86"),
        ("calibration_batches", 0, "between 1 and 100000"),
        ("per_channel", "sometimes", "boolean"),
    ],
)
def test_invalid_quantization_option_names_key_allowed_and_given(key, value, needle):
    errors = _err({"quantization": {key: value}})
    assert len(errors) == 1
    assert f"'quantization.{key}'" in errors[0] and needle in errors[0] and repr(value) in errors[0]


def test_flat_int8_keys_of_earlier_releases_move_into_quantization():
    cfg = config_from_dict(
        {"calibration_batches": 3, "calibration_method": "entropy", "quantization_backend": "fbgemm"}
    )
    assert cfg.quantization.calibration_batches == 3 and cfg.quantization.calibration_method == "entropy"
    assert cfg.quantization.engine == "fbgemm" and cfg.quantization.per_channel is True
    assert config_from_dict({"quantization": {"calibration_batches": 3}}) == config_from_dict(
        {"calibration_batches": 3}
    )
    msg = _err({"calibration_method": "median"})[0]
    assert "'quantization.calibration_method'" in msg and "minmax" in msg and "'median'" in msg
    msg = _err({"calibration_batches": 3, "quantization": {"calibration_batches": 4}})[0]
    assert "'calibration_batches' is the old spelling of 'quantization.calibration_batches'" in msg


def test_a_bad_item_of_a_listed_option_is_one_line_naming_it():
    errors = _err({"quantization": {"calibration_method": ["minmax", "bogus"]}})
    assert len(errors) == 1 and "'quantization.calibration_method[1]'" in errors[0] and "'bogus'" in errors[0]
    assert "'percentile'" in errors[0]


def test_unknown_key_lists_allowed_keys():
    msg = _err({"pruning_level": [0.1]})[0]
    assert "'pruning_level'" in msg and "pruning_levels" in msg and "Unknown key" in msg


def test_nested_unknown_key():
    msg = _err({"deployment": {"min_querys": 3}})[0]
    assert "deployment.min_querys" in msg and "min_queries" in msg


def test_several_errors_one_line_each():
    assert len(_err({"batch_size": 0, "epochs": -1, "bogus": 1})) == 3


@pytest.mark.parametrize(
    "cfg,needle",
    [
        ({"precisions": ["fp32", "int4"]}, "'precisions'"),
        ({"backends": ["tensorrt"]}, "'backends'"),
        ({"model": {"name": "resnet"}}, "'model.name'"),
        ({"model": {"name": "small_cnn", "params": {"width": 3}}}, "model.params.width"),
        ({"dataset": "imagenet"}, "'dataset'"),
    ],
)
def test_registry_names_checked(tmp_path, cfg, needle):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as info:
        load_study_config(p)
    assert needle in str(info.value) and "Got" in str(info.value)


def test_default_config_file_is_valid():
    cfg = load_study_config("configs/default.yaml")
    assert cfg.model.name == "small_cnn" and cfg.active_memory_budget_mb > 0


@pytest.mark.parametrize(
    "text,needle",
    [
        ("- 1\n- 2\n", "mapping"),
        ("!!python/object/apply:os.system ['echo hi']", "YAML"),
        ("a: [1, 2\n", "YAML"),
        ("just a string", "mapping"),
    ],
)
def test_bad_yaml_documents(text, needle):
    with pytest.raises(ConfigError) as info:
        config_from_yaml(text)
    assert needle in str(info.value)


def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"output_dir": str(out), "pruning_levels": [1.5], "precisions": [], "bogus": 1}))
    assert main(["run", "--config", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert not out.exists()


def test_cli_missing_config_file(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unwritable_output_dir_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"output_dir": str(blocker / "sub")}))
    assert main(["run", "--config", str(p)]) == 2
    assert "'output_dir'" in capsys.readouterr().err


def test_an_output_dir_under_a_file_is_reported_with_the_other_keys_problems(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"output_dir": str(blocker / "sub"), "threads": "x", "bogus": 1}))
    assert main(["run", "--config", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    (line,) = [e for e in err if "The 'output_dir' parameter" in e]
    assert f"{str(blocker)!r} is not a folder" in line and str(blocker / "sub") in line
    assert main(["run", "--config", str(p), "--output-dir", str(blocker)]) == 2  # the option given is named
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and any("The '--output-dir' parameter" in e and "is not a folder" in e for e in err)
    assert any(e.startswith("error: Unknown key 'bogus'") and "'output_dir'" in e for e in err)  # the allowed keys
    assert sorted(f.name for f in tmp_path.iterdir()) == ["c.yaml", "file"]


@pytest.mark.parametrize("value,needle", [("a\x00b", "NUL"), ("x" * 300, "too long")])
def test_an_output_dir_no_folder_can_have_is_a_config_error(value, needle):
    (msg,) = _err({"output_dir": value})
    assert "'output_dir'" in msg and needle in msg


def test_an_output_dir_that_is_or_could_be_a_folder_is_valid(tmp_path):
    assert config_from_dict({"output_dir": str(tmp_path)}).output_dir == str(tmp_path)
    assert config_from_dict({"output_dir": str(tmp_path / "new" / "deeper")}).output_dir.endswith("deeper")
    assert not (tmp_path / "new").exists()  # checking writes nothing


def test_config_is_immutable():
    cfg = config_from_dict({})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.seed = 3  # type: ignore[misc]
    assert cfg.seed == 0


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_value = st.recursive(
    _scalar,
    lambda c: st.one_of(st.lists(c, max_size=5), st.dictionaries(st.text(max_size=6), c, max_size=4)),
    max_leaves=12,
)
_keys = st.sampled_from(sorted(StudyConfig.model_fields) + ["unknown", "model.name", ""])


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.one_of(st.dictionaries(_keys, _value, max_size=6), _value))
def test_fuzz_any_input_is_valid_or_config_error(data):
    """Through the YAML loader: the document is dumped and read back by load_config's own path."""
    for attempt in (lambda: config_from_yaml(yaml.safe_dump(data)), lambda: config_from_dict(data)):
        try:
            cfg = attempt()
        except ConfigError as exc:
            assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)
            continue
        assert isinstance(cfg, StudyConfig)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.text(max_size=80))
def test_fuzz_yaml_text(text):
    try:
        cfg = config_from_yaml(text)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and e.strip() for e in exc.errors)
    else:
        assert isinstance(cfg, StudyConfig)


def test_load_config_reads_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 7\npruning_levels: [0.0, 0.3]\n")
    cfg = load_config(p)
    assert cfg.seed == 7 and cfg.pruning_levels == [0.0, 0.3]


@pytest.mark.parametrize(
    "text",
    [
        "- just\n- a list\n",
        "!!python/object/apply:os.system ['echo pwned']\n",
        "seed: !!python/object/new:object {}\n",
        "power_watts: .nan\n",
        "learning_rate: .inf\n",
        "pruning_levels: [" + ", ".join(["0.1"] * 5000) + "]\n",
        "batch_size: 99999999999999999999999\n",
        "model: [small_cnn]\n",
        "unknown_key: 1\nseed: -4\n",
        "{{{{",
        "\x00\x01",
    ],
)
def test_cli_hostile_yaml_exits_2_without_traceback(tmp_path, capsys, text):
    p = tmp_path / "c.yaml"
    p.write_bytes(text.encode("utf-8", "surrogatepass"))
    assert main(["run", "--config", str(p), "--output-dir", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "never").exists()


def test_cli_data_error_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"dataset": "mnist", "data_dir": str(tmp_path / "nodata"), "output_dir": str(out)}))
    assert main(["run", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "nodata") in err and "Traceback" not in err
    assert not out.exists()


def test_every_key_belongs_to_exactly_one_section_and_a_part_holds_only_its_keys():
    from edge_opt.config import CONFIG_SECTIONS, MeasureSettings, StudyConfig

    keys = [name for section in CONFIG_SECTIONS.values() for name in section.model_fields]
    assert sorted(keys) == sorted(StudyConfig.model_fields)
    assert len(keys) == len(set(keys))
    cfg = config_from_dict({"threads": 2, "benchmark_repeats": 12, "epochs": 0})
    part = cfg.part(MeasureSettings)
    assert type(part) is MeasureSettings and (part.threads, part.benchmark_repeats) == (2, 12)
    assert not hasattr(part, "epochs")
    with pytest.raises(pydantic.ValidationError):
        part.threads = 3
