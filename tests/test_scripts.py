"""The scripts in scripts/ run: a smoke test of the brain data set builder (ch2 only, no registration)."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path("/usr/share/mricron/templates")


@pytest.mark.slow
@pytest.mark.skipif(not (TEMPLATES / "aal.nii.gz").is_file(), reason="mricron-data is not installed")
def test_make_brain_dataset_without_registration(tmp_path):
    script = ROOT / "scripts" / "make_brain_dataset.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), "--no-register"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "out"
    classes = json.loads((out / "classes.json").read_text())
    assert len(classes) == 23 and classes["0"] == "Background"
    image, labels = nib.load(out / "images" / "ch2.nii.gz"), nib.load(out / "labels" / "ch2.nii.gz")
    assert image.shape == labels.shape == (181, 217, 181) and np.allclose(image.affine, labels.affine)
    counts = np.bincount(np.asarray(labels.dataobj).ravel(), minlength=23)
    assert counts.size == 23 and (counts > 0).all(), counts
    assert (out / "qc_ch2.png").stat().st_size > 10_000 and (out / "README.md").is_file()
    assert not (out / "images" / "mni152.nii.gz").exists()
    # generation labels: the labels plus four extra-cerebral classes where the labels are background
    generation_classes = json.loads((out / "generation_classes.json").read_text())
    assert len(generation_classes) == 27 and all(generation_classes[k] == v for k, v in classes.items())
    generation = nib.load(out / "generation" / "ch2.nii.gz")
    values = np.asarray(generation.dataobj)
    assert generation.shape == labels.shape and np.allclose(generation.affine, labels.affine)
    label_values = np.asarray(labels.dataobj)
    np.testing.assert_array_equal(np.where(values < 23, values, 0), label_values)
    extra = np.bincount(values.ravel(), minlength=27)[23:]
    assert extra.size == 4 and (extra > 50_000).all(), extra
    head = (values > 0).sum()
    assert 3.0e6 < head < 5.0e6 and 1.5 < head / (label_values > 0).sum() < 3.0  # head, not just brain
    assert values[0, 0, 0] == 0 and values[90, 108, 170] >= 23  # air in the corner, scalp at the vertex
    mask = np.asarray(nib.load(out / "masks" / "ch2.nii.gz").dataobj)
    np.testing.assert_array_equal(mask, (label_values > 0).astype(np.uint8))
    assert (out / "qc_generation_ch2.png").stat().st_size > 10_000
    assert "Extra-Cerebral-Dark-Rim" in (out / "README.md").read_text()
