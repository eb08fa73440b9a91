"""QuickNAT (Roy et al., NeuroImage 2019) with squeeze-and-excitation, and a plain U-Net baseline.

QuickNAT: 4 encoders (dense block -> SE -> dropout -> 2x2 max-pool keeping indices), a bottleneck at 1/16
resolution, 4 decoders (max-unpool with the matching indices -> concat skip -> dense block -> SE), and a
1x1 classifier with softmax. Any input size divisible by 16 works; ``None`` spatial sizes build a model
that takes any such size.
"""

import keras
from keras import layers

from gan_seg.errors import InputError
from gan_seg.seg.blocks import (
    BN_MOMENTUM,
    classifier_block,
    decoder_block,
    dense_block,
    encoder_block,
    se_block,
)
from gan_seg.seg.config import SE_COMBINES, SE_MODES
from gan_seg.seg.layers import GlobalBatchDropout

DEPTH = 4


def _check(input_shape, filters, kernel_size, se, se_combine, dropout):
    problems = []
    if not (isinstance(input_shape, (tuple, list)) and len(input_shape) == 3):
        problems.append(f"input_shape must be (H, W, C), got {input_shape!r}")
    else:
        for size in input_shape[:2]:
            if size is not None and (not isinstance(size, int) or size < 16 or size % 16):
                problems.append(f"input height/width must be multiples of 16 (or None), got {input_shape}")
                break
    if not isinstance(filters, int) or filters < 1:
        problems.append(f"filters must be a positive integer, got {filters!r}")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        problems.append(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    if se not in SE_MODES:
        problems.append(f"se must be one of {SE_MODES}, got {se!r}")
    if se_combine not in SE_COMBINES:
        problems.append(f"se_combine must be 'max' or 'add', got {se_combine!r}")
    if not 0 <= dropout < 1:
        problems.append(f"dropout must be in [0, 1), got {dropout!r}")
    if problems:
        raise InputError("; ".join(problems))


def build_quicknat(input_shape=(256, 256, 1), num_classes=28, filters=64, kernel_size=5, se=None,
                   se_combine="max", dropout=0.2, activation="prelu", synchronized_bn=False, dtype=None,
                   name="quicknat"):
    """QuickNAT with optional cSE / sSE / scSE blocks (each block owns its SE weights)."""
    _check(input_shape, filters, kernel_size, se, se_combine, dropout)
    common = dict(filters=filters, kernel_size=kernel_size, se=se, se_combine=se_combine, dropout=dropout,
                  activation=activation, synchronized_bn=synchronized_bn, dtype=dtype)
    image = keras.Input(tuple(input_shape), name="image")
    x, saved = image, []
    for i in range(1, DEPTH + 1):
        x, indices, skip = encoder_block(x, name=f"encode{i}", **common)
        saved.append((indices, skip))
    x = layers.Conv2D(filters, kernel_size, padding="same", name="bottleneck_conv", dtype=dtype)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, synchronized=synchronized_bn, name="bottleneck_bn",
                                  dtype=dtype)(x)
    for i in range(DEPTH, 0, -1):
        indices, skip = saved[i - 1]
        x = decoder_block(x, indices, skip, name=f"decode{i}", **common)
    probabilities = classifier_block(x, num_classes, name="classifier", dtype=dtype)
    return keras.Model(image, probabilities, name=name)


def build_unet(input_shape=(256, 256, 1), num_classes=28, filters=64, kernel_size=5, se=None,
               se_combine="max", dropout=0.2, activation="prelu", synchronized_bn=False, dtype=None,
               name="unet"):
    """A plain U-Net baseline on the same dense blocks: strided max-pool down, transposed convs up."""
    _check(input_shape, filters, kernel_size, se, se_combine, dropout)
    common = dict(filters=filters, kernel_size=kernel_size, activation=activation,
                  synchronized_bn=synchronized_bn, dtype=dtype)
    image = keras.Input(tuple(input_shape), name="image")
    x, skips = image, []
    for i in range(1, DEPTH + 1):
        x = dense_block(x, name=f"encode{i}_dense", **common)
        x = se_block(x, se, se_combine, name=f"encode{i}_se", dtype=dtype)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"encode{i}_pool", dtype=dtype)(x)
    x = dense_block(x, name="bottleneck_dense", **common)
    for i in range(DEPTH, 0, -1):
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"decode{i}_up", dtype=dtype)(x)
        x = layers.Concatenate(name=f"decode{i}_concat_skip", dtype=dtype)([skips[i - 1], x])
        x = dense_block(x, name=f"decode{i}_dense", **common)
        x = se_block(x, se, se_combine, name=f"decode{i}_se", dtype=dtype)
        if dropout:
            x = GlobalBatchDropout(dropout, name=f"decode{i}_dropout", dtype=dtype)(x)
    probabilities = classifier_block(x, num_classes, name="classifier", dtype=dtype)
    return keras.Model(image, probabilities, name=name)


ARCHITECTURES = {"quicknat": build_quicknat, "unet": build_unet}
