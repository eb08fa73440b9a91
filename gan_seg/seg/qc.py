"""Label colours, FreeSurfer colour lookup tables, QC pictures and QC scores of segmentations (numpy, Pillow).

The QC score of a structure (:func:`qc_scores`) is the Dice between each view network's own labels and the
aggregated labels, averaged over the views: one pass gives it, no reference labels needed. Views that
agree on a structure give a score near 1; a damaged scan (a strong bias field, thick slices, motion) or a
structure the model handles poorly makes the views disagree. Scores below :data:`QC_THRESHOLD` are named in
a one-line warning (:func:`low_score_warning`). With one view there is nothing to compare: no score.
"""

import colorsys
import math
import re
import zlib
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from PIL import Image, ImageDraw, ImageFont

from gan_seg.io.files import atomic_path
from gan_seg.io.pictures import save_png
from gan_seg.seg.views import split_hemisphere
from gan_seg.seg.volumes import volume_name

# FreeSurferColorLUT.txt colours, keyed by structure name without hemisphere, lower case, letters/digits only.
_FREESURFER = {
    "background": (0, 0, 0), "cerebralwhitematter": (245, 245, 245), "cerebralcortex": (205, 62, 78),
    "lateralventricle": (120, 18, 134), "inflatvent": (196, 58, 250),
    "cerebellumwhitematter": (220, 248, 164), "cerebellumcortex": (230, 148, 34), "thalamus": (0, 118, 14),
    "caudate": (122, 186, 220),
    "putamen": (236, 13, 176), "pallidum": (12, 48, 255), "3rdventricle": (204, 182, 142),
    "4thventricle": (42, 204, 164), "brainstem": (119, 159, 176), "hippocampus": (220, 216, 20),
    "amygdala": (103, 255, 255), "csf": (60, 60, 60), "accumbensarea": (255, 165, 0),
    "ventraldc": (165, 42, 42), "vessel": (160, 32, 240), "choroidplexus": (0, 200, 200),
    "5thventricle": (120, 190, 150), "wmhypointensities": (200, 70, 255), "opticchiasm": (234, 169, 30),
}
_RIGHT_ONLY = {"pallidum": (13, 48, 255)}  # FreeSurfer's one left/right difference among these
_ALIASES = {"unknown": "background", "othercsf": "csf", "cerebellum": "cerebellumcortex",
            "thalamusproper": "thalamus", "accumbens": "accumbensarea", "cerebralwm": "cerebralwhitematter",
            "whitematter": "cerebralwhitematter", "cortex": "cerebralcortex",
            "cerebellumwm": "cerebellumwhitematter"}
_VIEWS = (("Sagittal", "P", "A"), ("Coronal", "L", "R"), ("Axial", "L", "R"))
_BACKDROP, _TEXT, _DIM = (18, 18, 18), (235, 235, 235), (150, 150, 150)
QC_THRESHOLD = 0.6


def _key(text):
    return re.sub(r"[^a-z0-9]", "", text)


def _colour(name):
    name = str(name).strip().lower()
    side, structure = split_hemisphere(name)
    structure = _ALIASES.get(_key(structure), _key(structure))
    if structure in _FREESURFER:
        right = side == "right"
        return _RIGHT_ONLY.get(structure, _FREESURFER[structure]) if right else _FREESURFER[structure]
    code = zlib.crc32(_key(name).encode())  # any other name: a fixed colour from its own hash
    hue = (code & 0xFFFF) / 65536.0
    saturation = 0.55 + 0.4 * ((code >> 16) & 0xFF) / 255.0
    value = 0.8 + 0.2 * (code >> 24) / 255.0
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def label_colors(class_names):
    """uint8 (K, 3) colours: FreeSurfer's for standard structure names, a fixed hash colour for others."""
    return np.array([_colour(name) for name in class_names], np.uint8).reshape(-1, 3)


def lut_path_for(output_path):
    """The LUT beside a label map: ``sub01_seg.nii.gz`` -> ``sub01_seg_LUT.txt``."""
    path = Path(output_path)
    return path.with_name((volume_name(path) or path.stem) + "_LUT.txt")


