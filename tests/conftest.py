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
