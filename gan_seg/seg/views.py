"""The three 2D views of a conformed (RAS) volume, hemisphere names and sagittal left/right class merging.

Conformed axes: 0 = left->right, 1 = posterior->anterior, 2 = inferior->superior. A view's slices are
taken along its axis; each slice keeps the other two axes in order.
"""

import re

import numpy as np

from gan_seg.errors import InputError

VIEW_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
VIEWS = tuple(VIEW_AXIS)
DEFAULT_VIEW_WEIGHTS = {"axial": 0.4, "coronal": 0.4, "sagittal": 0.2}
# "Left-X", "lh.X", "right_X" ... or "X-Left", "X_L", "X rh": a side word, separators, the structure.
_HEMISPHERE = re.compile(r"^(?:(left|right|lh|rh)[^a-z0-9]+(.+)|(.+?)[^a-z0-9]+(left|right|lh|rh|l|r))$",
                         re.IGNORECASE)


def parse_views(text):
    """``"axial,coronal"`` -> ``("axial", "coronal")``; InputError naming unknown or repeated views."""
    views = tuple(part.strip().lower() for part in (text.split(",") if isinstance(text, str) else text))
    unknown = [v for v in views if v not in VIEW_AXIS]
    if not views or unknown or len(set(views)) != len(views):
        raise InputError(f"views {text!r}: give distinct names from {', '.join(VIEWS)}")
    return views


def parse_view_weights(text):
    """``"axial=0.5,coronal=0.3,sagittal=0.2"`` -> dict; None for no text; InputError when malformed,
    negative or not finite (a weight of 0 leaves that view's network out)."""
    if not text:
        return None
    weights = {}
    for part in text.split(","):
        view, _, value = part.partition("=")
        try:
            weights[view.strip().lower()] = float(value)
        except ValueError:
            weights = None
            break
    if not weights or set(weights) - set(VIEWS):
        raise InputError(f"--view-weights {text!r}: expected e.g. axial=0.4,coronal=0.4,sagittal=0.2")
    bad = invalid_weights(weights)
    if bad:
        raise InputError(f"--view-weights {', '.join(bad)}: each weight must be a finite number >= 0")
    return weights


def invalid_weights(weights):
    """``["view=value", ...]`` of the view weights that are negative or not finite."""
    return [f"{view}={value:g}" for view, value in weights.items() if not 0 <= value < float("inf")]


def to_slices(volume, view):
    """A (S, A, B, ...) view of ``volume`` with the view's axis first (no copy)."""
    return np.moveaxis(volume, VIEW_AXIS[view], 0)


def split_hemisphere(name):
    """``(side, structure)`` of a class name: side ``"left"``, ``"right"`` or None (no hemisphere)."""
    match = _HEMISPHERE.match(str(name).strip())
    if not match:
        return None, str(name).strip()
    side = (match[1] or match[4]).lower()
    return ("left" if side in ("left", "lh", "l") else "right"), match[2] or match[3]


def lr_merge(class_names):
    """Sagittal class merging: ``(merged_names, full_to_merged)`` where the left and right classes of a
    structure share one class (a sagittal slice cannot tell the hemispheres apart); other classes keep
    their own."""
    merged, index, full_to_merged = [], {}, []
    for name in class_names:
        key = split_hemisphere(name)[1]
        if key not in index:
            index[key] = len(merged)
            merged.append(key)
        full_to_merged.append(index[key])
    return merged, np.array(full_to_merged, np.int32)
