"""Tests of gan_seg.data: IDX reading and image data loading (tiny synthetic data)."""

import gzip
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_seg.errors import InputError
from gan_seg.gan import data as images
from gan_seg.gan.data import (
    FASHION_MNIST_CLASSES,
    IDX_DTYPES,
    MNIST_CLASSES,
    ImageData,
    load_image_data,
    read_idx,
    require_labels,
)

_TYPE_CODES = {np.dtype(v[1:]): k for k, v in IDX_DTYPES.items()}


def write_idx(path, arr):
    """Write ``arr`` as an IDX file (gzipped when ``path`` ends in .gz)."""
    arr = np.asarray(arr)
    header = bytes([0, 0, _TYPE_CODES[arr.dtype], arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    raw = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    Path(path).write_bytes(gzip.compress(raw) if str(path).endswith(".gz") else raw)
    return path


def write_idx_dir(directory, n=12, size=6, classes=10, gz=True):
    """Write the four IDX files of a tiny MNIST-like data set; returns (x_train, y_train)."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    out = {}
    for prefix, count in (("train", n), ("t10k", n // 2)):
        x = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
        y = (np.arange(count) % classes).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", y)
        out[prefix] = (x, y)
    return out["train"]


# --- IDX ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_idx_round_trip(tmp_path, name, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - (0 if dtype == "u1" else 5)).astype(dtype)
    out = read_idx(write_idx(tmp_path / name, arr))
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 1  # writable


def test_idx_truncated(tmp_path):
    path = write_idx(tmp_path / "t.idx", np.zeros((3, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(InputError, match="t.idx is truncated"):
        read_idx(path)
    path.write_bytes(path.read_bytes()[:6])
    with pytest.raises(InputError, match="truncated"):
        read_idx(path)


def test_idx_bad_magic_and_type(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(InputError, match="bad.idx is not an IDX file"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(InputError, match="unknown IDX data type 0x07"):
        read_idx(path)


def test_idx_corrupt_gzip_and_missing(tmp_path):
    path = tmp_path / "c.idx.gz"
    path.write_bytes(b"definitely not gzip data")
    with pytest.raises(InputError, match="c.idx.gz"):
        read_idx(path)
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04abcd")[:-10])
    with pytest.raises(InputError, match="c.idx.gz"):
        read_idx(path)
    with pytest.raises(InputError, match="does not exist"):
        read_idx(tmp_path / "missing.idx")


# --- IDX folders and Fashion-MNIST -----------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder(tmp_path, gz):
    x, y = write_idx_dir(tmp_path / "d", gz=gz)
    data = load_image_data(str(tmp_path / "d"))
    assert data.x.shape == (12, 6, 6, 1) and data.x.dtype == np.uint8
    np.testing.assert_array_equal(data.x[..., 0], x)
    assert data.y.dtype == np.int32 and list(data.y) == list(y)
    assert data.class_names is None and data.num_classes == 10 and data.has_labels
    test = load_image_data(tmp_path / "d", image_shape=(8, 8, 3), split="test")
    assert test.x.shape == (6, 8, 8, 3)


def test_fashion_mnist_env_dir(tmp_path, monkeypatch):
    write_idx_dir(tmp_path / "fm")
    monkeypatch.setenv("GAN_SEG_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    data = load_image_data("fashion-mnist")
    assert data.class_names == FASHION_MNIST_CLASSES and data.num_classes == 10
    assert "Fashion-MNIST" in data.source


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("GAN_SEG_FASHION_MNIST_DIR", str(tmp_path / "empty"))
    with pytest.raises(InputError, match="apt-get install -y dataset-fashion-mnist"):
        load_image_data("fashion-mnist")


@pytest.mark.skipif(not images.FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("GAN_SEG_FASHION_MNIST_DIR", raising=False)
    data = load_image_data("fashion-mnist")
    assert data.x.shape == (60000, 28, 28, 1) and data.x.dtype == np.uint8
    assert data.y.min() == 0 and data.y.max() == 9
    assert list(np.bincount(data.y)) == [6000] * 10
    assert data.class_names == FASHION_MNIST_CLASSES


# --- MNIST -----------------------------------------------------------------------------------

def _fake_keras(monkeypatch, load_data):
    """Install stand-in keras.datasets.mnist modules so no network (or TensorFlow) is touched."""
    keras, datasets, mnist = (types.ModuleType(n) for n in
                              ("keras", "keras.datasets", "keras.datasets.mnist"))
    mnist.load_data = load_data
    keras.datasets, datasets.mnist = datasets, mnist
    for module in (keras, datasets, mnist):
        monkeypatch.setitem(sys.modules, module.__name__, module)


def test_mnist_offline(monkeypatch):
    def offline():
        raise OSError("URL fetch failure: no network")

    _fake_keras(monkeypatch, offline)
    with pytest.raises(InputError, match="MNIST could not be downloaded"):
        load_image_data("mnist")


def test_mnist_loaded(monkeypatch):
    x = np.zeros((4, 28, 28), np.uint8)
    y = np.arange(4, dtype=np.uint8)
    _fake_keras(monkeypatch, lambda: ((x, y), (x[:2], y[:2])))
    data = load_image_data("mnist", split="test")
    assert data.x.shape == (2, 28, 28, 1) and data.class_names == MNIST_CLASSES


# --- image folders ---------------------------------------------------------------------------

def _save(path, mode, size, fmt=None):
    """Save a flat grey image of ``mode`` and ``size`` (W, H)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        Image.new("RGB", size, (200, 200, 200)).quantize(4).save(path, fmt)
    else:
        Image.new(mode, size, 200 if mode == "L" else (200,) * len(mode)).save(path, fmt)


@pytest.mark.parametrize("shape", [(16, 16, 1), (16, 16, 3)])
def test_folder_mixed_sizes_and_modes(tmp_path, shape):
    _save(tmp_path / "a.png", "RGBA", (20, 10))
    _save(tmp_path / "b.jpg", "RGB", (8, 8))
    _save(tmp_path / "c.bmp", "L", (16, 16))
    _save(tmp_path / "d.gif", "P", (30, 30))
    _save(tmp_path / "sub" / "e.tiff", "RGB", (5, 40))
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    data = load_image_data(str(tmp_path), image_shape=shape)
    assert data.x.shape == (5, *shape) and data.x.dtype == np.uint8
    assert data.y is None and data.num_classes is None and not data.has_labels
    assert data.x.min() > 150  # converted, not garbage
    with pytest.raises(InputError, match="different sizes"):
        load_image_data(str(tmp_path))


def test_folder_native_shape(tmp_path):
    _save(tmp_path / "a.png", "L", (7, 5))
    _save(tmp_path / "b.png", "L", (7, 5))
    assert load_image_data(str(tmp_path)).x.shape == (2, 5, 7, 1)
    _save(tmp_path / "c.png", "RGB", (7, 5))
    assert load_image_data(str(tmp_path)).x.shape == (3, 5, 7, 3)


def test_folder_16bit_and_transparency(tmp_path):
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "deep.png")
    Image.new("RGBA", (4, 4), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    data = load_image_data(str(tmp_path))
    assert data.x.shape == (2, 4, 4, 3)
    assert list(data.x[:, 0, 0, 0]) == [0, 155]  # transparent -> black; 16 bits scaled to 8


def test_folder_classes(tmp_path):
    for cls, n in (("dog", 2), ("cat", 3)):
        for i in range(n):
            _save(tmp_path / cls / f"{i}.png", "RGB", (9, 9))
    data = load_image_data(str(tmp_path), image_shape=(4, 4, 3))
    assert data.class_names == ("cat", "dog") and data.num_classes == 2
    assert list(data.y) == [0, 0, 0, 1, 1] and data.y.dtype == np.int32
    assert require_labels(data) is data


def test_folder_not_an_image(tmp_path):
    _save(tmp_path / "a.png", "L", (4, 4))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt is not an image Pillow can read"):
        load_image_data(str(tmp_path))


def test_folder_empty(tmp_path):
    with pytest.raises(InputError, match="empty"):
        load_image_data(str(tmp_path))


def test_require_labels(tmp_path):
    data = ImageData(np.zeros((1, 2, 2, 1), np.uint8), None, None, "image folder x")
    with pytest.raises(InputError, match="needs class labels, but image folder x has none"):
        require_labels(data)


# --- .npz ------------------------------------------------------------------------------------

def test_npz_uint8_and_float(tmp_path):
    x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    np.savez(tmp_path / "u.npz", x=x)
    data = load_image_data(str(tmp_path / "u.npz"))
    assert data.x.shape == (2, 4, 4, 1) and data.y is None
    np.testing.assert_array_equal(data.x[..., 0], x)
    np.savez(tmp_path / "f.npz", x=np.full((3, 4, 4, 3), 0.5, np.float32))
    data = load_image_data(str(tmp_path / "f.npz"), image_shape=(8, 8, 1))
    assert data.x.shape == (3, 8, 8, 1) and abs(int(data.x[0, 0, 0, 0]) - 128) <= 1
    np.savez(tmp_path / "bad.npz", x=np.full((3, 4, 4), 2.0))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        load_image_data(str(tmp_path / "bad.npz"))


def test_npz_labels_and_names(tmp_path):
    x = np.zeros((3, 4, 4, 3), np.uint8)
    np.savez(tmp_path / "l.npz", x=x, y=np.array([0, 2, 1]), class_names=np.array(["a", "b", "c"]))
    data = load_image_data(str(tmp_path / "l.npz"))
    assert data.class_names == ("a", "b", "c") and list(data.y) == [0, 2, 1]
    assert data.y.dtype == np.int32 and data.num_classes == 3


@pytest.mark.parametrize("arrays, match", [
    ({"images": np.zeros((2, 4, 4), np.uint8)}, "no `x` array"),
    ({"x": np.zeros((2, 4), np.uint8)}, "shape"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 1, 2])}, "3 labels for 2 images"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0.0, 1.0])}, "integer"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, -1])}, ">= 0"),
])
def test_npz_invalid(tmp_path, arrays, match):
    np.savez(tmp_path / "v.npz", **arrays)
    with pytest.raises(InputError, match=match):
        load_image_data(str(tmp_path / "v.npz"))


def test_npz_corrupt(tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(np.random.default_rng(1).bytes(300))
    with pytest.raises(InputError, match="c.npz is not a readable .npz file"):
        load_image_data(str(path))


# --- other specs -----------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["cifar-11", "no/such/dir", "x.npz"])
def test_unknown_spec(tmp_path, spec):
    with pytest.raises(InputError, match="accepted data"):
        load_image_data(str(tmp_path / spec) if "/" in spec else spec)


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="split"):
        load_image_data("fashion-mnist", split="valid")
    with pytest.raises(InputError, match="image shape"):
        load_image_data("fashion-mnist", image_shape=(28, 28, 2))


def test_import_is_light():
    code = "import sys, gan_seg.gan.data; assert not {'keras', 'tensorflow'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
