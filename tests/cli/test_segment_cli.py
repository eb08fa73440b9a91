"""``gan-seg segment`` on the command line: the new options, their bad values, the example brain, the same
labels with 1 and 2 threads and on JAX (the shipped model; TensorFlow not imported there)."""

import csv

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from gan_seg_cli.main import cli
from tests.helpers import driver, gan_seg, ok, snapshot

NEW_OPTIONS = ["--example", "--threads", "--precision", "mixed_bfloat16", "--mask", "--brain", "QC scores"]


def test_help_shows_the_new_options_without_importing_tensorflow(tmp_path):
    result = ok(driver("segment", "--help", cwd=tmp_path))
    for text in NEW_OPTIONS:
        assert text in result.stdout, text
    assert result.stderr.strip().splitlines()[-1] == "HEAVY_MODULES=", result.stderr


def _float64_scan(cwd):
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20)), np.eye(4)), cwd / "f64.nii.gz")
    return "f64.nii.gz"


BAD = {  # name: (argv after "segment", "error" = one gan-seg line / "usage" = click's format, message)
    "example and input": (lambda cwd: ["t1.nii.gz", "--example", "-o", "s.nii.gz"], "error",
                          "give INPUT or --example, not both"),
    "no input": (lambda cwd: ["-o", "s.nii.gz"], "error", "or --example for the shipped example brain"),
    "zero threads": (lambda cwd: ["--example", "-o", "s.nii.gz", "--threads", "0"], "usage",
                     "Invalid value for '--threads'"),
    "unknown precision": (lambda cwd: ["--example", "-o", "s.nii.gz", "--precision", "float16"], "usage",
                          "Invalid value for '--precision'"),
    "mask for a cohort": (lambda cwd: [cwd, "-o", "out", "--mask", "m.nii.gz"], "error",
                          "drop --volumes/--qc/--posteriors/--uncertainty/--mask/--brain"),
    "brain output that cannot hold the input type": (
        lambda cwd: [_float64_scan(cwd), "-o", "s.nii.gz", "--brain", "b.mgz"], "error",
        "MGZ cannot hold the input's float64 voxels"),
    "mask output with a wrong suffix": (lambda cwd: ["--example", "-o", "s.nii.gz", "--mask", "m.png"],
                                        "error", "--mask m.png must end in"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_option_one_line_exit_2_nothing_written(case, tmp_path, monkeypatch):
    setup, kind, message = BAD[case]
    args = [str(a) for a in setup(tmp_path)]
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["segment", *args], prog_name="gan-seg")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    shown = f"exit {result.exit_code}\n{result.stderr}"
    assert result.exit_code == 2 and "Traceback" not in result.stderr and result.stdout == "", shown
    if kind == "error":
        assert len(lines) == 1 and lines[0].startswith("gan-seg segment: error: "), shown
    else:
        assert lines[0].startswith("Usage: ") and lines[-1].startswith("Error: "), shown
    assert message in lines[-1], shown
    assert snapshot(tmp_path) == before


def _table(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_example_with_1_and_2_threads_and_on_jax_gives_the_same_labels(tmp_path):
    pytest.importorskip("jax")
    common = ["segment", "--example", "--precision", "float32", "--quiet"]
    one = ok(gan_seg(*common, "-o", "one.nii.gz", "--volumes", "one.csv", "--qc", "qc.png", "--mask",
                     "mask.nii.gz", "--threads", "1", cwd=tmp_path))
    assert one.stdout.strip() == "wrote one.nii.gz"
    ok(gan_seg(*common, "-o", "two.nii.gz", "--volumes", "two.csv", "--threads", "2", cwd=tmp_path))
    jax = ok(driver(*common, "-o", "jax.nii.gz", "--volumes", "jax.csv", cwd=tmp_path,
                    env={"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}))
    heavy = jax.stderr.strip().splitlines()[-1].removeprefix("HEAVY_MODULES=").split(",")
    assert not [m for m in heavy if m.startswith("tensorflow")], "segment on JAX imported TensorFlow"

    runs = ("one", "two", "jax")
    labels = {name: np.asarray(nib.load(tmp_path / f"{name}.nii.gz").dataobj) for name in runs}
    assert labels["one"].shape == (91, 109, 91) and 5 < len(np.unique(labels["one"]))
    np.testing.assert_array_equal(labels["two"], labels["one"])
    # JAX's float32 kernels differ from TensorFlow's: a near-tie may flip (1 of 902,629 voxels, measured)
    assert np.mean(labels["jax"] != labels["one"]) <= 1e-5
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj), labels["one"] > 0)
    assert (tmp_path / "qc.png").stat().st_size > 10_000
    tables = {name: _table(tmp_path / f"{name}.csv") for name in runs}
    assert tables["two"] == tables["one"]
    for row, other in zip(tables["one"], tables["jax"], strict=True):
        score, other_score = row.pop("qc_score"), other.pop("qc_score")
        voxels, other_voxels = int(row.pop("voxels")), int(other.pop("voxels"))
        row.pop("volume_mm3"), other.pop("volume_mm3")
        assert row == other and abs(voxels - other_voxels) <= 2 + 1e-4 * voxels  # the flips above
        assert (score == other_score == "") or abs(float(score) - float(other_score)) < 1e-3
