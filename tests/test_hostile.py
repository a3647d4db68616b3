"""The hostile user's list (issue: own the output folder), one numbered section per item.

1 data loss · 2 lock · 3 mixed studies · 4 stale outputs · 5 pruning that did nothing · 6 interrupts ·
7 exit 2 instead of a traceback · 8 predict answering wrong · 9 unbounded output · 10 accepted without a word.
Every derived file of a folder must belong to one generation: ``assert_one_generation`` checks it.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import PYTHON, ROOT, cli_env
from edge_opt import atomic
from edge_opt.cli import main
from edge_opt.config import ConfigError, config_from_dict, config_from_yaml
from edge_opt.core.generation import CACHE_DIRS, CACHE_FILES, GENERATION_FILE, STORE_FILES, verify_generation
from edge_opt.pipeline import rebuild_report, run_study
from edge_opt.study.runner import StudyInterrupted
from edge_opt.study.store import StudyStore


def hostile_dict(out: Path, **over) -> dict:
    """The cheapest real study: 8×8 digits, one epoch, ONNX Runtime fp32, two pruning levels."""
    d = {
        "dataset": "digits",
        "image_size": 8,
        "epochs": 1,
        "fine_tune_epochs": 0,
        "batch_size": 64,
        "model": {"name": "small_cnn", "params": {"conv1_channels": 8, "conv2_channels": 16, "hidden_units": 16}},
        "pruning_levels": [0.0, 0.5],
        "precisions": ["fp32"],
        "backends": ["onnxruntime"],
        "benchmark_repeats": 3,
        "benchmark_trials": 2,
        "benchmark_warmup": 1,
        "memory_budgets_mb": [0.1],
        "active_memory_budget_mb": 0.1,
        "max_accuracy_drop": 0.5,
        "output_dir": str(out),
        "deployment": {"scenarios": ["single_stream", "batch"], "min_queries": 10, "min_duration_s": 0.01},
        "memory_bandwidth_gbps": 10.0,
        "peak_compute_gmacs": 50.0,
    }
    d.update(over)
    return d


def write_cfg(path: Path, out: Path, **over) -> Path:
    path.write_text(yaml.safe_dump(hostile_dict(out, **over)))
    return path


def stored_hash(out: Path) -> str:
    with StudyStore(out / "study.sqlite") as store:
        return config_from_dict(store.get_meta("config")).config_hash


def assert_one_generation(out: Path) -> str:
    """Every derived file is listed, intact, in the folder's generation of the store's last config."""
    gen, problems = verify_generation(out)
    assert gen is not None and not problems, problems
    want = stored_hash(out)
    assert gen.config_hash == want
    for rel in ("summary.json", "reproducibility.json", "model/manifest.json"):
        if rel in gen.files:
            assert json.loads((out / rel).read_text())["config_hash"] == want, rel
    if "report.html" in gen.files:
        assert f'name="edge-opt-config-hash" content="{want}"' in (out / "report.html").read_text()
    for rel in gen.files:  # every CSV has the column, every PNG the text chunk
        if rel.endswith(".csv") and (out / rel).stat().st_size > 1:
            assert set(pd.read_csv(out / rel)["config_hash"]) == {want}, rel
        if rel.endswith(".png"):
            with Image.open(out / rel) as image:
                assert image.text.get("config_hash") == want, rel
    owned = {*gen.files, GENERATION_FILE, *STORE_FILES, *CACHE_FILES}
    for path in out.rglob("*"):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and rel.split("/")[0] not in CACHE_DIRS and not rel.startswith("."):
            assert rel in owned, f"{rel} is not part of the folder's generation"
    return want


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished study (A) to copy: its folder and config dict."""
    out = tmp_path_factory.mktemp("hostile") / "a"
    d = hostile_dict(out)
    run_study(config_from_dict(d))
    return out, d


