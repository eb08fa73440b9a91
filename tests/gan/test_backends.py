"""Inference is backend-neutral: the shipped generator draws the same images on JAX as on TensorFlow."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_sample_is_identical_on_jax_and_tensorflow(tmp_path):
    outputs = {}
    for backend in ("tensorflow", "jax"):
        out = tmp_path / f"{backend}.npz"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
        result = subprocess.run([sys.executable, "-m", "gan_seg", "sample", "-n", "20", "--seed", "3", "-o",
                                 str(out)], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        outputs[backend] = out
    with np.load(outputs["tensorflow"]) as a, np.load(outputs["jax"]) as b:
        np.testing.assert_array_equal(a["labels"], b["labels"])
        np.testing.assert_allclose(a["images"], b["images"], atol=1e-5)
