"""QuickNAT loss: weighted cross-entropy (median-frequency + boundary weights) plus soft Dice, weight 1 each.

``labels`` are integer class maps (B, H, W); ``probs`` are softmax outputs (B, H, W, C), never passed through
a second softmax (a bug of the pytorch release's Dice loss). Every loss takes ``per_example``: False gives a
scalar, True a (B,) vector whose sum the trainer divides by the global batch size under tf.distribute.
Class weights are computed with NumPy from training-set counts; the rest is ``keras.ops``.
"""

import numpy as np
from keras import ops

from gan_seg.errors import InputError

EPSILON = 1e-7


def _present_frequencies(class_counts):
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or not np.all(np.isfinite(counts)) or np.any(counts < 0) or not np.any(counts > 0):
        raise InputError(f"class_counts must be a 1-D list of non-negative counts, not all 0; got {counts}")
    present = counts > 0
    return counts[present] / counts.sum(), present


def median_frequency_weights(class_counts, cap=None):
    """Median-frequency balancing: ``w_c = median(f) / f_c`` over the classes present (float division).

    Absent classes (count 0) get weight 0: they have no pixels to weight, and a finite value keeps weight
    maps free of inf. ``cap`` bounds the weights (FastSurfer uses 5). Returns float32 (num_classes,).
    """
    if cap is not None and not (isinstance(cap, (int, float)) and cap > 0):
        raise InputError(f"cap must be None or a positive number, got {cap!r}")
    freq, present = _present_frequencies(class_counts)
    weights = np.zeros(present.shape, dtype=np.float64)
    weights[present] = np.median(freq) / freq
    if cap is not None:
        weights = np.minimum(weights, cap)
    return weights.astype(np.float32)


def boundary_mask(labels):
    """float32 (B, H, W): 1 where a pixel's label differs from one of its 4 neighbours (the image edge is
    not a boundary)."""
    labels = ops.convert_to_tensor(labels)
    down = ops.cast(ops.not_equal(labels[:, 1:], labels[:, :-1]), "float32")
    right = ops.cast(ops.not_equal(labels[:, :, 1:], labels[:, :, :-1]), "float32")
    mask = ops.maximum(ops.pad(down, ((0, 0), (1, 0), (0, 0))), ops.pad(down, ((0, 0), (0, 1), (0, 0))))
    mask = ops.maximum(mask, ops.pad(right, ((0, 0), (0, 0), (1, 0))))
    return ops.maximum(mask, ops.pad(right, ((0, 0), (0, 0), (0, 1))))


def weight_map(labels, class_weights, omega0):
    """Per-pixel weights (B, H, W): ``class_weights[label] + omega0 * boundary_mask(labels)``."""
    labels = ops.cast(labels, "int32")
    return ops.take(ops.convert_to_tensor(class_weights, "float32"), labels) + omega0 * boundary_mask(labels)


def _reduce(per_example, values):
    return values if per_example else ops.mean(values)


def weighted_cross_entropy(labels, probs, weights=None, per_example=False):
    """Mean over pixels of ``weights * -log(p_true)``; ``probs`` clipped to [EPSILON, 1], weights None = 1."""
    labels = ops.cast(labels, "int32")
    p_true = ops.take_along_axis(ops.cast(probs, "float32"), labels[..., None], axis=-1)[..., 0]
    nll = -ops.log(ops.clip(p_true, EPSILON, 1.0))
    if weights is not None:
        nll = ops.cast(weights, "float32") * nll
    return _reduce(per_example, ops.mean(nll, axis=(1, 2)))


def soft_dice_loss(labels, probs, num_classes=None, smooth=1e-5, per_example=False):
    """``1 - mean_c (2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth)`` over the classes present.

    Sums run over all pixels of the batch (per_example=False) or of each example (True). Classes absent
    from the ground truth are left out of the mean: their Dice would be ~0 from stray probability mass and
    add a constant offset without useful gradient; false positives still cost through the other classes'
    Dice and the cross-entropy. ``num_classes`` defaults to ``probs.shape[-1]``.
    """
    probs = ops.cast(probs, "float32")
    truth = ops.one_hot(ops.cast(labels, "int32"), num_classes or probs.shape[-1], dtype="float32")
    axes = (1, 2) if per_example else (0, 1, 2)
    truth_sum = ops.sum(truth, axis=axes)
    dice = (2 * ops.sum(probs * truth, axis=axes) + smooth) / (ops.sum(probs, axis=axes) + truth_sum + smooth)
    present = ops.cast(truth_sum > 0, "float32")
    return 1 - ops.sum(dice * present, axis=-1) / ops.maximum(ops.sum(present, axis=-1), 1.0)


def combined_loss(labels, probs, weights=None, num_classes=None, smooth=1e-5, per_example=False):
    """QuickNAT loss: ``weighted_cross_entropy + soft_dice_loss`` (scalar, or (B,) with per_example)."""
    return (weighted_cross_entropy(labels, probs, weights, per_example)
            + soft_dice_loss(labels, probs, num_classes, smooth, per_example))
