"""Segmentation quality: per-class Dice."""

import numpy as np

from gan_seg.seg.evaluation import dice_scores


def test_dice_scores_by_hand():
    pred = np.array([[0, 0, 1], [1, 2, 2]])
    truth = np.array([[0, 1, 1], [1, 2, 0]])
    # class 0: P={0,1}, T={0,5} -> 2*1/4; class 1: P={2,3}, T={1,2,3} -> 2*2/5; class 2: P={4,5}, T={4} -> 2/3
    np.testing.assert_allclose(dice_scores(pred, truth, 4), [0.5, 0.8, 2 / 3, np.nan])
    assert np.array_equal(dice_scores(truth, truth, 3), [1.0, 1.0, 1.0])
