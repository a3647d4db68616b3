"""Optuna search over the config points: config, space, hypervolume on a replayed 228-point space, resume after
SIGKILL, timeout and goal stops, and a real study searched end to end."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import cli_env, tiny_config_dict
from edge_opt.config import ConfigError, config_from_dict
from edge_opt.study.search import SEARCH_FILE, hypervolume_2d, search_space
from search_fixture import reference, replay_config, replay_search, score, table

HERE = Path(__file__).resolve().parents[1]  # tests/: where search_fixture.py lives


# --- config ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "search,needle",
    [
        ({"strategy": "tpe"}, "needs 'n_trials' or 'timeout_s'"),
        ({"strategy": "nsga2", "n_trials": 0}, "search.n_trials"),
        ({"strategy": "random", "n_trials": 5}, "search.strategy"),
        ({"strategy": "nsga2", "n_trials": 5, "objectives": ["accuracy"]}, "search.objectives"),
        (
            {"strategy": "nsga2", "n_trials": 5, "objectives": ["accuracy", "memory"]},
            "must include 'accuracy' and 'latency'",
        ),
        ({"strategy": "nsga2", "n_trials": 5, "stop_when": "soon"}, "search.stop_when"),
    ],
)
def test_bad_search_settings_name_the_key(tmp_path, search, needle):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny_config_dict(tmp_path, search=search))
    assert needle in "\n".join(err.value.errors)


def test_a_pruning_range_becomes_the_levels_and_not_both_forms(tmp_path):
    d = tiny_config_dict(tmp_path, pruning_range=[0.1, 0.5], pruning_step=0.2)
    d.pop("pruning_levels")
    cfg = config_from_dict(d)
    assert cfg.pruning_levels == [0.1, 0.3, 0.5]
    again = config_from_dict(cfg.model_dump(mode="json"))  # a recorded config holds both forms, agreeing
    assert again.pruning_levels == cfg.pruning_levels
    with pytest.raises(ConfigError, match="not both"):
        config_from_dict(tiny_config_dict(tmp_path, pruning_range=[0.1, 0.5], pruning_levels=[0.0]))


def test_search_needs_the_local_executor(tmp_path):
    with pytest.raises(ConfigError, match="local executor"):
        config_from_dict(tiny_config_dict(tmp_path, executor="ray", search={"strategy": "tpe", "n_trials": 4}))


# --- space and hypervolume -------------------------------------------------------------------------------------


def test_the_replayed_space_has_more_than_200_points(tmp_path):
    cfg = replay_config(tmp_path, "nsga2", 0)
    space = search_space(cfg)
    assert space.size == len(table()) == 228 and cfg.search.n_trials == 57  # 25 % of the points
    assert space.step == 0.05 and len(space.calibrations) == 4


def test_hypervolume_2d_of_known_points():
    ref = (0.5, 10.0)
    assert hypervolume_2d([(0.9, 2.0)], ref) == pytest.approx(0.4 * 8.0)
    # a dominated point adds nothing; a second front point adds its own strip
    assert hypervolume_2d([(0.9, 2.0), (0.8, 5.0)], ref) == pytest.approx(0.4 * 8.0)
    assert hypervolume_2d([(0.7, 1.0), (0.9, 2.0)], ref) == pytest.approx(0.2 * 1.0 + 0.4 * 8.0)
    assert hypervolume_2d([(0.4, 1.0)], ref) == 0.0  # outside the reference box


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nsga2_with_a_quarter_of_the_points_reaches_90_percent_of_the_hypervolume(tmp_path, seed):
    outcome = replay_search(tmp_path, "nsga2", seed)
    s = score(outcome)
    assert s["distinct"] == 57 and outcome.stopped_by.startswith("n_trials")
    assert s["fraction"] >= 0.90, s


def test_tpe_is_scored_on_the_same_space(tmp_path):
    s = score(replay_search(tmp_path, "tpe", 0))
    assert s["distinct"] == 57 and 0.0 < s["fraction"] <= 1.0 + 1e-9
    print(f"TPE seed 0: {s['fraction']:.3f} of the exhaustive hypervolume (reference {reference()})")


def test_duplicate_proposals_cost_nothing_and_do_not_use_the_budget(tmp_path):
    outcome = replay_search(tmp_path, "nsga2", 0, n_trials=40)
    dupes = [t for t in outcome.trials if t.how == "duplicate"]
    assert len(outcome.points) == 40 and len(outcome.trials) == 40 + len(dupes)
    assert all(t.measure_s == 0.0 for t in dupes)


# --- stopping --------------------------------------------------------------------------------------------------


def test_timeout_stops_the_search_and_keeps_the_best_so_far(tmp_path):
    outcome = replay_search(tmp_path, "tpe", 0, n_trials=200, delay_s=0.05, timeout_s=1.0)
    assert outcome.stopped_by.startswith("timeout_s") and 0 < len(outcome.points) < 200
    assert outcome.best is not None and outcome.best.feasible


def test_goals_met_stops_after_patience_trials_without_a_better_point(tmp_path):
    outcome = replay_search(tmp_path, "nsga2", 0, n_trials=200, stop_when="goals_met", patience=5)
    assert outcome.stopped_by.startswith("goals_met")
    best_at = max(i for i, p in enumerate(outcome.points) if p == outcome.best.point)
    assert len(outcome.points) - 1 - best_at == 5 and len(outcome.points) < 200
    first = replay_search(tmp_path / "first", "nsga2", 0, n_trials=200, stop_when="goals_met", patience=0)
    assert first.trials[-1].feasible and sum(t.feasible for t in first.trials) == 1  # "first feasible"


# --- resume after SIGKILL --------------------------------------------------------------------------------------

_RUNNER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from search_fixture import replay_search
replay_search(Path({folder!r}), "nsga2", 1, delay_s={delay}, log=Path({log!r}))
"""


