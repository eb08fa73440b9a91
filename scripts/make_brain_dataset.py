#!/usr/bin/env python
"""Build a 23-class brain MRI segmentation dataset from the two real anatomies available offline.

Subjects (sources, licences and the recipe: scripts/README.md and the README.md this script writes):

* ``ch2``    -- Colin27 (``mricron-data``: ``ch2.nii.gz`` whole head, ``ch2bet.nii.gz``, ``aal.nii.gz``);
                AAL was drawn on this brain and is voxel-aligned with it.
* ``mni152`` -- MNI ICBM152 2009a nonlinear symmetric template (nilearn's bundled data files: skull-stripped
                T1 + GM/WM probability maps); AAL is carried over by a dipy affine + SyN registration
                ch2 -> MNI152 and nearest-neighbour resampling.

Labels (FreeSurfer-style names, left 1-10 / right 11-20 in the same order, so class ``i`` and ``i + 10``
are a left/right pair): white matter, cortex, lateral ventricle, thalamus, caudate, putamen, pallidum,
hippocampus, amygdala, cerebellum; 21 brain stem; 22 other CSF.  They are auxiliary, rule-based labels
(QuickNAT sense), not manual ones.

Layout written::

    OUT_DIR/images/NAME.nii.gz      T1 on the subject's own grid/affine
    OUT_DIR/labels/NAME.nii.gz      uint8 labels 0..22, same grid/affine
    OUT_DIR/generation/NAME.nii.gz  uint8 generation labels for synthetic training: the labels with the
                                    head outside the brain split into extra-cerebral classes 23..26
    OUT_DIR/masks/NAME.nii.gz       uint8 brain mask (labels > 0)
    OUT_DIR/heads/mni152.nii.gz     MNI152 T1 with Colin27's warped head pasted outside the brain
    OUT_DIR/classes.json            {"0": "Background", ...}
    OUT_DIR/generation_classes.json {"0": "Background", ..., "26": "Fat-Marrow"}
    OUT_DIR/README.md               provenance, recipe, caveats, per-class voxel counts
    OUT_DIR/qc_NAME.png             orthogonal slices with a colour overlay
    OUT_DIR/qc_generation_NAME.png  the same with the generation labels

Usage::

    python scripts/make_brain_dataset.py OUT_DIR [--subjects ch2,mni152] [--no-register]

Needs numpy, scipy, nibabel, Pillow; nilearn (data files only) and dipy for the ``mni152`` subject.
Deterministic: no random sampling anywhere (dense mutual information, fixed EM initialisation).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from gan_seg.seg.qc import label_colors
from gan_seg.seg.volumes import save_like

MRICRON_DIR = Path("/usr/share/mricron/templates")
SUBJECTS = ("ch2", "mni152")

# ---------------------------------------------------------------------------------------------------------
# Label set
# ---------------------------------------------------------------------------------------------------------
STRUCTURES = (
    "Cerebral-White-Matter",
    "Cerebral-Cortex",
    "Lateral-Ventricle",
    "Thalamus",
    "Caudate",
    "Putamen",
    "Pallidum",
    "Hippocampus",
    "Amygdala",
    "Cerebellum",
)
N_SIDE = len(STRUCTURES)  # 10
BRAINSTEM = 21
OTHER_CSF = 22
CLASS_NAMES = (
    ["Background"]
    + [f"Left-{s}" for s in STRUCTURES]
    + [f"Right-{s}" for s in STRUCTURES]
    + ["Brain-Stem", "Other-CSF"]
)
N_CLASSES = len(CLASS_NAMES)  # 23

# Generation labels (synthetic training): the head outside the brain mask, split into tissue classes that
# exist only for synthesis; a generation value v < N_CLASSES is target class v, v >= N_CLASSES is target 0.
EXTRA_CSF, EXTRA_DARK, EXTRA_SOFT, EXTRA_BRIGHT = range(N_CLASSES, N_CLASSES + 4)
EXTRA_NAMES = ("Extra-Cerebral-Dark-Rim", "Skull-Dark", "Soft-Tissue", "Fat-Marrow")
GENERATION_NAMES = CLASS_NAMES + list(EXTRA_NAMES)
EXTRA_COLOURS = ((0, 190, 255), (150, 60, 220), (255, 140, 0), (255, 240, 120))
HEAD_THRESHOLD = 0.05  # head mask: T1 above 5% of its 99.5th percentile, closed, holes filled
HEAD_CLOSING_ITERS = 3
RIM_MM = 3.0  # dark extra-cerebral voxels this close to the brain mask: CSF / meninges rim


def left_id(structure: str) -> int:
    return 1 + STRUCTURES.index(structure)


def right_id(structure: str) -> int:
    return 1 + N_SIDE + STRUCTURES.index(structure)


# AAL (aal.nii.txt) ids of the subcortical structures taken straight from the atlas: (left, right).
AAL_SUBCORTICAL = {
    "Hippocampus": (37, 38),
    "Amygdala": (41, 42),
    "Caudate": (71, 72),
    "Putamen": (73, 74),
    "Pallidum": (75, 76),
    "Thalamus": (77, 78),
}
AAL_CEREBELLUM = (91, 116)  # inclusive; 91-108 hemispheres (odd = left), 109-116 vermis (midline)
AAL_VERMIS_FIRST = 109

# ch2 -> MNI152 registration: iterations per level (4, 2, 1 mm).
AFFINE_ITERS = (100, 30, 0)
SYN_ITERS = (100, 50, 5)

# Tissue codes used internally.
BG, CSF, GM, WM = 0, 1, 2, 3

# Rule parameters of the label recipe (scripts/README.md, "Recipe").
CEREBELLUM_REACH_MM = 15.0
STEM_BOX_CEREBELLUM_REACH_MM = 5.0
BRAINSTEM_BOX = {"z_max": -8.0, "abs_x_max": 20.0, "y_min": -48.0, "y_max": -5.0}
VENTRICLE_MIN_DEPTH_MM = 12.0
VENTRICLE_MIN_BLOB = 300
VENTRICLE_MIN_ABS_X_MM = 1.5
VENTRICLE_MIN_CENTRE_ABS_X_MM = 8.0


def class_colours(generation: bool = False) -> np.ndarray:
    """gan-seg's label colours (FreeSurfer's), right-hemisphere classes 25 % darker so that a left/right
    swap shows in the QC pictures; ``generation`` adds the extra-cerebral classes."""
    lut = label_colors(CLASS_NAMES).astype(np.float64)
    lut[1 + N_SIDE:1 + 2 * N_SIDE] *= 0.75
    if generation:
        lut = np.concatenate([lut, np.array(EXTRA_COLOURS, np.float64)])
    return lut


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------
def nilearn_data_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise SystemExit("nilearn is not installed (pip install nilearn): the mni152 subject needs its data")
    return Path(spec.origin).parent / "datasets" / "data"


def load(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise SystemExit(f"missing input file: {path}")
    return nib.load(str(path))


def world_coords(shape: tuple[int, ...], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, z (mm, RAS world) of every voxel centre, each as an array of ``shape``."""
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    return tuple(c.reshape(shape) for c in xyz)  # type: ignore[return-value]


