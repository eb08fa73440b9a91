"""GAN quality metrics: Fréchet distance, conditional accuracy, class histogram, the classifier preset, and
``evaluate`` (what ``gan-seg evaluate`` reports)."""

import keras
import numpy as np
import pytest

from gan_seg.errors import InputError
from gan_seg.gan.config import check_evaluation_count
from gan_seg.gan.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR
from gan_seg.gan.evaluation import (
    CAS_EPOCHS,
    _targets,
    build_classifier,
    class_histogram,
    conditional_accuracy,
    evaluate,
    feature_frechet_distance,
    frechet_distance,
)
from gan_seg.gan.models import build_generator
from gan_seg.gan.report import evaluation_table
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


# -- gan-seg evaluate ---------------------------------------------------------------------------------
needs_classifier = pytest.mark.skipif("fashion-mnist-classifier" not in list_presets(),
                                      reason="weights/fashion-mnist-classifier is not installed")
needs_fashion_mnist = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                                         reason="Fashion-MNIST is not installed")


def fashion_generator(classes=10, seed=0):
    """An untrained generator of 28x28 grey images (what the classifier judges)."""
    keras.utils.set_random_seed(seed)
    return build_generator(16, (28, 28, 1), classes)


@needs_classifier
@pytest.mark.parametrize("make, message", [
    (lambda: build_generator(8, (16, 16, 1), 10), "draws 16x16x1 images; the classifier judges 28x28x1"),
    (lambda: build_generator(8, (28, 28, 3), None), "draws 28x28x3 images"),
    (lambda: build_generator(8, (28, 28, 1), 4), "draws 4 classes; the classifier knows the 10"),
])
def test_evaluate_refuses_what_the_classifier_cannot_judge(make, message):
    with pytest.raises(InputError, match=message):
        evaluate(make(), n=100, progress=False)


@needs_classifier
def test_evaluate_refuses_other_class_names():
    with pytest.raises(InputError, match=r"classes \(a, b, c, d, e, f, g, h, i, j\) are not the classifier"):
        evaluate(fashion_generator(), n=100, class_names=list("abcdefghij"), progress=False)


@pytest.mark.parametrize("n", [0, 19, 60001, 100.0, True])
def test_evaluate_checks_the_number_of_images(n):
    with pytest.raises(InputError, match=r"-n must be an integer in 20\.\.60000"):
        check_evaluation_count(n)


@pytest.mark.slow
@needs_classifier
@needs_fashion_mnist
def test_evaluate_cgan_numbers_are_complete_consistent_and_reproducible(capsys):
    generator = fashion_generator()
    first = evaluate(generator, n=100, seed=5, class_names=list(FASHION_MNIST_CLASSES))
    assert "sampling 100/100" in capsys.readouterr().err  # the progress lines
    second = evaluate(generator, n=100, seed=5, class_names=list(FASHION_MNIST_CLASSES), progress=False)
    assert first.pop("seconds") > 0 and second.pop("seconds") > 0
    assert first == second, "the same seed gave different numbers"
    names = list(FASHION_MNIST_CLASSES)
    for key in ("histogram", "per_class_fd", "per_class_fd_floor", "per_class_conditional_accuracy",
                "per_class_real_accuracy"):
        assert list(first[key]) == names, key
    assert sum(first["histogram"].values()) == pytest.approx(1.0, abs=1e-3)
    assert first["min_class_share"] == min(first["histogram"].values())
    assert first["fd_ratio"] == pytest.approx(first["fd"] / first["fd_floor"], rel=1e-3)
    assert first["fd"] > first["fd_floor"] > 0  # an untrained generator is far from the data
    # The classifier's own test accuracy, measured here, is the one its card records.
    assert first["real_accuracy"] == list_presets()["fashion-mnist-classifier"]["test_accuracy"]
    per_class = np.array(list(first["per_class_real_accuracy"].values()))
    assert per_class.mean() == pytest.approx(first["real_accuracy"], abs=1e-3)  # 1,000 test images a class
    assert 0.0 <= first["cas_generated"] <= 1 and first["cas_real"] > first["cas_generated"]
    assert first["cas"]["images"] == 100 and first["cas"]["epochs"] == CAS_EPOCHS
    assert first["targets"] == {}  # judged at n = 10000 only
    other = evaluate(generator, n=100, seed=6, class_names=names, cas=False, progress=False)
    assert other["fd"] != first["fd"] and "cas_generated" not in other
    table = evaluation_table({**first, "seconds": 1.0})
    for text in ("CGAN, 100 generated images, seed 5", f"{first['fd']:.4f}", "Ankle boot",
                 f"generated {first['cas_generated']:.4f}", "judged at n = 10000 only"):
        assert text in table, text


@pytest.mark.slow
@needs_classifier
@needs_fashion_mnist
def test_evaluate_dcgan_reports_the_histogram_and_no_class_scores():
    result = evaluate(fashion_generator(classes=None), n=60, seed=0, progress=False)
    assert result["kind"] == "dcgan" and result["n"] == 60
    assert not {"per_class_fd", "conditional_accuracy", "cas_generated"} & set(result)
    assert sum(result["histogram"].values()) == pytest.approx(1.0, abs=1e-3)
    table = evaluation_table(result)
    assert "FD floor" not in table and "DCGAN, 60 generated images" in table


def test_targets_are_judged_on_the_issue_thresholds():
    names = ["a", "b"]
    result = {"fd_ratio": 9.5, "conditional_accuracy": 0.96, "min_class_share": 0.3,
              "per_class_conditional_accuracy": {"a": 0.9, "b": 0.99},
              "per_class_real_accuracy": {"a": 0.9, "b": 1.0}}
    assert list(_targets(result, names).values()) == [True, True, False]
    dcgan = {"fd_ratio": 10.5, "min_class_share": 0.05}
    assert list(_targets(dcgan, names).values()) == [False, True]
