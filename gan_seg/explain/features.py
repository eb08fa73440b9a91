"""Intermediate outputs of a network: the table of its layers and one layer's feature maps for an input.

``feature_maps(model, inputs, layer)`` equals ``keras.Model(model.inputs, model.get_layer(layer).output)``
run on ``inputs`` (for a layer with several outputs, e.g. max-pooling that also returns its indices, the
first); an unknown layer name is an InputError that lists the nearest names.
"""

import difflib

import keras
import numpy as np

from gan_seg.errors import InputError


def layer_table(model):
    """``[(name, class name, output shape)]`` of every layer, in order."""
    rows = []
    for layer in model.layers:
        try:
            shape = tuple(main_output(layer).shape)
        except (AttributeError, ValueError):  # a layer used more than once has no single output
            shape = None
        rows.append((layer.name, type(layer).__name__, shape))
    return rows


def main_output(layer):
    """The layer's output tensor (the first of several)."""
    output = layer.output
    return output[0] if isinstance(output, (list, tuple)) else output


def find_layer(model, name):
    """The layer called ``name``; InputError naming the closest layer names otherwise."""
    names = [layer.name for layer in model.layers]
    if name in names:
        return model.get_layer(name)
    close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.4)
    hint = f"nearest: {', '.join(close)}" if close else f"its layers start {', '.join(names[:6])}, ..."
    raise InputError(f"--layer {name!r}: model {model.name!r} has no such layer ({hint}; --list-layers "
                     "shows them all)")


def spatial(shape):
    """Whether a layer output shape (batch first) holds 2-D maps: (N, H, W, C)."""
    return shape is not None and len(shape) == 4


def feature_maps(model, inputs, layer):
    """The outputs of ``layer`` (a name) for ``inputs`` (what the model takes: an array or a list of
    arrays with a batch axis), as a NumPy array."""
    chosen = find_layer(model, layer)
    probe = keras.Model(model.inputs if len(model.inputs) > 1 else model.inputs[0], main_output(chosen),
                        name=f"{model.name}_{chosen.name}")
    return np.asarray(probe.predict_on_batch(inputs))
