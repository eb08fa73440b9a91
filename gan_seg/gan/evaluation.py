"""Measuring GAN quality: a Fashion-MNIST classifier, conditional accuracy and FD-FMNIST.

FD-FMNIST is the Fréchet distance between Gaussians fitted to the 128-d ``features`` layer of the
shipped classifier (``weights/fashion-mnist-classifier``); it is FID's formula on another network, so
its values are not comparable with FID. Images are float in [0, 1] or uint8 (divided by 255).
Backend-neutral: Keras and NumPy only.
"""

import keras
import numpy as np
from keras import layers

FEATURES = "features"


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


def train_classifier(x, y, epochs=8, seed=0, batch_size=128, verbose=0):
    """Train :func:`build_classifier` on images ``x`` and integer labels ``y``; returns the model."""
    keras.utils.set_random_seed(seed)
    x = _as_input(x)
    model = build_classifier(x.shape[1:], int(np.max(y)) + 1)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, np.asarray(y), batch_size=batch_size, epochs=epochs, verbose=verbose)
    return model


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


def _as_input(images):
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
