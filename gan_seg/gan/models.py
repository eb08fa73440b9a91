"""DCGAN and conditional GAN (CGAN) builders on the Keras functional API.

The default stacks are the classic Keras DCGAN / CGAN (generator: Dense -> Reshape -> 4 x [BatchNorm ->
ReLU -> Conv2DTranspose(5x5)] -> sigmoid; discriminator: 4 x [LeakyReLU(0.2) -> Conv2D(5x5)] -> Flatten ->
Dense(1) -> sigmoid, no BatchNorm). With ``num_classes`` the generator takes ``[z, one_hot_label]`` and
the discriminator ``[image, one_hot_label]`` (the label is mapped to an extra image channel).
"""

import keras
from keras import layers

from gan_seg.errors import InputError
from gan_seg.gan.config import ADVERSARIAL, CONDITIONINGS, DISCRIMINATOR, GENERATOR


def _check_image_shape(image_shape, multiple):
    if (
        not isinstance(image_shape, (tuple, list))
        or len(image_shape) != 3
        or not all(isinstance(d, int) and d > 0 for d in image_shape)
    ):
        raise InputError(f"image_shape must be three positive integers (H, W, C), got {image_shape!r}")
    height, width, _ = image_shape
    if height % multiple or width % multiple or min(height, width) < 2 * multiple:
        raise InputError(
            f"image height and width must be multiples of {multiple} and at least {2 * multiple}, "
            f"got {height}x{width}; resize the data (e.g. 28x28, 32x32, 64x64)"
        )
    return tuple(image_shape)


def _check_num_classes(num_classes):
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
        raise InputError(f"num_classes must be None (DCGAN) or an integer >= 2, got {num_classes!r}")


def _upsamplings(image_shape):
    """Stride-2 layers the generator needs: 2 (classic 7->28) or more until the seed grid is <= 8."""
    height, width, _ = image_shape
    count = 2
    while max(height, width) // 2**count > 8 and height % 2 ** (count + 1) == 0 == width % 2 ** (count + 1):
        count += 1
    return count


def build_generator(latent_dim=100, image_shape=(28, 28, 1), num_classes=None, dtype=None,
                    synchronized_bn=False):
    """Generator: ``z`` (and a one-hot label) -> image in [0, 1] of ``image_shape``.

    ``dtype`` is a Keras dtype policy (e.g. ``"mixed_bfloat16"``); the output layer always stays float32.
    ``synchronized_bn`` makes BatchNorm use the statistics of the global batch across tf.distribute
    replicas (TensorFlow backend only; the trainer sets it when there is more than one replica).
    """
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise InputError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    image_shape = _check_image_shape(image_shape, 4)
    _check_num_classes(num_classes)
    height, width, channels = image_shape
    ups = _upsamplings(image_shape)
    # Classic stack for 28x28: filters 128/64/32/C, strides 2/2/1/1; larger images get more stride-2 layers.
    filters = [64 * 2 ** (ups - 1 - i) for i in range(ups)] + [32, channels]
    strides = [2] * ups + [1, 1]

    z = keras.Input((latent_dim,), name="z")
    inputs = [z]
    x = z
    if num_classes is not None:
        label = keras.Input((num_classes,), name="label")
        inputs.append(label)
        x = layers.Concatenate(name="g_concat_label", dtype=dtype)([z, label])
    seed_h, seed_w = height // 2**ups, width // 2**ups
    x = layers.Dense(seed_h * seed_w * filters[0], name="g_dense", dtype=dtype)(x)
    x = layers.Reshape((seed_h, seed_w, filters[0]), name="g_reshape", dtype=dtype)(x)
    for i, (f, s) in enumerate(zip(filters, strides, strict=True), start=1):
        x = layers.BatchNormalization(synchronized=synchronized_bn, name=f"g_bn_{i}", dtype=dtype)(x)
        x = layers.Activation("relu", name=f"g_relu_{i}", dtype=dtype)(x)
        x = layers.Conv2DTranspose(f, 5, strides=s, padding="same", name=f"g_deconv_{i}", dtype=dtype)(x)
    image = layers.Activation("sigmoid", name="g_sigmoid", dtype="float32")(x)
    return keras.Model(inputs if num_classes is not None else z, image, name=GENERATOR)


def _weighted(layer_class, *args, name, spectral_norm, dtype, **kwargs):
    """A ``layer_class`` layer, wrapped in spectral normalisation (the wrapper takes ``name``) when asked."""
    if not spectral_norm:
        return layer_class(*args, name=name, dtype=dtype, **kwargs)
    inner = layer_class(*args, name=f"{name}_inner", dtype=dtype, **kwargs)
    return layers.SpectralNormalization(inner, name=name, dtype=dtype)


