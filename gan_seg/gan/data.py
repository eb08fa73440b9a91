"""Image data sets for the GANs: Fashion-MNIST, MNIST, IDX folders, image folders and .npz files.

Everything comes back as :class:`ImageData` with uint8 images (N, H, W, C). IDX is the format of MNIST
and Fashion-MNIST (gzipped when the name ends in .gz). Keras is imported only to download MNIST.
"""

import gzip
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gan_seg.errors import InputError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(i) for i in range(10))

ACCEPTED = ("accepted data: 'fashion-mnist', 'mnist', a folder of IDX files, a folder of images "
            "(one subfolder per class for labels) or an .npz file with an `x` array "
            "(and optional `y`)")
_SPLITS = {"train": "train", "test": "t10k"}
_IDX_NAME = re.compile(r"(train|t10k)-(images|labels)[-.]idx\d-ubyte(\.gz)?")

# IDX type byte -> big-endian numpy dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Return the array stored in the IDX file ``path`` (native byte order, writable)."""
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"IDX file {path} does not exist") from None
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] or raw[1]:
        raise InputError(f"{path} is not an IDX file (bad magic number)")
    dtype = IDX_DTYPES.get(raw[2])
    if dtype is None:
        raise InputError(f"{path} has an unknown IDX data type 0x{raw[2]:02x}")
    start = 4 + 4 * raw[3]
    if len(raw) < start:
        raise InputError(f"IDX file {path} is truncated (header cut short)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", raw[3], offset=4))
    count = math.prod(dims)
    size = count * np.dtype(dtype).itemsize
    if len(raw) - start != size:
        raise InputError(f"IDX file {path} is truncated or corrupt: header {dims} needs {size} "
                         f"data bytes, found {len(raw) - start}")
    return np.frombuffer(raw, dtype, count, offset=start).astype(dtype[1:]).reshape(dims)


@dataclass(frozen=True)
class ImageData:
    """Images ``x`` uint8 (N, H, W, C), labels ``y`` int32 (N,) or None, names, a description."""

    x: np.ndarray
    y: np.ndarray | None
    class_names: tuple[str, ...] | None
    source: str

    @property
    def has_labels(self) -> bool:
        """True when every image has a class label."""
        return self.y is not None

    @property
    def num_classes(self) -> int | None:
        """Number of classes, or None for unlabelled data."""
        if self.class_names:
            return len(self.class_names)
        return None if self.y is None else int(self.y.max()) + 1


def require_labels(data: ImageData, what: str = "a conditional GAN") -> ImageData:
    """Return ``data``, or raise InputError when it has no labels."""
    if data.y is None:
        raise InputError(f"{what} needs class labels, but {data.source} has none; use an image "
                         "folder with one subfolder per class or an .npz with a `y` array")
    return data


def load_image_data(spec: str, image_shape=None, split: str = "train") -> ImageData:
    """Load ``spec`` (see ``ACCEPTED``), resized to ``image_shape`` (H, W, C) when given.

    ``split`` ("train" or "test") picks the IDX / MNIST part; folders and .npz files ignore it.
    """
    if split not in _SPLITS:
        raise InputError(f"unknown split {split!r}; use 'train' or 'test'")
    shape = _check_shape(image_shape)
    spec = str(spec)
    if spec.lower() == "fashion-mnist":
        return _load_idx_dir(_fashion_dir(), split, shape, fashion=True)
    if spec.lower() == "mnist":
        return _load_mnist(split, shape)
    path = Path(spec).expanduser()
    if path.is_dir():
        if _idx_files(path):
            same = path.resolve() == _fashion_dir().resolve()
            return _load_idx_dir(path, split, shape, fashion=same)
        return _load_folder(path, shape)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _load_npz(path, shape)
    what = "is not a folder or an .npz file" if path.exists() else "does not exist"
    raise InputError(f"data {spec!r} {what}; {ACCEPTED}")


