"""The three 2D views of a conformed (RAS) volume, and sagittal left/right class merging (NumPy only).

Conformed axes: 0 = left->right, 1 = posterior->anterior, 2 = inferior->superior. A view's slices are
taken along its axis; each slice keeps the other two axes in order.
"""

import numpy as np

from gan_seg.errors import InputError

VIEW_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
VIEWS = tuple(VIEW_AXIS)
DEFAULT_VIEW_WEIGHTS = {"axial": 0.4, "coronal": 0.4, "sagittal": 0.2}


def parse_views(text):
    """``"axial,coronal"`` -> ``("axial", "coronal")``; InputError naming unknown or repeated views."""
    views = tuple(part.strip().lower() for part in (text.split(",") if isinstance(text, str) else text))
    unknown = [v for v in views if v not in VIEW_AXIS]
    if not views or unknown or len(set(views)) != len(views):
        raise InputError(f"views {text!r}: give distinct names from {', '.join(VIEWS)}")
    return views


def to_slices(volume, view):
    """A (S, A, B, ...) view of ``volume`` with the view's axis first (no copy)."""
    return np.moveaxis(volume, VIEW_AXIS[view], 0)


def lr_merge(class_names):
    """Sagittal class merging: ``(merged_names, full_to_merged)`` where ``Left-X``/``Right-X`` share one
    class ``X`` (a sagittal slice cannot tell the hemispheres apart); other classes keep their own."""
    merged, index, full_to_merged = [], {}, []
    for name in class_names:
        key = name
        for side in ("Left-", "Right-", "left-", "right-", "Left_", "Right_"):
            if name.startswith(side):
                key = name[len(side):]
                break
        if key not in index:
            index[key] = len(merged)
            merged.append(key)
        full_to_merged.append(index[key])
    return merged, np.array(full_to_merged, np.int32)