def check_ras(img: nib.Nifti1Image, name: str) -> None:
    codes = nib.aff2axcodes(img.affine)
    if codes != ("R", "A", "S") or not np.allclose(np.abs(np.diag(img.affine)[:3]), 1.0):
        raise SystemExit(f"{name}: expected a 1 mm RAS grid, got {codes} / {img.header.get_zooms()}")


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


# ---------------------------------------------------------------------------------------------------------
# Tissue classification
# ---------------------------------------------------------------------------------------------------------
def gmm_1d(values: np.ndarray, k: int = 3, iters: int = 1000, tol: float = 1e-10) -> tuple[np.ndarray, ...]:
    """EM for a 1D Gaussian mixture with one shared (tied) variance, on the histogram of integer intensities.

    Initialised deterministically at quantiles; returns (weights, means, variances), sorted by mean.
    The variance is tied because on ch2 free variances converge to a very narrow white-matter component
    (sd ~3.7) that hands the whole partial-volume plateau to grey matter and visibly shrinks the white matter.
    """
    values = np.asarray(values).ravel().astype(np.int64)
    lo = int(values.min())
    h = np.bincount(values - lo).astype(np.float64)
    x = np.arange(lo, lo + h.size, dtype=np.float64)
    n = h.sum()
    mu = np.quantile(values, (np.arange(k) + 0.5) / k).astype(np.float64)
    var = float(values.var()) / k**2
    w = np.full(k, 1.0 / k)
    prev = -np.inf
    for _ in range(iters):
        logp = np.log(w)[:, None] - 0.5 * np.log(2 * np.pi * var) - 0.5 * (x - mu[:, None]) ** 2 / var
        m = logp.max(0)
        lse = m + np.log(np.exp(logp - m).sum(0))
        r = np.exp(logp - lse) * h  # responsibilities x counts
        nk = r.sum(1)
        w = nk / n
        mu = (r * x).sum(1) / nk
        var = max(float((r * (x - mu[:, None]) ** 2).sum() / n), 1e-3)
        ll = float((h * lse).sum())
        if abs(ll - prev) < tol * abs(ll):
            break
        prev = ll
    order = np.argsort(mu)
    return w[order], mu[order], np.full(k, var)


def gmm_thresholds(w: np.ndarray, mu: np.ndarray, var: np.ndarray) -> list[float]:
    """Decision boundaries between consecutive (mean-sorted) components, searched between their means.

    Using boundaries rather than a per-intensity argmax keeps the classes monotone in intensity (a wide
    component cannot win at both tails).
    """
    out = []
    for a in range(len(mu) - 1):
        t = np.linspace(mu[a], mu[a + 1], 10001)
        pa = w[a] * np.exp(-0.5 * (t - mu[a]) ** 2 / var[a]) / np.sqrt(var[a])
        pb = w[a + 1] * np.exp(-0.5 * (t - mu[a + 1]) ** 2 / var[a + 1]) / np.sqrt(var[a + 1])
        idx = np.nonzero(pb > pa)[0]
        out.append(float(t[idx[0]]) if idx.size else float(mu[a + 1]))
    return out


def tissue_from_intensity(t1: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, dict]:
    w, mu, var = gmm_1d(t1[brain].astype(np.int64), k=3)
    t_csf_gm, t_gm_wm = gmm_thresholds(w, mu, var)
    tissue = np.zeros(t1.shape, np.uint8)
    v = t1.astype(np.float64)
    tissue[brain] = np.where(v[brain] < t_csf_gm, CSF, np.where(v[brain] < t_gm_wm, GM, WM))
    info = {
        "gmm_means": [round(float(m), 1) for m in mu],
        "gmm_sds": [round(float(s), 1) for s in np.sqrt(var)],
        "gmm_weights": [round(float(x), 3) for x in w],
        "thresholds": [round(t_csf_gm, 1), round(t_gm_wm, 1)],
    }
    return tissue, info


def tissue_from_probabilities(gm: np.ndarray, wm: np.ndarray, brain: np.ndarray) -> np.ndarray:
    gm = gm.astype(np.float64)
    wm = wm.astype(np.float64)
    csf = np.clip(255.0 - gm - wm, 0, None)
    stack = np.stack([csf, gm, wm])  # argmax ties -> first (CSF, then GM), deterministic
    tissue = np.zeros(gm.shape, np.uint8)
    tissue[brain] = (np.argmax(stack, axis=0)[brain] + 1).astype(np.uint8)
    return tissue


