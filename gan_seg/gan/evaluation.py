"""Measuring GAN quality with the shipped Fashion-MNIST classifier (what ``gan-seg evaluate`` runs).

The classifier (``weights/fashion-mnist-classifier``, :func:`build_classifier`) judges generated images:

- Fréchet distance (FD) between Gaussians fitted to its 128-d ``features`` layer for ``n`` generated images
  and the 10,000 test images; its *floor* is the same distance for ``n`` real training images (what a
  perfect generator would reach at that ``n``). It is FID's formula on another network, so its values
  are not comparable with FID. With a CGAN also per class (the images drawn for class k against the test
  images of class k), beside the per-class floor.
- the histogram of the classes it predicts for the generated images (a missing class = mode dropping);
- conditional accuracy (CGAN): the share of images it puts in the class they were drawn for, overall and
  per class, beside its own accuracy on each class's real test images;
- classification accuracy score (CAS, CGAN; Ravuri & Vinyals 2019): a classifier of the same architecture
  trained from scratch on the ``n`` generated labelled images, tested on the real test set, beside the same
  classifier trained on the ``n`` real training images of the floor (``CAS_EPOCHS`` epochs each).

The same ``seed`` gives the same numbers: the draws are functions of the seed and the CAS classifiers train
with op determinism on (TensorFlow). Images are float in [0, 1] or uint8 (divided by 255); generated
images are judged as floats, unquantised. Backend-neutral: Keras and NumPy.
"""

import contextlib
import time

import keras
import numpy as np
from keras import layers

from gan_seg.engine.backend import versions
from gan_seg.engine.progress import Progress
from gan_seg.errors import InputError
from gan_seg.gan.config import CLASSIFIER, CLASSIFIER_FILE, CLASSIFIER_PRESET, check_evaluation_count
from gan_seg.gan.data import load_image_data
from gan_seg.gan.models import num_classes_of
from gan_seg.gan.sampling import sample
from gan_seg.io.presets import preset_file
from gan_seg.io.saving import load_model

FEATURES = "features"
REFERENCE_DATA = "fashion-mnist"
CAS_EPOCHS, CAS_BATCH = 5, 128
# Issue 8's targets for the shipped models, judged on TARGET_IMAGES samples (FD's bias depends on n).
TARGET_IMAGES = 10000
TARGET_FD_RATIO, TARGET_CONDITIONAL_ACCURACY, TARGET_MIN_CLASS_SHARE = 10.0, 0.95, 0.05


def build_classifier(image_shape=(28, 28, 1), num_classes=10):
    """A small CNN: 3 conv stages (32, 64, 128) -> dense ``features`` (128) -> softmax."""
    inputs = keras.Input(image_shape, name="image")
    x = inputs
    for stage, filters in enumerate((32, 64, 128)):
        for conv in range(2 if stage < 2 else 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{stage}_{conv}")(x)
        x = layers.MaxPooling2D(name=f"pool{stage}")(x)
    x = layers.Dropout(0.25, name="drop_conv")(layers.Flatten(name="flatten")(x))
    features = layers.Dense(128, activation="relu", name=FEATURES)(x)
    x = layers.Dropout(0.4, name="drop_features")(features)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="classifier")


def train_classifier(x, y, epochs=8, seed=0, batch_size=128, verbose=0, num_classes=None, callbacks=None):
    """Train :func:`build_classifier` on images ``x`` and integer labels ``y``; returns the model.

    ``num_classes`` defaults to ``max(y) + 1``. Reproducible: the global seeds are set from ``seed`` and,
    on TensorFlow, op determinism is on while it trains.
    """
    with deterministic_ops():
        keras.utils.set_random_seed(seed)
        x = _as_input(x)
        model = build_classifier(x.shape[1:], num_classes or int(np.max(y)) + 1)
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, np.asarray(y), batch_size=batch_size, epochs=epochs, verbose=verbose,
                  callbacks=callbacks)
    return model


@contextlib.contextmanager
def deterministic_ops():
    """TensorFlow's op determinism on inside the block (restored after); other backends: nothing to do."""
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf  # noqa: PLC0415 - backend-specific: only on the TensorFlow backend
    from tensorflow.python.framework import config  # noqa: PLC0415 - idem (its switch back is not public)

    was_on = config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            config.disable_op_determinism()


def predict_classes(classifier, images, batch_size=500):
    """The classifier's predicted class of each image."""
    probabilities = classifier.predict(_as_input(images), batch_size=batch_size, verbose=0)
    return np.argmax(probabilities, axis=-1)


def conditional_accuracy(classifier, images, labels):
    """Share of images the classifier assigns to the class they were generated for."""
    return float(np.mean(predict_classes(classifier, images) == np.asarray(labels)))


