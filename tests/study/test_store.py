import json
import math
import sqlite3

import pytest
import yaml

from edge_opt.cli import main
from edge_opt.study.store import STORE_FORMAT, StoreFormatError, StudyStore


def _legacy_store(folder):
    """A study.sqlite as releases before the record format wrote it (flat rows in ``points``)."""
    folder.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(folder / "study.sqlite")
    con.executescript(
        "CREATE TABLE points (key TEXT PRIMARY KEY, kind TEXT NOT NULL, row_json TEXT NOT NULL, "
        "record_json TEXT, created REAL NOT NULL);"
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
    )
    con.execute("INSERT INTO points VALUES ('k', 'variant', '{\"accuracy\": 0.9}', NULL, 0)")
    con.commit()
    con.close()


def test_documents_round_trip_with_nan_and_format_recorded(tmp_path):
    with StudyStore(tmp_path / "s.sqlite") as store:
        store.put("a", {"x": math.nan, "y": [1.0, math.inf]})
        assert math.isnan(store.get("a")["x"]) and store.get("a")["y"][1] == math.inf
        assert store.get("missing") is None and store.keys() == ["a"] and store.count() == 1
        assert store.get_meta("store_format") == STORE_FORMAT
    with StudyStore(tmp_path / "s.sqlite") as store:  # reopening a store of this format is fine
        assert store.count() == 1


def test_store_of_an_earlier_release_is_refused_with_a_fresh_hint(tmp_path):
    _legacy_store(tmp_path)
    with pytest.raises(StoreFormatError, match="--fresh"):
        StudyStore(tmp_path / "study.sqlite")


def test_not_a_database_is_refused(tmp_path):
    (tmp_path / "study.sqlite").write_text("not sqlite at all " * 100)
    with pytest.raises(StoreFormatError, match="not a study store"):
        StudyStore(tmp_path / "study.sqlite")


def test_cli_refuses_an_old_store_with_one_error_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    _legacy_store(out)
    before = sorted(p.name for p in out.iterdir())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"output_dir": str(out), "image_size": 8, "epochs": 1}))
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--fresh" in err[0] and "Traceback" not in err[0]
    assert sorted(p.name for p in out.iterdir()) == before
    (out / "reproducibility.json").write_text(json.dumps({"config": {"output_dir": str(out)}}))
    assert main(["status", str(out)]) == 2 and "--fresh" in capsys.readouterr().err
    assert main(["report", str(out)]) == 2 and "--fresh" in capsys.readouterr().err


def test_one_run_per_output_folder(tmp_path, capsys):
    from edge_opt import atomic

    out = tmp_path / "out"
    out.mkdir()
    held = atomic.FolderLock(out)  # another run holds the folder
    try:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump({"output_dir": str(out), "image_size": 8, "epochs": 1}))
        assert main(["run", "--config", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert "is in use by another edge-opt run" in err and "'output_dir'" in err and "Traceback" not in err
        assert sorted(p.name for p in out.iterdir()) == [".edge_opt.lock"]  # nothing else written
    finally:
        held.release()
    again = atomic.FolderLock(out)  # released: the folder is free again
    again.release()


def test_second_signal_aborts_without_a_traceback(tmp_path, capsys, monkeypatch):
    import edge_opt.pipeline

    def abort(*args, **kwargs):
        raise KeyboardInterrupt  # what the CLI's handler raises on a second SIGINT

    monkeypatch.setattr(edge_opt.pipeline, "run_study", abort)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out")}))
    assert main(["run", "--config", str(cfg)]) == 130
    err = capsys.readouterr().err
    assert err.startswith("aborted: finished points are kept") and "Resume with: edge-opt run --config" in err
