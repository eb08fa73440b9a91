"""scripts/train_classifier.py rebuilds the classifier preset reproducibly (on a tiny stand-in for
Fashion-MNIST)."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gan_seg.io.saving import load_model

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_classifier.py"


def write_idx(path, array):
    """An IDX file (uint8) of ``array``, gzipped."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def tiny_fashion_mnist(folder, train=120, test=60):
    """Four IDX files shaped like Fashion-MNIST: 10 classes, class k a bright band at rows 2k..2k+3."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(y):
            x[i, 2 * label:2 * label + 4] = 230
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


def run(*args, data):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
           "GAN_SEG_FASHION_MNIST_DIR": str(data)}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_the_documented_command_rebuilds_the_preset_reproducibly(tmp_path):
    data = tiny_fashion_mnist(tmp_path / "data")
    weights = []
    for name in ("a", "b"):
        result = run("--epochs", "2", "--seed", "4", "--dest", tmp_path / name, data=data)
        assert result.returncode == 0, result.stderr
        folder = tmp_path / name / "fashion-mnist-classifier"
        assert result.stdout.strip().splitlines()[-1] == f"wrote {folder}"
        metadata = json.loads((folder / "metadata.json").read_text())
        assert metadata["training"]["command"] == "python scripts/train_classifier.py --epochs 2 --seed 4"
        assert metadata["kind"] == "classifier" and len(metadata["class_names"]) == 10
        assert 0.0 <= metadata["test_accuracy"] <= 1.0 and len(metadata["per_class_test_accuracy"]) == 10
        assert set(metadata["files"]) == {"classifier.keras"}
        model, _ = load_model(folder / "classifier.keras", "classifier")
        weights.append(model.get_weights())
    for first, second in zip(*weights, strict=True):
        np.testing.assert_array_equal(first, second)  # the same command, the same classifier

    again = run("--epochs", "1", "--dest", tmp_path / "a", data=data)  # no silent replacement
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
