"""QuickNAT building blocks: plain functions that add NAMED standard layers to a functional graph.

Every layer name starts with the block's ``name``; ``dtype`` (a Keras dtype policy such as
``"mixed_bfloat16"``) goes to every layer, except the classifier's softmax, which stays float32.
Squeeze-and-excitation is made of standard layers here, so each call owns its weights (MONAI's QuickNAT
shares one SE module across blocks) and models serialise without custom code.
"""

from keras import layers

from gan_seg.errors import InputError
from gan_seg.seg.config import ACTIVATIONS, SE_COMBINES, SE_MODES
from gan_seg.seg.layers import GlobalBatchDropout, MaxPoolWithIndices, MaxUnpool

# PyTorch BatchNorm momentum 0.1 (the reference QuickNAT) = Keras momentum 0.9.
BN_MOMENTUM = 0.9


def _check_positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{what} must be a positive integer, got {value!r}")


def _check_choice(value, allowed, what):
    if value not in allowed:
        raise InputError(f"{what} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_dropout(dropout):
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InputError(f"dropout must be a number in [0, 1), got {dropout!r}")


def _activation(kind, name, dtype):
    if kind == "prelu":
        return layers.PReLU(shared_axes=[1, 2], name=name, dtype=dtype)
    return layers.ReLU(name=name, dtype=dtype)


def dense_block(x, filters=64, kernel_size=5, *, name, activation="prelu", synchronized_bn=False, dtype=None):
    """QuickNAT dense block: two BN-act-Conv(kxk) steps on growing concatenations, then BN-act-Conv1x1.

    ``synchronized_bn`` uses global-batch statistics across tf.distribute replicas (TensorFlow only).
    """
    _check_positive_int(filters, "filters")
    _check_positive_int(kernel_size, "kernel_size")
    _check_choice(activation, ACTIVATIONS, "activation")
    features = [x]
    for step, size in enumerate((kernel_size, kernel_size, 1), start=1):
        y = x if step == 1 else layers.Concatenate(name=f"{name}_concat_{step}", dtype=dtype)(features)
        y = layers.BatchNormalization(momentum=BN_MOMENTUM, synchronized=synchronized_bn,
                                      name=f"{name}_bn_{step}", dtype=dtype)(y)
        y = _activation(activation, f"{name}_act_{step}", dtype)(y)
        y = layers.Conv2D(filters, size, padding="same", name=f"{name}_conv_{step}", dtype=dtype)(y)
        features.append(y)
    return y


def se_block(x, mode=None, combine="max", *, name, ratio=2, dtype=None):
    """Squeeze-and-excitation: ``None`` (x unchanged), ``"cse"`` (channel), ``"sse"`` (spatial) or
    ``"scse"`` = element-wise ``combine`` (``"max"`` as the reference code, or ``"add"``) of both."""
    _check_choice(mode, SE_MODES, "SE mode")
    _check_choice(combine, SE_COMBINES, "SE combine")
    _check_positive_int(ratio, "SE ratio")
    if mode is None:
        return x
    outputs = []
    if mode in ("cse", "scse"):
        channels = x.shape[-1]
        s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_cse_pool", dtype=dtype)(x)
        units = max(1, channels // ratio)
        s = layers.Dense(units, activation="relu", name=f"{name}_cse_fc_1", dtype=dtype)(s)
        s = layers.Dense(channels, activation="sigmoid", name=f"{name}_cse_fc_2", dtype=dtype)(s)
        outputs.append(layers.Multiply(name=f"{name}_cse_scale", dtype=dtype)([x, s]))
    if mode in ("sse", "scse"):
        s = layers.Conv2D(1, 1, activation="sigmoid", name=f"{name}_sse_conv", dtype=dtype)(x)
        outputs.append(layers.Multiply(name=f"{name}_sse_scale", dtype=dtype)([x, s]))
    if len(outputs) == 1:
        return outputs[0]
    merge = layers.Maximum if combine == "max" else layers.Add
    return merge(name=f"{name}_scse_{combine}", dtype=dtype)(outputs)


def encoder_block(x, filters=64, kernel_size=5, *, name, se=None, se_combine="max", se_ratio=2, dropout=0.2,
                  activation="prelu", synchronized_bn=False, dtype=None):
    """Dense block -> SE -> dropout -> 2x2 max-pool keeping indices; returns ``(pooled, indices, skip)``."""
    _check_dropout(dropout)
    x = dense_block(x, filters, kernel_size, name=f"{name}_dense", activation=activation,
                    synchronized_bn=synchronized_bn, dtype=dtype)
    x = se_block(x, se, se_combine, name=f"{name}_se", ratio=se_ratio, dtype=dtype)
    if dropout:
        x = GlobalBatchDropout(dropout, name=f"{name}_dropout", dtype=dtype)(x)
    pooled, indices = MaxPoolWithIndices(name=f"{name}_pool", dtype=dtype)(x)
    return pooled, indices, x


def decoder_block(x, indices, skip, filters=64, kernel_size=5, *, name, se=None, se_combine="max", se_ratio=2,
                  dropout=0.2, activation="prelu", synchronized_bn=False, dtype=None):
    """Max-unpool with the encoder's indices -> concat [skip, unpooled] -> dense block -> SE -> dropout."""
    _check_dropout(dropout)
    x = MaxUnpool(name=f"{name}_unpool", dtype=dtype)([x, indices])
    x = layers.Concatenate(name=f"{name}_concat_skip", dtype=dtype)([skip, x])
    x = dense_block(x, filters, kernel_size, name=f"{name}_dense", activation=activation,
                    synchronized_bn=synchronized_bn, dtype=dtype)
    x = se_block(x, se, se_combine, name=f"{name}_se", ratio=se_ratio, dtype=dtype)
    if dropout:
        x = GlobalBatchDropout(dropout, name=f"{name}_dropout", dtype=dtype)(x)
    return x


def classifier_block(x, num_classes, *, name, dtype=None):
    """Conv1x1(num_classes) -> softmax; the softmax runs in float32 even under mixed precision."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    x = layers.Conv2D(num_classes, 1, name=f"{name}_conv", dtype=dtype)(x)
    return layers.Activation("softmax", name=f"{name}_softmax", dtype="float32")(x)
