"""Conform a T1 scan of any orientation and voxel size for the 2D networks, and map results back.

The conform recipe (:func:`conform`):

1. Reorient the voxel array to the closest RAS axes (a flip/transpose; any obliquity stays in the affine).
   Everything below works on this canonical array, so copies of a scan stored in other axis orders give
   bit-identical conformed volumes.
2. Robust intensities (:func:`robust_intensities`): a value that fills at least half of a face of the
   array (padding planes or slabs, e.g. -32768 or 4095) and lies far outside the other voxels' range
   (beyond half their 0.5-99.5 percentile range) is padding: every voxel of that value becomes
   background. The background is the median of the other border voxels; every voxel is clipped to
   ``[p0.5 - r, p99.5 + r]`` of the non-padding voxels (``r`` = that percentile range), so a single
   extreme voxel cannot move the head box or the intensity range.
3. Find the head: on a copy subsampled to at most 128 voxels per axis and 3x3x3 mean filtered, voxels
   brighter than 10% of the way from the background to the 99.5th percentile of the voxels that are not
   exactly background (so the amount of empty field of view does not matter), in connected blobs of at
   least 10% of the largest.
4. Define an isotropic grid (``voxel_size`` mm, default 1) aligned with the world (scanner RAS) axes,
   covering the head's world bounding box plus ``margin_mm`` (wherever the head lies in a large field of
   view: no fixed 256^3 box; beyond the field of view where the head touches it: background there), each
   axis then padded to a multiple of ``multiple`` (16 = 4 poolings). Its voxel centres lie on a lattice
   through the input voxel centre nearest the world origin. So padding, or cropping or adding empty
   planes, changes neither the sample points nor the box, and the 2D networks (not shift-invariant) see
   the same slices (and a 1 mm axis-aligned input conformed at 1 mm is sampled at its own voxels).
5. Sample the input at the grid's voxel centres by trilinear interpolation through
   ``inv(input_affine) @ grid_affine`` (oblique inputs included); outside the input is background.
6. Normalise intensities to [0, 1]: clip to the 0.5th..99.5th percentiles of the head voxels, then min-max.

Axes of the conformed array: 0 = left->right, 1 = posterior->anterior, 2 = inferior->superior.

Back to the input grid (:class:`InputGrid`): the work is done in the input's canonical (RAS-reoriented)
voxel frame, one slab of slices at a time, and the result is flipped/transposed back to the stored order,
so every storage order of a scan gets exactly the same numbers. Class probabilities are interpolated
trilinearly at the input voxel centres, one class at a time, and the label is their argmax (ties go to the
lowest class index); posteriors and the MC uncertainty come from the same interpolation. Input voxels
outside the conformed box are background. No (X, Y, Z, classes) array is ever built on the input grid.
"""

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

SLAB_VOXELS = 2**21  # input voxels per slab when mapping results back (8 MiB per float32 map)


@dataclass(frozen=True)
class Conformed:
    """A conformed volume: ``data`` float32 in [0, 1] on RAS axes and ``affine`` its voxel->world matrix.

    ``intensity_range`` holds the input intensities mapped to 0 and 1; ``background`` the input
    intensity taken as background (outside the field of view, padding).
    """

    data: np.ndarray
    affine: np.ndarray
    intensity_range: tuple[float, float]
    background: float = 0.0


def canonical(img):
    """``(orientation, shape, affine)`` of the input's RAS-reoriented voxel frame (nibabel ``ornt``)."""
    shape = tuple(int(n) for n in img.shape[:3])
    ornt = nib.io_orientation(img.affine)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    ras_shape = tuple(shape[int(axis)] for axis in np.argsort(ornt[:, 0]))
    return ornt, ras_shape, affine


def _to_canonical(data, ornt):
    return np.ascontiguousarray(nib.orientations.apply_orientation(data, ornt))


def _to_stored(data, ornt):
    """Inverse of :func:`_to_canonical`: a RAS-frame array back in the stored axis order."""
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    return np.ascontiguousarray(nib.orientations.apply_orientation(data, back))


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


def _border(data):
    """The voxels of the six faces of ``data`` (1D, corners repeated)."""
    faces = [np.moveaxis(data, axis, 0)[index].ravel() for axis in range(3) for index in (0, -1)]
    return np.concatenate(faces)


