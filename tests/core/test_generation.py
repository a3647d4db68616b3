import csv

import numpy as np
from PIL import Image

from edge_opt.core.generation import close_cache_ledger, open_cache_ledger, remove_study, stamp_outputs


def test_a_csv_gets_the_config_hash_column_and_keeps_every_cell_as_written(tmp_path):
    rows = [["key", "latency_samples_ms", "note"], ["a", "[0.1, 0.2]", ""], ["b", "1e-05", 'say "hi", twice']]
    with open(tmp_path / "t.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    assert stamp_outputs(tmp_path, ["t.csv"], "h1") == ["t.csv"]
    stamp_outputs(tmp_path, ["t.csv"], "h2")  # a second stamp replaces the column, never adds one
    with open(tmp_path / "t.csv", newline="", encoding="utf-8") as fh:
        back = list(csv.reader(fh))
    assert back == [[*rows[0], "config_hash"], [*rows[1], "h2"], [*rows[2], "h2"]]


def test_a_png_gets_one_config_hash_chunk_and_the_same_pixels(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    stamp_outputs(tmp_path, ["p.png"], "h1")
    stamp_outputs(tmp_path, ["p.png"], "h2")
    with Image.open(tmp_path / "p.png") as image:
        image.load()
        assert image.info["config_hash"] == "h2" and np.array_equal(np.asarray(image), pixels)
    assert (tmp_path / "p.png").read_bytes().count(b"config_hash") == 1
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert stamp_outputs(tmp_path, ["bad.png"], "h3") == []


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_fresh_deletes_the_cache_files_a_run_wrote_and_keeps_the_users(tmp_path):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "hand_optimised.onnx").write_bytes(b"mine")  # there before the study ran
    open_cache_ledger(tmp_path)
    for rel in ("onnx/m_fp32.onnx", "onnx/openvino/m.xml", "checkpoints/pruned_a.pt", "variants/v.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"study")
    close_cache_ledger(tmp_path)
    (tmp_path / "checkpoints" / "later.pt").write_bytes(b"mine")  # dropped in between runs
    kept = remove_study(tmp_path)
    assert kept == ["checkpoints/later.pt", "onnx/hand_optimised.onnx"]
    assert _files(tmp_path) == kept
    assert not (tmp_path / "variants").exists() and not (tmp_path / "onnx" / "openvino").exists()


def test_a_killed_run_leaves_its_note_and_its_files_are_still_the_studys(tmp_path):
    (tmp_path / "variants").mkdir()
    (tmp_path / "variants" / "notes.txt").write_text("mine")
    open_cache_ledger(tmp_path)
    (tmp_path / "variants" / "v.json").write_text("{}")  # written, then the run is killed: no close
    open_cache_ledger(tmp_path)  # the next run settles the killed one
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "x.onnx").write_bytes(b"study")  # and is killed too
    assert remove_study(tmp_path) == ["variants/notes.txt"]
    assert _files(tmp_path) == ["variants/notes.txt"]


def test_fresh_never_enters_a_linked_cache_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.onnx").write_bytes(b"mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / "onnx").symlink_to(elsewhere)
    open_cache_ledger(out)
    close_cache_ledger(out)
    assert remove_study(out) == ["onnx"]
    assert (elsewhere / "keep.onnx").read_bytes() == b"mine"
