"""Training volumes synthesised from label maps, in the spirit of SynthSeg (Billot et al., MedIA 2023).

Numpy + scipy only (it runs inside the tf.data pipeline through ``tf.numpy_function``). One volume:

1. Spatial: a random affine (rotation +-20 deg about each axis, scaling 0.85-1.15 per axis, shear
   +-0.012, translation +-8 mm, a left/right mirror in half the samples with the Left-*/Right-* classes
   swapped) and a smooth elastic displacement (control points every 25 mm, std ~U(0, 3) mm, linear
   interpolation), applied to the GENERATION labels by nearest neighbour in one
   ``scipy.ndimage.map_coordinates`` call. The output grid is the run's common conformed box; the
   subject's foreground centre goes to its centre.
2. Synthetic image: every generation label gets a Gaussian, means ~U(25, 225), spreads ~U(5, 25), shared
   by the two sides of a left/right pair (one tissue);
   the background (label 0) is reset to 0 in 5% and to a dark Gaussian (mean ~U(0, 15), spread ~U(0, 5))
   in 25% of samples (SynthSeg's code defaults). In 25% of samples the extra-cerebral generation labels
   (ids >= the number of target classes) take the background's Gaussian: a skull-stripped look.
3. Artefacts: a multiplicative smooth bias field (control points every 40 mm, log-std ~U(0, 0.5)),
   normalisation to [0, 1] and gamma exp(N(0, 0.4)), then a random acquisition resolution: native
   (25%), isotropic ~U(voxel, 4 mm) (25%) or one random thick axis ~U(voxel, 6 mm) (50%), slice
   thickness ~U((voxel + spacing) / 2, spacing); the image is blurred with sigma = 0.75 x thickness
   (0.5 voxel on native axes: partial volume), resampled down to that grid, given Gaussian noise
   (std ~U(0, 0.03)) there, and resampled back (linear). Last, the intensity normalisation of ``conform``
   (0.5-99.5th percentiles of the head to [0, 1]).
4. Real volumes (the share ``1 - synth_share`` of the trainer) take the same spatial transform (the
   image trilinearly) and the same bias, gamma, resolution and noise, but keep their own contrast; the
   skull-stripped look zeroes their extra-cerebral voxels.

Target labels are the warped generation labels mapped to the target classes: ``v`` when ``v < K``
(K target classes), else 0. Every draw comes from one ``numpy.random.Generator`` that the caller seeds,
so a volume is a pure function of its seed.
"""

import dataclasses
import math

import numpy as np
from scipy import ndimage

from gan_seg.seg.views import VIEW_AXIS, split_hemisphere

GENERATION_LABELS = 256  # generation labels are uint8


@dataclasses.dataclass(frozen=True)
class SynthParams:
    """The generator's randomisation ranges (module docstring)."""

    rotation_deg: float = 20.0
    scaling: tuple = (0.85, 1.15)
    shear: float = 0.012
    translation_mm: float = 8.0
    elastic_mm: float = 3.0
    elastic_spacing_mm: float = 25.0
    flip: float = 0.5
    strip: float = 0.25
    means: tuple = (25.0, 225.0)
    stds: tuple = (5.0, 25.0)
    background_zero: float = 0.05
    background_dark: float = 0.25
    bias_std: float = 0.5
    bias_spacing_mm: float = 40.0
    gamma_std: float = 0.4
    native_resolution: float = 0.25
    isotropic_resolution: float = 0.25
    max_isotropic_mm: float = 4.0
    max_thick_mm: float = 6.0
    noise_max: float = 0.03


@dataclasses.dataclass(frozen=True)
class Source:
    """One subject on its synthesis grid: generation labels (uint8), its real conformed image (float32
    in [0, 1], zero outside its conformed box) and the voxel centre of its foreground."""

    generation: np.ndarray
    image: np.ndarray
    centre: np.ndarray


