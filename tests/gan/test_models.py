"""DCGAN / CGAN builders: shapes, names, argument checks, .keras round trips."""

import numpy as np
import pytest

from gan_seg.errors import InputError
from gan_seg.gan.models import (
    build_adversarial,
    build_discriminator,
    build_generator,
    latent_dim_of,
    num_classes_of,
)
from gan_seg.io.saving import load_model, read_metadata, save_model


@pytest.mark.parametrize("shape", [(28, 28, 1), (64, 64, 3), (32, 48, 3)])
@pytest.mark.parametrize("classes", [None, 10])
def test_shapes(shape, classes):
    g = build_generator(100, shape, classes)
    d = build_discriminator(shape, classes)
    a = build_adversarial(g, d)
    assert tuple(g.output.shape[1:]) == shape
    assert tuple(d.output.shape[1:]) == (1,)
    assert tuple(a.output.shape[1:]) == (1,)
    assert latent_dim_of(g) == 100 and num_classes_of(g) == classes
    assert len(a.inputs) == (2 if classes else 1)


def test_classic_stacks():
    g = build_generator()
    d = build_discriminator()
    deconvs = [layer for layer in g.layers if layer.name.startswith("g_deconv")]
    assert [(c.filters, c.strides[0], c.kernel_size[0]) for c in deconvs] == [
        (128, 2, 5), (64, 2, 5), (32, 1, 5), (1, 1, 5)]
    assert g.get_layer("g_reshape").output.shape[1:] == (7, 7, 128)
    convs = [layer for layer in d.layers if layer.name.startswith("d_conv")]
    assert [(c.filters, c.strides[0]) for c in convs] == [(32, 2), (64, 2), (128, 2), (256, 1)]
    assert not any("batch_normalization" in type(layer).__name__.lower() for layer in d.layers)


def test_every_layer_named():
    for model in (build_generator(num_classes=3), build_discriminator(num_classes=3)):
        for layer in model.layers:
            assert layer.name.split("_")[0] in ("g", "d", "z", "label", "image"), layer.name


@pytest.mark.parametrize("kwargs, message", [
    ({"image_shape": (30, 30, 1)}, "multiples of 4"),
    ({"image_shape": (28, 28)}, "three positive integers"),
    ({"num_classes": 1}, "num_classes"),
    ({"latent_dim": 0}, "latent_dim"),
])
def test_generator_argument_checks(kwargs, message):
    with pytest.raises(InputError, match=message):
        build_generator(**kwargs)


def test_adversarial_mismatch():
    with pytest.raises(InputError, match="conditioning"):
        build_adversarial(build_generator(num_classes=3), build_discriminator())
    with pytest.raises(InputError, match="images"):
        build_adversarial(build_generator(image_shape=(32, 32, 1)), build_discriminator())


def test_mixed_precision_keeps_float32_outputs():
    g = build_generator(8, (16, 16, 1), dtype="mixed_bfloat16")
    assert g.get_layer("g_dense").compute_dtype == "bfloat16"
    assert g.output.dtype == "float32"


@pytest.mark.parametrize("classes", [None, 3])
def test_keras_round_trip(tmp_path, classes):
    g = build_generator(8, (16, 16, 1), classes)
    d = build_discriminator((16, 16, 1), classes)
    a = build_adversarial(g, d)
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, (4, 8)).astype("float32")
    one_hot = np.eye(3, dtype="float32")[[0, 1, 2, 0]] if classes else None
    g_in = [z, one_hot] if classes else z
    images = g.predict(g_in, verbose=0)
    d_in = [images, one_hot] if classes else images
    for model, inputs, kind in ((g, g_in, "generator"), (d, d_in, "discriminator"), (a, g_in, "adversarial")):
        path = tmp_path / f"{kind}.keras"
        save_model(model, path, {"kind": kind, "class_names": ["a", "b", "c"]})
        loaded, metadata = load_model(path, kind)
        assert metadata["class_names"] == ["a", "b", "c"]
        np.testing.assert_allclose(loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0),
                                   rtol=1e-6, atol=1e-6)
        assert [w.name for w in loaded.weights] == [w.name for w in model.weights]
    with pytest.raises(InputError, match="not a 'generator'"):
        load_model(tmp_path / "discriminator.keras", "generator")


def test_corrupt_model_files(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match="not a readable .keras"):
        read_metadata(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_metadata(tmp_path / "missing.keras")
