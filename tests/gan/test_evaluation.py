"""GAN quality metrics: Fréchet distance, conditional accuracy, class histogram, the classifier preset."""

import numpy as np
import pytest

from gan_seg.gan.evaluation import (
    build_classifier,
    class_histogram,
    conditional_accuracy,
    feature_frechet_distance,
    frechet_distance,
)
from gan_seg.io.presets import list_presets, preset_file
from gan_seg.io.saving import load_model


def gaussian_samples(mean, cov, n=500, seed=0):
    """``n`` samples whose sample mean and covariance are exactly ``mean`` and ``cov``."""
    x = np.random.default_rng(seed).normal(size=(n, len(mean)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    return x @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(gaussian_samples(mu1, np.diag(s1)), gaussian_samples(mu2, np.diag(s2), seed=1))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_sqrtm_for_full_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)), rng.normal(size=(200, 5)) + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca + cb)
                - 2 * np.trace(linalg.sqrtm(ca @ cb).real))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_is_zero_for_identical_sets_and_works_in_1d():
    x = np.random.default_rng(3).normal(size=(300, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(np.zeros(50) + [0, 2] * 25, np.zeros(50) + [1, 3] * 25) == pytest.approx(1.0)


class ThresholdClassifier:
    """Stub: the class is the image's mean brightness x 10 (so images filled with k/10 + 0.05 are class k)."""

    def predict(self, images, batch_size=None, verbose=0):
        classes = np.clip((images.reshape(len(images), -1).mean(1) * 10).astype(int), 0, 9)
        return np.eye(10)[classes]


def test_conditional_accuracy_and_histogram_on_a_stub_classifier():
    labels = np.array([0, 1, 2, 3, 3, 3, 7, 7])
    drawn = np.array([0, 1, 2, 3, 3, 3, 7, 5])  # the last image came out as class 5
    images = np.ones((8, 4, 4, 1), np.float32) * (drawn[:, None, None, None] / 10 + 0.05)
    assert conditional_accuracy(ThresholdClassifier(), images, labels) == pytest.approx(7 / 8)
    histogram = class_histogram(ThresholdClassifier(), images, 10)
    np.testing.assert_allclose(histogram, [1, 1, 1, 3, 0, 1, 0, 1, 0, 0] / np.float64(8))


def test_uint8_images_are_scaled_like_floats():
    images = np.full((4, 4, 4, 1), 0.45, np.float32)
    assert conditional_accuracy(ThresholdClassifier(), (images * 255).astype(np.uint8), [4] * 4) == 1.0


def test_classifier_has_a_features_layer_for_the_frechet_distance():
    model = build_classifier((8, 8, 1), num_classes=3)
    assert model.get_layer("features").output.shape[-1] == 128
    assert model.output.shape[-1] == 3
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    assert feature_frechet_distance(model, x, x) == pytest.approx(0.0, abs=1e-6)


def test_shipped_classifier_preset_loads_verified():
    if "fashion-mnist-classifier" not in list_presets():
        pytest.skip("weights/fashion-mnist-classifier is not installed")
    model, metadata = load_model(preset_file("fashion-mnist-classifier", "classifier.keras"), "classifier")
    assert len(metadata["class_names"]) == 10
    assert list_presets()["fashion-mnist-classifier"]["test_accuracy"] >= 0.9
    probabilities = model.predict(np.zeros((2, 28, 28, 1), np.float32), verbose=0)
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
