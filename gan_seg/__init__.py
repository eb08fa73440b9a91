"""gan-seg: DCGAN / CGAN generative models and QuickNAT brain MRI segmentation on Keras 3.

Importing this package is cheap: TensorFlow and Keras load only when a model or trainer module is used.
The public Python API is re-exported here and imported on first use::

    from gan_seg import generator, sample, classifier      # the shipped CGAN, NumPy samples, the judge
    from gan_seg import quicknat, segmenter                 # the shipped brain model
    from gan_seg import build_generator, build_discriminator, build_adversarial, build_quicknat
    from gan_seg import occlusion, feature_maps, layer_table  # seeing inside any of them
"""

import importlib

__version__ = "0.1.0"

_GAN = ("generator", "discriminator", "classifier", "sample", "classify", "evaluate", "class_names",
        "build_generator", "build_discriminator", "build_adversarial", "Adversarial", "build_classifier",
        "GanConfig")
_EXPORTS = {
    **dict.fromkeys(_GAN, "gan_seg.gan"),
    **dict.fromkeys(("quicknat", "segmenter"), "gan_seg.seg.pretrained"),
    **dict.fromkeys(("build_quicknat", "build_unet"), "gan_seg.seg.models"),
    "Segmenter": "gan_seg.seg.inference",
    "occlusion": "gan_seg.explain.occlusion",
    **dict.fromkeys(("feature_maps", "layer_table"), "gan_seg.explain.features"),
    "SegConfig": "gan_seg.seg.config",
    **dict.fromkeys(("InputError", "RunError"), "gan_seg.errors"),
}
__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name):
    """Import a public name's module when the name is first used."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