# ---------------------------------------------------------------------------------------------------------
# Extra-cerebral generation classes
# ---------------------------------------------------------------------------------------------------------
def fill_holes_everywhere(mask: np.ndarray) -> np.ndarray:
    """Holes filled in 3D and then slice by slice along each axis (the field of view cuts the neck open,
    so the skull's dark inside is not a closed 3D hole)."""
    mask = ndimage.binary_fill_holes(mask)
    for axis in (2, 1, 0):
        planes = [ndimage.binary_fill_holes(plane) for plane in np.moveaxis(mask, axis, 0)]
        mask = np.moveaxis(np.stack(planes), 0, axis)
    return mask


def head_mask(t1: np.ndarray) -> np.ndarray:
    """The head: T1 above HEAD_THRESHOLD x its 99.5th percentile, closed, filled, largest component."""
    t1 = t1.astype(np.float64)
    mask = t1 > HEAD_THRESHOLD * np.percentile(t1, 99.5)
    mask = ndimage.binary_closing(mask, iterations=HEAD_CLOSING_ITERS, border_value=0)
    return largest_component(fill_holes_everywhere(mask))


def extra_cerebral_classes(
    t1: np.ndarray, head: np.ndarray, brain: np.ndarray, zooms
) -> tuple[np.ndarray, dict]:
    """Generation classes of the head outside the brain: a 3-class tied-variance Gaussian mixture on the
    T1 (smoothed, sigma 0.7 mm) splits it into dark / intermediate / bright tissue; dark voxels within
    RIM_MM of the brain become the rim class (CSF, meninges, inner table), the other dark ones skull-dark
    (bone, air cavities, vitreous). Returns (uint8 labels 0 or 23..26, info)."""
    extra = head & ~brain
    smooth = ndimage.gaussian_filter(t1.astype(np.float64), 0.7 / np.asarray(zooms))
    values = np.rint(smooth[extra]).astype(np.int64)
    w, mu, var = gmm_1d(values, k=3)
    low, high = gmm_thresholds(w, mu, var)
    near = ndimage.distance_transform_edt(~brain, sampling=zooms) <= RIM_MM
    out = np.zeros(t1.shape, np.uint8)
    dark = extra & (smooth < low)
    out[dark & near] = EXTRA_CSF
    out[dark & ~near] = EXTRA_DARK
    out[extra & (smooth >= low) & (smooth < high)] = EXTRA_SOFT
    out[extra & (smooth >= high)] = EXTRA_BRIGHT
    info = {"head_minus_brain_gmm_means": [round(float(m), 1) for m in mu],
            "head_minus_brain_gmm_sd": round(float(np.sqrt(var[0])), 1),
            "head_minus_brain_thresholds": [round(low, 1), round(high, 1)]}
    return out, info


