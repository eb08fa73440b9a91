"""Benchmark: brain segmentation quality on a held-out brain and on hard copies of it; tables + JSON.

    python bench/seg_quality.py --model quicknat-brain --data data/brains --subject mni152 --json q.json
    python bench/seg_quality.py --model runs/qn-ch2 --subject mni152 --deepbet /opt/deepbet/bin/deepbet-cli

One protocol for every candidate model:

1. Held-out anatomy: the subject's T1 (``DATA/images/SUBJECT.nii.gz``) is segmented with all views and with
   each view alone; Dice of the 22 structures against ``DATA/labels/SUBJECT.nii.gz``. A sagittal network
   cannot tell the hemispheres apart, so the sagittal-only row scores left and right together.
2. Robustness: copies of the held-out scan (head tilted 20 degrees, shrunk 0.85 / enlarged 1.15, 1x1x3 and
   1x1x5 mm slices, a strong bias field, skull on / off, inverted contrast, 2 mm isotropic), each scored
   against the labels carried onto the copy's own grid by the same transform (nearest neighbour), and the
   drop from the clean input.
3. Geometry: the scan stored in four orders (RAS, LPS, LIA, ASL) must give identical labels; a 1.5 mm copy
   is compared with the 1 mm result (share of its foreground that agrees).
4. Brain mask: gan-seg's (every non-background class) against the reference (every non-background voxel
   of the label map), beside deepbet's (``--deepbet CLI``: the peer's command in its own environment).

The skull-on copy needs ``DATA/heads/SUBJECT.nii.gz`` (a skull-stripped subject with another head pasted
around its brain) and the skull-off copy ``DATA/masks/SUBJECT.nii.gz`` (its brain mask), both written by
scripts/make_brain_dataset.py; without them the row is skipped. Prints Markdown tables; ``--json``
writes every number.
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from nibabel import orientations as ornts  # noqa: E402
from scipy import ndimage  # noqa: E402

from gan_seg.io.presets import resolve_run_dir  # noqa: E402
from gan_seg.seg.evaluation import dice_scores  # noqa: E402
from gan_seg.seg.inference import Segmenter  # noqa: E402
from gan_seg.seg.scans import ScanOutputs, segment_scan  # noqa: E402
from gan_seg.seg.views import lr_merge  # noqa: E402
from gan_seg.seg.volumes import read_classes  # noqa: E402

ORDERS = ("RAS", "LPS", "LIA", "ASL")


# -- copies of the held-out scan: (image data, labels, affine) on a new grid -------------------------
def _about_centre(matrix, shape):
    """An output->input voxel map ``(matrix, offset)`` that applies ``matrix`` about the volume centre."""
    centre = (np.array(shape) - 1) / 2
    return matrix, centre - matrix @ centre


def _transform(image, labels, matrix):
    """Image (trilinear) and labels (nearest) moved by the voxel map ``matrix`` about the centre."""
    linear, offset = _about_centre(matrix, image.shape)
    moved = ndimage.affine_transform(image, linear, offset, order=1, mode="constant")
    moved_labels = ndimage.affine_transform(labels, linear, offset, order=0, mode="constant")
    return moved.astype(np.float32), moved_labels.astype(np.uint8)


def tilted(image, labels, affine, degrees=20.0):
    """The head turned ``degrees`` about the left-right axis (a nod), on the same grid."""
    angle = np.deg2rad(degrees)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    return (*_transform(image, labels, rotation), affine)


def scaled(image, labels, affine, factor):
    """The head ``factor`` times its size, on the same grid."""
    return (*_transform(image, labels, np.eye(3) / factor), affine)


def resliced(image, labels, affine, spacing):
    """An acquisition with voxels ``spacing`` (mm per axis): blurred to the slice profile, resampled;
    labels at the new voxel centres by nearest neighbour."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    step = np.asarray(spacing, float) / zooms
    blurred = ndimage.gaussian_filter(image, sigma=np.where(step > 1, step / 2.355, 0))
    shape = tuple(int(n) for n in np.floor((np.array(image.shape) - 1) / step) + 1)
    matrix = np.diag(step)
    small = ndimage.affine_transform(blurred, matrix, output_shape=shape, order=1)
    small_labels = ndimage.affine_transform(labels, matrix, output_shape=shape, order=0)
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] @ matrix
    return small.astype(np.float32), small_labels.astype(np.uint8), new_affine


