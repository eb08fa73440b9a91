"""Occlusion sensitivity: positions, the map of a network that looks at one region only, the targets."""

import keras
import numpy as np
import pytest

from gan_seg.errors import InputError
from gan_seg.explain.occlusion import occlude, occlusion, positions
from gan_seg.explain.targets import class_index, discriminator_target, network_kind
from gan_seg.gan.models import build_discriminator, build_generator

REGION = (slice(4, 8), slice(10, 14))  # rows 4..7, columns 10..13 of a 16x16 image


def region_classifier():
    """A 2-class 'classifier' whose output depends only on REGION: P(class 0) = sigmoid(sum / 2 - 4)."""
    image = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Cropping2D(((4, 8), (10, 2)), name="crop")(image)
    x = keras.layers.Flatten(name="flatten")(x)
    dense = keras.layers.Dense(2, activation="softmax", name="probabilities")
    model = keras.Model(image, dense(x), name="classifier")
    dense.set_weights([np.stack([np.full(16, 0.25), np.full(16, -0.25)], axis=1).astype(np.float32),
                       np.array([-2.0, 2.0], np.float32)])
    return model


@pytest.mark.parametrize("size, patch, stride, expected", [
    (28, 8, 2, list(range(0, 21, 2))),
    (10, 4, 4, [0, 4, 6]),  # the last position moves to the edge
    (8, 8, 3, [0]),
    (9, 2, 1, list(range(8))),
])
def test_positions_cover_every_pixel(size, patch, stride, expected):
    found = positions(size, patch, stride)
    assert found.tolist() == expected
    covered = np.zeros(size, bool)
    for top in found:
        covered[top:top + patch] = True
    assert covered.all()


@pytest.mark.parametrize("patch, stride, fill", [(2, 1, "zero"), (4, 2, "zero"), (3, 3, "grey"),
                                                  (5, 2, "mean")])
def test_the_map_is_large_exactly_where_the_network_looks(patch, stride, fill):
    model = region_classifier()
    image = np.random.default_rng(0).uniform(0.0, 0.3, (16, 16, 1)).astype(np.float32)
    image[REGION] = 1.0
    result, target = occlusion(model, image, target=0, patch=patch, stride=stride, fill=fill)
    assert target.index == 0 and target.name == "P(0)"
    assert result.base == pytest.approx(float(model.predict_on_batch(image[None])[0, 0]), abs=1e-6)
    for i, top in enumerate(result.tops):
        for j, left in enumerate(result.lefts):
            overlaps = top < 8 and top + patch > 4 and left < 14 and left + patch > 10
            if overlaps:
                assert result.drops[i, j] > 1e-3, (top, left, result.drops[i, j])
            else:
                assert abs(result.drops[i, j]) < 1e-6, (top, left, result.drops[i, j])
    pixels = result.pixel_map((16, 16))
    near = np.zeros((16, 16), bool)  # pixels some patch touching the region also covers
    near[max(0, 4 - patch + 1):8 + patch - 1, max(0, 10 - patch + 1):14 + patch - 1] = True
    assert np.abs(pixels[~near]).max() < 1e-6
    assert pixels[REGION].min() > 1e-3


def test_batches_do_not_change_the_map():
    model = region_classifier()
    image = np.random.default_rng(1).uniform(0, 1, (16, 16, 1)).astype(np.float32)
    maps = [occlusion(model, image, patch=3, stride=1, batch_size=b)[0].drops for b in (1, 7, 64, 500)]
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], atol=1e-6)