@pytest.fixture
def study_a(finished, tmp_path):
    src, d = finished
    out = tmp_path / "a"
    shutil.copytree(src, out)
    return out, {**d, "output_dir": str(out)}


def errors_of(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()]


# 1 ─ data loss: --fresh deletes only what a study wrote, only in a study folder


def test_1_fresh_on_a_folder_without_a_study_is_refused_and_touches_nothing(tmp_path, capsys):
    proj = tmp_path / "myproj"
    (proj / "model").mkdir(parents=True)
    (proj / "model" / "best.pt").write_bytes(b"weights")
    (proj / "notes.txt").write_text("mine")
    cfg = write_cfg(tmp_path / "c.yaml", proj)
    assert main(["run", "--config", str(cfg), "--fresh"]) == 2
    lines = errors_of(capsys)
    assert len(lines) == 1 and "no edge_opt study wrote" in lines[0] and "'model'" in lines[0]
    assert sorted(p.relative_to(proj).as_posix() for p in proj.rglob("*")) == ["model", "model/best.pt", "notes.txt"]
    assert main(["run", "--config", str(cfg)]) == 2  # nor does a plain run write into it
    assert not (proj / "study.sqlite").exists()


def test_1_fresh_in_a_study_folder_keeps_the_users_own_files(study_a):
    out, d = study_a
    (out / "model" / "best.pt").write_bytes(b"mine")
    (out / "notes.txt").write_text("mine")
    run_study(config_from_dict(d), fresh=True)
    assert (out / "model" / "best.pt").read_bytes() == b"mine" and (out / "notes.txt").read_text() == "mine"


def test_1_fresh_keeps_the_users_files_in_the_cache_folders_and_names_them(study_a, tmp_path, capsys):
    out, d = study_a
    written = {p.relative_to(out).as_posix() for sub in CACHE_DIRS for p in (out / sub).rglob("*") if p.is_file()}
    assert written, "the finished study wrote cache files"
    mine = ["onnx/hand_optimised.onnx", "checkpoints/best.pt", "variants/notes.txt"]
    for rel in mine:
        (out / rel).write_bytes(b"mine")
    stale = out / sorted(written)[0]
    stale.write_bytes(b"the study's, stale")  # a file the study wrote is the study's even when changed
    cfg = write_cfg(tmp_path / "a.yaml", out)
    assert main(["run", "--config", str(cfg), "--fresh"]) == 0
    said = capsys.readouterr().out
    assert "warning: --fresh left 3 files" in said and all(repr(rel) in said for rel in mine)
    assert all((out / rel).read_bytes() == b"mine" for rel in mine)
    assert stale.read_bytes() != b"the study's, stale"  # deleted and rebuilt
    summary = json.loads((out / "summary.json").read_text())
    assert any("--fresh left 3 files" in w for w in summary["warnings"])


# 2 ─ one run per folder: a lock naming its holder, --wait, stale locks taken over


def test_2_a_locked_folder_is_refused_naming_the_holder(study_a, tmp_path, capsys):
    out, d = study_a
    cfg = write_cfg(tmp_path / "c.yaml", out)
    with atomic.FolderLock(out, command="edge-opt run --config other.yaml"):
        assert main(["run", "--config", str(cfg), "--fresh"]) == 2
        lines = errors_of(capsys)
        assert len(lines) == 1 and "in use by another edge-opt run" in lines[0]
        assert "pid " in lines[0] and " on host " in lines[0] and " since " in lines[0] and "other.yaml" in lines[0]
        assert main(["report", str(out)]) == 2 and "in use by another edge-opt run" in errors_of(capsys)[0]
    assert_one_generation(out)  # the refused --fresh run deleted nothing


def test_2_wait_blocks_until_the_holder_releases(tmp_path):
    held = atomic.FolderLock(tmp_path)
    threading.Timer(0.4, held.release).start()
    t0 = time.perf_counter()
    with atomic.FolderLock(tmp_path, wait=True):
        assert time.perf_counter() - t0 >= 0.3