def class_histogram(classifier, images, num_classes):
    """Share of images per predicted class (length ``num_classes``, sums to 1)."""
    counts = np.bincount(predict_classes(classifier, images), minlength=num_classes)
    return counts / max(len(images), 1)


def features(classifier, images, batch_size=500):
    """Activations of the classifier's ``features`` layer, float64 (N, D)."""
    extractor = keras.Model(classifier.inputs, classifier.get_layer(FEATURES).output)
    return extractor.predict(_as_input(images), batch_size=batch_size, verbose=0).astype(np.float64)


def embed(classifier, images, batch_size=500, progress=None):
    """``(features float64 (N, D), predicted classes (N,))`` of ``images`` in one pass over the classifier;
    ``progress(count)`` is called after each batch."""
    extractor = keras.Model(classifier.inputs, [classifier.get_layer(FEATURES).output, classifier.output])
    found, classes = [], []
    for start in range(0, len(images), batch_size):
        batch = _as_input(images[start:start + batch_size])
        feats, probabilities = extractor.predict_on_batch(batch)
        found.append(np.asarray(feats, np.float64))
        classes.append(np.argmax(np.asarray(probabilities), axis=-1))
        if progress:
            progress(len(batch))
    return np.concatenate(found), np.concatenate(classes)


def frechet_distance(features_a, features_b):
    """Fréchet distance between Gaussians fitted to two feature sets (N, D):

    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the trace root via symmetric eigen-decompositions.
    """
    a, b = (np.asarray(f, np.float64).reshape(len(f), -1) for f in (features_a, features_b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = (np.atleast_2d(np.cov(f, rowvar=False)) for f in (a, b))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    # tr((S_a S_b)^(1/2)) = sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    distance = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    return float(max(distance, 0.0))


def feature_frechet_distance(classifier, real, fake):
    """FD-FMNIST: Fréchet distance between the ``features`` of real and generated images."""
    return frechet_distance(features(classifier, real), features(classifier, fake))


def shipped_classifier():
    """The shipped classifier preset (sha256 checked) and its class names."""
    model, metadata = load_model(preset_file(CLASSIFIER_PRESET, CLASSIFIER_FILE), CLASSIFIER)
    return model, list(metadata["class_names"])


# -- gan-seg evaluate -------------------------------------------------------------------------------------
def check_judgeable(generator, classifier, classifier_names, class_names=None, what="the generator"):
    """InputError unless ``classifier`` can judge ``generator``'s images (same image shape; a CGAN's
    classes must be the classifier's, by number and, when known, by name)."""
    drawn = tuple(generator.outputs[0].shape[1:])
    judged = tuple(classifier.inputs[0].shape[1:])
    if drawn != judged:
        raise InputError(f"{what} draws {'x'.join(map(str, drawn))} images; the classifier judges "
                         f"{'x'.join(map(str, judged))} Fashion-MNIST images only")
    classes = num_classes_of(generator)
    if classes is not None and classes != len(classifier_names):
        raise InputError(f"{what} draws {classes} classes; the classifier knows the "
                         f"{len(classifier_names)} Fashion-MNIST classes")
    if classes is not None and class_names and list(class_names) != list(classifier_names):
        raise InputError(f"{what}'s classes ({', '.join(class_names)}) are not the classifier's "
                         f"({', '.join(classifier_names)})")


class _Stages:
    """One progress line per stage on stderr (or nothing)."""

    def __init__(self, enabled):
        self.enabled = enabled

    def counter(self, noun, total, unit="img/s"):
        """A ``progress(count)`` callback that advances a new line ``noun done/total``."""
        line = Progress(0, total, enabled=self.enabled, noun=noun, unit=unit)
        done = [0]

        def advance(count):
            done[0] += count
            line.update(done[0], {}, done[0])
        return advance

    def epochs(self, noun, epochs, images_per_epoch):
        """A Keras callback reporting training epochs as a progress line."""
        line = Progress(0, epochs, enabled=self.enabled, noun=noun)

        class Report(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                shown = {"acc": float((logs or {}).get("accuracy", 0.0))}
                line.update(epoch + 1, shown, (epoch + 1) * images_per_epoch)
        return [Report()]


def evaluate(generator, n=10000, seed=0, class_names=None, cas=True, classifier=None, progress=True,
             what="the generator"):
    """Every quality number of ``generator`` (a Keras generator), as a JSON-able dict.

    ``classifier``: ``(model, class_names)``, by default the shipped preset. ``class_names``: the
    generator's (from its metadata), checked against the classifier's; ``what`` names the generator in
    errors. ``cas=False`` skips the two CAS trainings (CGAN). Keys: ``fd``, ``fd_floor``, ``fd_ratio``,
    ``histogram``, ``min_class_share``, ``real_accuracy`` (+ ``per_class_real_accuracy``), and for a CGAN
    ``per_class_fd`` (+ ``_floor``), ``conditional_accuracy`` (+ ``per_class_conditional_accuracy``),
    ``cas_generated``, ``cas_real``; ``targets`` (issue 8's, passed or not; judged at ``n`` = 10,000 only,
    else empty) and ``seconds``.
    """
    start = time.perf_counter()
    check_evaluation_count(n)
    model, names = classifier or shipped_classifier()
    check_judgeable(generator, model, names, class_names, what)
    conditional = num_classes_of(generator) is not None
    train, test = (load_image_data(REFERENCE_DATA, split=split) for split in ("train", "test"))
    subset = np.sort(np.random.default_rng([seed, 1]).permutation(len(train.x))[:n])
    real_x, real_y = train.x[subset], train.y[subset]
    stages = _Stages(progress)

    images, labels, _ = sample(generator, n, seed=seed, progress=stages.counter("sampling", n))
    embedding = stages.counter("features", 2 * n + len(test.x))
    fake_f, fake_class = embed(model, images, progress=embedding)
    test_f, test_class = embed(model, test.x, progress=embedding)
    real_f, _ = embed(model, real_x, progress=embedding)

    k = len(names)
    fd, floor = frechet_distance(test_f, fake_f), frechet_distance(test_f, real_f)
    histogram = np.bincount(fake_class, minlength=k) / n
    real_hits = test_class == test.y
    result = {
        "n": n, "seed": seed, "kind": "cgan" if conditional else "dcgan",
        "reference": f"{len(test.x)} Fashion-MNIST test images",
        "floor": f"{n} Fashion-MNIST training images",
        "classifier": {"name": CLASSIFIER_PRESET, "test_accuracy": _round(real_hits.mean())},
        "fd": _round(fd), "fd_floor": _round(floor), "fd_ratio": _round(fd / max(floor, 1e-12)),
        "histogram": _per_class(names, histogram), "min_class_share": _round(histogram.min()),
        "real_accuracy": _round(real_hits.mean()),
        "per_class_real_accuracy": _per_class(names, [real_hits[test.y == c].mean() for c in range(k)]),
    }
    if conditional:
        hits = fake_class == labels
        result.update({
            "per_class_fd": _per_class(names, [frechet_distance(test_f[test.y == c], fake_f[labels == c])
                                               for c in range(k)]),
            "per_class_fd_floor": _per_class(names, [frechet_distance(test_f[test.y == c],
                                                                      real_f[real_y == c])
                                                     for c in range(k)]),
            "conditional_accuracy": _round(hits.mean()),
            "per_class_conditional_accuracy": _per_class(names, [hits[labels == c].mean() for c in range(k)]),
        })
        if cas:
            result.update(_cas(images, labels, real_x, real_y, test, k, seed, stages))
    result["targets"] = _targets(result, names) if n == TARGET_IMAGES else {}
    result["versions"] = versions()
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _cas(images, labels, real_x, real_y, test, num_classes, seed, stages):
    """Classification accuracy scores: the same classifier trained on the generated and on real images."""
    scores = {}
    for key, (x, y) in (("cas_generated", (images, labels)), ("cas_real", (real_x, real_y))):
        model = train_classifier(x, y, epochs=CAS_EPOCHS, seed=seed, batch_size=CAS_BATCH,
                                 num_classes=num_classes,
                                 callbacks=stages.epochs(key.replace("_", " "), CAS_EPOCHS, len(x)))
        _, predicted = embed(model, test.x)
        scores[key] = _round(np.mean(predicted == test.y))
    scores["cas"] = {"epochs": CAS_EPOCHS, "batch_size": CAS_BATCH, "images": len(images),
                     "architecture": "build_classifier (as the shipped classifier)", "seed": seed}
    return scores


def _targets(result, names):
    """Issue 8's targets for the shipped models: ``{target: passed}``."""
    targets = {f"fd <= {TARGET_FD_RATIO:g} x floor": result["fd_ratio"] <= TARGET_FD_RATIO}
    if "conditional_accuracy" in result:
        targets[f"conditional accuracy >= {TARGET_CONDITIONAL_ACCURACY}"] = (
            result["conditional_accuracy"] >= TARGET_CONDITIONAL_ACCURACY)
        targets["every class's conditional accuracy >= the classifier's on its real test images"] = all(
            result["per_class_conditional_accuracy"][name] >= result["per_class_real_accuracy"][name]
            for name in names)
    else:
        targets[f"every class >= {TARGET_MIN_CLASS_SHARE:.0%} of the samples"] = (
            result["min_class_share"] >= TARGET_MIN_CLASS_SHARE)
    return targets


def _per_class(names, values):
    return {name: _round(value) for name, value in zip(names, values, strict=True)}


def _round(value):
    return round(float(value), 4)


def _as_input(images):
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