def test_occlude_hides_every_channel_with_the_chosen_fill():
    seen = []

    def score(batch):
        seen.append(batch.copy())
        return batch.sum(axis=(1, 2, 3))

    image = np.full((6, 6, 3), 0.25, np.float32)
    image[0, 0] = 1.0
    result = occlude(score, image, patch=2, stride=2, fill="grey", batch_size=4)
    occluded = np.concatenate(seen[1:])[:9]
    assert np.all(occluded[0, :2, :2] == 0.5)
    assert result.drops.shape == (3, 3)
    np.testing.assert_allclose(result.drops[1, 1], 4 * 3 * (0.25 - 0.5), rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(patch=17), "larger than the image"),
    (dict(patch=0), "--patch must be a positive integer"),
    (dict(stride=-1), "--stride must be a positive integer"),
    (dict(fill="noise"), "--fill 'noise'"),
    (dict(target="shoe"), "not one of the network's classes"),
    (dict(target=5), "outside the network's classes 0..1"),
])
def test_bad_occluders_and_targets(kwargs, message):
    image = np.zeros((16, 16, 1), np.float32)
    with pytest.raises(InputError, match=message):
        occlusion(region_classifier(), image, **kwargs)


def test_network_kinds_and_what_cannot_be_occluded():
    generator = build_generator(latent_dim=4, image_shape=(16, 16, 1))
    assert network_kind(generator) == "generator"
    assert network_kind(build_discriminator((16, 16, 1))) == "discriminator"
    assert network_kind(region_classifier()) == "classifier"
    with pytest.raises(InputError, match="is a generator"):
        occlusion(generator, np.zeros((16, 16, 1), np.float32))
    with pytest.raises(InputError, match="the network takes 16x16x1"):
        occlusion(region_classifier(), np.zeros((28, 28, 1), np.float32))


def test_a_conditional_discriminator_judges_the_label_it_finds_most_real():
    keras.utils.set_random_seed(0)
    model = build_discriminator((16, 16, 1), num_classes=3, conditioning="projection", logits=True)
    image = np.random.default_rng(2).uniform(0, 1, (16, 16, 1)).astype(np.float32)
    logits = model.predict_on_batch([np.repeat(image[None], 3, 0), np.eye(3, dtype=np.float32)])[:, 0]
    chosen = discriminator_target(model, image, class_names=["a", "b", "c"])
    assert chosen.index == int(np.argmax(logits)) and chosen.name.startswith("P(real | ")
    np.testing.assert_allclose(chosen.score(image[None]), 1 / (1 + np.exp(-logits[chosen.index])), rtol=1e-5)
    assert discriminator_target(model, image, target="C", class_names=["a", "b", "c"]).index == 2
    with pytest.raises(InputError, match="unconditional discriminator"):
        discriminator_target(build_discriminator((16, 16, 1)), image, target=1)


@pytest.mark.parametrize("text, index", [("2", 2), ("cerebral-cortex", 2), ("Left-Cerebral-Cortex", 2),
                                         ("right_hippocampus", 3)])
def test_class_names_find_merged_sagittal_classes(text, index):
    merged = ["Background", "Cerebral-White-Matter", "Cerebral-Cortex", "Hippocampus"]
    assert class_index(text, merged) == index


def test_segmentation_targets_sum_the_structure_over_the_slice():
    image = keras.Input((None, None, 1), name="image")
    logits = keras.layers.Conv2D(3, 1, name="conv")(image)
    model = keras.Model(image, keras.layers.Softmax(name="softmax")(logits), name="toy")
    slice_ = np.random.default_rng(3).uniform(0, 1, (16, 16, 1)).astype(np.float32)
    probabilities = model.predict_on_batch(slice_[None])[0]
    _, everything = occlusion(model, slice_, patch=16, stride=16)
    np.testing.assert_allclose(everything.score(slice_[None]), (1 - probabilities[..., 0]).sum(), rtol=1e-5)
    _, one = occlusion(model, slice_, target=2, patch=16, stride=16, class_names=["bg", "a", "b"])
    assert one.name == "summed P(b)"
    np.testing.assert_allclose(one.score(slice_[None]), probabilities[..., 2].sum(), rtol=1e-5)
    with pytest.raises(InputError, match="multiples of 16"):
        occlusion(model, np.zeros((20, 16, 1), np.float32))
