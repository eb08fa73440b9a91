"""Shared fixtures: tiny labelled image data and one tiny trained CGAN run."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def make_images(n=64, size=16, classes=4, seed=0):
    """``n`` tiny greyscale images whose class shows as a bright band (so a GAN can learn it)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int32) % classes
    x = rng.integers(0, 40, (n, size, size, 1), dtype=np.uint8)
    band = size // classes
    for i, label in enumerate(y):
        x[i, label * band:(label + 1) * band] = 220
    return x, y


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """An .npz with 64 labelled 16x16 images and class names."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    x, y = make_images()
    np.savez(path, x=x, y=y, class_names=np.array(["zero", "one", "two", "three"]))
    return path


def tiny_config(**overrides):
    """A GanConfig small enough to train in seconds on 2 cores."""
    from gan_seg.training.gan import GanConfig

    options = dict(model="cgan", steps=4, batch_size=16, latent_dim=8, precision="float32",
                   checkpoint_every=2, sample_every=2, log_every=1, seed=3, strategy="none")
    options.update(overrides)
    return GanConfig(**options)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_npz):
    """A finished tiny CGAN run directory (4 steps)."""
    from gan_seg.training.gan import train_gan

    out = tmp_path_factory.mktemp("runs") / "cgan"
    train_gan(tiny_config(data=str(tiny_npz)), out, progress=False)
    return out


PHANTOM_CLASSES = ["Background", "Left-Blob", "Right-Blob", "Core"]


def make_phantom(shape=(44, 52, 40), seed=0, affine=None):
    """A head-like 3D phantom: (image float32, labels uint8, affine); left/right blobs and a core.

    Each seed shifts (up to 5 voxels), scales and re-shades the phantom a little, so a network trained on
    a few of them must learn shapes and contrasts, not positions and exact grey levels.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij"), axis=-1)
    jitter, scale = rng.uniform(-5, 5, 3), rng.uniform(0.9, 1.05)

    def inside(centre, radii):
        offset = grid - scale * np.asarray(centre) - jitter
        return ((offset / (scale * np.asarray(radii))) ** 2).sum(-1) <= 1

    labels = np.zeros(shape, np.uint8)
    head = inside((0, 0, 0), (16, 20, 14))
    labels[inside((-8, 0, 0), (6, 9, 7))] = 1
    labels[inside((8, 0, 0), (6, 9, 7))] = 2
    labels[inside((0, 6, 5), (5, 6, 6))] = 3
    intensity = np.array([0.0, 0.95, 0.7, 0.45], np.float32) + rng.uniform(-0.04, 0.04, 4).astype(np.float32)
    image = np.where(head, 0.15, 0.0).astype(np.float32)
    image = np.where(labels > 0, intensity[labels], image) + rng.normal(0, 0.02, shape).astype(np.float32)
    image = np.clip(image, 0, None) * 1000
    if affine is None:
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        affine[:3, 3] = -(np.array(shape) - 1) / 2
    return image, labels, affine


def write_phantom_dataset(root, count=3):
    """``root/images``, ``root/labels`` and ``classes.json`` with ``count`` phantoms. Every third one is
    blurred and every third one stored with 1.5 mm voxels, as if scanned at a lower resolution."""
    import json

    import nibabel as nib
    from scipy import ndimage

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(count):
        image, labels, affine = make_phantom(seed=i)
        if i % 3 == 1:
            image = ndimage.gaussian_filter(image, 0.8)
        if i % 3 == 2:
            shape = tuple(int(n) for n in np.ceil(np.array(image.shape) / 1.5))
            matrix = np.diag([1.5, 1.5, 1.5, 1.0])
            image = ndimage.affine_transform(image, matrix, output_shape=shape, order=1)
            labels = ndimage.affine_transform(labels, matrix, output_shape=shape, order=0)
            affine = affine @ matrix
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"p{i}.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), root / "labels" / f"p{i}.nii.gz")
    (root / "classes.json").write_text(json.dumps({str(i): n for i, n in enumerate(PHANTOM_CLASSES)}))
    return root