def biased(image, labels, affine, strength=0.5, seed=0):
    """A strong smooth multiplicative bias field: exp(N(0, strength)) on a 4x4x4 grid, interpolated."""
    coarse = np.random.default_rng(seed).normal(0.0, strength, (4, 4, 4))
    field = ndimage.zoom(coarse, np.array(image.shape) / 4, order=3)[tuple(slice(0, n) for n in image.shape)]
    return (image * np.exp(field)).astype(np.float32), labels, affine


def inverted(image, labels, affine):
    """The head through a decreasing intensity curve (bright <-> dark); the air outside stays dark."""
    head = ndimage.binary_fill_holes(image > 0.05 * np.percentile(image, 99.5))
    top = np.percentile(image[head], 99.5)
    return np.where(head, np.clip(top - image, 0, None) + 0.02 * top, 0.0).astype(np.float32), labels, affine


def stored_as(image, labels, affine, codes):
    """The same scan stored with axis codes ``codes`` (flipped / permuted arrays, adjusted affine)."""
    ornt = ornts.ornt_transform(ornts.io_orientation(affine), ornts.axcodes2ornt(codes))
    return (ornts.apply_orientation(image, ornt), ornts.apply_orientation(labels, ornt),
            affine @ ornts.inv_ornt_aff(ornt, image.shape))


# -- scoring ------------------------------------------------------------------------------------------
@functools.cache
def segmenter(model, views=None):
    """The model's networks (all views or ``views``), loaded once. Sagittal alone is allowed here: its
    hemispheres are arbitrary, and it is scored with left and right merged."""
    return Segmenter(resolve_run_dir(model), views, sides=False)


def segment(model, image, affine, tmp, name, views=None):
    """gan-seg's labels for ``image`` (written to ``tmp`` first), with all or some views."""
    source, out = tmp / f"{name}.nii.gz", tmp / f"{name}_seg.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), source)
    out.unlink(missing_ok=True)
    segment_scan(segmenter(model, views), source, ScanOutputs(out), progress=False)
    return np.asarray(nib.load(out).dataobj).astype(np.int64)


def structure_dice(pred, truth, names, merge=False):
    """Dice per structure (background left out); ``merge`` scores left and right classes together."""
    if merge:
        names, mapping = lr_merge(names)
        pred, truth = mapping[pred], mapping[truth]
    dice = dice_scores(pred, truth, len(names))
    return {name: (None if np.isnan(d) else round(float(d), 4)) for name, d in zip(names[1:], dice[1:],
                                                                                     strict=True)}


def mean(scores):
    values = [v for v in scores.values() if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def mask_dice(a, b):
    a, b = a > 0, b > 0
    return round(float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)), 4)


