"""Properties of the geometry code (hypothesis): random storage orders, voxel sizes and origins.

For pure reorientations and input voxel sizes that are whole multiples of the model grid, every input
voxel centre is a conformed voxel centre, so conforming a label map and mapping it back (nearest neighbour,
or the argmax of one-hot probabilities as ``segment`` does) puts every label back on the voxel it came
from, and the output always has the input's shape.
"""

import itertools

import nibabel as nib
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gan_seg.seg.preprocessing import InputGrid, conform, conform_labels
from tests.helpers import reoriented, rotation

AXCODES = ["".join(codes) for order in itertools.permutations(("RL", "AP", "SI"))
           for codes in itertools.product(*order)]  # the 48 storage orders
CLASSES = 4


@settings(max_examples=30, deadline=None)
@given(codes=st.sampled_from(AXCODES), shape=st.tuples(*[st.integers(2, 9)] * 3),
       grid=st.sampled_from([1.0, 1.5, 2.0]), multiple=st.sampled_from([1, 2, 3]),
       origin=st.tuples(*[st.floats(-40.0, 40.0, allow_nan=False)] * 3), seed=st.integers(0, 2**16))
def test_labels_return_to_the_voxels_they_came_from(codes, shape, grid, multiple, origin, seed):
    rng = np.random.default_rng(seed)
    labels = np.pad(rng.integers(0, CLASSES, shape).astype(np.uint8), 2)
    image = np.pad((1.0 + labels[2:-2, 2:-2, 2:-2] + rng.uniform(0.0, 0.5, shape)).astype(np.float32), 2)
    affine = np.diag([grid * multiple] * 3 + [1.0])
    affine[:3, 3] = origin
    stored_labels, stored_affine = reoriented(labels, affine, tuple(codes))
    stored_image, _ = reoriented(image, affine, tuple(codes))
    scan = nib.Nifti1Image(stored_image, stored_affine)
    conformed = conform(scan, voxel_size=grid)
    on_grid = conform_labels(nib.Nifti1Image(stored_labels, stored_affine), conformed).astype(np.uint8)
    back = InputGrid(conformed, scan)
    nearest = back.volume(on_grid, order=0)
    assert nearest.shape == scan.shape
    np.testing.assert_array_equal(nearest, stored_labels)
    one_hot = (np.arange(CLASSES)[:, None, None, None] == on_grid[None]).astype(np.float32)
    np.testing.assert_array_equal(back.labels(one_hot), stored_labels)


@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(*[st.integers(2, 9)] * 3), zooms=st.tuples(*[st.floats(0.6, 3.5)] * 3),
       angles=st.tuples(*[st.floats(-45.0, 45.0)] * 2), grid=st.sampled_from([1.0, 1.5]),
       seed=st.integers(0, 2**16))
def test_any_geometry_keeps_the_input_grid_and_the_whole_head(shape, zooms, angles, grid, seed):
    """Oblique, anisotropic scans: the mapped-back volume has the input's shape, and the conformed box
    holds every head voxel (a conformed volume of ones maps back to one on all of them)."""
    rng = np.random.default_rng(seed)
    head = np.pad(np.ones(shape, bool), 2)
    image = np.where(head, 1.0 + rng.uniform(0.0, 0.5, head.shape), 0.0).astype(np.float32)
    affine = rotation(*angles) @ np.diag([*zooms, 1.0])
    affine[:3, 3] = rng.uniform(-30.0, 30.0, 3)
    scan = nib.Nifti1Image(image, affine)
    conformed = conform(scan, voxel_size=grid)
    back = InputGrid(conformed, scan).volume(np.ones(conformed.data.shape, np.uint8), order=0)
    assert back.shape == scan.shape
    assert back[head].all()
