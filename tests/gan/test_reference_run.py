"""The reference run (``train --model cgan --steps 40 --seed 1``, op determinism, float32) gives the same
weights as before the restructure: the training algorithm is unchanged by later work."""

import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_seg.engine.run_dir import RunDirectory
from gan_seg.gan.data import FASHION_MNIST_DIR
from tests.helpers import gan_seg, ok

REFERENCE = json.loads(Path(__file__).with_name("reference_run.json").read_text())


def checkpoint_fingerprint(path):
    """``(sha256 of every array in key order, {group: [sum, sum of |x|, size]})`` of a checkpoint."""
    digest, groups = hashlib.sha256(), {}
    with np.load(path) as data:
        for key in sorted(k for k in data.files if k != "__meta__"):
            array = data[key]
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
            total = groups.setdefault(key.split("/")[0], [0.0, 0.0, 0])
            values = array.astype(np.float64)
            total[0] += float(values.sum())
            total[1] += float(np.abs(values).sum())
            total[2] += int(values.size)
    return digest.hexdigest(), groups


def this_machine():
    """The CPU features that pick TensorFlow's float32 kernels, and the library versions."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    cpu = " ".join(f if f in flags else f"no-{f}" for f in ("avx512f", "avx512_bf16", "amx_bf16"))
    return {"cpu": cpu, "tensorflow": tf.__version__, "keras": keras.__version__}


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_reference_run_gives_the_recorded_weights(tmp_path):
    ok(gan_seg(*REFERENCE["command"].split()[1:], "--out", "run", "--quiet", cwd=tmp_path))
    step, path = RunDirectory(tmp_path / "run").latest_checkpoint()
    assert step == 40
    sha, groups = checkpoint_fingerprint(path)
    references = REFERENCE["references"]
    same = [r for r in references if r["recorded_on"] == this_machine()]
    if same:
        assert sha == same[0]["sha256"]
    for reference in same or references:
        for name, (total, absolute, size) in reference["groups"].items():
            assert groups[name][2] == size, name
            np.testing.assert_allclose(groups[name][:2], [total, absolute], rtol=1e-6 if same else 1e-2,
                                       err_msg=name)