def write_lut(path, class_names):
    """Atomically write a FreeSurfer colour LUT (``index name R G B A``, A = 0) for labels 0..K-1."""
    lines = ["# Colour lookup table in FreeSurferColorLUT.txt format, written by gan-seg",
             f"#{'No.':<4}{'Label Name:':<41}{'R':<4}{'G':<4}{'B':<4}A"]
    for index, (name, rgb) in enumerate(zip(class_names, label_colors(class_names), strict=True)):
        name = "-".join(str(name).split()) or f"Label-{index}"
        lines.append(f"{index:<5d}{name:<41s}{rgb[0]:<4d}{rgb[1]:<4d}{rgb[2]:<4d}0")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _panel(grey, labels, pixel_mm, scale, colours, alpha):
    """One display slice (rows = superior/anterior first) resampled to square pixels, labels blended in."""
    size = tuple(max(1, round(n * mm * scale)) for n, mm in zip(grey.shape, pixel_mm, strict=True))[::-1]
    grey = np.asarray(Image.fromarray(grey.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
    labels = np.asarray(Image.fromarray(labels).resize(size, Image.Resampling.NEAREST))
    rgb = np.repeat(np.clip(grey, 0.0, 1.0)[..., None] * 255.0, 3, axis=2)
    mask = labels > 0
    rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * colours[labels[mask]]
    return Image.fromarray(np.rint(rgb).astype(np.uint8))


def _fit_text(draw, text, font, width):
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def render_qc(image, labels, affine, class_names, path, slices=None, alpha=0.45, size=256, title=None):
    """Write a QC PNG: sagittal, coronal and axial slices with the label overlay, a legend and a title.

    ``image`` and ``labels`` share one voxel grid with voxel->world ``affine`` (any orientation); both are
    shown in RAS in neurological convention (patient left on image left, superior up, anterior right
    in the sagittal view), at true aspect ratio. ``slices`` is a voxel (i, j, k) of the input grid;
    the default is the centre of mass of the labels > 0 (label 0 is background). Returns
    {"slices": the voxel used, "classes": the label values in the volume other than 0}.
    """
    image, labels = np.asarray(image, np.float32), np.asarray(labels).astype(np.int32, copy=False)
    affine = np.asarray(affine, float)
    if image.ndim != 3 or labels.shape != image.shape or affine.shape != (4, 4):
        raise ValueError(f"expected 3-d image and labels of one shape and a 4x4 affine, got {image.shape}, "
                         f"{labels.shape}, {affine.shape}")
    present, counts = np.unique(labels[labels != 0], return_counts=True)
    if present.size and (present.min() < 0 or present.max() >= len(class_names)):
        raise ValueError(f"labels run {present.min()}..{present.max()} but there are only {len(class_names)} "
                         "class names")
    ornt = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    axes, flips = ornt[:, 0].astype(int), ornt[:, 1] < 0
    shape = np.array(image.shape)
    zooms = np.empty(3)
    zooms[axes] = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    volume = apply_orientation(np.nan_to_num(image), ornt)
    ras_labels, ras_shape = apply_orientation(labels, ornt), np.array(volume.shape)
    if slices is None:
        centre = np.argwhere(ras_labels != 0).mean(axis=0) if present.size else (ras_shape - 1) / 2
        point = np.rint(centre).astype(int)
        voxel = np.where(flips, shape - 1 - point[axes], point[axes])
    else:
        voxel = np.array(slices, int)
        if voxel.shape != (3,) or (voxel < 0).any() or (voxel >= shape).any():
            raise ValueError(f"slices must be a voxel (i, j, k) inside {tuple(shape)}, got {slices}")
        point = np.empty(3, int)
        point[axes] = np.where(flips, shape - 1 - voxel, voxel)
    low, high = np.percentile(volume, [1, 99])
    grey = (volume - low) / max(high - low, 1e-6)
    colours = label_colors(class_names).astype(np.float64)
    scale = size / max(ras_shape * zooms)
    world = affine @ np.append(voxel, 1.0)
    panels = []
    for axis, (view, left, right) in enumerate(_VIEWS):
        take = [slice(None)] * 3
        take[axis] = point[axis]
        shown = [a for a in range(3) if a != axis]  # (columns, rows) before the transpose
        pixel_mm = (zooms[shown[1]], zooms[shown[0]])
        panel = _panel(grey[tuple(take)].T[::-1], ras_labels[tuple(take)].T[::-1], pixel_mm, scale, colours,
                       alpha)
        panels.append((panel, f"{view} {'xyz'[axis]}={world[axis]:.0f}", left, right))

    canvas = _compose(panels, present, counts, [str(n) for n in class_names], colours, size, title)
    save_png(np.asarray(canvas), path)
    return {"slices": tuple(int(v) for v in voxel), "classes": [int(v) for v in present]}


def _compose(panels, present, counts, class_names, colours, size, title):
    """Lay out the title, the three panels with captions and side markers, and the legend below them."""
    font, small, big = (ImageFont.load_default(size=n) for n in (12, 11, 15))
    line_h, gap = 17, 8
    width = 3 * size + 4 * gap
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    name_w = max([probe.textlength(name, font=font) for name in class_names] + [60])
    columns = max(1, int((width - 2 * gap) // min(name_w + 24, 220)))
    col_w = (width - 2 * gap) // columns
    capacity = columns * max(1, 2 * size // line_h)
    if len(present) > capacity:  # keep the largest classes, in label order
        present = np.sort(present[np.argsort(-counts, kind="stable")[:capacity - 1]])
    more = len(counts) - len(present)
    items = [(class_names[i], tuple(int(c) for c in colours[i])) for i in present]
    items += [(f"+{more} more", None)] if more else []
    rows = math.ceil(len(items) / columns)
    top = gap + (22 if title else 0)
    legend_top = top + size + gap
    canvas = Image.new("RGB", (width, legend_top + rows * line_h + gap), _BACKDROP)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((gap, gap), _fit_text(draw, str(title), big, width - 2 * gap), fill=_TEXT, font=big)
    for n, (panel, caption, left, right) in enumerate(panels):
        x0 = gap + n * (size + gap)
        draw.rectangle([x0, top, x0 + size - 1, top + size - 1], fill=(0, 0, 0))
        canvas.paste(panel, (x0 + (size - panel.width) // 2, top + (size - panel.height) // 2))
        draw.text((x0 + 4, top + 3), caption, fill=_TEXT, font=small, stroke_width=2, stroke_fill=(0, 0, 0))
        for x, anchor, mark in ((x0 + 4, "lm", left), (x0 + size - 4, "rm", right)):
            draw.text((x, top + size // 2), mark, fill=(255, 230, 0), font=font, anchor=anchor,
                      stroke_width=2, stroke_fill=(0, 0, 0))
    for n, (name, colour) in enumerate(items):
        x, y = gap + (n // rows) * col_w, legend_top + (n % rows) * line_h
        if colour is not None:
            draw.rectangle([x, y + 3, x + 11, y + 14], fill=colour, outline=_DIM)
        draw.text((x + 17, y + 9), _fit_text(draw, name, font, col_w - 22), fill=_TEXT if colour else _DIM,
                  font=font, anchor="lm")
    return canvas


def qc_scores(labels, view_labels, classes):
    """Per-class QC score (float64, length ``classes``): the Dice between each view's labels (full classes,
    one array per view in ``view_labels``) and the aggregated ``labels``, averaged over the views. NaN
    for the background, for classes absent from ``labels`` and for all classes with fewer than 2 views."""
    scores = np.full(classes, np.nan)
    if len(view_labels) < 2:
        return scores
    flat = labels.ravel().astype(np.int64)
    present = np.bincount(flat, minlength=classes) > 0
    total = np.zeros(classes)
    for found in view_labels.values():
        joint = np.bincount(flat * classes + found.ravel(), minlength=classes * classes)
        joint = joint.reshape(classes, classes)
        sizes = joint.sum(axis=1) + joint.sum(axis=0)
        total += 2.0 * np.diag(joint) / np.maximum(sizes, 1)
    scores[present] = total[present] / len(view_labels)
    scores[0] = np.nan
    return scores


def low_score_warning(scores, class_names, threshold=QC_THRESHOLD):
    """One line naming the structures whose QC score is below ``threshold`` (lowest first), or None."""
    low = [(score, name) for score, name in zip(scores, class_names, strict=True)
           if np.isfinite(score) and score < threshold]
    if not low:
        return None
    shown = ", ".join(f"{name} {score:.2f}" for score, name in sorted(low))
    return (f"warning: QC score below {threshold:g} (the views disagree) for {len(low)} structure(s): "
            f"{shown}; check the QC picture")
