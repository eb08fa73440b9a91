"""QuickNAT losses on hand-computed cases."""

import math

import keras
import numpy as np
import pytest

from gan_seg.errors import InputError
from gan_seg.seg import losses

LABELS = np.array([[[0, 1]]])  # one 1x2 image
PROBS = np.array([[[[0.8, 0.2], [0.4, 0.6]]]], "float32")


def value(x):
    return np.asarray(x, dtype="float64")


def test_median_frequency_weights_use_float_division():
    # frequencies .1, .3, .6; median .3 -> .3/.1, .3/.3, .3/.6 (integer division would give [3, 1, 0])
    weights = losses.median_frequency_weights(np.array([10, 30, 60], dtype=np.int64))
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, [3.0, 1.0, 0.5], rtol=1e-6)


def test_median_frequency_weights_absent_classes_and_cap():
    # the median runs over present classes only; the absent class gets 0
    np.testing.assert_allclose(losses.median_frequency_weights([0, 10, 30, 60]), [0, 3, 1, 0.5], rtol=1e-6)
    np.testing.assert_allclose(losses.median_frequency_weights([10, 30, 60], cap=2), [2, 1, 0.5], rtol=1e-6)
    # even number of present classes: median of .1, .2, .3, .4 is .25
    np.testing.assert_allclose(losses.median_frequency_weights([1, 2, 3, 4]), [2.5, 1.25, 0.25 / 0.3, 0.625],
                               rtol=1e-6)


@pytest.mark.parametrize("counts", [[0, 0], [1, -1], [[1, 2]], [1, float("nan")]])
def test_bad_class_counts_are_input_errors(counts):
    with pytest.raises(InputError, match="class_counts"):
        losses.median_frequency_weights(counts)


def test_bad_cap_is_input_error():
    with pytest.raises(InputError, match="cap"):
        losses.median_frequency_weights([1, 2], cap=0)


def test_boundary_mask():
    labels = np.array([[[0, 0, 1, 1],
                        [0, 0, 1, 1],
                        [2, 2, 2, 2]]])
    expected = [[[0, 1, 1, 0],
                 [1, 1, 1, 1],
                 [1, 1, 1, 1]]]
    mask = losses.boundary_mask(labels)
    assert keras.backend.standardize_dtype(mask.dtype) == "float32"
    np.testing.assert_array_equal(value(mask), expected)
    np.testing.assert_array_equal(value(losses.boundary_mask(np.ones((2, 3, 3), "int32"))), 0)


def test_weight_map():
    labels = np.array([[[0, 0, 1],
                        [0, 0, 1],
                        [0, 0, 0]]])
    # boundary: (0,1) (0,2) (1,1) (1,2) (2,2); class weights 1 / 2, omega0 10
    expected = [[[1, 11, 12],
                 [1, 11, 12],
                 [1, 1, 11]]]
    np.testing.assert_allclose(value(losses.weight_map(labels, [1.0, 2.0], 10.0)), expected)


def test_weighted_cross_entropy():
    weights = np.array([[1.0, 2.0]])
    expected = (1 * -math.log(0.8) + 2 * -math.log(0.6)) / 2  # = 0.6223974
    assert float(losses.weighted_cross_entropy(LABELS, PROBS, weights)) == pytest.approx(expected, rel=1e-6)
    assert float(losses.weighted_cross_entropy(LABELS, PROBS)) == pytest.approx(
        (-math.log(0.8) - math.log(0.6)) / 2, rel=1e-6)


def test_cross_entropy_uses_probabilities_as_given():
    # a perfect one-hot prediction costs 0; a second softmax would make it -log(e / (e + 1)) = 0.313
    probs = np.eye(2, dtype="float32")[LABELS]
    assert float(losses.weighted_cross_entropy(LABELS, probs)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.soft_dice_loss(LABELS, probs, 2)) == pytest.approx(0.0, abs=1e-6)