def read_image(path, shape) -> np.ndarray:
    """One image file (any format Pillow reads, or an .npy array (H, W[, C]) in 0..255 or [0, 1]) as
    float32 (H, W, C) in [0, 1], converted and resized to ``shape`` (H, W, C)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input {path} {'is not a file' if path.exists() else 'does not exist'}")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{path} is not a readable .npy array ({e})") from None
        return _as_images(array[None], str(path), tuple(shape))[0].astype(np.float32) / 255.0
    try:
        with Image.open(path) as img:
            return _fit_image(img, tuple(shape)).astype(np.float32) / 255.0
    except Exception as e:
        raise InputError(f"{path} is not an image Pillow can read ({type(e).__name__}) or an .npy array") \
            from None


def _check_shape(image_shape):
    if image_shape is None:
        return None
    try:
        h, w, c = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise InputError(f"image shape must be (H, W, C), got {image_shape!r}") from None
    if h < 1 or w < 1 or c not in (1, 3):
        raise InputError(f"image shape must be (H, W, C) with H, W >= 1 and C 1 or 3, got "
                         f"{image_shape!r}")
    return h, w, c


def _fashion_dir() -> Path:
    return Path(os.environ.get("GAN_SEG_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)


def _idx_files(directory: Path) -> dict:
    """Map (prefix, kind) -> path for the IDX files directly in ``directory``."""
    found = {}
    for p in sorted(directory.iterdir()):
        m = _IDX_NAME.fullmatch(p.name)
        if m and p.is_file():
            found.setdefault(m.group(1, 2), p)
    return found


def _load_idx_dir(directory: Path, split, shape, fashion) -> ImageData:
    prefix = _SPLITS[split]
    files = _idx_files(directory) if directory.is_dir() else {}
    images, labels = files.get((prefix, "images")), files.get((prefix, "labels"))
    if fashion and (images is None or labels is None):
        raise InputError(f"Fashion-MNIST is not installed in {directory}; install it with "
                         "`apt-get install -y dataset-fashion-mnist`, or pass --data DIR holding "
                         "the four IDX files")
    if images is None:
        raise InputError(f"{directory} has no {prefix}-images-idx3-ubyte[.gz] "
                         f"for the {split} split")
    x = _as_images(read_idx(images), images, shape)
    y = None if labels is None else _as_labels(read_idx(labels), len(x), labels)
    names = FASHION_MNIST_CLASSES if fashion and y is not None and y.max() == 9 else None
    kind = "Fashion-MNIST" if fashion else "IDX files"
    return ImageData(x, y, names, f"{kind} in {directory} ({split})")


def _load_mnist(split, shape) -> ImageData:
    try:
        from keras.datasets import mnist  # noqa: PLC0415 - optional: only MNIST needs Keras (and internet)

        (x_train, y_train), (x_test, y_test) = mnist.load_data()
    except Exception as e:
        raise InputError("MNIST could not be downloaded (keras.datasets needs internet); use "
                         "--data fashion-mnist, or pass an .npz / image folder") from e
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    what = f"MNIST ({split})"
    return ImageData(_as_images(x, what, shape), _as_labels(y, len(x), what), MNIST_CLASSES, what)


def _load_npz(path: Path, shape) -> ImageData:
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a readable .npz file (not a zip archive of arrays)")
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):
            raise ValueError("it holds one unnamed array, not named arrays")
        with z:
            arrays = {k: z[k] for k in ("x", "y", "class_names") if k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(f"{path} is not a readable .npz file ({e})") from None
    if "x" not in arrays:
        raise InputError(f"{path} has no `x` array (the images)")
    x = _as_images(arrays["x"], path, shape)
    y = _as_labels(arrays["y"], len(x), path) if "y" in arrays else None
    names = None
    if "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise InputError(f"{path}: `class_names` must be a 1-d array of strings")
        names = tuple(str(s) for s in names)
        if y is not None and y.max() >= len(names):
            raise InputError(f"{path}: `y` has label {y.max()} but only {len(names)} class_names")
    return ImageData(x, y, names, str(path))


def _load_folder(root: Path, shape) -> ImageData:
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts))
    if not files:
        raise InputError(f"image folder {root} is empty; {ACCEPTED}")
    probes = [_probe(p) for p in files]
    if shape is None:
        sizes = {size for size, _ in probes}
        if len(sizes) > 1:
            (w1, h1), (w2, h2) = sorted(sizes)[:2]
            raise InputError(f"images in {root} have different sizes ({w1}x{h1}, {w2}x{h2}, ...); "
                             "pass an explicit image shape (H, W, C) to resize them")
        (w, h), = sizes
        grey = all(Image.getmodebase(mode) == "L" for _, mode in probes)
        shape = (h, w, 1 if grey else 3)
    x = np.empty((len(files), *shape), np.uint8)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as img:
                x[i] = _fit_image(img, shape)
        except Exception as e:
            raise _not_an_image(p, e) from None
    parts = [p.relative_to(root).parts for p in files]
    if all(len(q) == 2 for q in parts):
        names = tuple(sorted({q[0] for q in parts}))
        index = {n: i for i, n in enumerate(names)}
        y = np.array([index[q[0]] for q in parts], np.int32)
        return ImageData(x, y, names, f"image folder {root}")
    return ImageData(x, None, None, f"image folder {root}")


def _probe(path: Path):
    """Return (size, mode) of an image file, reading only its header."""
    try:
        with Image.open(path) as img:
            return img.size, img.mode
    except Exception as e:
        raise _not_an_image(path, e) from None


def _not_an_image(path, error) -> InputError:
    return InputError(f"{path} is not an image Pillow can read ({type(error).__name__}); remove it "
                      "or point --data at a folder of images only")


def _as_images(x: np.ndarray, what, shape) -> np.ndarray:
    """Check an image array and return it as uint8 (N, H, W, C), resized to ``shape`` if given."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or len(x) == 0:
        raise InputError(f"{what}: images must have shape (N, H, W) or (N, H, W, C) with C 1, 3 or "
                         f"4 and N > 0, got {x.shape}")
    if x.dtype.kind == "f":
        if not (x.min() >= 0 and x.max() <= 1):
            raise InputError(f"{what}: float images must hold values in [0, 1], found "
                             f"{x.min()}..{x.max()}")
        x = np.rint(x * 255).astype(np.uint8)
    elif x.dtype.kind in "ui" and x.dtype != np.uint8:
        if x.min() < 0 or x.max() > 255:
            raise InputError(f"{what}: integer images must hold values in 0..255, found "
                             f"{x.min()}..{x.max()}")
        x = x.astype(np.uint8)
    elif x.dtype != np.uint8:
        raise InputError(f"{what}: images must be uint8 or float, got {x.dtype}")
    if shape is None:
        shape = x.shape[1:3] + (3 if x.shape[3] == 4 else x.shape[3],)
    if x.shape[1:] == tuple(shape):
        return x
    out = np.empty((len(x), *shape), np.uint8)
    for i, a in enumerate(x):
        out[i] = _fit_image(Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a), shape)
    return out


