"""The brain model's Python API in the style of ``keras.applications``.

``weights`` is a shipped model name (``weights/NAME``, every file's sha256 checked), a segmentation run
directory, or (for one view's network) a ``.keras`` file; None builds a fresh network::

    net = quicknat(view="coronal")           # the shipped QuickNAT's coronal network: slices -> probabilities
    seg = segmenter()                        # all three views: seg.segment(conformed_volume) -> labels, ...
"""

from gan_seg.errors import InputError
from gan_seg.io.presets import resolve_model_file, resolve_run_dir
from gan_seg.io.saving import load_model
from gan_seg.seg.config import DEFAULT_PRESET, MODEL_FILE, SEGMENTATION
from gan_seg.seg.inference import Segmenter
from gan_seg.seg.models import build_quicknat
from gan_seg.seg.views import VIEWS


def quicknat(weights=DEFAULT_PRESET, view="axial", **architecture):
    """One view's 2-D network: slices (N, H, W, 1) in [0, 1] -> class probabilities (N, H, W, classes).

    ``weights=None`` builds a fresh one from :func:`gan_seg.seg.models.build_quicknat`'s arguments
    (``input_shape``, ``num_classes``, ``filters``, ...). H and W must be multiples of 16.
    """
    if weights is None:
        return build_quicknat(**architecture)
    if architecture:
        raise InputError(f"{', '.join(sorted(architecture))} cannot be combined with weights "
                         "(they apply to weights=None only)")
    if view not in VIEWS:
        raise InputError(f"view {view!r} is not one of {', '.join(VIEWS)}")
    model, _ = load_model(resolve_model_file(weights, f"{view}/{MODEL_FILE}"), SEGMENTATION)
    return model


def segmenter(weights=DEFAULT_PRESET, views=None, view_weights=None, **options):
    """The whole brain model: a :class:`gan_seg.seg.inference.Segmenter` holding every view's network
    (NumPy in and out; ``segmenter().segment(volume)`` on a conformed volume). ``options`` go to the
    Segmenter as they are."""
    return Segmenter(resolve_run_dir(weights), views, view_weights, **options)
