"""Drawing images from a trained generator: latent batches, class blocks, interpolation walks.

Backend-neutral: NumPy in, ``generator(..., training=False)`` inside (BatchNorm uses its moving
statistics), NumPy out. The same seed gives the same images.
"""

import keras
import numpy as np

from gan_seg.errors import InputError
from gan_seg.gan.models import latent_dim_of, num_classes_of


def latent_batch(n, latent_dim, seed):
    """``n`` latent vectors z ~ U(-1, 1)^latent_dim (the seed's prior), reproducible from ``seed``."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, latent_dim)).astype(np.float32)


def class_blocks(n, num_classes):
    """Labels for ``n`` images in equal shares: the k-th block of n/num_classes images is class k."""
    return (np.arange(n) * num_classes // n).astype(np.int32)


def interpolation_latents(rows, cols, latent_dim, seed):
    """``rows`` straight walks of ``cols`` points each between random latent end points."""
    ends = latent_batch(2 * rows, latent_dim, seed).reshape(rows, 2, latent_dim)
    t = np.linspace(0.0, 1.0, cols, dtype=np.float32)[None, :, None]
    walks = ends[:, :1] * (1.0 - t) + ends[:, 1:] * t
    return walks.reshape(rows * cols, latent_dim)


def generate(generator, z, labels=None, batch_size=256, progress=None):
    """Images (N, H, W, C) float32 in [0, 1] for latent ``z`` (and integer ``labels`` for a CGAN);
    ``progress(count)`` is called after each batch."""
    num_classes = num_classes_of(generator)
    if (num_classes is None) != (labels is None):
        raise InputError("labels are needed for a conditional generator and only for one")
    out = []
    for start in range(0, len(z), batch_size):
        batch = z[start:start + batch_size]
        if num_classes is not None:
            one_hot = np.eye(num_classes, dtype=np.float32)[labels[start:start + batch_size]]
            batch = [batch, one_hot]
        out.append(keras.ops.convert_to_numpy(generator(batch, training=False)).astype(np.float32))
        if progress:
            progress(len(out[-1]))
    return np.concatenate(out) if out else np.zeros((0, *generator.outputs[0].shape[1:]), np.float32)


def sample(generator, n, seed=0, label=None, interpolate=False, walk_length=10, progress=None):
    """Draw ``n`` images; returns ``(images, labels, rows)`` with labels -1 for an unconditional model.

    A CGAN without ``label`` draws the classes in equal blocks (one class per grid row when
    n = rows x cols). ``interpolate`` makes walks of ``walk_length`` images between random points
    (one walk per grid row; a CGAN walk keeps one class, cycling through the classes row by row).
    ``progress(count)`` is called after each batch of images.
    """
    if not isinstance(n, int) or n < 1:
        raise InputError(f"-n must be a positive number of images, got {n!r}")
    latent_dim, num_classes = latent_dim_of(generator), num_classes_of(generator)
    if label is not None and num_classes is None:
        raise InputError("--label needs a conditional (CGAN) model; this generator is unconditional")
    if label is not None and not 0 <= label < num_classes:
        raise InputError(f"--label {label} is outside the model's classes 0..{num_classes - 1}")
    rows = None
    if interpolate:
        cols = min(walk_length, n)
        rows = -(-n // cols)
        z = interpolation_latents(rows, cols, latent_dim, seed)[:n]
        walk_classes = np.arange(rows) % num_classes if num_classes else None
        labels = np.repeat(walk_classes, cols)[:n].astype(np.int32) if num_classes else None
    else:
        z = latent_batch(n, latent_dim, seed)
        labels = class_blocks(n, num_classes) if num_classes else None
        if num_classes and label is None and n % num_classes == 0:
            rows = num_classes
    if label is not None:
        labels = np.full(n, label, np.int32)
    images = generate(generator, z, labels, progress=progress)
    return images, (labels if labels is not None else np.full(n, -1, np.int32)), rows
