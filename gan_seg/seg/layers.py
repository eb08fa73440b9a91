"""Custom serialisable layers: 2x2 max-pooling that keeps its indices, the matching max-unpooling, and
dropout that gives the same masks for any number of tf.distribute replicas.

Both are written with ``keras.ops`` only (no ``tf.nn.max_pool_with_argmax``, which returns flat indices and
has no XLA kernel), so they run on TensorFlow and JAX, under XLA, with dynamic batch and image sizes.
An index is the window cell 0..3 in row-major order (0 top-left, 1 top-right, 2 bottom-left,
3 bottom-right); ties go to the FIRST maximal cell, like ``np.argmax``.
"""

import keras
from keras import ops

from gan_seg.errors import InputError


def _check_rank4(layer, shape):
    if len(shape) != 4:
        raise InputError(f"{layer.name} expects NHWC input of rank 4, got shape {tuple(shape)}")


@keras.saving.register_keras_serializable(package="gan_seg")
class MaxPoolWithIndices(keras.layers.Layer):
    """2x2 / stride-2 max pooling over NHWC input (H, W even) returning ``[pooled, indices]`` (int32)."""

    def build(self, input_shape):
        _check_rank4(self, input_shape)
        if any(d is not None and d % 2 for d in input_shape[1:3]):
            raise InputError(f"{self.name} needs an even height and width, got shape {tuple(input_shape)}; "
                             "pad the image to a multiple of 2 per pooling level")

    def call(self, x):
        _, height, width, channels = ops.shape(x)
        cells = ops.reshape(x, (-1, height // 2, 2, width // 2, 2, channels))
        cells = ops.transpose(cells, (0, 1, 3, 5, 2, 4))  # (B, h, w, C, 2, 2)
        cells = ops.reshape(cells, (-1, height // 2, width // 2, channels, 4))
        pooled = ops.max(cells, axis=-1)
        # First maximal cell, guaranteed on every backend (tf.argmax leaves ties unspecified); a window
        # without a match (NaN) falls back to cell 3, so unpooling still fills exactly one cell.
        order = ops.arange(4, dtype="int32")
        indices = ops.min(ops.where(ops.equal(cells, pooled[..., None]), order, 3), axis=-1)
        return [pooled, indices]

    def compute_output_spec(self, x):
        batch, height, width, channels = x.shape
        shape = (batch, None if height is None else height // 2, None if width is None else width // 2,
                 channels)
        return [keras.KerasTensor(shape, dtype=self.compute_dtype), keras.KerasTensor(shape, dtype="int32")]


@keras.saving.register_keras_serializable(package="gan_seg")
class MaxUnpool(keras.layers.Layer):
    """Inverse of :class:`MaxPoolWithIndices`: ``[values, indices]`` -> (B, 2h, 2w, C), zeros elsewhere."""

    def build(self, input_shape):
        values_shape, indices_shape = input_shape
        _check_rank4(self, values_shape)
        if tuple(values_shape) != tuple(indices_shape):
            raise InputError(f"{self.name}: values {tuple(values_shape)} and indices "
                             f"{tuple(indices_shape)} must have the same shape")

    def call(self, inputs):
        values, indices = inputs
        _, height, width, channels = ops.shape(values)
        cells = ops.one_hot(ops.cast(indices, "int32"), 4, dtype=values.dtype) * values[..., None]
        cells = ops.reshape(cells, (-1, height, width, channels, 2, 2))
        cells = ops.transpose(cells, (0, 1, 4, 2, 5, 3))  # (B, h, 2, w, 2, C)
        return ops.reshape(cells, (-1, height * 2, width * 2, channels))

    def compute_output_spec(self, inputs):
        batch, height, width, channels = inputs[0].shape
        shape = (batch, None if height is None else height * 2, None if width is None else width * 2,
                 channels)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)


def _replica_position():
    """``(replicas, this replica's index)`` inside a tf.distribute replica context, else ``(1, 0)``."""
    if keras.backend.backend() != "tensorflow":
        return 1, 0
    import tensorflow as tf  # noqa: PLC0415 - backend-specific: replica contexts exist only in TensorFlow

    context = tf.distribute.get_replica_context()
    if context is None:
        return 1, 0
    return context.num_replicas_in_sync, context.replica_id_in_sync_group


@keras.saving.register_keras_serializable(package="gan_seg")
class GlobalBatchDropout(keras.layers.Dropout):
    """Dropout whose mask is drawn for the whole GLOBAL batch and sliced per replica.

    Keras' Dropout keeps its seed in a mirrored variable, so under tf.distribute every replica would draw
    the same mask for its rows, and N replicas would train differently from one. Here the mask of row r of
    replica k is the mask of global row k * local_batch + r: N replicas drop exactly like one.
    """

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        replicas, replica = _replica_position()
        local = ops.shape(inputs)[0]
        shape = (replicas * local, *ops.shape(inputs)[1:])
        keep = keras.random.uniform(shape, seed=self.seed_generator) >= self.rate
        if replicas > 1:
            keep = ops.slice(keep, (replica * local, *([0] * (len(shape) - 1))), (local, *shape[1:]))
        return ops.where(keep, inputs / (1.0 - self.rate), ops.zeros_like(inputs))
