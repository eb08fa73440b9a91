"""Measuring segmentation quality: per-class Dice of label maps (NumPy only)."""

import numpy as np

from gan_seg.errors import InputError


def dice_scores(pred, truth, num_classes):
    """Per-class Dice 2|P & T| / (|P| + |T|) of two integer label maps; NaN where a class is in neither."""
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    if pred.shape != truth.shape:
        raise InputError(f"prediction and truth differ in size: {pred.size} vs {truth.size}")
    both = np.bincount(truth[pred == truth], minlength=num_classes)[:num_classes]
    total = (np.bincount(pred, minlength=num_classes)[:num_classes]
             + np.bincount(truth, minlength=num_classes)[:num_classes])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * both / total, np.nan)