def generation_labels(labels: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """The labels with the extra-cerebral classes where the labels are background."""
    return np.where(labels > 0, labels, extra).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Registration ch2 -> MNI152 (dipy)
# ---------------------------------------------------------------------------------------------------------
def _normalise(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    hi = np.percentile(a[mask], 99.5)
    return np.where(mask, np.clip(a / hi, 0, 1.2), 0.0)


def register_ch2_to_mni(
    ch2_brain: np.ndarray,
    ch2_affine: np.ndarray,
    mni_brain: np.ndarray,
    mni_affine: np.ndarray,
    log,
):
    """Centre of mass -> affine (dense MI) -> SyN (cross-correlation); returns dipy's DiffeomorphicMap.

    Both inputs are skull-stripped, intensity-normalised T1s; ch2 is the moving image, MNI152 the static one.
    """
    try:
        # Optional dependency (only the mni152 subject registers): a clear message when it is missing.
        from dipy.align.imaffine import (  # noqa: PLC0415
            AffineRegistration,
            MutualInformationMetric,
            transform_centers_of_mass,
        )
        from dipy.align.imwarp import SymmetricDiffeomorphicRegistration  # noqa: PLC0415
        from dipy.align.metrics import CCMetric  # noqa: PLC0415
        from dipy.align.transforms import AffineTransform3D  # noqa: PLC0415
    except ImportError as exc:
        raise SystemExit(
            f"the mni152 subject needs dipy (pip install dipy) or use --no-register: {exc}"
        ) from exc

    grids = {"static_grid2world": mni_affine, "moving_grid2world": ch2_affine}
    t0 = time.time()
    com = transform_centers_of_mass(mni_brain, mni_affine, ch2_brain, ch2_affine)
    affreg = AffineRegistration(
        metric=MutualInformationMetric(nbins=32, sampling_proportion=None),  # dense sampling: deterministic
        level_iters=list(AFFINE_ITERS),
        sigmas=[3.0, 1.0, 0.0],
        factors=[4, 2, 1],
        verbosity=0,
    )
    amap = affreg.optimize(
        mni_brain, ch2_brain, AffineTransform3D(), None, starting_affine=com.affine, **grids
    )
    matrix = np.array2string(amap.affine, precision=3, suppress_small=True)
    log(f"  affine in {time.time() - t0:.0f} s:\n{matrix}")
    t0 = time.time()
    metric = CCMetric(3, sigma_diff=2.0, radius=4)
    sdr = SymmetricDiffeomorphicRegistration(metric, level_iters=list(SYN_ITERS))
    mapping = sdr.optimize(mni_brain, ch2_brain, prealign=amap.affine, **grids)
    log(f"  SyN in {time.time() - t0:.0f} s")
    return mapping


# ---------------------------------------------------------------------------------------------------------
# Labels from tissue + AAL (the recipe)
# ---------------------------------------------------------------------------------------------------------
def is_left_from_aal(aal_ids: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Side from an AAL id: odd ids are left hemisphere; vermis (midline) and 0 fall back to the sign of x."""
    aal_ids = np.asarray(aal_ids)
    lateral = (aal_ids > 0) & (aal_ids < AAL_VERMIS_FIRST)
    return np.where(lateral, aal_ids % 2 == 1, x < 0)


def build_labels(tissue: np.ndarray, aal: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The label recipe (scripts/README.md), steps 4-8; ``tissue`` BG/CSF/GM/WM and ``aal`` on one grid."""
    shape = tissue.shape
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    x, y, z = world_coords(shape, affine)
    brain = tissue != BG
    csf = tissue == CSF
    aal = np.where(brain, aal, 0).astype(np.int32)  # atlas voxels outside the brain mask are dropped
    labels = np.zeros(shape, np.uint8)

    # Nearest AAL label (and its distance) for every voxel.
    dist, inds = ndimage.distance_transform_edt(aal == 0, sampling=zooms, return_indices=True)
    nearest = aal[tuple(inds)]
    del inds
    near_left = is_left_from_aal(nearest, x)

    # 4. Subcortical structures straight from AAL, minus CSF (the pallidum only exists in the atlas).
    for structure, (lid, rid) in AAL_SUBCORTICAL.items():
        labels[(aal == lid) & ~csf] = left_id(structure)
        labels[(aal == rid) & ~csf] = right_id(structure)

    # 5./6. Cerebellum and brain stem. Deviation from the recipe: inside the brain-stem box the cerebellum
    # extension only reaches STEM_BOX_CEREBELLUM_REACH_MM; with the full 15 mm it takes the posterior pons and
    # medulla (their nearest AAL labels are the anterior vermis and lobules 3/10), while with no extension at
    # all the brain stem swallows the cerebellar peduncles up to the box's walls.
    c0, c1 = AAL_CEREBELLUM
    b = BRAINSTEM_BOX
    box = (z < b["z_max"]) & (np.abs(x) <= b["abs_x_max"]) & (y > b["y_min"]) & (y < b["y_max"])
    reach = np.where(box, STEM_BOX_CEREBELLUM_REACH_MM, CEREBELLUM_REACH_MM)
    near_cereb = (nearest >= c0) & (nearest <= c1) & (dist <= reach)
    cereb = ((aal >= c0) & (aal <= c1)) | (brain & ~csf & (aal == 0) & near_cereb)
    cereb &= labels == 0
    labels[cereb & near_left] = left_id("Cerebellum")
    labels[cereb & ~near_left] = right_id("Cerebellum")
    stem = largest_component(brain & ~csf & (aal == 0) & ~cereb & (labels == 0) & box)
    labels[stem] = BRAINSTEM

    # 7. Lateral ventricles: deep CSF outside AAL, off the midline, in large blobs; other CSF -> Other-CSF.
    depth = ndimage.distance_transform_edt(brain, sampling=zooms)
    cand = csf & (aal == 0) & (labels == 0) & (depth > VENTRICLE_MIN_DEPTH_MM)
    cand &= np.abs(x) > VENTRICLE_MIN_ABS_X_MM
    lab, n = ndimage.label(cand)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    centre_x = np.abs(ndimage.mean(x, lab, index=np.arange(n + 1)))
    # Deviation: blobs centred within 8 mm of the midline are the fourth ventricle and the quadrigeminal /
    # velum interpositum cisterns (each split in two by the |x| > 1.5 mm rule), not lateral ventricles.
    keep = (sizes >= VENTRICLE_MIN_BLOB) & (centre_x > VENTRICLE_MIN_CENTRE_ABS_X_MM)
    keep[0] = False
    vent = keep[lab]
    labels[vent & (x < 0)] = left_id("Lateral-Ventricle")
    labels[vent & (x >= 0)] = right_id("Lateral-Ventricle")
    labels[csf & (labels == 0)] = OTHER_CSF

    # 8. Remaining GM -> cortex, WM -> cerebral white matter; side from the nearest AAL label.
    rest = labels == 0
    for code, structure in ((GM, "Cerebral-Cortex"), (WM, "Cerebral-White-Matter")):
        sel = rest & (tissue == code)
        labels[sel & near_left] = left_id(structure)
        labels[sel & ~near_left] = right_id(structure)
    return labels


# ---------------------------------------------------------------------------------------------------------
# Subjects
# ---------------------------------------------------------------------------------------------------------
def prepare_ch2(log) -> dict:
    head = load(MRICRON_DIR / "ch2.nii.gz")
    bet = load(MRICRON_DIR / "ch2bet.nii.gz")
    aal_img = load(MRICRON_DIR / "aal.nii.gz")
    for img, name in ((head, "ch2"), (bet, "ch2bet"), (aal_img, "aal")):
        check_ras(img, name)
        if img.shape != head.shape or not np.allclose(img.affine, head.affine):
            raise SystemExit(f"{name} is not on the ch2 grid")
    t1 = np.asanyarray(head.dataobj)
    brain = ndimage.binary_fill_holes(np.asanyarray(bet.dataobj) > 0)  # 1. filled ch2bet > 0
    tissue, info = tissue_from_intensity(t1, brain)  # 2. 3-class GMM on brain intensities
    log(
        f"  ch2 GMM (CSF/GM/WM): means {info['gmm_means']}, sds {info['gmm_sds']}, "
        f"weights {info['gmm_weights']}, thresholds {info['thresholds']}"
    )
    aal = np.asanyarray(aal_img.dataobj).astype(np.int32)  # 3. native alignment
    head_voxels = head_mask(t1)
    extra, extra_info = extra_cerebral_classes(t1, head_voxels, brain, head.header.get_zooms()[:3])
    log(f"  ch2 head: {int(head_voxels.sum())} voxels, extra-cerebral GMM {extra_info}")
    return {
        "image": head,
        "tissue": tissue,
        "aal": aal,
        "brain_t1": np.where(brain, t1, 0),
        "extra": extra,
        "info": {"tissue": "3-class tied-variance Gaussian mixture on ch2 brain intensities", **info,
                 "extra_cerebral": "head mask minus brain mask, 3-class GMM on the smoothed T1 "
                 f"(dark within {RIM_MM:g} mm of the brain = rim)", **extra_info},
    }


def prepare_mni(ch2: dict, log) -> dict:
    d = nilearn_data_dir()
    stem = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
    t1_img = load(d / stem.format("t1"))
    gm_img = load(d / stem.format("gm"))
    wm_img = load(d / stem.format("wm"))
    for img, name in ((t1_img, "t1"), (gm_img, "gm"), (wm_img, "wm")):
        check_ras(img, f"MNI152 {name}")
        if img.shape != t1_img.shape or not np.allclose(img.affine, t1_img.affine):
            raise SystemExit(f"MNI152 {name} is not on the T1 grid")
    t1 = np.asanyarray(t1_img.dataobj).astype(np.float64)
    brain = ndimage.binary_fill_holes(t1 > 0.2 * t1.max())  # 1.
    brain = largest_component(brain)
    gm = np.asanyarray(gm_img.dataobj)
    wm = np.asanyarray(wm_img.dataobj)
    tissue = tissue_from_probabilities(gm, wm, brain)  # 2.

    # 3. AAL warped from ch2 by registration (skull-stripped images), nearest neighbour.
    ch2_img = ch2["image"]
    ch2_brain = ch2["tissue"] != BG
    mapping = register_ch2_to_mni(
        _normalise(ch2["brain_t1"], ch2_brain), ch2_img.affine, _normalise(t1, brain), t1_img.affine, log
    )
    aal = mapping.transform(ch2["aal"].astype(np.float64), interpolation="nearest")
    aal = np.rint(aal).astype(np.int32)
    warped_tissue = np.rint(mapping.transform(ch2["tissue"].astype(np.float64), interpolation="nearest"))
    dice = {}
    for code, name in ((CSF, "CSF"), (GM, "GM"), (WM, "WM")):
        a, b = warped_tissue == code, tissue == code
        dice[name] = round(float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1)), 3)
    log(f"  tissue Dice, warped ch2 vs MNI152: {dice}")
    extra, head_t1 = borrow_head(ch2, mapping, brain, t1, tissue)
    return {
        "image": t1_img,
        "tissue": tissue,
        "aal": aal,
        "extra": extra,
        "head_t1": head_t1,
        "info": {
            "tissue": "argmax of MNI152 GM, WM and 1 - GM - WM probability maps",
            "registration": f"dipy ch2bet -> MNI152 T1: centre of mass, affine (dense MI, "
            f"{'/'.join(map(str, AFFINE_ITERS))} iterations), SyN (CC radius 4, "
            f"{'/'.join(map(str, SYN_ITERS))} iterations); AAL nearest neighbour",
            "tissue_dice_after_registration": dice,
            "extra_cerebral": "Colin27's extra-cerebral classes warped by the same registration (nearest), "
            "kept outside the MNI152 brain mask; head voxels left without a class take the nearest one",
        },
    }


def borrow_head(ch2: dict, mapping, brain: np.ndarray, t1: np.ndarray, tissue: np.ndarray):
    """Colin27's head on the MNI152 grid through the ch2 -> MNI152 registration: (extra-cerebral classes
    outside the MNI152 brain, uint8; the MNI152 T1 with ch2's warped head intensities outside its brain,
    scaled by the ratio of the white-matter medians, same dtype as the T1)."""
    extra = np.rint(mapping.transform(ch2["extra"].astype(np.float64), interpolation="nearest"))
    extra = extra.astype(np.uint8)
    head = np.rint(mapping.transform((ch2["extra"] > 0).astype(np.float64) + (ch2["tissue"] != BG),
                                     interpolation="nearest")) > 0
    head &= ~brain
    extra[brain] = 0
    gap = head & (extra == 0)  # outside the MNI152 brain but inside ch2's warped brain
    if gap.any() and extra.any():
        _, index = ndimage.distance_transform_edt(extra == 0, return_indices=True)
        extra[gap] = extra[tuple(i[gap] for i in index)]
    extra[~head] = 0
    ch2_t1 = np.asanyarray(ch2["image"].dataobj).astype(np.float64)
    scale = np.median(t1[tissue == WM]) / np.median(ch2_t1[ch2["tissue"] == WM])
    warped = mapping.transform(ch2_t1, interpolation="linear") * scale
    pasted = np.where(brain, t1, np.where(head, warped, 0.0))
    return extra, np.clip(np.rint(pasted), 0, 255)


# ---------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------
def class_stats(labels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(labels.ravel(), minlength=N_CLASSES)
    x, _, _ = world_coords(labels.shape, affine)
    sums = np.bincount(labels.ravel(), weights=x.ravel(), minlength=N_CLASSES)
    mean_x = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return counts, mean_x


def check_labels(name: str, labels: np.ndarray, affine: np.ndarray, log) -> list[str]:
    counts, mean_x = class_stats(labels, affine)
    problems = []
    for c in range(N_CLASSES):
        if counts[c] == 0:
            problems.append(f"class {c} {CLASS_NAMES[c]} is empty")
    for i in range(1, N_SIDE + 1):
        lc, rc = counts[i], counts[i + N_SIDE]
        if lc and rc:
            ratio = lc / rc
            if not 0.7 <= ratio <= 1.4:
                problems.append(f"{STRUCTURES[i - 1]} left/right ratio {ratio:.2f}")
            if not (mean_x[i] < 0 < mean_x[i + N_SIDE]):
                problems.append(
                    f"{STRUCTURES[i - 1]}: left mean x {mean_x[i]:.1f}, right mean x {mean_x[i + N_SIDE]:.1f}"
                )
    for p in problems:
        log(f"  WARNING {name}: {p}")
    return problems


def check_generation(name: str, generation: np.ndarray, labels: np.ndarray, log) -> list[str]:
    """Generation labels map back to the labels (v < N_CLASSES -> v, else 0) and every extra class is
    present."""
    problems = []
    mapped = np.where(generation < N_CLASSES, generation, 0)
    if not np.array_equal(mapped, labels):
        wrong = int((mapped != labels).sum())
        problems.append(f"generation labels disagree with the labels on {wrong} voxels")
    counts = np.bincount(generation.ravel(), minlength=len(GENERATION_NAMES))
    problems += [f"generation class {c} {EXTRA_NAMES[c - N_CLASSES]} is empty"
                 for c in range(N_CLASSES, len(GENERATION_NAMES)) if counts[c] == 0]
    for p in problems:
        log(f"  WARNING {name}: {p}")
    return problems


def _slice(vol: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A 2D display slice (rows top->bottom, columns left->right) from a RAS volume.

    Sagittal: anterior on the right, superior up. Coronal: subject's left on the image left (neurological
    convention), superior up. Axial: subject's left on the image left, anterior up.
    """
    index = int(np.clip(index, 0, vol.shape[axis] - 1))
    return np.take(vol, index, axis=axis).T[::-1]


QC_VIEWS = (  # (title, axis, world mm); first row: T1, second row: the same with labels, third row: labels
    ("sagittal x=0", 0, 0.0),
    ("coronal y=-18", 1, -18.0),
    ("axial z=+5", 2, 5.0),
    ("sagittal x=-25 (left)", 0, -25.0),
    ("coronal y=+5", 1, 5.0),
    ("axial z=-30", 2, -30.0),
)


def render_qc(name: str, t1: np.ndarray, labels: np.ndarray, affine: np.ndarray, path: Path,
              generation: bool = False) -> None:
    """Orthogonal slices: T1, T1 + labels (same slices), T1 + labels (three more slices), and a legend;
    ``generation``: the labels are generation labels (extra-cerebral classes included)."""
    inv = np.linalg.inv(affine)
    lut = class_colours(generation)
    names = GENERATION_NAMES if generation else CLASS_NAMES
    t1f = t1.astype(np.float64)
    hi = np.percentile(t1f[labels > 0], 99.5) if (labels > 0).any() else max(float(t1f.max()), 1.0)
    scale, pad = 2, 6
    ph = max(t1.shape[1], t1.shape[2]) * scale  # panel box (any orientation fits)
    pw = max(t1.shape[0], t1.shape[1]) * scale

    def panel(axis: int, mm: float, overlay: bool, title: str) -> Image.Image:
        point = np.zeros(3)
        point[axis] = mm
        idx = int(np.rint(inv[:3, :3] @ point + inv[:3, 3])[axis])
        g = np.clip(_slice(t1f, axis, idx) / hi, 0, 1) * 255
        rgb = np.repeat(g[..., None], 3, axis=2)
        if overlay:
            lab = _slice(labels, axis, idx)
            m = lab > 0
            rgb[m] = 0.4 * rgb[m] + 0.6 * lut[lab[m]]
        im = Image.fromarray(rgb.astype(np.uint8)).resize(
            (rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST
        )
        box = Image.new("RGB", (pw, ph))
        box.paste(im, ((pw - im.width) // 2, (ph - im.height) // 2))
        dr = ImageDraw.Draw(box)
        dr.text((4, 4), title, fill=(255, 255, 0))
        left, right = ("P", "A") if axis == 0 else ("L", "R")
        dr.text((4, ph // 2), left, fill=(255, 255, 0))
        dr.text((pw - 12, ph // 2), right, fill=(255, 255, 0))
        return box

    rows = [
        [panel(a, mm, False, t) for t, a, mm in QC_VIEWS[:3]],
        [panel(a, mm, True, t) for t, a, mm in QC_VIEWS[:3]],
        [panel(a, mm, True, t) for t, a, mm in QC_VIEWS[3:]],
    ]
    per_col = (len(names) + 1) // 3
    legend_h = 14 * per_col + 12
    width = 3 * pw + 2 * pad
    height = 20 + 3 * ph + 2 * pad + legend_h
    canvas = Image.new("RGB", (width, height))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            canvas.paste(im, (c * (pw + pad), 20 + r * (ph + pad)))
    dr = ImageDraw.Draw(canvas)
    kind = "generation labels" if generation else "labels"
    title = f"{name}: T1; T1 + {kind} (right-hemisphere colours 25% darker); slices at world RAS mm"
    dr.text((4, 4), title, fill=(255,) * 3)
    y0 = 20 + 3 * ph + 2 * pad + 8
    for c in range(1, len(names)):
        col, row = divmod(c - 1, per_col)
        xx, yy = 8 + col * (width // 3), y0 + row * 14
        dr.rectangle([xx, yy, xx + 10, yy + 10], fill=tuple(int(v) for v in lut[c]))
        dr.text((xx + 16, yy), f"{c} {names[c]}", fill=(255,) * 3)
    canvas.save(str(path), optimize=False)


README_TEMPLATE = """\
# Brain MRI segmentation dataset (23 auxiliary classes)

Generated by `{command}`.
Subjects: {subjects}.{skipped}

Layout: `images/NAME.nii.gz` (T1 on the subject's own grid and affine), `labels/NAME.nii.gz` (uint8,
0..22, same grid and affine), `classes.json` (id -> FreeSurfer-style name), `qc_NAME.png` (orthogonal
slices: T1 and colour overlay; right-hemisphere colours drawn 25 % darker). Class `i` (1-10) and `i + 10`
are a left/right pair; "Left" means x < 0 in world (RAS) coordinates.

For synthetic training and robustness tests:
- `generation/NAME.nii.gz` (uint8, same grid): the generation labels `gan-seg train --synth-share`
  draws images from: the labels, with the background inside the head split into extra-cerebral classes
  that exist only for synthesis (`generation_classes.json`; a value v < 23 is target class v, v >= 23 is
  target 0, air outside the head stays 0). `qc_generation_NAME.png` shows them.
{extra_table}
- `masks/NAME.nii.gz` (uint8): the brain mask (labels > 0).
- `heads/mni152.nii.gz` (present with the mni152 subject): a "skull present" copy of the skull-stripped
  MNI152 T1: inside its brain mask the MNI152 T1, outside Colin27's head intensities warped by the
  registration of step 3 (scaled by the ratio of the white-matter medians); on the MNI152 grid.

## Extra-cerebral generation classes (recipe)
- ch2: head mask = T1 > {head_threshold:g} x its 99.5th percentile, closed ({closing} iterations), holes
  filled in 3D and slice by slice, largest component. Head minus brain mask -> a 3-class tied-variance
  Gaussian mixture on the T1 smoothed with sigma 0.7 mm (the EM of step 2): dark / intermediate / bright.
  Dark voxels within {rim:g} mm of the brain mask -> 23 (rim: CSF, meninges, inner table), other dark ->
  24 (bone, air cavities, vitreous), intermediate -> 25 (muscle, skin, glands), bright -> 26 (fat,
  marrow, orbital fat). The names are approximations: the classes are intensity clusters.
- mni152 (skull-stripped): ch2's classes and head mask warped by the ch2 -> MNI152 registration
  (nearest neighbour; SyN's field outside the brain is its smooth extension), kept outside the MNI152
  brain mask; head voxels left without a class (ch2's warped brain outside the MNI152 brain) take the
  nearest class.

## Sources
- `ch2`: Colin27 (Holmes et al. 1998), Debian package `mricron-data`, `/usr/share/mricron/templates/`.
  Image: `ch2.nii.gz` (whole head, scalp included), 181x217x181, 1 mm, RAS. Brain mask from
  `ch2bet.nii.gz`. Atlas: AAL `aal.nii.gz` + `aal.nii.txt` (Tzourio-Mazoyer et al. 2002), drawn on this
  brain and voxel-aligned with it.
- `mni152`: MNI ICBM152 2009a nonlinear symmetric template (Fonov et al. 2009/2011), the files bundled with
  the `nilearn` PyPI package, `nilearn/datasets/data/`:
  `mni_icbm152_{{t1,gm,wm}}_tal_nlin_sym_09a_converted.nii.gz`, 197x233x189, 1 mm, RAS. The T1 is
  skull-stripped (no scalp). AAL is carried over from ch2 by registration.

## Licences (as stated in the packages)
- `mricron-data` copyright file: BSD-3-clause (Chris Rorden), no separate entry for the templates.
  Cite AAL: Tzourio-Mazoyer et al. 2002; Colin27: Holmes et al. 1998.
- nilearn marks ICBM152 2009 and AAL "License: unknown"; the MNI templates carry a permissive copyright
  notice (Fonov et al. 2009/2011).
- No FSL data (HarvardOxford / Juelich: non-commercial licence) were used.

## Recipe (gan-seg scripts/README.md, with the deviations marked)
1. Brain mask: filled `ch2bet > 0` (ch2); filled `T1 > 0.2 * max`, largest component (MNI152).
2. Tissue: ch2 -> 3-class 1D Gaussian mixture fitted by EM (numpy, on the histogram of the ch2 intensities
   inside the mask), classes split at the decision boundaries between consecutive components.
   DEVIATION: the variance is shared by the three classes; with free variances EM converges to a very
   narrow white-matter component (sd ~3.7, means 49/88/113) whose GM/WM boundary (~107) hands the
   partial-volume plateau to grey matter and visibly shrinks the white matter; the tied fit puts it at ~95,
   on the visible boundary. MNI152 -> argmax of GM, WM and 1 - GM - WM.
3. AAL: native on ch2. On MNI152: ch2bet registered to the MNI152 T1 with dipy (centre of mass -> affine,
   dense mutual information, {affine_iters} iterations at 4/2/1 mm; then SyN, cross-correlation radius 4,
   {syn_iters} iterations at 4/2/1 mm) and AAL resampled with nearest neighbour.
4. Hippocampus, amygdala, caudate, putamen, pallidum and thalamus straight from AAL minus CSF voxels (the
   pallidum looks like white matter on T1, so it only comes from the atlas).
5. Cerebellum: AAL 91-116 plus non-CSF brain voxels whose nearest AAL label (within {reach:g} mm) is
   cerebellar (distance transform with indices). Side from the AAL id; vermis split by the sign of x.
   DEVIATION: inside the brain-stem box of step 6 the extension reaches only {stem_reach:g} mm; with 15 mm
   it took the posterior pons and the medulla (their nearest AAL labels are the anterior vermis and
   lobules 3/10), with none the brain stem took the cerebellar peduncles up to the box's walls.
6. Brain stem: largest connected blob of non-AAL, non-cerebellar, non-CSF brain voxels with z < -8 mm,
   |x| <= 20 mm, -48 < y < -5 mm.
7. Lateral ventricles: CSF outside AAL, > 12 mm from the brain surface, |x| > 1.5 mm, in connected blobs of
   >= 300 voxels, side by the sign of x. DEVIATION: blobs centred within {vent_x:g} mm of the midline are
   dropped (they are the fourth ventricle and the quadrigeminal / velum interpositum cisterns). All other
   CSF -> Other-CSF (22).
8. Remaining GM -> cerebral cortex, remaining WM -> cerebral white matter; left/right from the nearest AAL
   label (odd ids are left; vermis -> sign of x).

## Caveats
- AUXILIARY, rule-based labels (QuickNAT sense), not manual segmentations. Two anatomies only: train with
  heavy augmentation (affine, elastic, bias field, gamma, noise, resolution, contrast randomisation).
- AAL structures are generous: hippocampus and caudate are about twice typical FreeSurfer volumes, and
  they keep AAL's blocky outline (white matter inside them is kept).
- Brain-stem and thalamus edges are boxy; the brain stem ends flat at z = -8 mm (the rest of the midbrain
  becomes white matter / cortex / CSF) and at the bottom of the field of view. Cerebellum = cerebellar
  cortex + cerebellar white matter (FreeSurfer splits them).
- "Other-CSF" is mostly sulcal / cisternal CSF inside the brain mask, plus the third and fourth ventricles.
  On MNI152 (an average of 152 brains) the midline and deep sulci are blurred, so 1 - GM - WM labels much
  of the medial surface as CSF.
- Grey matter outside the AAL structures becomes "cortex" by step 8: on MNI152 (whose GM map includes deep
  grey matter) this catches a rim of pulvinar behind the AAL thalamus and the tectum.
- The MNI152 labels inherit registration error (ch2 -> MNI152).

{subject_sections}
## Voxel counts per class (1 mm^3 voxels)

{table}
"""


def write_readme(out: Path, results: dict, command: str, skipped: list[str]) -> None:
    extra_rows = ["", "  | id | generation class | " + " | ".join(results) + " |",
                  "  |---:|---|" + "---:|" * len(results)]
    for c, name in enumerate(EXTRA_NAMES, start=N_CLASSES):
        cells = " | ".join(str(int(r["generation_counts"][c])) for r in results.values())
        extra_rows.append(f"  | {c} | {name} | {cells} |")
    sections = []
    for name, r in results.items():
        lines = [f"## Subject `{name}`", ""]
        lines += [f"- {k}: {v}" for k, v in r["info"].items()]
        if r["problems"]:
            lines.append(f"- CHECKS FAILED: {'; '.join(r['problems'])}")
        else:
            lines.append("- checks passed: all 23 classes present, left/right volume ratios within 0.7-1.4,")
            lines.append("  every Left-* class centred at x < 0 and every Right-* class at x > 0")
        sections.append("\n".join(lines) + "\n")
    names = list(results)
    table = ["| id | class | " + " | ".join(names) + " |", "|---:|---|" + "---:|" * len(names)]
    for c in range(N_CLASSES):
        cells = " | ".join(str(int(results[n]["counts"][c])) for n in names)
        table.append(f"| {c} | {CLASS_NAMES[c]} | {cells} |")
    text = README_TEMPLATE.format(
        command=command,
        subjects=", ".join(f"`{n}`" for n in names),
        skipped=f" Skipped: {', '.join(skipped)}." if skipped else "",
        affine_iters="/".join(map(str, AFFINE_ITERS)),
        syn_iters="/".join(map(str, SYN_ITERS)),
        reach=CEREBELLUM_REACH_MM,
        stem_reach=STEM_BOX_CEREBELLUM_REACH_MM,
        vent_x=VENTRICLE_MIN_CENTRE_ABS_X_MM,
        extra_table="\n".join(extra_rows) + "\n",
        head_threshold=HEAD_THRESHOLD,
        closing=HEAD_CLOSING_ITERS,
        rim=RIM_MM,
        subject_sections="\n".join(sections),
        table="\n".join(table),
    )
    (out / "README.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--subjects", default=",".join(SUBJECTS), help="comma-separated subset of ch2,mni152")
    p.add_argument("--no-register", action="store_true", help="skip registration (so the mni152 subject)")
    args = p.parse_args(argv)
    subjects = list(dict.fromkeys(s.strip() for s in args.subjects.split(",") if s.strip()))
    bad = [s for s in subjects if s not in SUBJECTS]
    if bad or not subjects:
        p.error(f"unknown or no subjects {bad}; choose from {SUBJECTS}")
    skipped = []
    if args.no_register and "mni152" in subjects:
        subjects.remove("mni152")
        skipped.append("mni152 (--no-register)")
    if not subjects:
        p.error("nothing to do: --no-register leaves no subject")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out = args.out_dir
    for folder in ("images", "labels", "generation", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    log("ch2: brain mask and tissue classes")
    ch2 = prepare_ch2(log)  # always needed: it is also the registration source for mni152
    prepared = {}
    if "ch2" in subjects:
        prepared["ch2"] = ch2
    if "mni152" in subjects:
        log("mni152: registering ch2 -> MNI152 (several minutes)")
        prepared["mni152"] = prepare_mni(ch2, log)

    results = {}
    for name, s in prepared.items():
        img = s["image"]
        labels = build_labels(s["tissue"], s["aal"], img.affine)
        save_like(np.asanyarray(img.dataobj), img, out / "images" / f"{name}.nii.gz", img.get_data_dtype())
        save_like(labels, img, out / "labels" / f"{name}.nii.gz", np.uint8)
        generation = generation_labels(labels, s["extra"])
        save_like(generation, img, out / "generation" / f"{name}.nii.gz", np.uint8)
        save_like((labels > 0).astype(np.uint8), img, out / "masks" / f"{name}.nii.gz", np.uint8)
        if "head_t1" in s:
            (out / "heads").mkdir(exist_ok=True)
            save_like(s["head_t1"], img, out / "heads" / f"{name}.nii.gz", img.get_data_dtype())
        problems = check_labels(name, labels, img.affine, log)
        problems += check_generation(name, generation, labels, log)
        counts, _ = class_stats(labels, img.affine)
        render_qc(name, np.asanyarray(img.dataobj), labels, img.affine, out / f"qc_{name}.png")
        render_qc(name, s.get("head_t1", np.asanyarray(img.dataobj)), generation, img.affine,
                  out / f"qc_generation_{name}.png", generation=True)
        generation_counts = np.bincount(generation.ravel(), minlength=len(GENERATION_NAMES))
        results[name] = {"counts": counts, "problems": problems, "info": s["info"],
                         "generation_counts": generation_counts}
        log(f"{name}: written")

    classes = {str(i): n for i, n in enumerate(CLASS_NAMES)}
    (out / "classes.json").write_text(json.dumps(classes, indent=2) + "\n")
    generation_classes = {str(i): n for i, n in enumerate(GENERATION_NAMES)}
    (out / "generation_classes.json").write_text(json.dumps(generation_classes, indent=2) + "\n")
    arg_text = " ".join(argv if argv is not None else sys.argv[1:])
    write_readme(out, results, f"python scripts/make_brain_dataset.py {arg_text}", skipped)

    width = max(len(n) for n in CLASS_NAMES)
    log("\n" + f"{'id':>3} {'class':<{width}} " + " ".join(f"{n:>9}" for n in results))
    for c in range(N_CLASSES):
        cells = " ".join(f"{int(results[n]['counts'][c]):>9}" for n in results)
        log(f"{c:>3} {CLASS_NAMES[c]:<{width}} {cells}")
    log(f"done in {time.time() - t_start:.0f} s -> {out}")
    return 1 if any(r["problems"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
