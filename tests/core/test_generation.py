import csv

import numpy as np
from PIL import Image

from edge_opt.core.generation import stamp_outputs


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
