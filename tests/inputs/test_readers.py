"""Hostile data for every reader: npz arrays, calibration arrays, image folders, dataset callables and the
datasets/arrays handed to ``edge_opt.optimize`` — each a clean ``DataError`` naming what was given and what is
expected (the CLI: exit 2, one ``error:`` line, nothing written)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from edge_opt.cli import main
from edge_opt.config import config_from_dict
from edge_opt.inputs import DataError, dataset_arrays, images_from_array, load_study_data, read_image_folder, read_npz


def _run_cli(tmp_path: Path, capsys, cfg: dict) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), **cfg}))
    code = main(["run", "--config", str(p)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "out").exists()
    return err[0]


def _npz(path: Path, n: int = 16, dtype=np.uint8, shape=(8, 8)) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, *shape)).astype(dtype)
    np.savez(path, x_val=x, y_val=np.arange(n) % 4)
    return path


# --- 4 and 13: user datasets -------------------------------------------------------------------------------


class EndlessMapDataset:
    """Map-style: __len__ says 6, __getitem__ answers any index (never IndexError)."""

    def __init__(self) -> None:
        self.calls = 0

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        self.calls += 1
        if self.calls > 1000:
            raise RuntimeError("read far past len()")
        return torch.full((1, 8, 8), 0.5), i % 3


def test_map_style_dataset_is_read_by_index_up_to_its_len():
    ds = EndlessMapDataset()
    images, labels, scale = dataset_arrays(ds, "The val_data dataset")
    assert images.shape == (6, 1, 8, 8) and labels.tolist() == [0, 1, 2, 0, 1, 2] and scale == 1.0
    assert ds.calls == 6


def test_dataset_callable_returning_an_endless_map_style_dataset(tmp_path):
    (tmp_path / "endless.py").write_text(
        "import torch\n"
        "class D:\n"
        "    def __len__(self):\n"
        "        return 5\n"
        "    def __getitem__(self, i):\n"
        "        if i > 1000:\n"
        "            raise RuntimeError('read far past len()')\n"
        "        return torch.zeros(1, 8, 8), i % 2\n"
        "def make():\n"
        "    return None, D()\n"
    )
    data = load_study_data(config_from_dict({"dataset": "endless:make", "config_dir": str(tmp_path)}))
    assert data.n_val == 5


def _optimize(tmp_path: Path, val_data, **kw):
    import edge_opt

    # a model that does not fit the data: the old code failed on it fast instead of running a study
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 4))
    return edge_opt.optimize(model, val_data, output_dir=tmp_path / "o", **kw)


def test_optimize_refuses_an_iterable_without_len(tmp_path):
    items = ((torch.zeros(1, 8, 8), i % 2) for i in range(6))
    with pytest.raises(
        DataError, match=r"The val_data dataset \(a generator\) has no len\(\).*__getitem__.*list\(\.\.\.\)"
    ):
        _optimize(tmp_path, items)
    assert not (tmp_path / "o").exists()


def test_iterable_with_len_must_yield_that_many():
    class Lying(torch.utils.data.IterableDataset):
        def __len__(self):
            return 3

        def __iter__(self):
            return iter([(torch.zeros(1, 8, 8), 0)] * 10)

    with pytest.raises(DataError, match=r"more items than its len\(\) of 3"):
        dataset_arrays(Lying(), "The val_data dataset")

    class Short(Lying):
        def __len__(self):
            return 20

    with pytest.raises(DataError, match=r"yields 10 items but its len\(\) is 20"):
        dataset_arrays(Short(), "The val_data dataset")
    with pytest.raises(DataError, match=r"\(a dict\) is not a dataset"):
        dataset_arrays({0: (np.zeros((1, 8, 8)), 0)}, "The val_data dataset")


@pytest.mark.parametrize(
    "val_data,needles",
    [
        (
            [{"image": np.zeros((1, 8, 8), np.float32), "label": 1}] * 4,
            ["item 0 is a dict", "'image'", "(image, label)"],
        ),
        (([[0.0, 1.0], [2.0]], [0, 1]), ["The val_data images", "could not be made an array", "inhomogeneous"]),
        ([(np.zeros((1, 0, 8), np.float32), 1)] * 4, ["no pixels", "(4, 1, 0, 8)"]),
        ((np.zeros((3, 0, 8)), np.zeros(3, int)), ["The val_data images", "no pixels", "(3, 0, 8)"]),
        ([(np.zeros((0,), np.float32), 1)] * 4, ["item 0", "(C, H, W) or (H, W)", "(0,)"]),
        ([(np.zeros((1, 8, 8), np.float32), np.array([1, 2]))] * 3, ["label of item 0", "one class id", "(2,)"]),
        ([(np.zeros((1, 8, 8), np.float32), 0), (np.zeros((1, 8, 8), np.uint8), 1)], ["different dtypes"]),
        ([], ["The val_data dataset is empty"]),
    ],
)
def test_optimize_bad_datasets_are_clean_data_errors(tmp_path, val_data, needles):
    with pytest.raises(DataError) as info:
        _optimize(tmp_path, val_data)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_optimize_dataset_whose_items_call_sys_exit(tmp_path):
    class Exiting:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            raise SystemExit(3)

    with pytest.raises(DataError, match=r"The val_data dataset\[0\] called sys.exit\(3\)"):
        _optimize(tmp_path, Exiting())


def test_optimize_dataset_scale_comes_from_the_item_dtype():
    items = [(np.full((1, 8, 8), 255, np.uint8), i % 2) for i in range(4)]
    images, _, scale = dataset_arrays(items, "The val_data dataset")
    assert scale == pytest.approx(1 / 255) and images.max() == 255


# --- 9: the dataset: callable ending the process ----------------------------------------------------------------


def test_dataset_callable_calling_sys_exit_is_a_data_error(tmp_path, capsys):
    (tmp_path / "quits.py").write_text(
        "import sys\n"
        "def make():\n"
        "    sys.exit(3)\n"
        "class D:\n"
        "    def __len__(self):\n"
        "        return 2\n"
        "    def __getitem__(self, i):\n"
        "        raise SystemExit(4)\n"
        "def items():\n"
        "    return None, D()\n"
    )
    err = _run_cli(tmp_path, capsys, {"dataset": "quits:make", "config_dir": str(tmp_path)})
    assert "'quits:make'" in err and "sys.exit(3)" in err
    err = _run_cli(tmp_path, capsys, {"dataset": "quits:items", "config_dir": str(tmp_path)})
    assert "The val dataset of 'quits:items'[0]" in err and "sys.exit(4)" in err


# --- 5: calibration images get their own scale, and must have the data's shape -------------------------------


def _calib_cfg(tmp_path: Path, calib: Path) -> dict:
    return {
        "dataset": "npz",
        "data_path": str(_npz(tmp_path / "d.npz")),
        "calibration_data_path": str(calib),
        "batch_size": 8,
        "model": {"onnx": "m.onnx"},  # arrives trained: no mean/std, so the batches are the scaled images
    }


def test_float_calibration_images_in_0_1_are_not_divided_by_255_again(tmp_path):
    x = np.random.default_rng(1).random((8, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    data = load_study_data(config_from_dict(_calib_cfg(tmp_path, tmp_path / "c.npz")))
    torch.testing.assert_close(data.calibration_batches(1)[0], torch.from_numpy(x[:, None]))


def test_uint8_calibration_images_for_float_data_are_scaled_by_1_over_255(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (8, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "c.npz", x=x)
    cfg = _calib_cfg(tmp_path, tmp_path / "c.npz")
    cfg["data_path"] = str(_npz(tmp_path / "f.npz", dtype=np.float32))
    data = load_study_data(config_from_dict(cfg))
    assert data.preprocess.scale == 1.0
    torch.testing.assert_close(data.calibration_batches(1)[0], torch.from_numpy(x[:, None].astype(np.float32) / 255))


@pytest.mark.parametrize("shape,given", [((8, 3, 8, 8), "(3, 8, 8)"), ((8, 16, 16), "(1, 16, 16)")])
def test_calibration_images_of_another_shape_name_both(tmp_path, capsys, shape, given):
    np.savez(tmp_path / "c.npz", x=np.zeros(shape, np.uint8))
    err = _run_cli(tmp_path, capsys, _calib_cfg(tmp_path, tmp_path / "c.npz"))
    assert "calibration_data_path" in err and given in err and "(1, 8, 8)" in err


def test_optimize_calibration_data_of_another_shape(tmp_path):
    x = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(DataError, match=r"calibration_data.*\(3, 8, 8\).*\(1, 8, 8\)"):
        _optimize(tmp_path, (x, np.arange(8) % 4), calibration_data=np.zeros((4, 3, 8, 8), np.float32))


def test_optimize_calibration_data_gets_its_own_scale():
    from edge_opt.inputs import read_in_memory, read_in_memory_calibration

    raw = read_in_memory((np.full((4, 8, 8), 255, np.uint8), np.arange(4)), None, "auto")
    assert raw.default_scale == pytest.approx(1 / 255)
    calib = read_in_memory_calibration(np.full((2, 1, 8, 8), 0.5, np.float32), raw, "auto")
    np.testing.assert_allclose(calib * raw.default_scale, 0.5, rtol=1e-6)  # not 0.5 / 255


def test_npz_training_images_of_another_dtype_get_their_own_scale(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(
        p,
        x_train=np.full((4, 8, 8), 0.5, np.float32),
        y_train=np.arange(4),
        x_val=np.full((4, 8, 8), 255, np.uint8),
        y_val=np.arange(4),
    )
    raw = read_npz(str(p))
    np.testing.assert_allclose(raw.images * raw.default_scale, 0.5, rtol=1e-6)
    np.testing.assert_allclose(raw.val_images * raw.default_scale, 1.0, rtol=1e-6)


# --- 6: integer images other than uint8 are refused, as predict refuses them -----------------------------------


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.int8, np.uint16, np.bool_])
def test_integer_images_other_than_uint8_are_refused(tmp_path, dtype):
    p = _npz(tmp_path / "d.npz", dtype=dtype)
    with pytest.raises(DataError) as info:
        read_npz(str(p))
    msg = str(info.value)
    assert "'x_val'" in msg and str(np.dtype(dtype)) in msg and "uint8" in msg and "float" in msg


def test_optimize_int32_arrays_are_refused():
    with pytest.raises(DataError, match=r"dtype int32.*uint8"):
        images_from_array(np.zeros((4, 8, 8), np.int32), "auto", "The val_data images", None)


def test_int16_images_through_the_cli(tmp_path, capsys):
    err = _run_cli(tmp_path, capsys, {"dataset": "npz", "data_path": str(_npz(tmp_path / "d.npz", dtype=np.int16))})
    assert "int16" in err and "uint8" in err


# --- 10: object arrays are refused cleanly and never unpickled ------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_object_arrays_are_a_clean_error_and_never_unpickled(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = np.array([_Evil(marker)] * 4, dtype=object)
    np.savez(tmp_path / "obj.npz", x_val=evil, y_val=np.arange(4))
    err = _run_cli(tmp_path, capsys, {"dataset": "npz", "data_path": str(tmp_path / "obj.npz")})
    assert "'x_val'" in err and "obj.npz" in err and "Python objects" in err and "allow_pickle" not in err
    np.savez(tmp_path / "c.npz", x=evil)
    err = _run_cli(tmp_path, capsys, _calib_cfg(tmp_path, tmp_path / "c.npz"))
    assert "'x'" in err and "c.npz" in err and "Python objects" in err
    assert not marker.exists()


# --- 11: one image reader for train/ and val/: corrupt files, symlink loops, decompression bombs -------------------


def _folder(root: Path, bad: str | None = None, split: str = "train", make_bad=None) -> Path:
    from PIL import Image

    for s in ("train", "val"):
        for c in ("a", "b"):
            (root / s / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(root / s / c / f"{i}.png")
    if bad is not None:
        make_bad(root / split / "a" / bad)
    return root


def _corrupt(p: Path) -> None:
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)


def _loop(p: Path) -> None:
    os.symlink(p.name, p)


def _bomb(size: int):
    def make(p: Path) -> None:
        from PIL import Image

        Image.fromarray(np.zeros((size, size), np.uint8)).save(p)

    return make


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize(
    "make_bad,needle",
    [(_corrupt, "could not be read"), (_loop, "could not be read"), (_bomb(7), "bomb"), (_bomb(9), "bomb")],
)
def test_bad_images_in_either_split_name_the_file(tmp_path, monkeypatch, split, make_bad, needle):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 7×7 = 49: the warning; 9×9 = 81 > 2×40: the error
    root = _folder(tmp_path / "imgs", "z.png", split, make_bad)
    with pytest.raises(DataError) as info:
        read_image_folder(str(root))
    assert str(root / split / "a" / "z.png") in str(info.value) and needle in str(info.value)


def test_corrupt_png_in_train_through_the_cli(tmp_path, capsys):
    root = _folder(tmp_path / "imgs", "z.png", "train", _corrupt)
    err = _run_cli(tmp_path, capsys, {"dataset": "image_folder", "data_dir": str(root)})
    assert "z.png" in err and "could not be read" in err


def test_good_image_folder_still_reads(tmp_path):
    raw = read_image_folder(str(_folder(tmp_path / "imgs")))
    assert raw.images.shape == (4, 1, 4, 4) and raw.val_images is not None and raw.default_scale == 1 / 255