@dataclasses.dataclass(frozen=True)
class Transform:
    """Output voxel ``o`` samples the source at ``matrix @ o + offset + displacement(o)`` (voxels);
    ``displacement`` is a coarse (3, n0, n1, n2) field spread linearly over the output grid, or None."""

    matrix: np.ndarray
    offset: np.ndarray
    displacement: np.ndarray | None = None

    @staticmethod
    def identity():
        return Transform(np.eye(3), np.zeros(3))


# -- label tables ------------------------------------------------------------------------------------
def lr_swap(class_names):
    """Class ids after a left/right mirror: every Left-X <-> Right-X pair swapped, others unchanged."""
    sides = [split_hemisphere(name) for name in class_names]
    index = {(side, key): i for i, (side, key) in enumerate(sides) if side}
    swap = np.arange(len(class_names))
    for i, (side, key) in enumerate(sides):
        other = {"left": "right", "right": "left"}.get(side)
        if other and (other, key) in index:
            swap[i] = index[(other, key)]
    return swap


def target_table(num_classes):
    """Generation label -> target class (uint8, 256 entries): ``v`` for ``v < K``, else 0."""
    values = np.arange(GENERATION_LABELS)
    return np.where(values < num_classes, values, 0).astype(np.uint8)


def generation_problems(generation, labels, num_classes):
    """How many voxels break the generation/target rule (``v < K``: the label; ``v >= K``: label 0)."""
    generation = np.asarray(generation)
    labels = np.asarray(labels)
    if generation.shape != labels.shape:
        return [f"shape {'x'.join(map(str, generation.shape))} differs from the labels' "
                f"{'x'.join(map(str, labels.shape))}"]
    problems = []
    fractional = int(np.count_nonzero(generation != np.round(generation)))
    outside = int(np.count_nonzero((generation < 0) | (generation >= GENERATION_LABELS)))
    if fractional or outside:
        problems.append(f"{fractional + outside} values are not integers in 0..{GENERATION_LABELS - 1}")
        return problems
    generation = generation.astype(np.int64)
    mapped = np.where(generation < num_classes, generation, 0)
    wrong = int(np.count_nonzero(mapped != labels))
    if wrong:
        problems.append(f"{wrong} voxels disagree with the labels (a value v < {num_classes} must equal the "
                        f"label, values >= {num_classes} must lie on background)")
    return problems


