"""Segmenting a conformed volume with one 2D network per view (backend-neutral: NumPy in and out).

Each view's network runs over its slices in batches of one shape (empty slices skipped, the last batch
padded) through the backend's compiled predict function, so each view compiles once. Its class
probabilities are added, weighted, into ONE float32 accumulator of shape (classes, X, Y, Z) on the
conformed grid (class-major: each class is one contiguous volume for the mapping back to the input grid;
no per-view buffers).
Sagittal networks predict merged left/right classes; each merged probability is copied to both sides (the
other views decide the side). The label is the argmax of the weighted sum.

Each view's own argmax is kept (one uint8 volume per view) for the QC score (:mod:`gan_seg.seg.qc`):
per structure, the Dice between each view's labels and the aggregated labels, averaged over the views.
Sagittal labels are expanded to the full classes by giving each merged class the side whose aggregated
probability is higher.

``precision="mixed_bfloat16"`` rebuilds each view network with that dtype policy (float32 variables,
bfloat16 compute, float32 softmax) and copies the weights; ``auto`` resolves as in training.

MC dropout: the networks are cloned with dropout kept on at inference (BatchNorm stays in inference
mode); ``mc_samples`` passes give the mean prediction and per-structure volumes of every pass (the QC
score then uses the first pass's view labels).
"""

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import gan_seg.seg.layers  # noqa: F401 - registers the custom layers the view networks use
from gan_seg.engine.backend import resolve_precision
from gan_seg.engine.options import PRECISIONS
from gan_seg.engine.run_dir import RunDirectory
from gan_seg.errors import InputError
from gan_seg.io.saving import load_model, read_metadata
from gan_seg.seg.config import MODEL_FILE, MODELS, SEGMENTATION
from gan_seg.seg.qc import qc_scores
from gan_seg.seg.views import DEFAULT_VIEW_WEIGHTS, VIEWS, invalid_weights, lr_merge, parse_views, to_slices

EMPTY_SLICE = 1e-3


@dataclass
class Segmentation:
    """Results on the conformed grid."""

    labels: np.ndarray  # uint8 / int16 (X, Y, Z)
    probabilities: np.ndarray  # float32 (K, X, Y, Z), class-major, sums to 1 per voxel
    sample_counts: np.ndarray | None = None  # int64 (samples, K): voxels per class in each MC pass
    qc_scores: np.ndarray | None = None  # float64 (K,): per-structure view agreement, NaN = no score