def build_discriminator(image_shape=(28, 28, 1), num_classes=None, dtype=None, spectral_norm=False,
                        conditioning="concat", logits=False):
    """Discriminator: image (and a one-hot label) -> probability that the image is real (or its logit).

    ``spectral_norm`` wraps every Conv2D / Dense in :class:`keras.layers.SpectralNormalization`.
    ``conditioning`` (CGAN): ``"concat"`` maps the label to an extra image channel (the seed's);
    ``"projection"`` adds ``<embed(label), features>`` to the output (Miyato & Koyama 2018).
    ``logits`` ends in the raw score instead of the sigmoid probability (for the hinge loss).
    """
    image_shape = _check_image_shape(image_shape, 4)
    _check_num_classes(num_classes)
    if conditioning not in CONDITIONINGS:
        raise InputError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {conditioning!r}")
    height, width, _ = image_shape
    weighted = {"spectral_norm": spectral_norm, "dtype": dtype}

    image = keras.Input(image_shape, name="image")
    inputs = [image]
    x = image
    if num_classes is not None:
        label = keras.Input((num_classes,), name="label")
        inputs.append(label)
        if conditioning == "concat":
            y = _weighted(layers.Dense, height * width, name="d_label_dense", **weighted)(label)
            y = layers.Reshape((height, width, 1), name="d_label_reshape", dtype=dtype)(y)
            x = layers.Concatenate(name="d_concat_label", dtype=dtype)([x, y])
    for i, (f, s) in enumerate(zip((32, 64, 128, 256), (2, 2, 2, 1), strict=True), start=1):
        x = layers.LeakyReLU(negative_slope=0.2, name=f"d_lrelu_{i}", dtype=dtype)(x)
        x = _weighted(layers.Conv2D, f, 5, strides=s, padding="same", name=f"d_conv_{i}", **weighted)(x)
    features = layers.Flatten(name="d_flatten", dtype=dtype)(x)
    x = _weighted(layers.Dense, 1, name="d_dense", **weighted)(features)
    if num_classes is not None and conditioning == "projection":
        embedded = _weighted(layers.Dense, features.shape[-1], use_bias=False, name="d_label_embed",
                             **weighted)(label)
        projected = layers.Dot(axes=1, name="d_projection", dtype=dtype)([embedded, features])
        x = layers.Add(name="d_add_projection", dtype=dtype)([x, projected])
    last = layers.Activation("linear" if logits else "sigmoid", name="d_logit" if logits else "d_sigmoid",
                             dtype="float32")
    return keras.Model(inputs if num_classes is not None else image, last(x), name=DISCRIMINATOR)


@keras.saving.register_keras_serializable(package="gan_seg")
class Adversarial(keras.Model):
    """The adversarial model ``D(G(z))`` with D frozen as a Keras object: its trainable weights are
    exactly the generator's, so compiling and fitting it (``train_on_batch(z, ones)``) moves G only, while
    D keeps training on its own. D runs in inference mode inside it (its state does not change either).

    Keras 3 shares ``layer.trainable`` between every model that holds the layer, so the classic "set
    ``D.trainable = False``, then compile the adversarial model" would freeze D everywhere; the variables
    are partitioned here instead and no flag is touched.
    """

    def call(self, inputs, training=None, mask=None):
        """G in the given mode, then D in inference mode (a functional graph would pass ``training`` on)."""
        images = self.get_layer(GENERATOR)(inputs, training=training)
        scored = [images, inputs[1]] if isinstance(inputs, (list, tuple)) else images
        return self.get_layer(DISCRIMINATOR)(scored, training=False)

    @property
    def trainable_variables(self):
        return list(self.get_layer(GENERATOR).trainable_variables)

    @property
    def trainable_weights(self):
        return list(self.get_layer(GENERATOR).trainable_weights)

    @property
    def non_trainable_variables(self):
        trained = {id(v) for v in self.trainable_variables}
        return [v for v in self.variables if id(v) not in trained]

    @property
    def non_trainable_weights(self):
        trained = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in trained]


def build_adversarial(generator, discriminator):
    """The seed's adversarial model ``D(G(z))`` (an :class:`Adversarial`: D frozen inside it)."""
    conditional = len(generator.inputs) == 2
    if conditional != (len(discriminator.inputs) == 2):
        raise InputError("generator and discriminator disagree on conditioning (one uses labels, one not)")
    g_shape = tuple(generator.outputs[0].shape[1:])
    d_shape = tuple(discriminator.inputs[0].shape[1:])
    if g_shape != d_shape:
        raise InputError(f"generator makes {g_shape} images but the discriminator takes {d_shape}")
    if (generator.name, discriminator.name) != (GENERATOR, DISCRIMINATOR):
        raise InputError(f"the models must be named {GENERATOR!r} and {DISCRIMINATOR!r}, got "
                         f"{generator.name!r} and {discriminator.name!r}")
    z = keras.Input(tuple(generator.inputs[0].shape[1:]), name="z")
    if conditional:
        label = keras.Input(tuple(generator.inputs[1].shape[1:]), name="label")
        return Adversarial([z, label], discriminator([generator([z, label]), label]), name=ADVERSARIAL)
    return Adversarial(z, discriminator(generator(z)), name=ADVERSARIAL)


def latent_dim_of(generator):
    """Size of the generator's latent input."""
    return int(generator.inputs[0].shape[-1])


def num_classes_of(generator):
    """Number of classes a conditional generator takes, or None for an unconditional one."""
    return int(generator.inputs[1].shape[-1]) if len(generator.inputs) == 2 else None