# -- grids ---------------------------------------------------------------------------------------------
def synthesis_source(image, affine, generation, generation_affine, margin_mm=8.0):
    """A :class:`Source` from a conformed image (``image``, ``affine``) and generation labels on any grid.

    The synthesis grid is the conformed grid extended (on the same voxel lattice) to hold the generation
    labels' foreground plus ``margin_mm``: a skull-stripped subject with a borrowed head keeps the head.
    """
    image = np.asarray(image, np.float32)
    shape = np.array(image.shape)
    generation = np.asarray(generation).astype(np.uint8)  # checked by the caller (generation_problems)
    found = np.argwhere(generation > 0)
    if found.size:
        corners = np.stack(np.meshgrid(*zip(found.min(0) - 0.5, found.max(0) + 0.5, strict=True),
                                       indexing="ij")).reshape(3, -1)
        world = generation_affine[:3, :3] @ corners + generation_affine[:3, 3:]
        ijk = np.linalg.solve(affine[:3, :3], world - affine[:3, 3:])
        voxel = np.sqrt((affine[:3, :3] ** 2).sum(0))
        low = np.minimum(np.floor(ijk.min(1) - margin_mm / voxel).astype(int), 0)
        high = np.maximum(np.ceil(ijk.max(1) + margin_mm / voxel).astype(int), shape - 1)
    else:
        low, high = np.zeros(3, int), shape - 1
    grid = affine.copy()
    grid[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    out_shape = tuple(int(n) for n in high - low + 1)
    matrix = np.linalg.inv(generation_affine) @ grid
    labels = ndimage.affine_transform(generation, matrix, output_shape=out_shape, order=0,
                                      mode="grid-constant", cval=0, prefilter=False, output=np.uint8)
    extended = np.zeros(out_shape, np.float32)
    inside = tuple(slice(-lo, -lo + n) for lo, n in zip(low, shape, strict=True))
    extended[inside] = image
    return Source(labels, extended, foreground_centre(labels))


def foreground_centre(labels):
    """Voxel centre of the non-zero voxels (the array centre when there are none)."""
    found = np.argwhere(labels[::2, ::2, ::2] > 0)
    if not found.size:
        return (np.array(labels.shape) - 1) / 2.0
    return (found.min(0) + found.max(0)) * 1.0  # the middle of the bounding box, full-resolution voxels


# -- spatial -------------------------------------------------------------------------------------------
def _rotation(angles):
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def random_transform(rng, params, out_shape, centre, voxel_size, flip=False, elastic=True):
    """A random :class:`Transform` that puts the source voxel ``centre`` at the output grid's centre."""
    angles = np.deg2rad(rng.uniform(-params.rotation_deg, params.rotation_deg, 3))
    scales = rng.uniform(*params.scaling, 3)
    shear = np.eye(3)
    shear[~np.eye(3, dtype=bool)] = rng.uniform(-params.shear, params.shear, 6)
    forward = _rotation(angles) @ shear @ np.diag(scales)  # source offsets -> output offsets
    shift = rng.uniform(-params.translation_mm, params.translation_mm, 3) / voxel_size
    matrix = np.linalg.inv(forward) @ np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    middle = (np.asarray(out_shape) - 1) / 2.0
    offset = np.asarray(centre, float) - matrix @ (middle + shift)
    displacement = None
    if elastic and params.elastic_mm > 0:
        std = rng.uniform(0.0, params.elastic_mm) / voxel_size
        points = [max(2, math.ceil(n * voxel_size / params.elastic_spacing_mm) + 1) for n in out_shape]
        displacement = rng.normal(0.0, std, (3, *points)).astype(np.float32)
    return Transform(matrix, offset, displacement)


def _interpolation_matrix(size, points):
    """(size, points) float32 weights spreading ``points`` control values linearly over ``size`` voxels
    (the first and last control points sit on the first and last voxel)."""
    return _linear_matrix(np.linspace(0.0, points - 1.0, size), points)


def _linear_matrix(positions, size):
    """(len(positions), size) float32 weights of linear interpolation at ``positions`` (voxel units,
    clamped to the ends) of a signal of ``size`` samples."""
    where = np.clip(np.asarray(positions, float), 0.0, size - 1.0)
    low = np.minimum(np.floor(where).astype(int), max(size - 2, 0))
    weight = where - low
    rows = np.arange(len(where))
    matrix = np.zeros((len(where), size), np.float32)
    matrix[rows, low] = 1.0 - weight
    matrix[rows, np.minimum(low + 1, size - 1)] += weight
    return matrix


def _gaussian_matrix(size, sigma, truncate=3.0):
    """(size, size) float32 Gaussian blur of std ``sigma`` voxels, edges repeated (scipy's "nearest")."""
    radius = max(1, int(truncate * sigma + 0.5))
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    matrix = np.zeros((size, size), np.float64)
    rows = np.repeat(np.arange(size), taps.size)
    columns = np.clip(rows + np.tile(taps, size), 0, size - 1)
    np.add.at(matrix, (rows, columns), np.tile(weights, size))
    return matrix.astype(np.float32)


def along(volume, matrix, axis):
    """``matrix`` (m, n) applied along ``axis`` (length n) of a 3D float32 volume, as 2D BLAS products
    (numpy's stacked matmul and products with a transposed view are many times slower)."""
    matrix = np.asarray(matrix, np.float32)
    volume = np.ascontiguousarray(volume, np.float32)
    s0, s1, s2 = volume.shape
    if axis == 0:
        return (matrix @ volume.reshape(s0, -1)).reshape(matrix.shape[0], s1, s2)
    if axis == 2:
        return (volume.reshape(-1, s2) @ np.ascontiguousarray(matrix.T)).reshape(s0, s1, matrix.shape[0])
    return np.ascontiguousarray(np.moveaxis(np.tensordot(matrix, volume, axes=(1, 1)), 0, 1))


def upsample(coarse, shape):
    """A coarse 3D field spread over ``shape`` by separable linear interpolation (float32)."""
    field = np.asarray(coarse, np.float32)
    for axis, size in enumerate(shape):
        field = along(field, _interpolation_matrix(size, field.shape[axis]), axis)
    return field


def coordinates(transform, out_shape):
    """The source coordinates (3, *out_shape) float32 of every output voxel."""
    coords = np.empty((3, *out_shape), np.float32)
    axes = [np.arange(n, dtype=np.float64) for n in out_shape]
    for i in range(3):
        row = transform.matrix[i]
        coords[i] = ((transform.offset[i] + row[0] * axes[0])[:, None, None].astype(np.float32)
                     + (row[1] * axes[1])[None, :, None].astype(np.float32)
                     + (row[2] * axes[2])[None, None, :].astype(np.float32))
        if transform.displacement is not None:
            coords[i] += upsample(transform.displacement[i], out_shape)
    return coords


def warp(volume, coords, order):
    """``volume`` sampled at ``coords``: nearest neighbour (order 0, same dtype) or trilinear (order 1,
    float32); outside the volume is 0."""
    dtype = volume.dtype if order == 0 else np.float32
    return ndimage.map_coordinates(volume, coords, output=dtype, order=order, mode="grid-constant", cval=0,
                                   prefilter=False)


# -- intensities ---------------------------------------------------------------------------------------
def draw_gaussians(rng, params):
    """Per generation label: (means, spreads), float32 (256,), background rule included."""
    means = rng.uniform(*params.means, GENERATION_LABELS).astype(np.float32)
    stds = rng.uniform(*params.stds, GENERATION_LABELS).astype(np.float32)
    chance = rng.random()
    if chance < params.background_zero:
        means[0] = stds[0] = 0.0
    elif chance < params.background_zero + params.background_dark:
        means[0], stds[0] = rng.uniform(0.0, 15.0), rng.uniform(0.0, 5.0)
    return means, stds


def bias_field(rng, params, shape, voxel_size):
    """A smooth multiplicative field exp(N(0, s)) with s ~U(0, bias_std), float32 of ``shape``."""
    std = rng.uniform(0.0, params.bias_std)
    points = [max(2, math.ceil(n * voxel_size / params.bias_spacing_mm) + 1) for n in shape]
    return np.exp(upsample(rng.normal(0.0, std, points).astype(np.float32), shape))


def draw_resolution(rng, params, voxel_size):
    """(spacing, thickness) in mm per axis of a random acquisition (module docstring, step 3)."""
    spacing = np.full(3, float(voxel_size))
    chance = rng.random()
    if chance >= params.native_resolution + params.isotropic_resolution:
        axis = rng.integers(3)
        spacing[axis] = rng.uniform(voxel_size, max(voxel_size, params.max_thick_mm))
    elif chance >= params.native_resolution:
        spacing[:] = rng.uniform(voxel_size, max(voxel_size, params.max_isotropic_mm))
    thickness = rng.uniform((voxel_size + spacing) / 2.0, spacing)
    return spacing, thickness


def simulate_resolution(image, spacing, thickness, voxel_size, native_sigma=0.5, noise=0.0, rng=None):
    """Mimic an acquisition at ``spacing`` mm (slice ``thickness`` mm) of an image on a ``voxel_size``
    grid: Gaussian blur (sigma = 0.75 x thickness / voxel on coarser axes, ``native_sigma`` voxels on the
    others), linear resampling to the coarse grid, Gaussian noise of std ``noise`` there, and linear
    resampling back to the input grid. Returns float32 of the input's shape.

    On a coarser axis, blur and downsampling are one matrix product, and so is the way back."""
    spacing = np.asarray(spacing, float)
    thickness = np.broadcast_to(np.asarray(thickness, float), 3)
    coarse = spacing > voxel_size * 1.01
    out = np.asarray(image, np.float32)
    for axis in np.flatnonzero(~coarse):
        if native_sigma > 0:
            out = ndimage.gaussian_filter1d(out, native_sigma, axis=axis, mode="nearest", truncate=3.0,
                                            output=np.float32)
    back = []
    for axis in np.flatnonzero(coarse):
        size = out.shape[axis]
        count = max(2, round(size * voxel_size / spacing[axis]))
        down = _linear_matrix((np.arange(count) + 0.5) * size / count - 0.5, size)
        sigma = 0.75 * thickness[axis] / voxel_size
        out = along(out, down @ _gaussian_matrix(size, sigma), axis)
        back.append((axis, _linear_matrix((np.arange(size) + 0.5) * count / size - 0.5, count)))
    if noise > 0:
        out += rng.normal(0.0, noise, out.shape).astype(np.float32)
    for axis, up in back:
        out = along(out, up, axis)
    return np.ascontiguousarray(out)


def _strided(volume, limit=2**20):
    flat = volume.reshape(-1)
    return flat[::max(1, flat.size // limit)]


def normalise(volume):
    """``conform``'s intensity normalisation (gan_seg.seg.preprocessing, step 5): the 0.5th-99.5th
    percentiles of the head voxels (brighter than 10% of the way from the minimum to the 99.5th
    percentile) to [0, 1], clipped. In place when ``volume`` is float32; returns it."""
    volume = np.asarray(volume, np.float32)
    sample = _strided(volume)
    background, top = float(volume.min()), float(np.percentile(sample, 99.5))
    inside = sample[sample > background + 0.1 * (top - background)]
    low, high = np.percentile(inside, [0.5, 99.5]) if inside.size else (background, top)
    if high <= low:
        low, high = float(volume.min()), float(volume.max())
    volume -= low
    volume *= 1.0 / (high - low) if high > low else 0.0
    np.clip(volume, 0.0, 1.0, out=volume)
    return volume


# -- the generator -------------------------------------------------------------------------------------
class Synthesizer:
    """Random training volumes on a fixed output grid from the :class:`Source` of each subject."""

    def __init__(self, sources, class_names, voxel_size, shape, params=None):
        if not sources:
            raise ValueError("no sources to synthesise from")
        self.sources = list(sources)
        self.num_classes = len(class_names)
        self.voxel_size = float(voxel_size)
        self.shape = tuple(int(n) for n in shape)
        self.params = params or SynthParams()
        self.target = target_table(self.num_classes)
        self.flipped = self.target.copy()
        self.flipped[:self.num_classes] = lr_swap(class_names)
        self.stripped = self.target  # extra-cerebral labels take the background's Gaussian
        # The right structure of a left/right pair draws the left one's Gaussian (one tissue, one contrast).
        self.same_tissue = np.arange(GENERATION_LABELS)
        self.same_tissue[:self.num_classes] = np.minimum(np.arange(self.num_classes), lr_swap(class_names))

    def volume(self, rng, synthetic=True, augment=True, details=None):
        """One ``(image float32 in [0, 1], target labels uint8)`` on :attr:`shape`, drawn with ``rng``.

        ``synthetic=False``: the subject's real image with the spatial and non-contrast augmentations
        (none at all when ``augment`` is false: only centred on the grid). ``details`` (a dict) receives
        what was drawn: subject, flip, strip, spacing and thickness (mm).
        """
        p, shape = self.params, self.shape
        subject = int(rng.integers(len(self.sources)))
        source = self.sources[subject]
        randomise = synthetic or augment
        flip = bool(randomise and rng.random() < p.flip)
        strip = bool(randomise and rng.random() < p.strip)
        details = {} if details is None else details
        details.update(subject=subject, synthetic=bool(synthetic), flip=flip, strip=strip,
                       spacing=[self.voxel_size] * 3, thickness=[self.voxel_size] * 3)
        if randomise:
            transform = random_transform(rng, p, shape, source.centre, self.voxel_size, flip)
        else:
            middle = (np.asarray(shape) - 1) / 2.0
            transform = Transform(np.eye(3), source.centre - middle)
        coords = coordinates(transform, shape)
        generation = warp(source.generation, coords, order=0)
        target = (self.flipped if flip else self.target)[generation]
        if synthetic:
            means, stds = draw_gaussians(rng, p)
            means, stds = means[self.same_tissue], stds[self.same_tissue]
            if strip:
                means, stds = means[self.stripped], stds[self.stripped]
            image = rng.standard_normal(shape, dtype=np.float32)
            image *= stds[generation]
            image += means[generation]
        else:
            image = warp(source.image, coords, order=1)
            if strip:
                image[generation >= self.num_classes] = 0.0
            if not augment:
                return image, target
        del coords
        image = self._artefacts(rng, image, 0.5 if synthetic else 0.0, details)
        return image, target

    def _artefacts(self, rng, image, native_sigma, details):
        p = self.params
        np.maximum(image, 0.0, out=image)
        image *= bias_field(rng, p, image.shape, self.voxel_size)
        image *= 1.0 / max(float(image.max()), 1e-6)
        np.power(image, np.float32(np.exp(rng.normal(0.0, p.gamma_std))), out=image)
        spacing, thickness = draw_resolution(rng, p, self.voxel_size)
        details.update(spacing=[round(float(v), 2) for v in spacing],
                       thickness=[round(float(v), 2) for v in thickness])
        noise = rng.uniform(0.0, p.noise_max)
        image = simulate_resolution(image, spacing, thickness, self.voxel_size, native_sigma, noise, rng)
        return normalise(image)


def cut_slices(image, target, view, count, rng, background_max=0.99, label_map=None):
    """``count`` random slices of a volume along ``view``, without replacement when there are enough:
    images float32 (count, A, B), labels uint8 (count, A, B). Only slices less than ``background_max``
    background are drawn (all slices when none is); ``label_map`` maps the classes (sagittal merging)."""
    axis = VIEW_AXIS[view]
    others = tuple(a for a in range(3) if a != axis)
    per_slice = np.count_nonzero(target, axis=others) / (target.size / target.shape[axis])
    kept = np.flatnonzero(per_slice > 1.0 - background_max)
    if not kept.size:
        kept = np.arange(target.shape[axis])
    chosen = rng.choice(kept, size=count, replace=kept.size < count)
    images = np.ascontiguousarray(np.moveaxis(np.take(image, chosen, axis=axis), axis, 0), np.float32)
    labels = np.moveaxis(np.take(target, chosen, axis=axis), axis, 0)
    if label_map is not None:
        labels = np.asarray(label_map)[labels]
    return images, np.ascontiguousarray(labels, np.uint8)


class SliceStream:
    """Training slices of one view: ``stream(k)`` -> volume ``k``'s slices, a pure function of
    ``(seed, view, k)``. A volume is synthetic with probability ``share``, else real."""

    SALT = 9

    def __init__(self, synthesizer, view, count, share, seed, background_max=0.99, label_map=None,
                 augment=True):
        self.synthesizer, self.view, self.count, self.share = synthesizer, view, int(count), float(share)
        self.seed, self.background_max, self.augment = seed, background_max, augment
        self.label_map = label_map
        axis = VIEW_AXIS[view]
        self.slice_shape = tuple(n for a, n in enumerate(synthesizer.shape) if a != axis)

    def rng(self, k):
        return np.random.default_rng([self.SALT, int(self.seed), list(VIEW_AXIS).index(self.view), int(k)])

    def __call__(self, k):
        rng = self.rng(k)
        synthetic = rng.random() < self.share
        image, target = self.synthesizer.volume(rng, synthetic, self.augment)
        return cut_slices(image, target, self.view, self.count, rng, self.background_max, self.label_map)