def test_2_a_stale_lock_file_of_a_killed_run_is_taken_over(tmp_path):
    (tmp_path / atomic.FolderLock.FILE).write_text("pid 999999 on host gone since yesterday")
    with atomic.FolderLock(tmp_path) as lock:
        assert f"pid {__import__('os').getpid()}" in lock.path.read_text()


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if path.exists():
            return True
        time.sleep(0.005)
    return False


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-m", "edge_opt.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=ROOT,
    )


@pytest.mark.slow
@pytest.mark.parametrize("second", ["same", "other_fresh"])
def test_2_concurrent_runs_one_proceeds_the_other_exits_2(tmp_path, second):
    out = tmp_path / "out"
    # 40 epochs keep the first run busy for seconds after it takes the lock, however slowly the second starts
    first = _cli("run", "--config", str(write_cfg(tmp_path / "a.yaml", out, epochs=40)), "--quiet")
    assert _wait_for(out / atomic.FolderLock.FILE, first)
    other = (
        write_cfg(tmp_path / "b.yaml", out, pruning_levels=[0.0]) if second == "other_fresh" else tmp_path / "a.yaml"
    )
    late = _cli("run", "--config", str(other), "--quiet", *(["--fresh"] if second == "other_fresh" else []))
    _, err = late.communicate(timeout=120)
    first.communicate(timeout=300)
    assert late.returncode == 2 and "in use by another edge-opt run (pid" in err and "Traceback" not in err
    assert first.returncode in (0, 1)
    assert assert_one_generation(out) == config_from_dict(hostile_dict(out, epochs=40)).config_hash


# 3 ─ mixed studies: a kill at any stage boundary, then `edge-opt report`: one generation


class Killed(BaseException):
    """Stands for SIGKILL at a stage boundary (nothing after it runs but the lock's release)."""


def _kill_at(monkeypatch, stage: str) -> None:
    import edge_opt.pipeline as pipeline
    import edge_opt.report.stage as report_stage
    from edge_opt.study.runner import Sweep

    def die(*a, **k):
        raise Killed(stage)

    if stage == "variants":
        real = Sweep.commit

        def commit(self, result, meta):
            real(self, result, meta)
            raise Killed(stage)

        monkeypatch.setattr(Sweep, "commit", commit)
    else:
        target = {
            "training": (pipeline, "train_baseline"),
            "analysis": (pipeline, "analyse_hardware"),
            "deployment": (pipeline, "simulate_deployment"),
            "report": (report_stage, "write_html_report"),
        }
        monkeypatch.setattr(*target[stage], die)


@pytest.mark.parametrize("stage", ["training", "variants", "analysis", "deployment", "report"])
def test_3_kill_at_each_stage_then_report_gives_one_generation(study_a, monkeypatch, stage):
    out, d = study_a
    b = config_from_dict({**d, "pruning_levels": [0.0, 0.25, 0.5], "max_accuracy_drop": 0.4})
    with monkeypatch.context() as m:
        _kill_at(m, stage)
        with pytest.raises(Killed):
            run_study(b)
    gen, problems = verify_generation(out)
    assert gen is None or (not problems and gen.config_hash == config_from_dict(d).config_hash)  # A whole, or none
    rebuild_report(out)
    assert assert_one_generation(out) == b.config_hash
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_points"] == 3 and not (out / "model").exists()  # no artifact of another config


@pytest.mark.slow
def test_3_real_sigkill_while_writing_outputs_then_report(study_a, tmp_path):
    out, d = study_a
    cfg = write_cfg(tmp_path / "b.yaml", out, max_accuracy_drop=0.3)
    proc = _cli("run", "--config", str(cfg), "--quiet")
    caught = _wait_for(out / ".generation.partial", proc)
    proc.kill()
    proc.wait()
    assert caught, "the run ended before its output phase could be killed"
    assert main(["report", str(out)]) == 0
    assert assert_one_generation(out) == config_from_dict(hostile_dict(out, max_accuracy_drop=0.3)).config_hash


