import gzip
import struct

import numpy as np
import pytest

from edge_opt.core.registry import UnknownNameError
from edge_opt.inputs.data import DataError, RawDataset, list_datasets, load_data, make_loaders, read_idx


def _write_idx(path, arr, dtype_code=0x08, gz=False):
    header = bytes([0, 0, dtype_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    blob = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(blob)


def _mnist_dir(tmp_path, n=20, gz=False, labels=None, images=None):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for split in ("train", "t10k"):
        imgs = images if images is not None else rng.integers(0, 255, (n, 28, 28))
        lbls = labels if labels is not None else rng.integers(0, 10, n)
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte{ext}", imgs, gz=gz)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte{ext}", lbls, gz=gz)
    return tmp_path


def test_registry_lists_offline_sets():
    assert {"digits", "mnist", "fashion-mnist", "synthetic"} <= set(list_datasets())


def test_digits_default_shape_and_deterministic_split():
    a = load_data("digits", image_size=28, batch_size=32, dataloader_seed=3)
    b = load_data("digits", image_size=28, batch_size=32, dataloader_seed=3)
    c = load_data("digits", image_size=28, batch_size=32, dataloader_seed=4)
    assert a.input_shape == (1, 28, 28) and a.num_classes == 10
    assert a.n_train + a.n_val == 1797
    assert np.array_equal(a.val_labels, b.val_labels) and not np.array_equal(a.val_labels, c.val_labels)
    x, _ = next(iter(a.val_loader))
    assert abs(float(x.mean())) < 0.5  # normalised


def test_subsets():
    d = load_data("digits", image_size=8, train_subset=100, val_subset=50)
    assert d.n_train == 100 and d.n_val == 50


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_raw_and_gz(tmp_path, gz):
    d = load_data("mnist", data_dir=str(_mnist_dir(tmp_path, gz=gz)), batch_size=8)
    assert d.input_shape == (1, 28, 28) and d.n_train + d.n_val == 40


def test_missing_idx_file_names_file_and_folder(tmp_path):
    with pytest.raises(DataError) as info:
        load_data("fashion-mnist", data_dir=str(tmp_path))
    assert "train-images-idx3-ubyte" in str(info.value) and str(tmp_path) in str(info.value)


def test_corrupt_idx(tmp_path):
    d = _mnist_dir(tmp_path)
    (d / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 10)
    with pytest.raises(DataError) as info:
        load_data("mnist", data_dir=str(d))
    assert "train-images-idx3-ubyte" in str(info.value) and "corrupt" in str(info.value)


def test_bad_magic(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(DataError, match="magic"):
        read_idx(p)


def test_labels_out_of_range(tmp_path):
    d = _mnist_dir(tmp_path, labels=np.array([0, 1, 12] + [3] * 17))
    with pytest.raises(DataError) as info:
        load_data("mnist", data_dir=str(d))
    assert "[0, 10)" in str(info.value) and "12" in str(info.value)


def test_images_wrong_shape(tmp_path):
    d = _mnist_dir(tmp_path, images=np.zeros((20, 28 * 28)))
    with pytest.raises(DataError) as info:
        load_data("mnist", data_dir=str(d))
    assert "(N, H, W)" in str(info.value) and "(20, 784)" in str(info.value)


def test_empty_dataset():
    ds = RawDataset(np.zeros((0, 1, 8, 8), np.float32), np.zeros((0,), np.int64), 10, "empty")
    with pytest.raises(DataError, match="empty"):
        make_loaders(ds, batch_size=4, dataloader_seed=0)


def test_unknown_dataset():
    with pytest.raises(UnknownNameError, match="'dataset'"):
        load_data("cifar")
