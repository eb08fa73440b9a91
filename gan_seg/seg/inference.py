"""Segmenting a conformed volume with one 2D network per view (backend-neutral: NumPy in and out).

Each view's network runs over its slices in batches (empty slices skipped); its class probabilities are
added, weighted, into ONE float32 accumulator of shape (X, Y, Z, classes) on the conformed grid (no
per-view buffers). Sagittal networks predict merged left/right classes; each merged probability is copied
to both sides (the other views decide the side). The label is the argmax of the weighted sum.

MC dropout: the networks are cloned with dropout kept on at inference (BatchNorm stays in inference
mode); ``mc_samples`` passes give the mean prediction, a per-voxel uncertainty (entropy of the mean
probabilities / log(classes), in [0, 1]) and per-structure volumes of every pass.
"""

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import gan_seg.seg.layers  # noqa: F401 - registers the custom layers the view networks use
from gan_seg.engine.run_dir import RunDirectory
from gan_seg.errors import InputError
from gan_seg.io.saving import load_model
from gan_seg.seg.config import MODEL_FILE, MODELS, SEGMENTATION
from gan_seg.seg.views import DEFAULT_VIEW_WEIGHTS, VIEWS, lr_merge, parse_views, to_slices

EMPTY_SLICE = 1e-3


@dataclass
class Segmentation:
    """Results on the conformed grid."""

    labels: np.ndarray  # uint8 / int16 (X, Y, Z)
    probabilities: np.ndarray  # float32 (X, Y, Z, K), sums to 1 per voxel
    uncertainty: np.ndarray | None = None  # float32 (X, Y, Z) in [0, 1]
    sample_counts: np.ndarray | None = None  # int64 (samples, K): voxels per class in each MC pass


class Segmenter:
    """The per-view networks of a segmentation run directory or preset, loaded once."""

    def __init__(self, model_dir, views=None, view_weights=None):
        self.model_dir = Path(model_dir)
        record = RunDirectory(self.model_dir).read_config()
        if record.get("model") not in MODELS:
            raise InputError(f"{model_dir} is not a segmentation model ({record.get('model')!r})")
        self.class_names = list(record["class_names"])
        self.voxel_size = float(record.get("voxel_size", 1.0))
        available = [v for v in VIEWS if (self.model_dir / v / MODEL_FILE).is_file()]
        self.views = parse_views(views) if views else tuple(available)
        missing = [v for v in self.views if v not in available]
        if missing or not self.views:
            raise InputError(f"{model_dir} has no trained network for view(s) {', '.join(missing) or 'any'}; "
                             f"available: {', '.join(available) or 'none'}")
        weights = dict(DEFAULT_VIEW_WEIGHTS, **(view_weights or {}))
        if any(weights[v] < 0 for v in self.views) or sum(weights[v] for v in self.views) <= 0:
            raise InputError("view weights must be >= 0 and not all 0")
        total = sum(weights[v] for v in self.views)
        self.weights = {v: weights[v] / total for v in self.views}
        self.models, self.expand = {}, {}
        for view in self.views:
            model, metadata = load_model(self.model_dir / view / MODEL_FILE, SEGMENTATION)
            self.models[view] = model
            self.expand[view] = self._expansion(view, metadata.get("class_names", []))

    def _expansion(self, view, names):
        """Index array mapping the full classes to the view network's outputs."""
        if names == self.class_names:
            return np.arange(len(names))
        merged, full_to_merged = lr_merge(self.class_names)
        if view == "sagittal" and names == merged:
            return full_to_merged
        raise InputError(f"{self.model_dir}/{view}: network classes do not match the run's classes")

    def slice_count(self, volume):
        """Number of non-empty slices one pass over all views runs."""
        return sum(int(np.count_nonzero(_non_empty(to_slices(volume, view)))) for view in self.views)

    def segment(self, volume, batch_size=16, mc_samples=0, seed=0, progress=None):
        """Segment ``volume`` (conformed float32 in [0, 1]); returns :class:`Segmentation`."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"--batch-size must be a positive integer, got {batch_size!r}")
        classes = len(self.class_names)
        accumulator = np.zeros((*volume.shape, classes), np.float32)
        if mc_samples <= 1:
            self._aggregate(self.models, volume, accumulator, batch_size, progress)
            labels = _argmax(accumulator)
            return Segmentation(labels, _normalise(accumulator))
        keras.utils.set_random_seed(seed)
        mc_models = {view: _monte_carlo(model) for view, model in self.models.items()}
        mean = np.zeros_like(accumulator)
        counts = np.zeros((mc_samples, classes), np.int64)
        for sample in range(mc_samples):
            accumulator.fill(0.0)
            self._aggregate(mc_models, volume, accumulator, batch_size, progress)
            counts[sample] = np.bincount(_argmax(accumulator).ravel(), minlength=classes)
            mean += _normalise(accumulator)
        del accumulator
        mean /= mc_samples
        entropy = -np.sum(mean * np.log(np.clip(mean, 1e-12, 1.0)), axis=-1) / np.log(classes)
        return Segmentation(_argmax(mean), mean, entropy.astype(np.float32), counts)

    def _aggregate(self, models, volume, accumulator, batch_size, progress):
        for view in self.views:
            slices, target = to_slices(volume, view), to_slices(accumulator, view)
            keep = np.flatnonzero(_non_empty(slices))
            weight, expand = self.weights[view], self.expand[view]
            for start in range(0, len(keep), batch_size):
                index = keep[start:start + batch_size]
                probs = keras.ops.convert_to_numpy(models[view](slices[index][..., None], training=False))
                target[index] += weight * probs[..., expand]
                if progress:
                    progress(len(index))


def _non_empty(slices):
    return slices.reshape(len(slices), -1).max(axis=1) > EMPTY_SLICE


class AlwaysDropout(keras.layers.Dropout):
    """Dropout that stays on at inference (MC dropout)."""

    def call(self, inputs, training=None):
        return super().call(inputs, training=True)


def _monte_carlo(model):
    """A clone of ``model`` sharing its weights, with every Dropout layer active at inference."""
    def clone(layer):
        if isinstance(layer, keras.layers.Dropout):
            return AlwaysDropout.from_config(layer.get_config())
        return layer

    return keras.models.clone_model(model, clone_function=clone)


def _argmax(accumulator):
    labels = np.argmax(accumulator, axis=-1)
    return labels.astype(np.uint8 if accumulator.shape[-1] <= 256 else np.int16)


def _normalise(accumulator):
    """In place: per-voxel probabilities (sagittal copies make raw sums exceed 1); untouched voxels ->
    background. Returns ``accumulator``."""
    total = accumulator.sum(axis=-1, keepdims=True)
    np.divide(accumulator, total, out=accumulator, where=total > 0)
    accumulator[..., 0] += total[..., 0] <= 0
    return accumulator