def test_cross_entropy_clips_zero_probability():
    probs = np.array([[[[0.0, 1.0], [0.0, 1.0]]]], "float32")
    assert float(losses.weighted_cross_entropy(LABELS, probs)) == pytest.approx(-math.log(1e-7) / 2, rel=1e-3)


def test_soft_dice_partial_overlap():
    labels = np.array([[[0, 0],
                        [1, 1]]])
    predicted = np.array([[[0, 1],
                           [1, 1]]])
    probs = np.eye(2, dtype="float32")[predicted]
    # class 0: 2*1 / (1 + 2) = 2/3; class 1: 2*2 / (3 + 2) = 4/5; loss = 1 - (2/3 + 4/5) / 2 = 4/15
    assert float(losses.soft_dice_loss(labels, probs, 2, smooth=0)) == pytest.approx(4 / 15, rel=1e-6)
    # soft probabilities: class 0: 2*.8 / (1.2 + 1); class 1: 2*.6 / (.8 + 1)
    expected = 1 - (1.6 / 2.2 + 1.2 / 1.8) / 2
    assert float(losses.soft_dice_loss(LABELS, PROBS, 2, smooth=0)) == pytest.approx(expected, rel=1e-6)


def test_soft_dice_leaves_out_classes_absent_from_ground_truth():
    probs = np.array([[[[0.8, 0.1, 0.1], [0.3, 0.6, 0.1]]]], "float32")
    # class 2 is absent: only classes 0 (1.6 / 2.1) and 1 (1.2 / 1.7) count
    expected = 1 - (1.6 / 2.1 + 1.2 / 1.7) / 2
    assert float(losses.soft_dice_loss(LABELS, probs, smooth=0)) == pytest.approx(expected, rel=1e-6)
    perfect = np.eye(5, dtype="float32")[LABELS]  # 3 of 5 classes absent: still a loss of 0, not 3/5
    assert float(losses.soft_dice_loss(LABELS, perfect, 5)) == pytest.approx(0.0, abs=1e-6)


def test_per_example_losses():
    labels = np.array([[[0, 1]], [[1, 1]]])
    probs = np.array([[[[0.8, 0.2], [0.4, 0.6]]], [[[0.5, 0.5], [0.0, 1.0]]]], "float32")
    dice = value(losses.soft_dice_loss(labels, probs, 2, smooth=0, per_example=True))
    # example 2 holds only class 1: 2*1.5 / (1.5 + 2)
    np.testing.assert_allclose(dice, [1 - (1.6 / 2.2 + 1.2 / 1.8) / 2, 1 - 3 / 3.5], rtol=1e-6)
    wce = value(losses.weighted_cross_entropy(labels, probs, per_example=True))
    np.testing.assert_allclose(wce, [(-math.log(0.8) - math.log(0.6)) / 2, -math.log(0.5) / 2], rtol=1e-6)
    assert float(losses.weighted_cross_entropy(labels, probs)) == pytest.approx(wce.mean(), rel=1e-6)
    # over the batch: class 0: 2*.8 / (1.7 + 1); class 1: 2*2.1 / (2.3 + 3)
    batch_dice = 1 - (1.6 / 2.7 + 4.2 / 5.3) / 2
    assert float(losses.soft_dice_loss(labels, probs, smooth=0)) == pytest.approx(batch_dice, rel=1e-6)


def test_combined_loss_is_the_sum():
    weights = losses.weight_map(LABELS, [1.0, 2.0], 3.0)  # both pixels are boundaries: [4, 5]
    np.testing.assert_allclose(value(weights), [[[4, 5]]])
    total = float(losses.combined_loss(LABELS, PROBS, weights, 2, smooth=0))
    expected = (4 * -math.log(0.8) + 5 * -math.log(0.6)) / 2 + 1 - (1.6 / 2.2 + 1.2 / 1.8) / 2
    assert total == pytest.approx(expected, rel=1e-6)
    per_example = value(losses.combined_loss(LABELS, PROBS, weights, smooth=0, per_example=True))
    assert per_example.shape == (1,) and per_example[0] == pytest.approx(expected, rel=1e-6)
