"""The adversarial model ``D(G(z))`` is frozen as a Keras object.

The seed's classic recipe written as classic Keras code (compile D, build and compile the adversarial model,
then alternate ``D.train_on_batch(real + fake -> 1 / 0)`` and ``adversarial.train_on_batch(z -> 1)``)
moves D only on D's call and G only on the adversarial call, for the DCGAN and the CGAN, before and after
a ``.keras`` round trip. No ``trainable`` flag is touched (Keras 3 shares it between every model that holds
the layer). A plain functional ``keras.Model(z, D(G(z)))`` fails the same check: the check can fail.
"""

import keras
import numpy as np
import pytest

from gan_seg.gan.config import ADVERSARIAL, DISCRIMINATOR, GENERATOR
from gan_seg.gan.models import Adversarial, build_adversarial, build_discriminator, build_generator
from gan_seg.io.saving import load_model, save_model

SHAPE, LATENT, BATCH, CLASSES = (16, 16, 1), 8, 8, 3
CASES = {"dcgan": (None, {}), "cgan": (CLASSES, {}),
         "cgan-spectral-norm-projection": (CLASSES, {"spectral_norm": True, "conditioning": "projection"})}


def values(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.variables]


def moved(before, model):
    """``{variable path: changed?}`` since ``before``."""
    return {v.path: not np.array_equal(b, keras.ops.convert_to_numpy(v))
            for b, v in zip(before, model.variables, strict=True)}


def compiled(generator, discriminator, adversarial=None):
    """The classic set-up: compile D, then build and compile the adversarial model (no flag touched)."""
    discriminator.compile(optimizer=keras.optimizers.RMSprop(2e-4), loss="binary_crossentropy",
                          metrics=["accuracy"])
    adversarial = adversarial or build_adversarial(generator, discriminator)
    adversarial.compile(optimizer=keras.optimizers.RMSprop(1e-4), loss="binary_crossentropy")
    return adversarial


def classic_steps(generator, discriminator, adversarial, classes, steps=2, seed=0):
    """The seed's loop; after each call, check which model moved."""
    rng = np.random.default_rng(seed)
    trainable = {v.path for v in discriminator.trainable_variables}
    for _ in range(steps):
        real = rng.uniform(0, 1, (BATCH, *SHAPE)).astype("float32")
        z = rng.uniform(-1, 1, (BATCH, LATENT)).astype("float32")
        one_hot = np.eye(classes, dtype="float32")[rng.integers(0, classes, BATCH)] if classes else None
        g_inputs = [z, one_hot] if classes else z
        fake = generator.predict(g_inputs, verbose=0)
        images = np.concatenate([real, fake])
        d_inputs = [images, np.concatenate([one_hot, one_hot])] if classes else images
        targets = np.concatenate([np.ones((BATCH, 1)), np.zeros((BATCH, 1))]).astype("float32")

        g0, d0 = values(generator), values(discriminator)
        discriminator.train_on_batch(d_inputs, targets)
        d_moved, g_moved = moved(d0, discriminator), moved(g0, generator)
        assert all(d_moved[path] for path in trainable), f"D's call left D weights alone: {d_moved}"
        assert not any(g_moved.values()), f"D's call moved G: {g_moved}"

        g0, d0 = values(generator), values(discriminator)
        adversarial.train_on_batch(g_inputs, np.ones((BATCH, 1), "float32"))
        d_moved, g_moved = moved(d0, discriminator), moved(g0, generator)
        assert not any(d_moved.values()), f"the adversarial call moved D: {d_moved}"
        assert all(g_moved[v.path] for v in generator.trainable_variables), f"G did not train: {g_moved}"


def fresh(case):
    classes, options = CASES[case]
    keras.utils.set_random_seed(0)
    return build_generator(LATENT, SHAPE, classes), build_discriminator(SHAPE, classes, **options), classes


@pytest.mark.parametrize("classes", [None, 10], ids=["dcgan", "cgan"])
def test_adversarial_trainable_weights_are_exactly_the_generators(classes):
    generator, discriminator = build_generator(num_classes=classes), build_discriminator(num_classes=classes)
    adversarial = build_adversarial(generator, discriminator)
    assert isinstance(adversarial, Adversarial) and adversarial.name == ADVERSARIAL
    assert len(generator.trainable_weights) == 18  # the classic 28x28 stacks: 18 in G ...
    assert len(discriminator.trainable_weights) == (10 if classes is None else 12)  # ... 10 (+2) in D
    assert [id(v) for v in adversarial.trainable_weights] == [id(v) for v in generator.trainable_weights]
    assert [id(v) for v in adversarial.trainable_variables] == [id(v) for v in generator.trainable_variables]
    frozen = {id(v) for v in adversarial.non_trainable_weights}
    assert {id(v) for v in discriminator.weights} <= frozen
    assert len(frozen) + 18 == len(adversarial.weights)
    assert discriminator.trainable and all(layer.trainable for layer in discriminator.layers)


@pytest.mark.parametrize("case", list(CASES))
def test_classic_recipe_trains_d_on_d_calls_and_g_on_adversarial_calls(case):
    generator, discriminator, classes = fresh(case)
    adversarial = compiled(generator, discriminator)
    classic_steps(generator, discriminator, adversarial, classes)


def test_the_check_fails_for_a_plain_functional_adversarial_model():
    """Without the partition, Keras trains D through the adversarial model too: the check sees it."""
    generator, discriminator, classes = fresh("dcgan")
    z = keras.Input((LATENT,))
    plain = keras.Model(z, discriminator(generator(z)))
    assert len(plain.trainable_weights) == 28  # 18 + 10: D is not frozen
    compiled(generator, discriminator, plain)
    with pytest.raises(AssertionError, match="the adversarial call moved D"):
        classic_steps(generator, discriminator, plain, classes, steps=1)


@pytest.mark.parametrize("case", ["dcgan", "cgan"])
def test_classic_recipe_survives_a_keras_round_trip(tmp_path, case):
    generator, discriminator, classes = fresh(case)
    classic_steps(generator, discriminator, compiled(generator, discriminator), classes, steps=1)
    z = np.random.default_rng(1).uniform(-1, 1, (4, LATENT)).astype("float32")
    inputs = [z, np.eye(CLASSES, dtype="float32")[[0, 1, 2, 0]]] if classes else z

    # The adversarial model itself: its G and D come back inside it, still partitioned.
    adversarial = build_adversarial(generator, discriminator)
    save_model(adversarial, tmp_path / "adversarial.keras", {"kind": ADVERSARIAL})
    loaded, _ = load_model(tmp_path / "adversarial.keras", ADVERSARIAL)
    assert isinstance(loaded, Adversarial)
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), adversarial.predict(inputs, verbose=0),
                               rtol=1e-6, atol=1e-6)
    g, d = loaded.get_layer(GENERATOR), loaded.get_layer(DISCRIMINATOR)
    assert [id(v) for v in loaded.trainable_weights] == [id(v) for v in g.trainable_weights]
    classic_steps(g, d, compiled(g, d, loaded), classes, seed=2)

    # G and D saved on their own, the adversarial model rebuilt from the loaded pair.
    for model, kind in ((generator, GENERATOR), (discriminator, DISCRIMINATOR)):
        save_model(model, tmp_path / f"{kind}.keras", {"kind": kind})
    g, _ = load_model(tmp_path / "generator.keras", GENERATOR)
    d, _ = load_model(tmp_path / "discriminator.keras", DISCRIMINATOR)
    classic_steps(g, d, compiled(g, d), classes, seed=3)
