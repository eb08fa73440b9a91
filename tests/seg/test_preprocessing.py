"""gan_seg.seg.preprocessing: conform any orientation / voxel size, map results back to the input grid.

A labelled ellipsoid phantom is defined in world (mm) coordinates, so the same object can be sampled on any
grid: reoriented, oblique or at another voxel size.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gan_seg.seg.preprocessing import conform, conform_labels, resample_to_input, to_input_grid
from gan_seg.seg.volumes import load_volume
from tests.helpers import lookup, reoriented, rotation

SHAPE = (44, 52, 40)
RAS = np.diag([1.0, 1.0, 1.0, 1.0])
RAS[:3, 3] = -(np.array(SHAPE) - 1) / 2
TEMPLATES = Path("/usr/share/mricron/templates")


def phantom(shape, affine, centre=(2.0, -3.0, 1.0), radii=(16.0, 20.0, 14.0)):
    """(T1-like intensities, labels) at the voxel centres: scalp 1, brain 2, bright blob 3, dark hole 0."""
    ijk = np.indices(shape).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:]) - np.array(centre)[:, None]
    scale = np.array(radii)[:, None] / 16
    r = np.sqrt(((xyz / np.array(radii)[:, None]) ** 2).sum(axis=0))
    blob = np.linalg.norm(xyz - np.array([[4.0], [6.0], [1.0]]) * scale, axis=0) <= 5 * scale[0]
    hole = np.linalg.norm(xyz - np.array([[-4.0], [-5.0], [0.0]]) * scale, axis=0) <= 5 * scale[0]
    regions = [blob, hole, r <= 0.7, r <= 1]
    intensity, labels = np.select(regions, [1.0, 0.2, 0.8, 0.6], 0.0), np.select(regions, [3, 0, 2, 1], 0)
    return intensity.reshape(shape).astype(np.float32), labels.reshape(shape).astype(np.uint8)


def segment(conformed):
    """A trivial threshold 'segmenter' on the conformed (normalised) data."""
    return np.digitize(conformed.data, [0.3, 0.65, 0.9]).astype(np.uint8)


def copy(kind):
    """A nibabel image of the phantom: 'RAS', other axis codes, 'oblique' or '1.5mm'."""
    if kind == "oblique":
        affine = rotation(10, 7) @ RAS
        return nib.Nifti1Image(phantom(SHAPE, affine)[0], affine)
    if kind == "1.5mm":
        shape = tuple(int(n) for n in np.ceil(np.array(SHAPE) / 1.5))
        affine = np.diag([1.5, 1.5, 1.5, 1.0])
        affine[:3, 3] = -1.5 * (np.array(shape) - 1) / 2
        return nib.Nifti1Image(phantom(shape, affine)[0], affine)
    data, affine = reoriented(phantom(SHAPE, RAS)[0], RAS, tuple(kind))
    assert nib.aff2axcodes(affine) == tuple(kind)
    return nib.Nifti1Image(data, affine)


@pytest.fixture(scope="module")
def ras():
    img = copy("RAS")
    conformed = conform(img)
    return img, conformed, to_input_grid(segment(conformed), conformed, img)


def agreement(a, b):
    """Fraction of the voxels labelled foreground in ``a`` or ``b`` where the two agree."""
    foreground = (a > 0) | (b > 0)
    return float((a == b)[foreground].mean())


def test_ras_phantom_round_trip_is_exact(ras):
    img, conformed, labels = ras
    assert labels.shape == SHAPE and labels.dtype == np.uint8
    assert agreement(labels, phantom(SHAPE, RAS)[1]) == 1.0
    assert conformed.data.dtype == np.float32 and conformed.data.min() == 0 and conformed.data.max() == 1
    assert all(n % 16 == 0 for n in conformed.data.shape)
    np.testing.assert_allclose(conformed.affine[:3, :3], np.eye(3))
    np.testing.assert_allclose(conformed.intensity_range, (0.2, 1.0))
    back = resample_to_input(conformed.data, conformed, img, order=1)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, np.clip((img.get_fdata() - 0.2) / 0.8, 0, 1), atol=1e-6)


@pytest.mark.parametrize("kind", ["LAS", "LPI", "LIA", "ASR"])
def test_reoriented_copies_give_the_same_result(ras, kind):
    img = copy(kind)
    conformed = conform(img)
    np.testing.assert_allclose(conformed.affine, ras[1].affine)
    np.testing.assert_array_equal(conformed.data, ras[1].data)
    labels = to_input_grid(segment(conformed), conformed, img)
    assert labels.shape == img.shape
    assert agreement(labels, lookup(ras[2], RAS, img)) >= 0.99


@pytest.mark.parametrize("kind", ["oblique", "1.5mm"])
def test_oblique_and_coarse_copies_agree(ras, kind):
    img = copy(kind)
    conformed = conform(img)
    assert all(n % 16 == 0 for n in conformed.data.shape)
    np.testing.assert_allclose(conformed.affine[:3, :3], np.eye(3))  # axis-aligned in world space
    labels = to_input_grid(segment(conformed), conformed, img)
    assert labels.shape == img.shape
    assert agreement(labels, lookup(ras[2], RAS, img)) >= 0.85
    assert agreement(labels, phantom(img.shape, img.affine)[1]) >= 0.9
    truth = conform_labels(nib.Nifti1Image(phantom(img.shape, img.affine)[1], img.affine), conformed)
    assert truth.dtype == np.int16 and agreement(truth, segment(conformed)) >= 0.85


def test_conform_labels_matches_the_conformed_grid(ras):
    data, affine = reoriented(phantom(SHAPE, RAS)[1], RAS, ("L", "I", "A"))
    labels = conform_labels(nib.Nifti1Image(data, affine), ras[1])
    assert labels.shape == ras[1].data.shape
    np.testing.assert_array_equal(labels, segment(ras[1]))


def test_large_field_of_view_keeps_an_off_centre_head():
    shape, voxel = (100, 100, 100), 3.0  # 300 mm field of view
    affine = np.diag([voxel] * 3 + [1.0])
    affine[:3, 3] = -150 + voxel / 2
    centre, radii = (95.0, -80.0, 100.0), (48.0, 60.0, 42.0)  # reaches 143 mm of the 150 mm edge
    data, truth = phantom(shape, affine, centre, radii)
    data[2:4, 95:97, 2:4] = 1.0  # a bright speck (vitamin E marker) in the far corner is not the head
    img = nib.Nifti1Image(data, affine)
    conformed = conform(img, voxel_size=2.0)
    np.testing.assert_allclose(conformed.affine[:3, :3], 2 * np.eye(3))
    assert all(n % 16 == 0 for n in conformed.data.shape)
    assert all(n * 2 < 200 for n in conformed.data.shape)  # cropped to the head, not to the field of view
    ones = to_input_grid(np.ones(conformed.data.shape, np.uint8), conformed, img)
    assert ones[truth > 0].all() and not ones[:10].any()
    assert agreement(to_input_grid(segment(conformed), conformed, img), truth) >= 0.85


def test_constant_image_does_not_fail():
    conformed = conform(nib.Nifti1Image(np.full((20, 20, 20), 7, np.float32), np.eye(4)))
    assert conformed.data.shape == (32, 32, 32) and not conformed.data.any()


@pytest.mark.skipif(not (TEMPLATES / "ch2.nii.gz").exists(), reason="mricron-data (Colin27) not installed")
def test_real_brain_any_orientation():
    img = load_volume(TEMPLATES / "ch2.nii.gz")
    conformed = conform(img)
    assert all(n % 16 == 0 for n in conformed.data.shape) and conformed.data.size < 256**3
    head = conformed.data > 0.15
    labels = to_input_grid(head.astype(np.uint8), conformed, img)
    lo, hi = conformed.intensity_range
    assert agreement(labels, (img.get_fdata(dtype=np.float32) - lo) / (hi - lo) > 0.15) >= 0.999
    data, affine = reoriented(img.get_fdata(dtype=np.float32), img.affine, ("L", "I", "A"))
    lia = conform(nib.Nifti1Image(data, affine))
    np.testing.assert_array_equal(lia.data, conformed.data)
    np.testing.assert_allclose(lia.affine, conformed.affine)