def _as_labels(y: np.ndarray, n: int, what) -> np.ndarray:
    """Check a label array and return it as int32 (N,)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind not in "ui" or y.ndim != 1:
        raise InputError(f"{what}: labels must be a 1-d integer array, got {y.dtype} {y.shape}")
    if len(y) != n:
        raise InputError(f"{what}: {len(y)} labels for {n} images")
    if y.min() < 0:
        raise InputError(f"{what}: labels must be >= 0, found {y.min()}")
    return y.astype(np.int32)


def _fit_image(img: Image.Image, shape) -> np.ndarray:
    """Convert a Pillow image to an (H, W, C) uint8 array: colour mode first, then size."""
    h, w, c = shape
    mode = "L" if c == 1 else "RGB"
    if img.mode == "I" or img.mode.startswith("I;16"):  # 16-bit grey -> 8 bits
        img = Image.fromarray((np.asarray(img, np.float32) / 257).clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")  # transparent pixels become black
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img)
    if img.mode != mode:
        img = img.convert(mode)
    if img.size != (w, h):
        down = w < img.width or h < img.height
        img = img.resize((w, h), Image.Resampling.LANCZOS if down else Image.Resampling.BILINEAR)
    a = np.asarray(img)
    return a[..., None] if c == 1 else a
