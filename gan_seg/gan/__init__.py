"""DCGAN and conditional GAN: configs, builders, image data, the alternating trainer, sampling, evaluation.

The public API (``keras.applications`` style: one call, a ready Keras model or NumPy arrays) is imported on
first use, so ``import gan_seg.gan`` loads neither Keras nor TensorFlow: :func:`generator`,
:func:`discriminator`, :func:`classifier` (``weights=`` a shipped name, a run directory, a ``.keras`` file or
None), :func:`sample`, :func:`classify`, :func:`evaluate`, :func:`class_names` (``gan_seg.gan.pretrained``)
and the builders :func:`build_generator`, :func:`build_discriminator`, :func:`build_adversarial`,
:func:`build_classifier`.
"""

import importlib

_EXPORTS = {
    **dict.fromkeys(("generator", "discriminator", "classifier", "sample", "classify", "evaluate",
                     "class_names"), "pretrained"),
    **dict.fromkeys(("build_generator", "build_discriminator", "build_adversarial", "Adversarial"), "models"),
    "build_classifier": "evaluation",
    "GanConfig": "config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    """Import a public name's module when the name is first used."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
