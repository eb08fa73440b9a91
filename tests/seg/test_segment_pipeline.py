"""``segment`` end to end on a phantom with a tiny random-weight QuickNAT: exactness across storage orders,
the new outputs (mask, brain, volumes with QC scores and totals), posteriors and uncertainty, precision,
threads, the example brain (also from a non-editable install).

The model has random weights (the tests check the pipeline, not a network's quality); its classifier is
sharpened so that its labels are varied on the phantom. Its probabilities are often close to ties, so the
tests compare runs of the same arithmetic only (the same backend and threads); runs on another backend or
thread count are compared with the shipped trained model (tests/cli/test_segment_cli.py).
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import nibabel as nib
import nibabel.orientations as ornts
import numpy as np
import pytest

from gan_seg import api
from gan_seg.engine.backend import available_cores, limit_threads
from gan_seg.errors import InputError
from gan_seg.io.saving import save_model
from gan_seg.seg.config import MODEL_FILE
from gan_seg.seg.inference import Segmenter
from gan_seg.seg.models import build_quicknat
from gan_seg.seg.scans import EXAMPLE, TOTAL_BRAIN, TOTAL_INTRACRANIAL, example_scan
from gan_seg.seg.views import VIEWS, lr_merge
from tests.helpers import cli_env, make_phantom, reoriented

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["Background", "Left-Blob", "Right-Blob", "Core", "Other-CSF"]


def write_random_model(path, class_names=CLASSES, views=VIEWS, voxel_size=1.0, sharpen=6.0, seed=0):
    """A segmentation run directory of random-weight tiny QuickNATs (4 filters; sagittal with merged
    left/right classes) whose classifier kernels are scaled by ``sharpen``; returns ``path``."""
    path = Path(path)
    keras.utils.set_random_seed(seed)
    for view in views:
        names = lr_merge(class_names)[0] if view == "sagittal" else list(class_names)
        model = build_quicknat((None, None, 1), len(names), filters=4, kernel_size=3, se="scse", dropout=0.2)
        for variable in model.weights:
            if variable.path.endswith("classifier_conv/kernel"):
                variable.assign(keras.ops.convert_to_numpy(variable) * sharpen)
        (path / view).mkdir(parents=True, exist_ok=True)
        save_model(model, path / view / MODEL_FILE, {"kind": "segmentation", "architecture": "quicknat",
                                                     "view": view, "class_names": names})
    (path / "config.json").write_text(json.dumps({"model": "quicknat", "class_names": list(class_names),
                                                  "voxel_size": voxel_size, "views": list(views)}))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("model") / "run")


@pytest.fixture(scope="module")
def phantom_scan(tmp_path_factory):
    """A phantom head as an int16 NIfTI with 1 x 1 x 1.5 mm voxels; (path, image)."""
    image, _, affine = make_phantom(seed=7)
    affine = affine @ np.diag([1.0, 1.0, 1.5, 1.0])
    img = nib.Nifti1Image(np.rint(image).astype(np.int16), affine)
    path = tmp_path_factory.mktemp("scan") / "head.nii.gz"
    nib.save(img, path)
    return path, nib.load(path)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def segment(scan, out, model, **options):
    return api.segment_scan(scan, out, model=str(model), precision="float32", progress=False, **options)


@pytest.mark.slow
def test_every_storage_order_gives_the_same_labels_and_volumes(tiny_model, phantom_scan, tmp_path):
    path, img = phantom_scan
    segment(path, tmp_path / "ref.nii.gz", tiny_model, volumes=tmp_path / "ref.csv")
    reference = np.asarray(nib.load(tmp_path / "ref.nii.gz").dataobj)
    assert len(np.unique(reference)) >= 4  # a varied label map, not one class
    data = np.asarray(img.dataobj)
    for codes in ("LPS", "LIA", "ASL", "SAR"):  # flips, flips + permutations, a pure permutation
        stored, affine = reoriented(data, img.affine, tuple(codes))
        copy = nib.Nifti1Image(stored, affine)
        nib.save(copy, tmp_path / f"{codes}.nii.gz")
        segment(tmp_path / f"{codes}.nii.gz", tmp_path / f"{codes}_seg.nii.gz", tiny_model,
                volumes=tmp_path / f"{codes}.csv")
        result = nib.load(tmp_path / f"{codes}_seg.nii.gz")
        assert nib.aff2axcodes(result.affine) == tuple(codes)
        expected = ornts.apply_orientation(
            reference, ornts.ornt_transform(ornts.io_orientation(img.affine), ornts.io_orientation(affine)))
        np.testing.assert_array_equal(np.asarray(result.dataobj), expected, err_msg=codes)
        table = _rows(tmp_path / f"{codes}.csv")
        shown = "x".join(f"{v:g}" for v in nib.affines.voxel_sizes(affine))
        assert {row.pop("input_voxel_mm") for row in table} == {shown}  # in the stored axis order
        assert table == [{k: v for k, v in row.items() if k != "input_voxel_mm"}
                         for row in _rows(tmp_path / "ref.csv")], codes


@pytest.mark.slow
def test_mask_brain_and_volume_table(tiny_model, phantom_scan, tmp_path):
    path, img = phantom_scan
    rows = segment(path, tmp_path / "seg.nii.gz", tiny_model, volumes=tmp_path / "v.csv",
                   mask=tmp_path / "mask.nii.gz", brain=tmp_path / "brain.nii.gz")
    labels = np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
    mask = nib.load(tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (labels > 0).astype(np.uint8))
    assert mask.get_data_dtype() == np.uint8 and np.allclose(mask.affine, img.affine)
    brain = nib.load(tmp_path / "brain.nii.gz")
    assert brain.get_data_dtype() == np.int16 and np.allclose(brain.affine, img.affine)
    stored = np.asarray(img.dataobj)
    np.testing.assert_array_equal(np.asarray(brain.dataobj), np.where(labels > 0, stored, 0))
    assert 0 < np.count_nonzero(labels) < labels.size

    table = _rows(tmp_path / "v.csv")
    assert list(table[0]) == ["label", "name", "voxels", "volume_mm3", "qc_score", "input_voxel_mm", "views"]
    assert {r["views"] for r in table} == {"axial+coronal+sagittal"}
    assert [r["name"] for r in table] == [*CLASSES[1:], TOTAL_BRAIN, TOTAL_INTRACRANIAL]
    assert {r["input_voxel_mm"] for r in table} == {"1x1x1.5"}
    by_name = {r["name"]: r for r in table}
    counts = np.bincount(labels.ravel(), minlength=len(CLASSES))
    assert int(by_name[TOTAL_INTRACRANIAL]["voxels"]) == counts[1:].sum()
    assert int(by_name[TOTAL_BRAIN]["voxels"]) == counts[1:4].sum()  # Other-CSF is not brain
    assert float(by_name[TOTAL_BRAIN]["volume_mm3"]) == pytest.approx(1.5 * counts[1:4].sum())
    for label, name in enumerate(CLASSES[1:], start=1):
        assert int(by_name[name]["voxels"]) == counts[label]
        if counts[label]:
            assert 0.0 <= float(by_name[name]["qc_score"]) <= 1.0
    assert by_name[TOTAL_BRAIN]["qc_score"] == ""
    assert [r["name"] for r in rows] == [r["name"] for r in table]


@pytest.mark.slow
def test_posteriors_and_uncertainty_come_from_the_label_interpolation(tiny_model, phantom_scan, tmp_path):
    path, img = phantom_scan
    segment(path, tmp_path / "seg.nii.gz", tiny_model, posteriors=tmp_path / "post.nii.gz")
    labels = np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
    posteriors = nib.load(tmp_path / "post.nii.gz")
    assert posteriors.shape == (*img.shape, len(CLASSES)) and np.allclose(posteriors.affine, img.affine)
    probs = posteriors.get_fdata(dtype=np.float32)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=len(CLASSES) / 255)
    # The label's class has the highest probability, up to the uint8 rounding of the two compared.
    chosen = np.take_along_axis(probs, labels[..., None].astype(np.intp), axis=-1)[..., 0]
    assert (chosen >= probs.max(-1) - 1.001 / 255).all()

    rows = segment(path, tmp_path / "mc.nii.gz", tiny_model, mc_samples=2, seed=1,
                   uncertainty=tmp_path / "unc.nii.gz", volumes=tmp_path / "mc.csv")
    uncertainty = nib.load(tmp_path / "unc.nii.gz").get_fdata()
    assert uncertainty.shape == img.shape and 0 <= uncertainty.min() and uncertainty.max() <= 1
    assert uncertainty[labels == 0].mean() < uncertainty[labels > 0].mean()
    assert all("volume_cv" in r for r in rows)
    assert list(_rows(tmp_path / "mc.csv")[0])[-3:] == ["volume_cv", "input_voxel_mm", "views"]


def test_a_failure_while_writing_leaves_no_output(tiny_model, phantom_scan, tmp_path, monkeypatch):
    path, _ = phantom_scan
    out = tmp_path / "out"
    out.mkdir()

    def broken_qc(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("gan_seg.seg.scans.render_qc", broken_qc)
    with pytest.raises(OSError, match="No space left"):
        segment(path, out / "seg.nii.gz", tiny_model, volumes=out / "v.csv", qc=out / "qc.png",
                mask=out / "mask.nii.gz")
    assert list(out.iterdir()) == []  # neither outputs nor temporaries


def test_views_weighted_0_are_not_run(tiny_model):
    segmenter = Segmenter(tiny_model, view_weights={"sagittal": 0.0})
    assert segmenter.views == tuple(segmenter.models) == ("axial", "coronal") and segmenter.note is None
    with pytest.raises(InputError, match="sagittal alone cannot tell left from right"):
        Segmenter(tiny_model, views="coronal,sagittal", view_weights={"coronal": 0.0})


def test_a_model_without_every_view_says_so(phantom_scan, tmp_path):
    model = write_random_model(tmp_path / "axial-only", views=("axial",))
    lines = []
    segment(phantom_scan[0], tmp_path / "seg.nii.gz", model, report=lines.append)
    assert any("has trained networks for axial only" in line and "1 of 3 views" in line for line in lines)
    assert Segmenter(model, views="axial").note is None  # asked for: nothing to say


@pytest.mark.slow
def test_bfloat16_rebuilds_the_networks_and_agrees(tiny_model, phantom_scan, tmp_path):
    bf16 = Segmenter(tiny_model, precision="mixed_bfloat16")
    model = bf16.models["axial"]
    policies = [layer.dtype_policy.name for layer in model.layers[1:]]
    assert policies[:-1] == ["mixed_bfloat16"] * (len(policies) - 1) and policies[-1] == "float32"
    fp32 = Segmenter(tiny_model, precision="float32")
    np.testing.assert_array_equal(model.get_weights()[0], fp32.models["axial"].get_weights()[0])
    volume = np.zeros((48, 64, 48), np.float32)
    volume[8:40, 8:56, 8:40] = np.random.default_rng(0).uniform(0.2, 1.0, (32, 48, 32))
    a, b = fp32.segment(volume), bf16.segment(volume)
    assert a.probabilities.dtype == b.probabilities.dtype == np.float32
    assert not np.array_equal(a.probabilities, b.probabilities)  # bf16 really computes in bf16 ...
    assert float((a.labels == b.labels).mean()) > 0.9  # ... and agrees
    with pytest.raises(InputError, match="precision"):
        Segmenter(tiny_model, precision="float16")


def test_example_brain_is_package_data_with_its_licence():
    path = example_scan()
    assert path.name == EXAMPLE and path.stat().st_size < 1_000_000
    img = nib.load(path)
    assert img.shape == (91, 109, 91) and np.allclose(np.diag(img.affine)[:3], 2.0)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S") and img.get_data_dtype() == np.uint8
    licence = (path.parent / "LICENSE.txt").read_text()
    assert "BSD-3-clause" in licence and "Holmes" in licence and "Redistribution and use" in licence


@pytest.mark.slow
def test_example_input_choice(tiny_model, tmp_path):
    rows = segment(None, tmp_path / "seg.nii.gz", tiny_model, example=True)
    assert nib.load(tmp_path / "seg.nii.gz").shape == (91, 109, 91) and rows
    with pytest.raises(InputError, match="not both"):
        segment(example_scan(), tmp_path / "x.nii.gz", tiny_model, example=True)
    with pytest.raises(InputError, match="--example"):
        segment(None, tmp_path / "x.nii.gz", tiny_model)
    assert not (tmp_path / "x.nii.gz").exists()


@pytest.mark.slow
def test_example_brain_ships_in_a_non_editable_install(tmp_path):
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for folder in ("gan_seg", "cli", "weights"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-cache-dir", "-q", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("gan_seg-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert {f"gan_seg/seg/example/{EXAMPLE}", "gan_seg/seg/example/LICENSE.txt"} <= names
    # Imported from the unpacked wheel (not this checkout), the example is found and readable.
    probe = ("import gan_seg, nibabel; from gan_seg.seg.scans import example_scan; p = example_scan(); "
             "print(gan_seg.__file__); print(p); print(nibabel.load(p).shape)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env=cli_env({"PYTHONPATH": tmp_path / "site"}), timeout=300)
    assert result.returncode == 0, result.stderr
    module, example, shape = result.stdout.strip().splitlines()[-3:]
    assert Path(module).is_relative_to(tmp_path / "site") and Path(example).is_relative_to(tmp_path / "site")
    assert shape == "(91, 109, 91)"


def test_brain_output_that_cannot_hold_the_input_type_is_refused_first(tiny_model, tmp_path):
    nib.save(nib.Nifti1Image(make_phantom()[0].astype(np.float64), np.eye(4)), tmp_path / "f64.nii.gz")
    with pytest.raises(InputError, match="MGZ cannot hold"):
        segment(tmp_path / "f64.nii.gz", tmp_path / "seg.nii.gz", tiny_model, brain=tmp_path / "b.mgz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f64.nii.gz"]


THREADS_PROBE = """
import json, os, sys
from gan_seg.engine.backend import limit_threads
import keras
found = {"returned": limit_threads(int(sys.argv[1]))}
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    found["intra"] = tf.config.threading.get_intra_op_parallelism_threads()
    found["inter"] = tf.config.threading.get_inter_op_parallelism_threads()
found["cores"] = len(os.sched_getaffinity(0))
found["omp"] = os.environ["OMP_NUM_THREADS"]
print(json.dumps(found))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_thread_limit_reaches_the_backend(backend):
    if backend == "jax":
        pytest.importorskip("jax")
    run = subprocess.run([sys.executable, "-c", THREADS_PROBE, "1"], capture_output=True, text=True,
                         env=cli_env({"KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}), timeout=300)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["returned"] == 1 and found["omp"] == "1"
    if backend == "tensorflow":
        assert (found["intra"], found["inter"]) == (1, 1)
    else:  # XLA sizes its pool from the cores the process may use
        assert found["cores"] == 1


def test_thread_limit_checks_its_value_and_keeps_all_cores_by_default():
    before = dict(os.environ)
    assert limit_threads(None) == available_cores() == len(os.sched_getaffinity(0))
    assert dict(os.environ) == before
    for wrong in (0, -2, 1.5, True, "2"):
        with pytest.raises(InputError, match="--threads"):
            limit_threads(wrong)
    assert dict(os.environ) == before
