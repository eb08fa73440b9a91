"""The GAN family's Python API in the style of ``keras.applications``: one call, a ready Keras model.

``weights`` is a shipped model name (``weights/NAME``, its sha256 checked), a run directory, a ``.keras``
file, or None for a fresh, randomly initialised model of the architecture the other arguments give::

    G = generator()                                    # the shipped CGAN (cgan-fashion-mnist)
    images, labels = sample(G, 100, seed=0)            # NumPy: (100, 28, 28, 1) float32 in [0, 1], int32
    C = classifier()                                   # the Fashion-MNIST classifier
    G0 = generator(weights=None, num_classes=10)       # untrained, the classic CGAN stack

The file's metadata must name the asked kind of model (a discriminator file given to ``generator`` is an
InputError naming the file). Architecture arguments given with ``weights`` are checked against the file.
"""

import os

import numpy as np

from gan_seg.errors import InputError
from gan_seg.gan.config import DEFAULT_PRESET, DISCRIMINATOR, DISCRIMINATOR_FILE, GENERATOR, GENERATOR_FILE
from gan_seg.gan.evaluation import (
    CLASSIFIER,
    CLASSIFIER_FILE,
    CLASSIFIER_PRESET,
    build_classifier,
    predict_classes,
)
from gan_seg.gan.evaluation import evaluate as _evaluate
from gan_seg.gan.models import build_discriminator, build_generator, latent_dim_of, num_classes_of
from gan_seg.gan.sampling import sample as _sample
from gan_seg.io.presets import resolve_model_file
from gan_seg.io.saving import load_model, read_metadata


def _load(weights, filename, kind):
    """``(model, metadata, path)`` of the ``kind`` model that ``weights`` names."""
    if not _is_spec(weights):
        raise InputError(f"weights must be a model name, a run directory, a .keras file or None, got "
                         f"{weights!r}")
    path = resolve_model_file(weights, filename)
    model, metadata = load_model(path, kind)
    return model, metadata, path


def _check_architecture(path, asked, found):
    """InputError when an architecture argument given with ``weights`` disagrees with the file."""
    for name, value in asked.items():
        if name not in found:
            raise InputError(f"{name}= cannot be combined with weights (it applies to weights=None only)")
        have = found[name]
        if (tuple(value) if isinstance(value, (list, tuple)) else value) != have:
            raise InputError(f"{path} holds a model with {name}={have!r}, not {name}={value!r}")


def generator(weights=DEFAULT_PRESET, **architecture):
    """A generator (``z`` [and one-hot label] -> image in [0, 1]).

    ``weights=None`` builds a fresh one: ``architecture`` = :func:`gan_seg.gan.models.build_generator`'s
    arguments (``latent_dim``, ``image_shape``, ``num_classes``, ``dtype``). With ``weights``, the
    ``latent_dim`` / ``image_shape`` / ``num_classes`` given are checked against the file.
    """
    if weights is None:
        return build_generator(**architecture)
    model, _, path = _load(weights, GENERATOR_FILE, GENERATOR)
    _check_architecture(path, architecture, {"latent_dim": latent_dim_of(model),
                                             "num_classes": num_classes_of(model),
                                             "image_shape": tuple(model.outputs[0].shape[1:])})
    return model


def discriminator(weights=DEFAULT_PRESET, **architecture):
    """A discriminator (image [and one-hot label] -> probability real, or a logit: see its metadata's
    ``output``). ``weights=None`` builds a fresh one from :func:`gan_seg.gan.models.build_discriminator`'s
    arguments; with ``weights`` the ``image_shape`` / ``num_classes`` given are checked."""
    if weights is None:
        return build_discriminator(**architecture)
    model, _, path = _load(weights, DISCRIMINATOR_FILE, DISCRIMINATOR)
    classes = int(model.inputs[1].shape[-1]) if len(model.inputs) == 2 else None
    _check_architecture(path, architecture, {"num_classes": classes,
                                             "image_shape": tuple(model.inputs[0].shape[1:])})
    return model


def classifier(weights=CLASSIFIER_PRESET, **architecture):
    """The Fashion-MNIST classifier that judges the GANs (softmax over 10 classes, a 128-d ``features``
    layer). ``weights=None`` builds a fresh :func:`gan_seg.gan.evaluation.build_classifier`
    (``image_shape``, ``num_classes``)."""
    if weights is None:
        return build_classifier(**architecture)
    model, _, path = _load(weights, CLASSIFIER_FILE, CLASSIFIER)
    _check_architecture(path, architecture, {"num_classes": int(model.outputs[0].shape[-1]),
                                             "image_shape": tuple(model.inputs[0].shape[1:])})
    return model


def class_names(weights=DEFAULT_PRESET, filename=GENERATOR_FILE):
    """The class names stored with a model (``weights`` as for :func:`generator`), or None."""
    path = resolve_model_file(weights, filename)
    names = read_metadata(path).get("class_names")
    return list(names) if names else None


def _is_spec(weights):
    return isinstance(weights, (str, os.PathLike))


def _generator_and_names(model_or_weights):
    """A Keras generator as given, or loaded from ``weights`` together with its class names."""
    if not _is_spec(model_or_weights):
        return model_or_weights, None
    return generator(model_or_weights), class_names(model_or_weights)


def sample(generator=DEFAULT_PRESET, n=64, seed=0, label=None, interpolate=False):
    """Draw ``n`` images: ``(images float32 (n, H, W, C) in [0, 1], labels int32 (n,))``.

    ``generator``: a Keras generator, or ``weights`` as for :func:`generator`. ``label``: one class for a
    CGAN (an index, or a class name when the generator is given by name or file); without it a CGAN
    draws the classes in equal blocks. Labels are -1 for a DCGAN. The same seed gives the same images.
    """
    generator, names = _generator_and_names(generator)
    if isinstance(label, str):
        lowered = [name.lower() for name in names or []]
        if label.lower() not in lowered:
            known = ", ".join(names) if names else "pass the generator by name or file, or use a number"
            raise InputError(f"label {label!r} is not one of the model's classes ({known})")
        label = lowered.index(label.lower())
    images, labels, _ = _sample(generator, n, seed=seed, label=label, interpolate=interpolate)
    return images, labels


def classify(images, model=None):
    """The shipped classifier's (or ``model``'s) predicted class of each image (float [0, 1] or uint8)."""
    return predict_classes(model if model is not None else classifier(), np.asarray(images))


def evaluate(generator=DEFAULT_PRESET, n=10000, seed=0, cas=True, progress=False):
    """``gan-seg evaluate``'s numbers as a dict (see :func:`gan_seg.gan.evaluation.evaluate`);
    ``generator`` is a Keras generator or ``weights`` as for :func:`generator`."""
    generator, names = _generator_and_names(generator)
    return _evaluate(generator, n=n, seed=seed, class_names=names, cas=cas, progress=progress)
