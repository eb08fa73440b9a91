"""Conform a T1 scan of any orientation and voxel size for the 2D networks, and map results back.

The conform recipe (:func:`conform`):

1. Reorient the voxel array to the closest RAS axes (a flip/transpose; any obliquity stays in the affine).
2. Define an isotropic grid (``voxel_size`` mm, default 1) aligned with the world (scanner RAS) axes that
   covers the world bounding box of ALL input voxel corners: no fixed 256^3 box, large fields of view are
   never cut.
3. Find the head: on a copy subsampled to at most 128 voxels per axis and 3x3x3 mean filtered, voxels
   brighter than 10% of the way from the minimum to the 99.5th percentile, in connected blobs of at least
   10% of the largest. Crop the grid to the head's bounding box plus ``margin_mm``, then pad each axis to a
   multiple of ``multiple`` (16 = 4 poolings).
4. Sample the input at the grid's voxel centres by trilinear interpolation through
   ``inv(input_affine) @ grid_affine`` (oblique inputs included); outside the input is background.
5. Normalise intensities to [0, 1]: clip to the 0.5th..99.5th percentiles of the head voxels, then min-max.

Axes of the conformed array: 0 = left->right, 1 = posterior->anterior, 2 = inferior->superior.
Results go back to the input grid by nearest neighbour (labels) or trilinear (float maps) in world space:
each input voxel centre looks up the conformed voxel that contains it; outside the conformed box is 0.
Resampling builds no coordinate arrays, so memory stays near a few copies of the volume.
"""

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Conformed:
    """A conformed volume: ``data`` float32 in [0, 1] on RAS axes and ``affine`` its voxel->world matrix.

    ``intensity_range`` holds the input intensities mapped to 0 and 1.
    """

    data: np.ndarray
    affine: np.ndarray
    intensity_range: tuple[float, float]


def _resample(source, source_affine, shape, affine, order, cval=0.0, dtype=np.float32):
    """Sample ``source`` at the voxel centres of the grid (``shape``, ``affine``; both voxel->world).

    ``order`` 0 = nearest voxel, 1 = trilinear; points outside the source's voxels get ``cval``.
    No coordinate arrays are built: memory is the output alone.
    """
    matrix = np.linalg.inv(source_affine) @ affine
    return ndimage.affine_transform(source, matrix, output_shape=tuple(shape), output=dtype, order=order,
                                    mode="grid-constant", cval=cval, prefilter=False)


def _sample(volume, limit=2**22):
    """At most about ``limit`` evenly strided voxels of ``volume`` (a view), for robust statistics."""
    flat = volume.reshape(-1)
    return flat[::max(1, flat.size // limit)]


def _head_box(data, threshold):
    """Index bounds (low, high inclusive) of the head in ``data``, or the whole array when none is found.

    Works on every ``step``-th voxel (at most 128 per axis), so its cost stays small.
    """
    step = -(-max(data.shape) // 128)
    mask = ndimage.uniform_filter(data[::step, ::step, ::step], 3) > threshold
    blobs, count = ndimage.label(mask)
    if count:
        sizes = np.bincount(blobs.ravel())[1:]
        mask = np.isin(blobs, 1 + np.flatnonzero(sizes >= 0.1 * sizes.max()))
    if not mask.any():
        return np.zeros(3, int), np.array(data.shape) - 1
    bounds = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    low, high = np.array([b[0] for b in bounds]), np.array([b[-1] for b in bounds])
    return low * step, np.minimum((high + 1) * step - 1, np.array(data.shape) - 1)


def _world_box(affine, low, high):
    """World bounding box (min, max corners) of the voxel index box ``low``..``high``."""
    corners = np.stack(np.meshgrid(*zip(low, high, strict=True), indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:]
    return world.min(axis=1), world.max(axis=1)


def conform(img, voxel_size=1.0, margin_mm=8.0, multiple=16):
    """Conform a 3D scan (nibabel image) as the module docstring describes; returns :class:`Conformed`."""
    data = img.get_fdata(dtype=np.float32)
    ornt = nib.io_orientation(img.affine)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    data = np.ascontiguousarray(nib.orientations.apply_orientation(data, ornt))

    background, top = float(data.min()), float(np.percentile(_sample(data), 99.5))
    threshold = background + 0.1 * (top - background)
    shape = np.array(data.shape)
    fov_low, fov_high = _world_box(affine, np.full(3, -0.5), shape - 0.5)
    n_fov = np.ceil((fov_high - fov_low) / voxel_size - 1e-6)
    head_low, head_high = _head_box(data, threshold)
    head_low, head_high = _world_box(affine, head_low - 0.5, head_high + 0.5)
    low = np.clip(np.floor((head_low - margin_mm - fov_low) / voxel_size + 1e-6), 0, n_fov)
    high = np.clip(np.ceil((head_high + margin_mm - fov_low) / voxel_size - 1e-6), 0, n_fov)
    size = (np.ceil((high - low) / multiple) * multiple).astype(int)
    low -= (size - (high - low)) // 2
    grid = np.diag([voxel_size] * 3 + [1.0])
    grid[:3, 3] = fov_low + voxel_size * (low + 0.5)

    out = _resample(data, affine, tuple(size), grid, order=1, cval=background)
    del data
    inside = _sample(out)
    inside = inside[inside > threshold]
    lo, hi = np.percentile(inside, [0.5, 99.5]) if inside.size else (background, top)
    if hi <= lo:
        lo, hi = float(out.min()), float(out.max())
    out -= lo
    out *= 1.0 / (hi - lo) if hi > lo else 0.0
    np.clip(out, 0.0, 1.0, out=out)
    return Conformed(out, grid, (float(lo), float(hi)))


def conform_labels(label_img, conformed):
    """Resample a label volume (nibabel image) onto the conformed grid by nearest neighbour; int16."""
    labels = np.asarray(label_img.dataobj).reshape(label_img.shape[:3])
    return _resample(labels, label_img.affine, conformed.data.shape, conformed.affine, order=0,
                     dtype=np.int16)


def resample_to_input(volume, conformed, input_img, order=1):
    """Map a volume on the conformed grid back to the input's 3D grid, in world space.

    ``order`` 0 = nearest (keeps the dtype), 1 = trilinear (float32). Input voxels outside the box get 0.
    """
    volume = np.asarray(volume)
    if volume.shape != conformed.data.shape:
        raise ValueError(f"volume shape {volume.shape} is not the conformed shape {conformed.data.shape}")
    return _resample(volume, conformed.affine, input_img.shape[:3], input_img.affine, order=order,
                     dtype=volume.dtype if order == 0 else np.float32)


def to_input_grid(labels_conformed, conformed, input_img):
    """Map a conformed label map back to the input voxel grid by nearest neighbour in world space."""
    return resample_to_input(labels_conformed, conformed, input_img, order=0)