def test_3_report_keeps_the_run_only_outputs_of_an_intact_generation(study_a):
    out, _ = study_a
    before = json.loads((out / "summary.json").read_text())
    rebuild_report(out)
    after = json.loads((out / "summary.json").read_text())
    assert after["recommended"] == before["recommended"] and (out / "model" / "model.onnx").exists()
    assert after["deployment"] == before["deployment"] and (out / "deployment.csv").exists()
    assert (out / "deployment" / "recommended" / "single_stream" / "mlperf_log_summary.txt").exists()  # LoadGen's
    assert_one_generation(out)


def test_3_report_refuses_a_folder_without_a_study(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2 and len(errors_of(capsys)) == 1


# 4 ─ stale outputs: an interrupted re-run with another config keeps nothing of the old study


def test_4_interrupted_rerun_with_a_changed_config_drops_the_old_outputs(study_a):
    out, d = study_a
    assert (out / "model" / "model.onnx").exists() and (out / "deployment.csv").exists()
    b = config_from_dict({**d, "pruning_levels": [0.0, 0.25, 0.5]})
    calls = iter(range(1000))
    with pytest.raises(StudyInterrupted):
        run_study(b, should_stop=lambda: next(calls) >= 1)  # stop after the first variant
    for stale in ("model", "deployment.csv", "hardware_summary.csv", "roofline.png", "precision_tradeoffs.csv"):
        assert not (out / stale).exists(), stale
    assert assert_one_generation(out) == b.config_hash
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True


# 5 ─ pruning is verified: a level that prunes nothing is an error row, real kept channels are recorded


def test_5_a_level_that_prunes_nothing_is_an_error_row(study_a):
    out, d = study_a
    res = run_study(config_from_dict({**d, "pruning_levels": [0.0, 0.5, 0.99]}))
    rows = res.sweep.set_index("pruning_level")
    assert "removed nothing" in rows.loc[0.99, "error"] and not rows.loc[0.99, "accepted"]
    assert rows.loc[0.5, "param_fraction"] < 0.6 and "conv1 4/8" in rows.loc[0.5, "kept_channels"]
    assert rows.loc[0.0, "param_fraction"] == 1.0
    assert res.recommendation is None or res.recommendation.pruning_level != 0.99


def test_5_a_prunable_layer_left_whole_is_named():
    from torch import nn

    from edge_opt.variants.prune import pruning_report

    a = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8, 2))
    b = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    report = pruning_report(a, b, 0.5)
    assert report.untouched == ("0",) and "left the prunable layer(s) ['0'] whole" in report.problem()


# 6 ─ interrupts: every signal at every stage ends with 130/143, the resume hint and no traceback


def _slow_training_cfg(tmp_path: Path) -> Path:
    return write_cfg(tmp_path / "c.yaml", tmp_path / "out", epochs=3000)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig,code,twice", [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)]
)
def test_6_signal_during_training(tmp_path, sig, code, twice):
    proc = _cli("run", "--config", str(_slow_training_cfg(tmp_path)))
    assert _wait_for(tmp_path / "out" / "study.sqlite", proc)
    time.sleep(0.5)
    proc.send_signal(sig)
    if twice:
        time.sleep(0.05)
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and "Traceback" not in err and "Resume with: edge-opt run --config" in err


