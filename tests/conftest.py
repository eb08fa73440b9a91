"""Shared fixtures: tiny labelled image data and one tiny trained CGAN run."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gan_seg.gan import trainer  # noqa: E402
from tests.helpers import make_images, tiny_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """An .npz with 64 labelled 16x16 images and class names."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    x, y = make_images()
    np.savez(path, x=x, y=y, class_names=np.array(["zero", "one", "two", "three"]))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_npz):
    """A finished tiny CGAN run directory (4 steps)."""
    out = tmp_path_factory.mktemp("runs") / "cgan"
    trainer.train(tiny_config(data=str(tiny_npz)), out, progress=False)
    return out
