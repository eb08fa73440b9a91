"""``gan-seg segment`` on the command line: the new options, their bad values, the example brain, the same
labels with 1 and 2 threads and on JAX (the shipped model; TensorFlow not imported there)."""

import csv

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from gan_seg.seg.scans import example_scan
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


def _scan(cwd, name="t1.nii.gz", data=None):
    data = np.arange(20 * 20 * 20, dtype=np.float32).reshape(20, 20, 20) if data is None else data
    nib.save(nib.Nifti1Image(data, np.eye(4)), cwd / name)
    return name


def _cohort(cwd):
    (cwd / "scans").mkdir()
    _scan(cwd / "scans", "a.nii.gz")
    return "scans"


RGB = np.zeros((20, 20, 20), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])


def _huge_header(cwd):
    """A 1000^3 int16 scan at 0.4 mm (2 GB of voxels) whose file holds only its header and 1 kB."""
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.int16)
    header.set_sform(np.diag([0.4, 0.4, 0.4, 1.0]), code=1)
    with open(cwd / "huge.nii", "wb") as f:
        header.write_to(f)
        f.write(bytes(4 + 1000))
    return "huge.nii"

def _broken(cwd, name, edit, kind=nib.Nifti1Image):
    """A 20^3 scan saved as ``kind`` whose bytes are then replaced by ``edit(bytes)``."""
    nib.save(kind(np.arange(20 * 20 * 20, dtype=np.float32).reshape(20, 20, 20), np.eye(4)), cwd / name)
    (cwd / name).write_bytes(edit((cwd / name).read_bytes()))
    return name


def _garbage_header(raw):
    return raw[:4] + bytes(range(200, 256)) * 5 + raw[284:]


def _declares_more(raw):
    """A NIfTI-2 header claiming 200 slices (dim[3], int64 at byte 32) over the file's 20."""
    return raw[:32] + np.int64(200).tobytes() + raw[40:]


def _damaged_stream(raw):
    middle = len(raw) // 2
    return raw[:middle] + bytes(range(64)) + raw[middle + 64:]


BAD = {  # name: (argv after "segment", "error" = one gan-seg line / "usage" = click's format, message)
    "output is the input, --force or not": (lambda cwd: [_scan(cwd), "-o", "t1.nii.gz", "--force"], "error",
                                            "output t1.nii.gz is the input scan"),
    "mask output is the input": (lambda cwd: [_scan(cwd), "-o", "s.nii.gz", "--mask", "./t1.nii.gz"], "error",
                                 "is the input scan"),
    "cohort output is its input folder": (lambda cwd: [_cohort(cwd), "-o", "scans"], "error",
                                          "is the input folder"),
    "RGB NIfTI": (lambda cwd: [_scan(cwd, "rgb.nii.gz", RGB), "-o", "s.nii.gz"], "error",
                  "not one grey value per voxel (RGB/vector data)"),
    "constant image": (lambda cwd: [_scan(cwd, "c.nii.gz", np.full((20, 20, 20), 7.0)), "-o", "s.nii.gz"],
                       "error", "a constant image (every voxel is 7)"),
    "scan over the memory budget": (lambda cwd: [_huge_header(cwd), "-o", "s.nii.gz", "--max-memory", "16"],
                                    "error", "segmenting its 1000x1000x1000 voxels needs about 24.1 GiB"),
    "example over a tiny budget": (lambda cwd: ["--example", "-o", "s.nii.gz", "--max-memory", "0.5"],
                                   "error", "over the budget of 0.5 GiB (--max-memory)"),
    "non-positive budget": (lambda cwd: ["--example", "-o", "s.nii.gz", "--max-memory", "0"], "error",
                            "--max-memory 0.0: give a positive number of GiB"),
    "NaN view weight": (lambda cwd: ["--example", "-o", "s.nii.gz", "--view-weights", "axial=nan"], "error",
                        "each weight must be a finite number >= 0"),
    "infinite view weight": (lambda cwd: ["--example", "-o", "s.nii.gz", "--view-weights", "coronal=inf"],
                             "error", "coronal=inf"),
    "negative view weight": (lambda cwd: ["--example", "-o", "s.nii.gz", "--view-weights", "axial=-1"],
                             "error", "axial=-1"),
    "every view weight 0": (lambda cwd: ["--example", "-o", "s.nii.gz", "--view-weights",
                                         "axial=0,coronal=0,sagittal=0"], "error", "are all 0"),
    "sagittal alone": (lambda cwd: ["--example", "-o", "s.nii.gz", "--views", "sagittal"], "error",
                       "sagittal alone cannot tell left from right"),
    "only the sagittal weight above 0": (lambda cwd: ["--example", "-o", "s.nii.gz", "--view-weights",
                                                      "axial=0,coronal=0"], "error", "cannot tell left"),
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
    "truncated MGZ": (lambda cwd: [_broken(cwd, "t.mgz", lambda raw: raw[:len(raw) // 2], nib.MGHImage), "-o",
                                   "s.nii.gz"], "error", "t.mgz: unreadable, damaged or truncated"),
    "NIfTI-2 declaring more data than it holds": (
        lambda cwd: [_broken(cwd, "n2.nii", _declares_more, nib.Nifti2Image), "-o", "s.nii.gz"], "error",
        "the header declares 320,544 bytes, the file holds 32,544"),
    "gzip stream damaged inside": (lambda cwd: [_broken(cwd, "d.nii.gz", _damaged_stream), "-o", "s.nii.gz"],
                                   "error", "d.nii.gz: unreadable, damaged or truncated"),
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


def test_a_garbage_header_gives_one_line_in_a_real_process(tmp_path):
    """nibabel logs header repairs on stderr from its own handler (unseen by CliRunner): muted."""
    scan = _broken(tmp_path, "g.nii", _garbage_header, nib.Nifti2Image)
    result = gan_seg("segment", scan, "-o", "s.nii.gz", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "gan-seg segment: error: g.nii: unreadable, not a valid NIfTI-1/2 or MGZ file (data code -12079 not "
        "recognized)"]
    assert not (tmp_path / "s.nii.gz").exists()


def _table(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _example_slab(cwd, slices=slice(28, 58)):
    """The example brain's middle axial slab (30 of 91 slices: ventricles, basal ganglia, cortex), a third
    of the work of the whole example."""
    example = nib.load(example_scan())
    nib.save(example.slicer[:, :, slices], cwd / "slab.nii.gz")
    return example.slicer[:, :, slices].shape


@pytest.mark.slow
def test_example_with_1_and_2_threads_and_on_jax_gives_the_same_labels(tmp_path):
    pytest.importorskip("jax")
    shape = _example_slab(tmp_path)
    common = ["segment", "slab.nii.gz", "--precision", "float32", "--quiet"]
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
    assert labels["one"].shape == shape == (91, 109, 30) and 5 < len(np.unique(labels["one"]))
    np.testing.assert_array_equal(labels["two"], labels["one"])
    # JAX's float32 kernels differ from TensorFlow's: a near-tie may flip (1 of 902,629 voxels of the
    # whole example, measured)
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