@pytest.mark.slow
def test_6_signal_during_a_multi_seed_run(tmp_path):
    proc = _cli("run", "--config", str(_slow_training_cfg(tmp_path)), "--seeds", "1", "2")
    assert _wait_for(tmp_path / "out" / "seed_1" / "study.sqlite", proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "--seeds 1 2" in err


def test_6_stop_during_the_deployment_stage_interrupts_the_study(study_a):
    out, d = study_a
    state = {"deploying": False}

    def event(kind, **info):
        if kind == "stage" and info.get("name") == "deployment simulation":
            state["deploying"] = True

    b = config_from_dict({**d, "deployment": {"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01}})
    with pytest.raises(StudyInterrupted) as exc:
        run_study(b, on_event=event, should_stop=lambda: state["deploying"])
    assert exc.value.args[0].summary["interrupted"] is True
    assert_one_generation(out)


# 7 ─ exit 2 with one error line, nothing written


@pytest.mark.parametrize(
    "params,needle", [({"conv1_channels": "abc"}, "conv1_channels"), ({"hidden_units": 100_000_000}, "parameters")]
)
def test_7_bad_model_params_exit_2_before_anything_is_written(tmp_path, capsys, params, needle):
    out = tmp_path / "out"
    cfg = write_cfg(
        tmp_path / "c.yaml",
        out,
        image_size=28,
        model={"name": "small_cnn", "params": {"conv1_channels": 32, "conv2_channels": 64, **params}},
    )
    assert main(["run", "--config", str(cfg)]) == 2
    lines = errors_of(capsys)
    assert len(lines) == 1 and needle in lines[0] and "'model.params'" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "seeds,needle", [(["-1"], "[0, 4294967295]"), (["99999999999"], "[0, 4294967295]"), (["3", "3"], "must not repeat")]
)
def test_7_bad_seeds_exit_2(tmp_path, capsys, seeds, needle):
    cfg = write_cfg(tmp_path / "c.yaml", tmp_path / "out")
    assert main(["run", "--config", str(cfg), "--seeds", *seeds]) == 2
    lines = errors_of(capsys)
    assert len(lines) == 1 and "'--seeds'" in lines[0] and needle in lines[0] and not (tmp_path / "out").exists()


def test_7_seeds_into_an_unwritable_folder_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    cfg = write_cfg(tmp_path / "c.yaml", tmp_path / "file" / "x")
    assert main(["run", "--config", str(cfg), "--seeds", "1"]) == 2
    assert len(errors_of(capsys)) == 1


def test_7_bench_into_an_unwritable_folder_exits_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    t0 = time.perf_counter()
    assert main(["bench", "--output-dir", str(tmp_path / "file" / "x"), "--repeats", "1"]) == 2
    assert "'--output-dir'" in errors_of(capsys)[0] and time.perf_counter() - t0 < 5


@pytest.fixture
def artifact(study_a, tmp_path):
    out, _ = study_a
    model = tmp_path / "model"
    shutil.copytree(out / "model", model)
    return model


def _edit_manifest(model: Path, **changes) -> None:
    m = json.loads((model / "manifest.json").read_text())
    for k, v in changes.items():
        if v is None:
            m.pop(k)
        else:
            m[k] = v
    (model / "manifest.json").write_text(json.dumps(m))


def test_7_predict_checks_the_labels_before_printing_anything(artifact, capsys):
    inputs = artifact / "validation_inputs.npy"
    assert main(["predict", "--model", str(artifact), "--input", str(inputs), "--labels", "missing.npy"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error:") and "Traceback" not in captured.err


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"normalisation": None}, "lacks the key"),
        ({"normalisation": "x"}, "'normalisation'"),
        ({"normalisation": {"mean": 0.0, "std": 0.0}}, "must be positive"),
        ({"model_file": "../../x.onnx"}, "inside"),
    ],
)
def test_7_8_bad_manifests_exit_2(artifact, capsys, change, needle):
    (artifact.parent.parent / "x.onnx").write_bytes((artifact / "model.onnx").read_bytes())
    _edit_manifest(artifact, **change)
    assert main(["predict", "--model", str(artifact), "--input", str(artifact / "validation_inputs.npy")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and needle in captured.err and "Traceback" not in captured.err


def test_7_compare_output_that_is_a_file_exit_2(study_a, tmp_path, capsys):
    out, _ = study_a
    target = tmp_path / "existing"
    target.write_text("keep")
    assert main(["compare", str(out), str(out), "--output", str(target)]) == 2
    assert "'--output'" in errors_of(capsys)[0] and target.read_text() == "keep"


def test_7_compare_names_every_bad_folder_at_once_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("keep")
    (tmp_path / "empty").mkdir()
    args = ["compare", str(tmp_path / "missing"), str(tmp_path / "empty"), "--output", str(tmp_path / "file" / "x")]
    assert main(args) == 2
    errors = errors_of(capsys)
    assert len(errors) == 3 and "'--output'" in errors[0]
    assert "missing" in errors[1] and "empty" in errors[2] and all("holds no study" in e for e in errors[1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file"] and not any((tmp_path / "empty").iterdir())


def test_7_report_and_compare_without_a_recorded_config_exit_2(study_a, capsys):
    out, _ = study_a
    with sqlite3.connect(out / "study.sqlite") as con:
        con.execute("DELETE FROM meta WHERE name = 'config'")
    (out / "reproducibility.json").write_text(json.dumps({"command": []}))
    assert main(["report", str(out)]) == 2 and "cannot tell which config" in errors_of(capsys)[0]
    assert main(["compare", str(out), str(out)]) == 2 and "cannot tell which config" in errors_of(capsys)[0]
    assert main(["status", str(out)]) == 2 and "cannot tell which config" in errors_of(capsys)[0]


@pytest.mark.parametrize("kind", ["junk", "foreign"])
def test_7_a_store_that_is_not_ours_exit_2_before_training(tmp_path, capsys, kind):
    out = tmp_path / "out"
    out.mkdir()
    db = out / "study.sqlite"
    if kind == "junk":
        db.write_bytes(b"junk " * 100)
    else:
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE users (name TEXT)")
    before = db.read_bytes()
    cfg = write_cfg(tmp_path / "c.yaml", out, epochs=3000)  # a traceback after training would take minutes
    for extra in ([], ["--fresh"]):
        assert main(["run", "--config", str(cfg), *extra]) == 2
        assert len(errors_of(capsys)) == 1
    assert db.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["study.sqlite"]


def test_7_compare_of_a_zero_row_study_warns(study_a, tmp_path, capsys):
    out, _ = study_a
    empty = tmp_path / "empty"
    shutil.copytree(out, empty)
    with sqlite3.connect(empty / "study.sqlite") as con:
        con.execute("DELETE FROM results")
    assert main(["compare", str(out), str(empty), "--output", str(tmp_path / "cmp")]) == 0
    captured = capsys.readouterr()
    assert "no finished points" in captured.err and "no common config points" in captured.out


# 8 ─ predict never answers wrong without saying so


def test_8_integer_images_need_a_scale(artifact, tmp_path, capsys):
    x = np.load(artifact / "validation_inputs.npy")
    as_uint8 = tmp_path / "u8.npy"
    np.save(as_uint8, np.round(x * 255 / max(float(x.max()), 1e-9)).astype(np.uint8))
    assert main(["predict", "--model", str(artifact), "--input", str(as_uint8)]) == 2
    assert "--scale" in capsys.readouterr().err
    scale = str(max(float(x.max()), 1e-9) / 255)
    assert main(["predict", "--model", str(artifact), "--input", str(as_uint8), "--scale", scale]) == 0
    scaled = capsys.readouterr().out
    assert main(["predict", "--model", str(artifact), "--input", str(artifact / "validation_inputs.npy")]) == 0
    exact = capsys.readouterr().out.split()
    agree = np.mean(np.array(scaled.split()) == np.array(exact))
    assert agree > 0.9  # 8-bit rounding of the pixels may flip a few


def test_8_nan_input_is_refused(artifact, tmp_path, capsys):
    x = np.load(artifact / "validation_inputs.npy")[:4].copy()
    x[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", x)
    assert main(["predict", "--model", str(artifact), "--input", str(tmp_path / "nan.npy")]) == 2
    assert "NaN" in capsys.readouterr().err


# 9 ─ bounded output


def test_9_nested_aliases_give_a_short_error(tmp_path, capsys):
    levels = ["a: &a [1,1,1,1,1,1,1,1,1]"] + [
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefg", "bcdefgh")
    ]
    text = "\n".join(levels) + "\nmodel: {name: small_cnn, params: {hidden_units: *h}}\n"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert len(err) < 2000 and err.startswith("error:") and "Traceback" not in err


def test_9_unknown_model_param_value_is_shortened():
    from edge_opt.inputs.models import model_param_errors

    (line,) = model_param_errors("small_cnn", {"foo": list(range(100_000))})
    assert len(line) < 400


# 10 ─ accepted without a word: now an error, or a warning where the input is legal


def test_10_duplicate_yaml_keys_are_an_error():
    with pytest.raises(ConfigError, match=r"repeats a key: 'seed' on line 3 \(first on line 1\)"):
        config_from_yaml("seed: 1\nepochs: 2\nseed: 3\n")
    with pytest.raises(ConfigError, match="'conv1_channels'"):
        config_from_yaml("model: {name: small_cnn, params: {conv1_channels: 4, conv1_channels: 8}}\n")


@pytest.mark.parametrize(
    "over,needle",
    [({"latency_batch_size": 65536}, "latency_batch_size"), ({"cpu_frequency_scale": 5e-324}, "cpu_frequency_scale")],
)
def test_10_out_of_range_values_are_errors(tmp_path, over, needle):
    with pytest.raises(ConfigError, match=needle):
        config_from_dict(hostile_dict(tmp_path, **over))


def test_10_suspicious_inputs_are_warned(tmp_path, digits8):
    import os

    from edge_opt.pipeline import input_warnings

    cfg = config_from_dict(
        hostile_dict(
            tmp_path,
            threads=(os.cpu_count() or 1) + 1,
            precisions=["fp32", "int8"],
            quantization={"calibration_batches": 1000},
        )
    )
    text = " ".join(input_warnings(cfg, digits8))
    assert "threads" in text and "cores" in text
    assert "calibration_batches" in text and "holds" in text
    small = config_from_dict(hostile_dict(tmp_path, val_subset=1))
    from edge_opt.inputs.data import load_study_data

    assert any("1 validation image" in w for w in input_warnings(small, load_study_data(small)))


def test_10_compare_of_different_models_warns(study_a, tmp_path, capsys):
    out, d = study_a
    other = tmp_path / "other"
    run_study(
        config_from_dict(
            {
                **d,
                "output_dir": str(other),
                "pruning_levels": [0.0],
                "model": {"name": "small_cnn", "params": {"conv1_channels": 4}},
            }
        )
    )
    assert main(["compare", str(out), str(other), "--output", str(tmp_path / "cmp")]) == 0
    assert "differ in 'model'" in capsys.readouterr().err


def test_10_run_line_counts_the_grid_and_the_extra_baseline(study_a, tmp_path, capsys):
    out, _ = study_a
    cfg = write_cfg(tmp_path / "c.yaml", out)
    assert main(["run", "--config", str(cfg), "--quiet"]) in (0, 1)
    assert "(of 2 config points + the fp32 baseline the grid does not list)" in capsys.readouterr().out


def test_10_readme_agrees_with_the_code():
    import inspect

    from edge_opt.inputs.models import small_cnn

    reference = (ROOT / "docs" / "configuration.md").read_text()
    defaults = {
        k: p.default
        for k, p in inspect.signature(small_cnn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert f"conv1_channels={defaults['conv1_channels']}" in reference.replace(" ", "")
    assert "edge-opt compare" in (ROOT / "docs" / "cli.md").read_text()