def _complete_trials(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _run(folder: Path, log: Path, delay: float) -> subprocess.Popen:
    code = _RUNNER.format(tests=str(HERE), folder=str(folder), delay=delay, log=str(log))
    return subprocess.Popen(
        [sys.executable, "-c", code], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.timeout(300)
def test_a_killed_search_resumes_without_rerunning_a_trial_and_ends_on_the_same_frontier(tmp_path):
    killed, log = tmp_path / "killed", tmp_path / "evaluations.jsonl"
    proc = _run(killed, log, delay=0.1)
    deadline = time.time() + 120
    while _complete_trials(killed / SEARCH_FILE) < 12 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = [json.loads(line) for line in log.read_text().splitlines()]
    assert 5 <= len(before) < 57  # killed mid-way (duplicates among the 12 trials cost no evaluation)
    log.write_text("")
    resumed = _run(killed, log, delay=0.0)
    assert resumed.wait(timeout=180) == 0, resumed.stderr.read() if resumed.stderr else ""
    after = [json.loads(line) for line in log.read_text().splitlines()]
    finished_before = before[:-1]  # the last one may have been cut off by the kill
    assert not [p for p in after if p in finished_before]  # no finished trial runs again
    again = replay_search(killed, "nsga2", 1)  # reads the finished search back (nothing left to run)
    straight = replay_search(tmp_path / "straight", "nsga2", 1)
    assert again.points == straight.points  # the same trials, in the same order
    assert _frontier(again) == _frontier(straight)


def _frontier(outcome) -> set:
    values = table()
    ok = [(values[p].accuracy, values[p].latency_ms, p) for p in outcome.points if values[p].feasible]
    return {p for a, lat, p in ok if not any(a2 >= a and l2 <= lat and (a2, l2) != (a, lat) for a2, l2, _ in ok)}


# --- a real study, searched --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_searched_study_writes_its_history_and_a_grid_reuses_its_points(tmp_path):
    from edge_opt.pipeline import run_study

    over = {
        "pruning_levels": [0.0, 0.5],
        "search": {"strategy": "nsga2", "n_trials": 6, "seed": 3},
        "memory_budgets_mb": [0.002, 0.1],
        "active_memory_budget_mb": 0.002,
    }  # most points break 2 kB
    cfg = config_from_dict(tiny_config_dict(tmp_path / "out", **over))
    res = run_study(cfg)
    hist = pd.read_csv(tmp_path / "out" / "search_history.csv")
    assert {
        "trial",
        "pruning_level",
        "precision",
        "backend",
        "accuracy",
        "latency_ms",
        "feasible",
        "wall_s",
        "measure_s",
        "how",
    } <= set(hist.columns)
    assert hist.loc[hist["how"] != "duplicate", "pruning_level"].size == 6
    untimed = hist[hist["how"] == "untimed"]
    assert len(untimed) >= 1 and (untimed["measure_s"] == 0).all() and (~untimed["feasible"]).all()
    assert untimed["reason"].str.contains("built, not timed").all()
    assert res.summary["search"]["strategy"] == "nsga2" and res.summary["search"]["distinct_points"] == 6
    assert res.summary["total_points"] == 12  # the space, not the trials
    st = subprocess.run(
        [sys.executable, "-m", "edge_opt.cli", "status", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert st.returncode == 0 and "search nsga2:" in st.stdout and "of 6 distinct points" in st.stdout
    measured = int((hist["how"] == "measured").sum())
    grid = run_study(cfg.model_copy(update={"search": cfg.search.model_copy(update={"strategy": "grid"})}))
    assert grid.reused >= measured and grid.reused + grid.computed == 12  # the untimed points are measured now
    assert math.isfinite(grid.sweep["latency_ms"].min())


class _Killed(BaseException):
    """Stands for a kill in the middle of a trial (nothing after it runs)."""


@pytest.mark.parametrize("cut_at", [3, 10, 25])
def test_a_trial_cut_off_mid_way_is_finished_first_and_the_search_continues_as_if_never_stopped(tmp_path, cut_at):
    from edge_opt.measure.records import VariantResult
    from edge_opt.study.search import run_search

    values, calls = table(), []
    cfg = replay_config(tmp_path / "cut", "nsga2", 1)

    def evaluate(p):
        calls.append(p)
        if len(calls) == cut_at:
            raise _Killed  # the trial stays RUNNING in search.sqlite, as after a SIGKILL
        return VariantResult(point=p, key="replay"), "stored"

    with pytest.raises(_Killed):
        run_search(cfg, evaluate, lambda r: values[r.point], tmp_path / "cut")
    resumed = replay_search(tmp_path / "cut", "nsga2", 1)
    straight = replay_search(tmp_path / "straight", "nsga2", 1)
    assert resumed.points == straight.points and [t.number for t in resumed.trials] == [
        t.number for t in straight.trials
    ]


# --- a damaged search.sqlite -------------------------------------------------------------------------------------


def _random_bytes(path: Path) -> None:
    import random

    path.write_bytes(random.Random(0).randbytes(8192))


def _truncated(path: Path) -> None:
    whole = path.parent.parent / "whole"  # a real search store, beside the study folder
    replay_search(whole, "nsga2", 1, n_trials=4)
    data = (whole / SEARCH_FILE).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE photos (name TEXT)")
    con.close()


DAMAGES = {"random bytes": _random_bytes, "truncated": _truncated, "another program's": _foreign}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_search_store_is_refused_naming_it_and_left_untouched(tmp_path, damage):
    from edge_opt.measure.records import VariantResult
    from edge_opt.study.search import load_search, run_search, search_progress

    folder = tmp_path / "study"
    folder.mkdir()
    DAMAGES[damage](folder / SEARCH_FILE)
    before = (folder / SEARCH_FILE).read_bytes()
    cfg = replay_config(folder, "nsga2", 1, n_trials=4)
    values = table()
    calls = [
        lambda: load_search(cfg, folder),
        lambda: search_progress(folder),
        lambda: run_search(
            cfg, lambda p: (VariantResult(point=p, key="replay"), "stored"), lambda r: values[r.point], folder
        ),
    ]
    for call in calls:
        with pytest.raises(ConfigError) as err:
            call()
        (message,) = err.value.errors
        assert str(folder / SEARCH_FILE) in message and "remove it" in message
        assert ("another program" if damage == "another program's" else "is damaged") in message
    assert (folder / SEARCH_FILE).read_bytes() == before  # nothing written into it (no Optuna tables added)


def _searched_folder(tmp_path: Path, damage: str) -> tuple[Path, Path]:
    """A study folder whose store records a searched config, with a damaged search.sqlite (and its YAML config)."""
    import yaml

    from edge_opt.study.store import StudyStore

    out = tmp_path / "out"
    d = tiny_config_dict(
        out,
        epochs=1,
        fine_tune_epochs=0,
        pruning_levels=[0.0, 0.5],
        precisions=["fp32"],
        backends=["onnxruntime"],
        search={"strategy": "nsga2", "n_trials": 2, "seed": 1},
    )
    with StudyStore(out / "study.sqlite") as store:
        store.set_meta("config", config_from_dict(d).model_dump(mode="json"))
    DAMAGES[damage](out / SEARCH_FILE)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(d))
    return out, tmp_path / "c.yaml"


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_status_and_report_on_a_damaged_search_store_exit_2_with_one_error_line(tmp_path, capsys, damage):
    from edge_opt.cli import main

    out, cfg = _searched_folder(tmp_path, damage)
    before = (out / SEARCH_FILE).read_bytes()
    for argv in (["status", str(out)], ["status", str(out), "--config", str(cfg)], ["report", str(out)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), argv
        assert SEARCH_FILE in lines[0] and "remove it" in lines[0], argv
    assert (out / SEARCH_FILE).read_bytes() == before


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_run_on_a_damaged_search_store_exits_2_before_training_and_writes_nothing(tmp_path, capsys, damage):
    from edge_opt.cli import main

    out, cfg = _searched_folder(tmp_path, damage)
    before = (out / SEARCH_FILE).read_bytes()
    assert main(["run", "--config", str(cfg), "--quiet"]) == 2  # refused before anything is trained
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(lines) == 1 and SEARCH_FILE in lines[0]
    assert (out / SEARCH_FILE).read_bytes() == before
    assert {p.name for p in out.iterdir() if not p.name.startswith("study.sqlite")} == {SEARCH_FILE}  # no outputs