def deepbet_mask(cli, image, affine, tmp, name):
    """deepbet's brain mask of ``image`` (its own command, in its own environment), or None."""
    source, brain, mask = (tmp / f"{name}_{part}.nii.gz" for part in ("in", "brain", "mask"))
    nib.save(nib.Nifti1Image(image, affine), source)
    done = subprocess.run([cli, "-i", str(source), "-o", str(brain), "-m", str(mask)], capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0 or not mask.is_file():
        print(f"deepbet failed on {name}: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return np.asarray(nib.load(mask).dataobj)


def robustness_copies(image, labels, affine, data, subject):
    """``{name: (image, labels, affine)}`` of the robustness rows (the clean scan first)."""
    copies = {"clean": (image, labels, affine)}
    copies["tilt 20 deg"] = tilted(image, labels, affine)
    copies["scale 0.85"] = scaled(image, labels, affine, 0.85)
    copies["scale 1.15"] = scaled(image, labels, affine, 1.15)
    copies["1x1x3 mm"] = resliced(image, labels, affine, (1, 1, 3))
    copies["1x1x5 mm"] = resliced(image, labels, affine, (1, 1, 5))
    copies["strong bias"] = biased(image, labels, affine)
    brain_mask = data / "masks" / f"{subject}.nii.gz"
    head = data / "heads" / f"{subject}.nii.gz"
    if head.is_file():
        copies["skull on"] = (nib.load(head).get_fdata(dtype=np.float32), labels, affine)
    if brain_mask.is_file():
        inside = np.asarray(nib.load(brain_mask).dataobj) > 0
        copies["skull off"] = (np.where(inside, image, 0).astype(np.float32), labels, affine)
    copies["inverted contrast"] = inverted(image, labels, affine)
    copies["2 mm"] = resliced(image, labels, affine, (2, 2, 2))
    return copies


def table(rows, columns):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="quicknat-brain", help="preset name or segmentation run folder")
    parser.add_argument("--data", default="data/brains", help="data set (scripts/make_brain_dataset.py)")
    parser.add_argument("--subject", default="mni152", help="the held-out subject")
    parser.add_argument("--deepbet", help="deepbet's command (deepbet-cli) in its own environment")
    parser.add_argument("--json", help="write every number here")
    args = parser.parse_args()
    data = Path(args.data)
    img = nib.load(data / "images" / f"{args.subject}.nii.gz")
    image, affine = img.get_fdata(dtype=np.float32), img.affine
    labels = np.asarray(nib.load(data / "labels" / f"{args.subject}.nii.gz").dataobj).astype(np.uint8)
    names = read_classes(data / "classes.json")
    result = {"model": args.model, "subject": args.subject, "structures": names[1:]}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. held-out anatomy: all views and each view alone
        held = {"3 views": structure_dice(segment(args.model, image, affine, tmp, "all"), labels, names)}
        for view in ("axial", "coronal", "sagittal"):
            pred = segment(args.model, image, affine, tmp, view, views=view)
            held[view] = structure_dice(pred, labels, names, merge=view == "sagittal")
        result["held_out"] = {row: {"mean": mean(scores), "dice": scores} for row, scores in held.items()}
        # 2. robustness + 4. brain masks
        robust = {}
        for name, (copy, truth, copy_affine) in robustness_copies(image, labels, affine, data,
                                                                   args.subject).items():
            pred = segment(args.model, copy, copy_affine, tmp, name.replace(" ", "_"))
            scores = structure_dice(pred, truth, names)
            row = {"mean": mean(scores), "dice": scores, "mask_dice": mask_dice(pred, truth)}
            if args.deepbet:
                peer = deepbet_mask(args.deepbet, copy, copy_affine, tmp, name.replace(" ", "_"))
                row["deepbet_mask_dice"] = None if peer is None else mask_dice(peer, truth)
            robust[name] = row
        clean = robust["clean"]["mean"]
        for row in robust.values():
            row["drop"] = None if row["mean"] is None else round(clean - row["mean"], 4)
        result["robustness"] = robust
        # 3. geometry
        reference = segment(args.model, image, affine, tmp, "reference")
        identical = {}
        for codes in ORDERS:
            copy, _, copy_affine = stored_as(image, labels, affine, codes)
            pred = segment(args.model, copy, copy_affine, tmp, codes)
            identical[codes] = bool(np.array_equal(stored_as(pred, pred, copy_affine, "RAS")[0], reference))
        result["storage_orders_identical"] = identical
        coarse, _, coarse_affine = resliced(image, labels, affine, (1.5, 1.5, 1.5))
        coarse_pred = segment(args.model, coarse, coarse_affine, tmp, "coarse")
        back = ndimage.affine_transform(coarse_pred, np.linalg.inv(coarse_affine) @ affine,
                                        output_shape=reference.shape, order=0)
        foreground = reference > 0
        result["agreement_1.5mm"] = round(float((back[foreground] == reference[foreground]).mean()), 4)
    result["seconds"] = round(time.perf_counter() - start, 1)

    print(f"## {args.model} on held-out {args.subject}\n")
    held_rows = [[row, r["mean"]] + [r["dice"].get(s) for s in names[1:]]
                 for row, r in result["held_out"].items()]
    print(table(held_rows, ["views", "mean", *names[1:]]))
    peer = ["deepbet mask Dice"] if args.deepbet else []
    robust_rows = [[name, r["mean"], r["drop"], r["mask_dice"]] + [r.get("deepbet_mask_dice")] * len(peer)
                   for name, r in robust.items()]
    print("\n" + table(robust_rows, ["copy", "mean Dice", "drop", "mask Dice", *peer]))
    print(f"\nstorage orders identical: {identical}; the 1.5 mm copy agrees on "
          f"{result['agreement_1.5mm']:.1%} of the 1 mm foreground; {result['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