def _face_values(data, share=0.5):
    """Values that fill at least ``share`` of one of the six faces of ``data`` (padding candidates)."""
    found = set()
    for axis in range(3):
        for index in (0, -1):
            values, counts = np.unique(np.moveaxis(data, axis, 0)[index], return_counts=True)
            found.update(float(v) for v in values[counts >= share * counts.sum()])
    return sorted(found)


def robust_intensities(data):
    """In place on ``data`` (float32, canonical frame): padding -> background, extreme voxels clipped.

    Returns ``(background, padding_values)``; see the module docstring (step 2).
    """
    candidates = _face_values(data)
    sample = _sample(data)
    rest = sample[~np.isin(sample, candidates)] if candidates else sample
    if rest.size == 0:  # a constant image
        return (float(sample[0]) if sample.size else 0.0), []
    low, top = (float(v) for v in np.percentile(rest, [0.5, 99.5]))
    span = top - low
    padding = [v for v in candidates if v < low - 0.5 * span or v > top + 0.5 * span]
    border = _border(data)
    pad_border = np.isin(border, padding) if padding else np.zeros(border.shape, bool)
    background = float(np.median(border[~pad_border])) if not pad_border.all() else low
    if padding:
        data[np.isin(data, padding)] = background
    np.clip(data, min(low - span, background), max(top + span, background), out=data)
    return background, padding


