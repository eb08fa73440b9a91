"""Max-pool with indices / unpool against a NumPy loop reference, and the QuickNAT blocks."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from gan_seg.errors import InputError
from gan_seg.seg import blocks, losses
from gan_seg.seg.layers import MaxPoolWithIndices, MaxUnpool


def reference_pool(x):
    """Loop reference: max and np.argmax over [top-left, top-right, bottom-left, bottom-right]."""
    b, h, w, c = x.shape
    pooled = np.zeros((b, h // 2, w // 2, c), x.dtype)
    indices = np.zeros((b, h // 2, w // 2, c), np.int32)
    for n, i, j, k in np.ndindex(pooled.shape):
        cells = [x[n, 2 * i, 2 * j, k], x[n, 2 * i, 2 * j + 1, k], x[n, 2 * i + 1, 2 * j, k],
                 x[n, 2 * i + 1, 2 * j + 1, k]]
        pooled[n, i, j, k], indices[n, i, j, k] = max(cells), np.argmax(cells)
    return pooled, indices


def reference_unpool(values, indices):
    b, h, w, c = values.shape
    out = np.zeros((b, 2 * h, 2 * w, c), values.dtype)
    for n, i, j, k in np.ndindex(values.shape):
        cell = indices[n, i, j, k]
        out[n, 2 * i + cell // 2, 2 * j + cell % 2, k] = values[n, i, j, k]
    return out


def pool_unpool_model(shape=(None, None, 3)):
    x = keras.Input(shape)
    pooled, indices = MaxPoolWithIndices(name="pool")(x)
    return keras.Model(x, [pooled, indices, MaxUnpool(name="unpool")([pooled, indices])])


RNG = np.random.default_rng(0)
CASES = {
    "random": RNG.normal(size=(2, 4, 6, 3)).astype("float32"),
    "ties": RNG.integers(0, 2, (3, 6, 4, 3)).astype("float32"),
    "constant": np.full((1, 4, 4, 3), 0.5, "float32"),
}


@pytest.mark.parametrize("case", CASES)
def test_pool_and_unpool_equal_numpy_reference(case):
    x = CASES[case]
    pooled, indices, unpooled = pool_unpool_model().predict(x, verbose=0)
    ref_pooled, ref_indices = reference_pool(x)
    assert indices.dtype == np.int32 and indices.min() >= 0 and indices.max() <= 3
    np.testing.assert_array_equal(pooled, ref_pooled)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(unpooled, reference_unpool(ref_pooled, ref_indices))
    if case == "constant":
        assert not indices.any()  # every cell ties: the first (top-left) wins


def test_unpool_of_pool_fills_one_cell_per_window_with_the_max():
    x = RNG.integers(1, 3, (2, 6, 8, 3)).astype("float32")  # many ties, no zeros
    pooled, _, unpooled = pool_unpool_model().predict(x, verbose=0)
    windows = unpooled.reshape(2, 3, 2, 4, 2, 3)
    assert ((windows != 0).sum(axis=(2, 4)) == 1).all()
    np.testing.assert_array_equal(windows.sum(axis=(2, 4)), pooled)
    kept = unpooled != 0
    np.testing.assert_array_equal(unpooled[kept], x[kept])


def test_dynamic_batch_and_image_size_and_shapes():
    model = pool_unpool_model()
    assert model.outputs[1].dtype == "int32"
    for shape in [(1, 4, 4, 3), (5, 6, 10, 3)]:
        pooled, indices, unpooled = model.predict(np.ones(shape, "float32"), verbose=0)
        assert pooled.shape == indices.shape == (shape[0], shape[1] // 2, shape[2] // 2, 3)
        assert unpooled.shape == shape
    static = pool_unpool_model((8, 6, 3))
    assert [tuple(t.shape) for t in static.outputs] == [(None, 4, 3, 3), (None, 4, 3, 3), (None, 8, 6, 3)]


def test_odd_size_and_mismatched_indices_are_input_errors():
    with pytest.raises(InputError, match="even"):
        MaxPoolWithIndices()(keras.Input((5, 4, 1)))
    with pytest.raises(InputError, match="same shape"):
        MaxUnpool()([keras.Input((2, 2, 1)), keras.Input((2, 2, 2), dtype="int32")])


def test_mixed_precision_keeps_int_indices():
    x = keras.Input((4, 4, 2))
    pooled, indices = MaxPoolWithIndices(dtype="mixed_bfloat16")(x)
    unpooled = MaxUnpool(dtype="mixed_bfloat16")([pooled, indices])
    assert (pooled.dtype, indices.dtype, unpooled.dtype) == ("bfloat16", "int32", "bfloat16")
    data = CASES["ties"][:, :4, :4, :2]
    out = keras.Model(x, unpooled).predict(data, verbose=0)
    np.testing.assert_array_equal(out.astype("float32"), reference_unpool(*reference_pool(data)))


def test_xla_jit_compile_matches_reference():
    model = pool_unpool_model()
    model.compile(jit_compile=True)
    x = CASES["ties"]
    pooled, indices, unpooled = model.predict(x, verbose=0)
    ref_pooled, ref_indices = reference_pool(x)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(unpooled, reference_unpool(ref_pooled, ref_indices))


def tiny_quicknat(se="scse", combine="max", dtype=None):
    x = keras.Input((8, 8, 1))
    pooled, indices, skip = blocks.encoder_block(x, 4, 3, name="enc", se=se, se_combine=combine, dtype=dtype)
    y = blocks.dense_block(pooled, 4, 3, name="bottleneck", activation="relu", dtype=dtype)
    y = blocks.decoder_block(y, indices, skip, 4, 3, name="dec", se=se, se_combine=combine, dtype=dtype)
    return keras.Model(x, blocks.classifier_block(y, 3, name="classifier", dtype=dtype))


def test_keras_file_round_trip(tmp_path):
    model = tiny_quicknat()
    x = RNG.normal(size=(2, 8, 8, 1)).astype("float32")
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert isinstance(loaded.get_layer("enc_pool"), MaxPoolWithIndices)
    assert isinstance(loaded.get_layer("dec_unpool"), MaxUnpool)


def quicknat_loss(labels, probs):
    labels = keras.ops.cast(labels, "int32")
    weights = losses.weight_map(labels, [1.0, 2.0, 3.0], 6.0)
    return losses.combined_loss(labels, probs, weights, per_example=True)


def unchanged_after_one_step(model, jit_compile):
    """Paths of the trainable weights one Adam step leaves unchanged."""
    x = np.random.default_rng(1).random((2, 8, 8, 1)).astype("float32")
    model.compile(keras.optimizers.Adam(1e-2), loss=quicknat_loss, jit_compile=jit_compile)
    before = [w.numpy() for w in model.trainable_weights]
    history = model.fit(x, (x[..., 0] * 3).astype("int32"), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    weights = model.trainable_weights
    return [w.path for w, old in zip(weights, before, strict=True) if np.array_equal(w.numpy(), old)]


def test_gradients_flow_through_pool_and_unpool():
    x = keras.Input((8, 8, 1))
    y = keras.layers.Conv2D(2, 3, padding="same")(x)
    pooled, indices = MaxPoolWithIndices()(y)
    y = MaxUnpool()([keras.layers.Conv2D(2, 3, padding="same")(pooled), indices])
    model = keras.Model(x, blocks.classifier_block(keras.layers.Concatenate()([x, y]), 3, name="cls"))
    assert not unchanged_after_one_step(model, jit_compile=False)


@pytest.mark.slow
def test_xla_mixed_precision_training_step():
    unchanged = unchanged_after_one_step(tiny_quicknat(dtype="mixed_bfloat16"), jit_compile=True)
    # a cSE bottleneck unit can start dead (ReLU), so only the convolutions must all move
    assert not [path for path in unchanged if "conv" in path]


def test_classifier_softmax_is_float32_under_mixed_precision():
    model = tiny_quicknat(dtype="mixed_bfloat16")
    probs = model.predict(np.ones((1, 8, 8, 1), "float32"), verbose=0)
    assert model.output.dtype == "float32" and probs.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    assert model.get_layer("enc_dense_conv_1").compute_dtype == "bfloat16"


def test_dense_block_channels_and_names():
    x = keras.Input((8, 8, 3))
    out = blocks.dense_block(x, filters=6, kernel_size=3, name="db")
    model = keras.Model(x, out)
    assert out.shape == (None, 8, 8, 6)
    names = [layer.name for layer in model.layers[1:]]
    assert all(n.startswith("db_") for n in names)
    assert model.get_layer("db_concat_3").output.shape[-1] == 3 + 6 + 6
    assert model.get_layer("db_conv_2").kernel.shape == (3, 3, 3 + 6, 6)
    assert model.get_layer("db_act_1").get_config()["shared_axes"] == [1, 2]
    assert model.get_layer("db_conv_3").kernel.shape[:2] == (1, 1)


def test_each_se_block_owns_its_weights():
    x = keras.Input((8, 8, 4))
    a = blocks.se_block(x, "scse", name="se_a")
    b = blocks.se_block(keras.layers.Conv2D(8, 1, name="widen")(a), "scse", name="se_b")
    model = keras.Model(x, b)
    se_a = [w for layer in model.layers if layer.name.startswith("se_a") for w in layer.weights]
    se_b = [w for layer in model.layers if layer.name.startswith("se_b") for w in layer.weights]
    assert len(se_a) == len(se_b) == 6  # two Dense + one Conv, kernel and bias each
    assert not {id(w) for w in se_a} & {id(w) for w in se_b}
    count = lambda ws: sum(int(np.prod(w.shape)) for w in ws)  # noqa: E731
    assert count(se_a) == (4 * 2 + 2) + (2 * 4 + 4) + (4 + 1)
    assert count(se_b) == (8 * 4 + 4) + (4 * 8 + 8) + (8 + 1)


@pytest.mark.parametrize("mode", [None, "cse", "sse", "scse"])
def test_se_block_preserves_shape(mode):
    x = keras.Input((6, 4, 5))
    out = blocks.se_block(x, mode, name="se")
    assert out.shape == x.shape
    assert (out is x) == (mode is None)


def test_scse_max_and_add_combine_the_two_branches():
    x = keras.Input((4, 4, 4))
    out = blocks.se_block(x, "scse", "max", name="se")
    model_max = keras.Model(x, out)
    branches = [model_max.get_layer(f"se_{kind}_scale").output for kind in ("cse", "sse")]
    model_max = keras.Model(x, [out, *branches])
    model_add = keras.Model(x, blocks.se_block(x, "scse", "add", name="se_add"))
    model_add.set_weights(model_max.get_weights())
    data = RNG.normal(size=(2, 4, 4, 4)).astype("float32")
    combined, cse, sse = model_max.predict(data, verbose=0)
    added = model_add.predict(data, verbose=0)
    np.testing.assert_allclose(combined, np.maximum(cse, sse), rtol=1e-6)
    np.testing.assert_allclose(added, cse + sse, rtol=1e-5, atol=1e-6)
    assert not np.allclose(combined, added)


@pytest.mark.parametrize("call, message", [
    (lambda x: blocks.se_block(x, "both", name="s"), "'cse', 'sse', 'scse'"),
    (lambda x: blocks.se_block(x, "scse", "mean", name="s"), "'max', 'add'"),
    (lambda x: blocks.dense_block(x, 0, name="d"), "filters"),
    (lambda x: blocks.dense_block(x, 4, 2.5, name="d"), "kernel_size"),
    (lambda x: blocks.dense_block(x, 4, activation="elu", name="d"), "'prelu', 'relu'"),
    (lambda x: blocks.encoder_block(x, 4, dropout=1.0, name="e"), "dropout"),
    (lambda x: blocks.classifier_block(x, 1, name="c"), "num_classes"),
])
def test_block_arguments_are_validated(call, message):
    with pytest.raises(InputError, match=message):
        call(keras.Input((4, 4, 2)))


JAX_SCRIPT = textwrap.dedent("""
    import numpy as np, keras
    from gan_seg.seg import losses
    from gan_seg.seg.layers import MaxPoolWithIndices, MaxUnpool
    assert keras.backend.backend() == "jax"
    x = keras.Input((None, None, 2))
    pooled, indices = MaxPoolWithIndices()(x)
    model = keras.Model(x, [pooled, indices, MaxUnpool()([pooled, indices])])
    data = np.random.default_rng(0).integers(0, 2, (3, 4, 6, 2)).astype("float32")
    outputs = model.predict(data, verbose=0)
    labels = np.array([[[0, 1]]])
    probs = np.array([[[[0.8, 0.2], [0.4, 0.6]]]], "float32")
    loss = float(losses.combined_loss(labels, probs, losses.weight_map(labels, [1.0, 2.0], 1.0)))
    np.savez(__import__("sys").argv[1], *outputs, loss=loss)
""")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_layers_and_losses_run_on_jax(tmp_path):
    out = tmp_path / "jax.npz"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(out)], env=env, check=True, timeout=300,
                   cwd=Path(__file__).resolve().parents[1])
    result = np.load(out)
    data = np.random.default_rng(0).integers(0, 2, (3, 4, 6, 2)).astype("float32")
    ref_pooled, ref_indices = reference_pool(data)
    np.testing.assert_array_equal(result["arr_0"], ref_pooled)
    np.testing.assert_array_equal(result["arr_1"], ref_indices)
    np.testing.assert_array_equal(result["arr_2"], reference_unpool(ref_pooled, ref_indices))
    labels = np.array([[[0, 1]]])
    probs = np.array([[[[0.8, 0.2], [0.4, 0.6]]]], "float32")
    expected = float(losses.combined_loss(labels, probs, losses.weight_map(labels, [1.0, 2.0], 1.0)))
    assert result["loss"] == pytest.approx(expected, rel=1e-6)
