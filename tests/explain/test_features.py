"""Feature maps equal a sub-model's outputs; layer look-up errors name the nearest layers."""

import keras
import numpy as np
import pytest

from gan_seg.errors import InputError
from gan_seg.explain.features import feature_maps, find_layer, layer_table, spatial
from gan_seg.gan.evaluation import build_classifier
from gan_seg.gan.models import build_discriminator, build_generator
from gan_seg.seg.models import build_quicknat


@pytest.mark.parametrize("build, inputs, layer", [
    (lambda: build_classifier((28, 28, 1)), lambda rng: rng.uniform(0, 1, (2, 28, 28, 1)), "conv0_1"),
    (lambda: build_discriminator((16, 16, 1), num_classes=3),
     lambda rng: [rng.uniform(0, 1, (2, 16, 16, 1)), np.eye(3)[:2]], "d_conv_2"),
    (lambda: build_generator(latent_dim=6, image_shape=(16, 16, 1)), lambda rng: rng.uniform(-1, 1, (2, 6)),
     "g_deconv_2"),
])
def test_feature_maps_equal_the_layer_output(build, inputs, layer):
    keras.utils.set_random_seed(0)
    model = build()
    data = inputs(np.random.default_rng(0))
    data = [np.asarray(a, np.float32) for a in data] if isinstance(data, list) else data.astype(np.float32)
    inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
    expected = keras.Model(inputs, model.get_layer(layer).output)(data, training=False)
    found = feature_maps(model, data, layer)
    np.testing.assert_allclose(found, keras.ops.convert_to_numpy(expected), atol=1e-5)
    assert spatial(tuple(model.get_layer(layer).output.shape))


def test_a_layer_with_several_outputs_shows_its_first():
    """QuickNAT's max-pooling also returns its indices (for unpooling): the maps are the pooled values."""
    keras.utils.set_random_seed(0)
    model = build_quicknat((32, 32, 1), num_classes=3, filters=4, kernel_size=3)
    data = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 1)).astype(np.float32)
    pooled = keras.Model(model.inputs[0], model.get_layer("encode1_pool").output[0])(data, training=False)
    found = feature_maps(model, data, "encode1_pool")
    np.testing.assert_allclose(found, keras.ops.convert_to_numpy(pooled), atol=1e-6)
    assert found.shape == (1, 16, 16, 4)
    assert dict((name, shape) for name, _, shape in layer_table(model))["encode1_pool"] == (None, 16, 16, 4)


def test_layer_table_and_nearest_names():
    model = build_classifier((28, 28, 1))
    rows = layer_table(model)
    assert [name for name, _, _ in rows] == [layer.name for layer in model.layers]
    assert rows[1] == ("conv0_0", "Conv2D", (None, 28, 28, 32))
    assert rows[-1][2] == (None, 10)
    with pytest.raises(InputError, match=r"--layer 'conv0_2'.*nearest: conv0_1, conv0_0") as error:
        find_layer(model, "conv0_2")
    assert "--list-layers" in str(error.value)
    with pytest.raises(InputError, match="its layers start image, conv0_0"):
        find_layer(model, "zzzzzzzz")
