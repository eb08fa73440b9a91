"""Occlusion sensitivity (Zeiler & Fergus 2014): how much a network's score drops when a square patch of
its input is hidden.

The occluder (``patch`` x ``patch`` pixels, every channel) visits positions ``stride`` apart along each
axis; the last position of an axis is moved to the image's edge when the stride does not reach it, so
every pixel is covered. It is filled with the image's mean (``mean``), mid-grey 0.5 (``grey``) or 0
(``zero``). All occluded copies of an image go through the network in batches of one size (at most
``batch_size``, as equal as possible, the last one padded), so the backend compiles once. The result
holds, per position, ``base - score`` (positive = the region mattered for the target) and turns into a
per-pixel map (each pixel: the mean drop of the positions whose patch covers it) for display.
"""

import dataclasses
import math

import numpy as np

from gan_seg.errors import InputError
from gan_seg.explain.targets import SEGMENTATION, check_occludable, network_kind, target_for

FILLS = ("mean", "grey", "zero")


@dataclasses.dataclass(frozen=True)
class OcclusionMap:
    """``drops[i, j]``: base score minus the score with the patch's top-left corner at
    ``(tops[i], lefts[j])``."""

    drops: np.ndarray  # float32 (rows, cols)
    tops: np.ndarray  # int (rows,)
    lefts: np.ndarray  # int (cols,)
    patch: int
    base: float  # the score of the unoccluded image

    def pixel_map(self, shape):
        """``(H, W)`` float32: each pixel's mean drop over the positions whose patch covers it."""
        total = np.zeros(shape, np.float64)
        count = np.zeros(shape, np.float64)
        for i, top in enumerate(self.tops):
            for j, left in enumerate(self.lefts):
                total[top:top + self.patch, left:left + self.patch] += self.drops[i, j]
                count[top:top + self.patch, left:left + self.patch] += 1
        return (total / np.maximum(count, 1)).astype(np.float32)


def positions(size, patch, stride):
    """Top-left offsets along one axis: ``0, stride, ...``, plus ``size - patch`` when not reached."""
    found = list(range(0, size - patch + 1, stride))
    if found[-1] != size - patch:
        found.append(size - patch)
    return np.array(found, int)


def check_occluder_options(patch, stride, fill):
    """InputError unless ``patch`` and ``stride`` are positive integers and ``fill`` is known."""
    for name, value in (("--patch", patch), ("--stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if fill not in FILLS:
        raise InputError(f"--fill {fill!r}: choose one of {', '.join(FILLS)}")


def check_occluder(shape, patch, stride, fill):
    """InputError unless the occluder is valid and fits an image of ``shape`` (H, W, ...)."""
    check_occluder_options(patch, stride, fill)
    if patch > min(shape[:2]):
        raise InputError(f"--patch {patch} is larger than the image ({shape[0]}x{shape[1]} pixels); "
                         f"use at most {min(shape[:2])}")


def occlude(score, image, patch=8, stride=2, fill="mean", batch_size=64):
    """The :class:`OcclusionMap` of ``image`` (H, W, C) float32 under ``score`` (a function of a batch
    (N, H, W, C) -> (N,) scores, e.g. from :mod:`gan_seg.explain.targets`)."""
    image = np.asarray(image, np.float32)
    check_occluder(image.shape, patch, stride, fill)
    value = {"mean": float(image.mean()), "grey": 0.5, "zero": 0.0}[fill]
    tops, lefts = positions(image.shape[0], patch, stride), positions(image.shape[1], patch, stride)
    corners = [(top, left) for top in tops for left in lefts]
    base = float(np.asarray(score(image[None]))[0])
    size = math.ceil(len(corners) / math.ceil(len(corners) / batch_size))
    batch = np.empty((size, *image.shape), np.float32)
    scores = np.empty(len(corners), np.float32)
    for start in range(0, len(corners), len(batch)):
        chunk = corners[start:start + len(batch)]
        batch[:] = image
        for k, (top, left) in enumerate(chunk):
            batch[k, top:top + patch, left:left + patch] = value
        scores[start:start + len(chunk)] = np.asarray(score(batch), np.float32)[:len(chunk)]
    drops = (base - scores).reshape(len(tops), len(lefts))
    return OcclusionMap(drops, tops, lefts, patch, base)


def check_image(model, image):
    """``image`` as float32 (H, W, C) for the network's input (a grey (H, W) gets its channel axis);
    InputError when the shapes disagree (a segmentation network needs H, W multiples of 16)."""
    kind = check_occludable(model)
    image = np.asarray(image, np.float32)
    expected = tuple(model.inputs[0].shape[1:])
    if len(expected) == 3 and image.ndim == 2 and expected[-1] == 1:
        image = image[..., None]
    fits = image.ndim == len(expected) and all(e is None or e == n for e, n in zip(expected, image.shape,
                                                                                   strict=True))
    if not fits:
        wanted = "x".join("any" if e is None else str(e) for e in expected)
        raise InputError(f"the image has shape {image.shape}; the network takes {wanted}")
    if kind == SEGMENTATION and (image.shape[0] % 16 or image.shape[1] % 16):
        raise InputError(f"a segmentation network needs height and width that are multiples of 16, got "
                         f"{image.shape[0]}x{image.shape[1]}")
    return image


def occlusion(model, image, target=None, patch=8, stride=2, fill="mean", class_names=None, batch_size=None):
    """Occlusion sensitivity of a Keras classifier, discriminator or segmentation network on one
    ``image`` (H, W, C) float in [0, 1]: ``(OcclusionMap, Target)``; ``target`` and the score as in
    :mod:`gan_seg.explain.targets` (a class number or name; ``class_names`` name the outputs).
    ``batch_size`` defaults to 8 for segmentation networks (fastest per slice on CPU), 128 otherwise."""
    image = check_image(model, image)
    check_occluder(image.shape, patch, stride, fill)
    chosen = target_for(model, image, target, class_names)
    batch_size = batch_size or (8 if network_kind(model) == SEGMENTATION else 128)
    return occlude(chosen.score, image, patch, stride, fill, batch_size), chosen