def _head_box(data, threshold, anchor=(0, 0, 0), background=0.0):
    """Index bounds (low, high inclusive; up to one step outside the array) of the head in ``data``, or
    None when none is found.

    Works on every ``step``-th voxel (at most 128 per axis) counted from the voxel index ``anchor`` (any
    integers), so its cost stays small; the subsampled array gets a frame of ``background`` one step
    wide. So padding the array with background changes neither the points it looks at nor what the
    filter sees there: a head cut by the field of view gets the same box.
    """
    step = -(-max(data.shape) // 128)
    start = np.mod(np.asarray(anchor, int), step)
    subsampled = np.pad(data[start[0]::step, start[1]::step, start[2]::step], 1, constant_values=background)
    mask = ndimage.uniform_filter(subsampled, 3, mode="constant", cval=background) > threshold
    blobs, count = ndimage.label(mask)
    if count:
        sizes = np.bincount(blobs.ravel())[1:]
        mask = np.isin(blobs, 1 + np.flatnonzero(sizes >= 0.1 * sizes.max()))
    if not mask.any():
        return None
    bounds = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    low, high = np.array([b[0] for b in bounds]) - 1, np.array([b[-1] for b in bounds]) - 1
    return low * step + start, high * step + start


def _world_box(affine, low, high):
    """World bounding box (min, max corners) of the voxel index box ``low``..``high``."""
    corners = np.stack(np.meshgrid(*zip(low, high, strict=True), indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:]
    return world.min(axis=1), world.max(axis=1)


def conform(img, voxel_size=1.0, margin_mm=8.0, multiple=16):
    """Conform a 3D scan (nibabel image) as the module docstring describes; returns :class:`Conformed`."""
    ornt, _, affine = canonical(img)
    data = _to_canonical(img.get_fdata(dtype=np.float32).reshape(img.shape[:3]), ornt)
    background, _ = robust_intensities(data)
    sample = _sample(data)
    sample = sample[sample != background]  # padding and exact-background air: not part of the range
    top = float(np.percentile(sample, 99.5)) if sample.size else background
    threshold = background + 0.1 * (top - background)
    # The grid's voxel centres: anchor + k * voxel_size, the anchor being the input voxel centre (of the
    # input's infinite lattice) nearest the world origin; the box: the head's box plus the margin, even
    # beyond the field of view. So padding or cropping empty planes changes neither.
    nearest = np.floor(np.linalg.solve(affine[:3, :3], -affine[:3, 3]) + 0.5 + 1e-6)
    head = _head_box(data, threshold, nearest.astype(int), background)
    if head is None:  # nothing brighter than the background: the whole field of view, no margin
        head, margin_mm = (np.zeros(3, int), np.array(data.shape) - 1), 0.0
    head_low, head_high = _world_box(affine, head[0] - 0.5, head[1] + 0.5)
    edge = affine[:3, :3] @ nearest + affine[:3, 3] - voxel_size / 2
    low = np.floor((head_low - margin_mm - edge) / voxel_size + 1e-6)
    high = np.ceil((head_high + margin_mm - edge) / voxel_size - 1e-6)
    size = (np.ceil((high - low) / multiple) * multiple).astype(int)
    low -= (size - (high - low)) // 2
    grid = np.diag([voxel_size] * 3 + [1.0])
    grid[:3, 3] = edge + voxel_size * (low + 0.5)

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
    return Conformed(out, grid, (float(lo), float(hi)), background)


def conform_labels(label_img, conformed):
    """Resample a label volume (nibabel image) onto the conformed grid by nearest neighbour; int16."""
    labels = np.asarray(label_img.dataobj).reshape(label_img.shape[:3])
    return _resample(labels, label_img.affine, conformed.data.shape, conformed.affine, order=0,
                     dtype=np.int16)


class InputGrid:
    """Maps volumes on the conformed grid back to an input scan's voxel grid (see the module docstring).

    ``image`` is the input (nibabel image; only its shape and affine are used).
    """

    def __init__(self, conformed, image, slab_voxels=SLAB_VOXELS):
        self.conformed_shape = tuple(conformed.data.shape)
        self.shape = tuple(int(n) for n in image.shape[:3])
        self.ornt, self.ras_shape, ras_affine = canonical(image)
        matrix = np.linalg.inv(conformed.affine) @ ras_affine
        self.matrix, self.offset = matrix[:3, :3], matrix[:3, 3]
        per_slice = self.ras_shape[0] * self.ras_shape[1]
        self.slab = max(1, min(self.ras_shape[2], slab_voxels // per_slice))

    def slabs(self):
        """``(start, stop)`` of each slab along the canonical frame's last axis."""
        return [(z, min(z + self.slab, self.ras_shape[2])) for z in range(0, self.ras_shape[2], self.slab)]

    def _sample(self, volume, start, stop, order, cval, dtype):
        """``volume`` (conformed grid) at the centres of canonical slices ``start..stop-1``."""
        return ndimage.affine_transform(volume, self.matrix, offset=self.offset + self.matrix[:, 2] * start,
                                        output_shape=(*self.ras_shape[:2], stop - start), output=dtype,
                                        order=order, mode="grid-constant", cval=cval, prefilter=False)

    def _check(self, volume):
        if volume.shape[-3:] != self.conformed_shape:
            raise ValueError(f"volume shape {volume.shape} is not the conformed shape {self.conformed_shape}")

    def volume(self, volume, order=1, cval=0.0):
        """One map on the conformed grid -> the input grid: ``order`` 0 = nearest neighbour (keeps the
        dtype), 1 = trilinear (float32). Outside the conformed box: ``cval``."""
        volume = np.ascontiguousarray(volume)
        self._check(volume)
        dtype = volume.dtype if order == 0 else np.float32
        out = np.empty(self.ras_shape, dtype)
        for start, stop in self.slabs():
            out[..., start:stop] = self._sample(volume, start, stop, order, cval, dtype)
        return _to_stored(out, self.ornt)

    def probability(self, probabilities, label):
        """Class ``label`` of class-major ``probabilities`` (K, X, Y, Z) on the input grid (float32):
        trilinear; outside the conformed box class 0 (background) has probability 1."""
        return self.volume(probabilities[label], 1, 1.0 if label == 0 else 0.0)

    def labels(self, probabilities, conformed_labels=None):
        """Argmax of the trilinearly interpolated class probabilities (K, X, Y, Z; class-major) at the input
        voxel centres, ties -> the lowest class; uint8 (int16 for more than 256 classes) on the input grid.

        Exact, but without interpolating every class everywhere: a voxel whose nearest conformed voxel has
        one label in all its 3x3x3 neighbourhood takes that label (its 8 interpolation corners lie in that
        neighbourhood, each with that argmax, so their convex combination has it too). At the others
        (near label boundaries), the class ``c`` of the nearest conformed voxel is interpolated first;
        another class is interpolated only where its 3x3x3 maximum reaches that value, since an
        interpolated probability cannot exceed the maximum of its corners. ``conformed_labels`` is the
        argmax on the conformed grid (computed when None).
        """
        self._check(probabilities)
        probabilities = np.ascontiguousarray(probabilities, np.float32)
        classes = len(probabilities)
        if conformed_labels is None:
            conformed_labels = np.argmax(probabilities, axis=0)
        conformed_labels = np.asarray(conformed_labels, np.int16)
        # Outside the box counts as background (cval 0), as in the interpolation; -1 = "interpolate here",
        # also on a one-voxel frame around the box, where the nearest voxel may lie outside.
        uniform = ndimage.minimum_filter(conformed_labels, 3, mode="constant", cval=0) == \
            ndimage.maximum_filter(conformed_labels, 3, mode="constant", cval=0)
        lookup = np.pad(np.where(uniform, conformed_labels, -1).astype(np.int16), 1, constant_values=-1)
        del uniform
        labels = np.empty(self.ras_shape, np.int16)
        for start, stop in self.slabs():
            offset = self.offset + self.matrix[:, 2] * start + 1.0  # + 1: the frame np.pad added
            labels[..., start:stop] = ndimage.affine_transform(
                lookup, self.matrix, offset=offset, output_shape=(*self.ras_shape[:2], stop - start),
                output=np.int16, order=0, mode="grid-constant", cval=0, prefilter=False)
        del lookup
        todo = np.flatnonzero(labels < 0)
        if todo.size:
            ijk = np.stack(np.unravel_index(todo, self.ras_shape)).astype(np.float64)
            coords = self.matrix @ ijk + self.offset[:, None]
            del ijk
            labels.flat[todo] = self._argmax_at(probabilities, conformed_labels, coords)
        return _to_stored(labels.astype(np.uint8 if classes <= 256 else np.int16, copy=False), self.ornt)

    def _argmax_at(self, probabilities, conformed_labels, coords):
        """Argmax (lowest class on ties) of the trilinear class probabilities at conformed-grid points
        ``coords`` (3, N); outside the box class 0 has probability 1 (see :meth:`labels`)."""
        box = np.array(self.conformed_shape)[:, None] - 1
        near = np.ravel_multi_index(tuple(np.clip(np.rint(coords), 0, box).astype(np.int64)),
                                    self.conformed_shape)
        best_class = conformed_labels.ravel()[near].astype(np.int64)
        best = np.empty(coords.shape[1], np.float32)
        for label in np.unique(best_class):  # the nearest voxel's own class: a lower bound of the maximum
            where = np.flatnonzero(best_class == label)
            best[where] = self._interpolate(probabilities, label, coords[:, where])
        bound = best - 1e-6  # rounding margin: a float sum of weights may exceed 1 by an ulp
        for label in range(len(probabilities)):
            peak = ndimage.maximum_filter(probabilities[label], 3, mode="constant",
                                          cval=1.0 if label == 0 else 0.0)
            where = np.flatnonzero((peak.ravel()[near] >= bound) & (best_class != label))
            if where.size:
                value = self._interpolate(probabilities, label, coords[:, where])
                wins = (value > best[where]) | ((value == best[where]) & (label < best_class[where]))
                best[where[wins]], best_class[where[wins]] = value[wins], label
        return best_class

    @staticmethod
    def _interpolate(probabilities, label, coords):
        """Class ``label``'s probability at the points ``coords`` (3, N), trilinear (float32)."""
        return ndimage.map_coordinates(probabilities[label], coords, output=np.float32, order=1,
                                       mode="grid-constant", cval=1.0 if label == 0 else 0.0, prefilter=False)

    def entropy(self, probabilities):
        """Entropy of the trilinearly interpolated class probabilities / log(K) on the input grid (float32
        in [0, 1]): the MC-dropout uncertainty map."""
        self._check(probabilities)
        classes = len(probabilities)
        entropy = np.zeros(self.ras_shape, np.float32)
        for start, stop in self.slabs():
            for label in range(classes):
                value = self._sample(np.ascontiguousarray(probabilities[label]), start, stop, 1,
                                     1.0 if label == 0 else 0.0, np.float32)
                np.clip(value, 1e-12, 1.0, out=value)
                entropy[..., start:stop] -= value * np.log(value)
        entropy *= 1.0 / np.log(classes)
        np.clip(entropy, 0.0, 1.0, out=entropy)
        return _to_stored(entropy, self.ornt)


def resample_to_input(volume, conformed, input_img, order=1):
    """Map a volume on the conformed grid back to the input's 3D grid, in world space.

    ``order`` 0 = nearest (keeps the dtype), 1 = trilinear (float32). Input voxels outside the box get 0.
    """
    return InputGrid(conformed, input_img).volume(np.asarray(volume), order)


def to_input_grid(labels_conformed, conformed, input_img):
    """Map a conformed label map back to the input voxel grid by nearest neighbour in world space."""
    return resample_to_input(labels_conformed, conformed, input_img, order=0)