class Segmenter:
    """The per-view networks of a segmentation run directory or preset, loaded once. ``sides=False``
    allows views that cannot tell left from right (sagittal alone: the side is arbitrary), for scoring
    with the hemispheres merged."""

    def __init__(self, model_dir, views=None, view_weights=None, precision="float32", sides=True):
        self.model_dir = Path(model_dir)
        if precision not in PRECISIONS:
            raise InputError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        record = RunDirectory(self.model_dir).read_config()
        if record.get("model") not in MODELS:
            raise InputError(f"{model_dir} is not a segmentation model ({record.get('model')!r})")
        self.class_names = list(record["class_names"])
        self.voxel_size = float(record.get("voxel_size", 1.0))
        available = [v for v in VIEWS if (self.model_dir / v / MODEL_FILE).is_file()]
        requested = parse_views(views) if views else tuple(available)
        missing = [v for v in requested if v not in available]
        if missing or not requested:
            raise InputError(f"{model_dir} has no trained network for view(s) {', '.join(missing) or 'any'}; "
                             f"available: {', '.join(available) or 'none'}")
        weights = dict(DEFAULT_VIEW_WEIGHTS, **(view_weights or {}))
        bad = invalid_weights({v: weights[v] for v in requested})
        if bad:
            raise InputError(f"view weights {', '.join(bad)}: each weight must be a finite number >= 0")
        self.views = tuple(v for v in requested if weights[v] > 0)  # a weight of 0: the network is not run
        if not self.views:
            raise InputError(f"the weights of {', '.join(requested)} are all 0; give a view a weight > 0")
        if sides and not any(self._sided(view) for view in self.views):
            raise InputError(f"{', '.join(self.views)} alone cannot tell left from right (the network merges "
                             f"the hemispheres); add the axial or coronal view")
        total = sum(weights[v] for v in self.views)
        self.weights = {v: weights[v] / total for v in self.views}
        self.note = None if views or len(available) == len(VIEWS) else (
            f"{model_dir} has trained networks for {', '.join(available)} only: labels come from "
            f"{len(self.views)} of {len(VIEWS)} views")
        self.precision = resolve_precision(precision)
        self.models, self.expand = {}, {}
        for view in self.views:
            model, metadata = load_model(self.model_dir / view / MODEL_FILE, SEGMENTATION)
            self.models[view] = model if self.precision == "float32" else with_policy(model, self.precision)
            self.expand[view] = self._expansion(view, metadata.get("class_names", []))

    def _sided(self, view):
        """Whether the view's network tells the hemispheres apart (a sagittal one may merge them)."""
        return read_metadata(self.model_dir / view / MODEL_FILE).get("class_names") == self.class_names

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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"--batch-size must be a positive integer, got {batch_size!r}")
        classes = len(self.class_names)
        accumulator = np.zeros((classes, *volume.shape), np.float32)
        view_labels = {}
        if mc_samples <= 1:
            self._aggregate(self.models, volume, accumulator, batch_size, progress, view_labels)
            probabilities, counts = _normalise(accumulator), None
        else:
            keras.utils.set_random_seed(seed)
            mc_models = {view: _monte_carlo(model) for view, model in self.models.items()}
            probabilities = np.zeros_like(accumulator)
            counts = np.zeros((mc_samples, classes), np.int64)
            for sample in range(mc_samples):
                accumulator.fill(0.0)
                self._aggregate(mc_models, volume, accumulator, batch_size, progress,
                                view_labels if sample == 0 else None)
                counts[sample] = np.bincount(_argmax(accumulator).ravel(), minlength=classes)
                probabilities += _normalise(accumulator)
            del accumulator
            probabilities /= mc_samples
        labels = _argmax(probabilities)
        full = {view: self._full_labels(view, found, probabilities) for view, found in view_labels.items()}
        return Segmentation(labels, probabilities, counts, qc_scores(labels, full, classes))

    def _aggregate(self, models, volume, accumulator, batch_size, progress, view_labels=None):
        voxels_last = np.moveaxis(accumulator, 0, -1)  # (X, Y, Z, K) view of the class-major buffer
        for view in self.views:
            slices, target = to_slices(volume, view), to_slices(voxels_last, view)
            own = None
            if view_labels is not None:
                view_labels[view] = np.zeros(volume.shape, np.uint8 if len(self.class_names) <= 256
                                             else np.int16)
                own = to_slices(view_labels[view], view)
            keep = np.flatnonzero(_non_empty(slices))
            weight, expand = self.weights[view], self.expand[view]
            batch = np.zeros((min(batch_size, len(keep)), *slices.shape[1:], 1), np.float32)
            for start in range(0, len(keep), batch_size):
                index = keep[start:start + batch_size]
                batch[:len(index), ..., 0] = slices[index]
                batch[len(index):] = 0.0
                # one compiled function per view: every call has the same shape (the last batch is padded)
                probs = np.asarray(models[view].predict_on_batch(batch), np.float32)[:len(index)]
                target[index] += weight * probs[..., expand]
                if own is not None:
                    own[index] = np.argmax(probs, axis=-1)
                if progress:
                    progress(len(index))

    def _full_labels(self, view, found, probabilities):
        """A view's own labels in the full classes: a merged sagittal class takes the side whose aggregated
        probability is higher (ties: the lower class)."""
        expand = self.expand[view]
        if np.array_equal(expand, np.arange(len(expand))):
            return found
        full = np.zeros_like(found)
        for merged in range(int(expand.max()) + 1):
            sides = np.flatnonzero(expand == merged)
            where = found == merged
            if len(sides) == 1:
                full[where] = sides[0]
            elif len(sides) > 1 and where.any():
                full[where] = sides[np.argmax(probabilities[sides][:, where], axis=0)]
        return full


def with_policy(model, policy):
    """A copy of ``model`` whose layers compute under dtype policy ``policy`` (the output layer stays
    float32), with ``model``'s weights."""
    keep = model.layers[-1].name

    def rebuild(layer):
        if layer.name == keep:
            return layer.__class__.from_config(layer.get_config())
        return layer.__class__.from_config({**layer.get_config(), "dtype": policy})

    clone = keras.models.clone_model(model, clone_function=rebuild)
    clone.set_weights(model.get_weights())
    return clone


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
    """Per-voxel class of maximal value over the class axis (0); ties -> the lowest class."""
    labels = np.argmax(accumulator, axis=0)
    return labels.astype(np.uint8 if accumulator.shape[0] <= 256 else np.int16)


def _normalise(accumulator):
    """In place: per-voxel probabilities (sagittal copies make raw sums exceed 1); untouched voxels ->
    background. Returns ``accumulator``."""
    total = accumulator.sum(axis=0, keepdims=True)
    np.divide(accumulator, total, out=accumulator, where=total > 0)
    accumulator[0] += total[0] <= 0
    return accumulator
