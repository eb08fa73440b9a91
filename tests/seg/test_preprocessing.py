"""gan_seg.seg.preprocessing: conform any orientation / voxel size, map results back to the input grid.

A labelled ellipsoid phantom is defined in world (mm) coordinates, so the same object can be sampled on any
grid: reoriented, oblique or at another voxel size.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from gan_seg.seg.preprocessing import (
    InputGrid,
    conform,
    conform_labels,
    resample_to_input,
    robust_intensities,
    to_input_grid,
)
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


# -- robust intensities: padding values and extreme voxels ---------------------------------------------
def _int16(img):
    return nib.Nifti1Image(np.rint(img.get_fdata(dtype=np.float32) * 1000).astype(np.int16), img.affine)


def _padded(img, value, planes, axis=2, side="low"):
    """``img`` with ``planes`` extra planes of ``value`` added outside its field of view."""
    data = np.asarray(img.dataobj)
    shape = list(data.shape)
    shape[axis] = planes
    pad = np.full(shape, value, data.dtype)
    affine = img.affine.copy()
    if side == "low":
        affine[:3, 3] -= planes * affine[:3, axis]
        data = np.concatenate([pad, data], axis=axis)
    else:
        data = np.concatenate([data, pad], axis=axis)
    return nib.Nifti1Image(data, affine)


def test_an_extreme_voxel_or_padding_planes_do_not_change_the_conformed_volume():
    clean = _int16(copy("RAS"))
    reference = conform(clean)
    data = np.asarray(clean.dataobj)
    single = data.copy()
    single[1, 2, 3] = -32768  # one broken voxel in the air
    bright = data.copy()
    bright[-2, 3, 4] = 32767
    padded = _padded(_padded(clean, -32768, 3), 4095, 2, axis=1, side="high")  # planes outside the view
    replaced = data.copy()
    replaced[:, :, :3] = -32768  # padding planes over the (empty) border of the field of view
    replaced[:, -2:, :] = 4095  # and padding above the data on another side
    cases = {"min voxel": nib.Nifti1Image(single, clean.affine),
             "max voxel": nib.Nifti1Image(bright, clean.affine), "padding planes": padded,
             "padding over empty planes": nib.Nifti1Image(replaced, clean.affine)}
    for name, broken in cases.items():
        conformed = conform(broken)
        assert conformed.background == 0 and conformed.intensity_range == reference.intensity_range, name
        np.testing.assert_allclose(conformed.affine, reference.affine, err_msg=name)
        differ = np.argwhere(conformed.data != reference.data)
        if name == "max voxel":  # clipped, not removed: a bright speck where it was, in the air
            assert len(differ) <= 8 and (reference.data[tuple(differ.T)] == 0).all(), name
        else:
            assert len(differ) == 0, name


@pytest.mark.parametrize("value, planes, voxel_size", [(-32768, 12, 1.0), (32767, 7, 1.5), (-1000, 13, 1.5)])
def test_padding_slab_outside_the_field_of_view_changes_no_label(value, planes, voxel_size):
    clean = _int16(copy("RAS"))
    padded = _padded(clean, value, planes)
    conformed = conform(padded, voxel_size)
    reference = conform(clean, voxel_size)
    assert conformed.background == 0 and conformed.intensity_range == reference.intensity_range
    offset = np.linalg.solve(reference.affine[:3, :3], conformed.affine[:3, 3] - reference.affine[:3, 3])
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-9)  # the same sample points (lattice)
    labels = to_input_grid(segment(conformed), conformed, padded)[:, :, planes:]
    expected = to_input_grid(segment(reference), reference, clean)
    assert agreement(labels, expected) == 1.0


def test_robust_intensities_reports_background_and_padding():
    data = np.full((20, 20, 20), 10.0, np.float32)  # noisy air at 10, a head at 100..200
    data += np.random.default_rng(0).uniform(0, 2, data.shape).astype(np.float32)
    data[5:15, 5:15, 5:15] = np.random.default_rng(1).uniform(100, 200, (10, 10, 10))
    data[:, :, :2] = -32768
    data[3, 3, 10] = 1e6
    background, padding = robust_intensities(data)
    assert padding == [-32768.0] and 10 <= background <= 12
    assert data.min() >= 10 and data.max() < 1e6 and data[3, 3, 10] == data.max()  # the spike: clipped
    assert (data[:, :, :2] == background).all()


@pytest.mark.skipif(not (TEMPLATES / "ch2.nii.gz").exists(), reason="mricron-data (Colin27) not installed")
def test_real_brain_with_padding_and_a_broken_voxel():
    img = load_volume(TEMPLATES / "ch2.nii.gz")
    clean = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int16), img.affine)
    reference = conform(clean)
    expected = to_input_grid(segment(reference), reference, clean)
    data = np.asarray(clean.dataobj)
    single = data.copy()
    single[5, 5, 5] = -32768
    above = data.copy()
    above[:, :2, :] = 4000  # padding above the data over the only empty posterior planes of Colin27 ...
    above = _padded(nib.Nifti1Image(above, clean.affine), 4000, 9, axis=2, side="high")  # ... and on top
    cases = {"int16 min voxel": (nib.Nifti1Image(single, clean.affine), np.s_[:, :, :]),
             "padding slab": (_padded(clean, -32768, 21), np.s_[:, :, 21:]),
             "padding above the data": (above, np.s_[:, :, :-9])}
    for name, (broken, keep) in cases.items():
        conformed = conform(broken)  # 1 mm: quick; 1.5 mm lattices: test_padding_slab_outside...
        np.testing.assert_array_equal(conformed.affine, reference.affine, err_msg=name)  # the same box
        assert conformed.data.shape == reference.data.shape, name
        labels = to_input_grid(segment(conformed), conformed, broken)[keep]
        assert agreement(labels, expected) >= 0.99, name


# -- back to the input grid: exact in every storage order ----------------------------------------------
def _probabilities(shape, classes=5, seed=0):
    """A smooth random class-probability field (class-major), sums to 1."""
    rng = np.random.default_rng(seed)
    logits = np.stack([ndimage.gaussian_filter(rng.normal(0, 4, shape), 2) for _ in range(classes)])
    probs = np.exp(logits - logits.max(axis=0))
    return (probs / probs.sum(axis=0)).astype(np.float32)


def _brute_force_labels(grid, probabilities):
    """Every class interpolated at every input voxel; argmax, ties -> lowest class."""
    values = np.stack([grid.probability(probabilities, c) for c in range(len(probabilities))])
    return np.argmax(values, axis=0)


@pytest.mark.parametrize("kind", ["RAS", "oblique", "1.5mm"])
def test_labels_are_the_argmax_of_the_interpolated_probabilities(kind):
    img = copy(kind)
    conformed = conform(img, voxel_size=1.5 if kind == "RAS" else 1.0, margin_mm=0.0)  # edge near the head
    grid = InputGrid(conformed, img, slab_voxels=4000)  # several slabs
    probabilities = _probabilities(conformed.data.shape)
    labels = grid.labels(probabilities)
    assert labels.shape == img.shape and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, _brute_force_labels(grid, probabilities))
    assert len(np.unique(labels)) == len(probabilities)
    ties = np.full_like(probabilities, 0.2)  # all equal: the lowest class, 0
    assert not grid.labels(ties).any()
    ties[3:] = 0.3  # classes 3 and 4 tie: 3, except near the box, where the outside (background) weighs
    found = grid.labels(ties)
    np.testing.assert_array_equal(found, _brute_force_labels(grid, ties))
    assert (found == 3).mean() > 0.5 and not (found == 4).any()


@pytest.mark.parametrize("codes", ["LPS", "LIA", "ASL", "SAR", "PIL"])
def test_every_storage_order_maps_back_identically(codes):
    img = copy("RAS")
    conformed = conform(img, voxel_size=1.5)  # 1 mm voxel centres on 1.5 mm cell borders: many ties
    probabilities = _probabilities(conformed.data.shape, seed=1)
    reference = InputGrid(conformed, img)
    expected = {"labels": reference.labels(probabilities), "entropy": reference.entropy(probabilities),
                "class 2": reference.probability(probabilities, 2),
                "nearest": reference.volume(np.argmax(probabilities, axis=0).astype(np.uint8), order=0)}
    data, affine = reoriented(img.get_fdata(dtype=np.float32), img.affine, tuple(codes))
    stored = nib.Nifti1Image(data, affine)
    other = conform(stored, voxel_size=1.5)
    np.testing.assert_array_equal(other.data, conformed.data)
    grid = InputGrid(other, stored)
    found = {"labels": grid.labels(probabilities), "entropy": grid.entropy(probabilities),
             "class 2": grid.probability(probabilities, 2),
             "nearest": grid.volume(np.argmax(probabilities, axis=0).astype(np.uint8), order=0)}
    for name, values in expected.items():
        moved, _ = reoriented(values, img.affine, tuple(codes))
        np.testing.assert_array_equal(found[name], moved, err_msg=name)
