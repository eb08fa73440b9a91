"""Label colours, FreeSurfer LUTs, QC pictures and QC scores (gan_seg.seg.qc)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from gan_seg.seg.qc import (
    QC_THRESHOLD,
    label_colors,
    low_score_warning,
    lut_path_for,
    qc_scores,
    render_qc,
    write_lut,
)

NAMES = ["Background", "Left-Hippocampus", "Right-Thalamus", "Brain-Stem", "Left-Amygdala"]
ZOOMS = (1.0, 1.2, 2.0)
TEMPLATES = Path("/usr/share/mricron/templates")


def read_lut(path):
    rows = [line.split() for line in Path(path).read_text().splitlines() if not line.startswith("#")]
    assert all(len(row) == 6 for row in rows)
    return [(int(i), name, (int(r), int(g), int(b)), int(a)) for i, name, r, g, b, a in rows]


def phantom(shape=(40, 48, 36)):
    """A noisy head-like image with three ellipsoid labels (1..3) on an anisotropic RAS grid."""
    grid = np.stack(np.meshgrid(*[np.arange(n) * z for n, z in zip(shape, ZOOMS, strict=True)],
                                indexing="ij"), axis=-1)

    def inside(centre, radii):
        return (((grid - centre) / radii) ** 2).sum(axis=-1) <= 1.0

    labels = np.zeros(shape, np.int16)
    labels[inside((14, 30, 40), (6, 10, 14))] = 1
    labels[inside((26, 24, 36), (5, 8, 8))] = 2
    labels[inside((20, 40, 20), (4, 6, 10))] = 3
    rng = np.random.default_rng(0)
    image = inside((20, 28.8, 36), (18, 26, 32)) * (100.0 + 20 * labels) + rng.normal(0, 5, shape)
    affine = np.diag(ZOOMS + (1.0,))
    affine[:3, 3] = (-20.0, -28.0, -36.0)
    return image.astype(np.float32), labels, affine


def reorient_by_hand(arrays, affine):
    """Flip all three axes (RAS -> LPI), then store the axes in the order (k, i, j); affine to match."""
    shape = arrays[0].shape
    flip = np.diag([-1.0, -1.0, -1.0, 1.0])
    flip[:3, 3] = np.array(shape) - 1
    order = (2, 0, 1)
    permute = np.eye(4)
    permute[:3, :3] = np.eye(3)[:, order]
    return [np.flip(a).transpose(order) for a in arrays], affine @ flip @ permute


def pixels(path):
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        return np.asarray(png)


def has_colour(picture, rgb):
    return bool((picture == np.array(rgb, np.uint8)).all(axis=-1).any())


def test_freesurfer_colours_for_standard_names():
    expected = {
        "Left-Cerebral-White-Matter": (245, 245, 245), "Right-Cerebral-White-Matter": (245, 245, 245),
        "Left-Cerebral-Cortex": (205, 62, 78), "right cerebral cortex": (205, 62, 78),
        "Left-Lateral-Ventricle": (120, 18, 134), "Left-Thalamus": (0, 118, 14),
        "Right-Thalamus-Proper": (0, 118, 14), "Left-Caudate": (122, 186, 220), "Putamen_R": (236, 13, 176),
        "Left-Pallidum": (12, 48, 255), "Right-Pallidum": (13, 48, 255), "LEFT-HIPPOCAMPUS": (220, 216, 20),
        "Right-Amygdala": (103, 255, 255), "Left-Cerebellum-Cortex": (230, 148, 34),
        "Cerebellum": (230, 148, 34), "Brain-Stem": (119, 159, 176), "Brainstem": (119, 159, 176),
        "brain stem": (119, 159, 176), "CSF": (60, 60, 60), "Other-CSF": (60, 60, 60),
        "Background": (0, 0, 0), "Unknown": (0, 0, 0),
    }
    colours = label_colors(list(expected))
    assert colours.dtype == np.uint8 and colours.shape == (len(expected), 3)
    assert {name: tuple(int(c) for c in rgb) for name, rgb in zip(expected, colours, strict=True)} == expected


def test_other_names_get_a_fixed_distinct_colour():
    names = [f"Region_{i}" for i in range(40)]
    colours = label_colors(names)
    assert np.array_equal(label_colors(names[::-1])[::-1], colours)  # by name, not by position
    assert np.array_equal(label_colors(["my region"]), label_colors(["My-Region"]))
    assert len({tuple(c) for c in colours}) == len(names)
    assert colours.max(axis=1).min() >= 180  # bright enough to see on a dark scan
    assert label_colors([]).shape == (0, 3)


def test_lut_round_trips(tmp_path):
    names = ["Background", "Left-Hippocampus", "my region", "Brainstem"]
    path = tmp_path / "seg_LUT.txt"
    write_lut(path, names)
    assert path.read_text().startswith("#")
    rows = read_lut(path)
    colours = label_colors(names)
    assert [row[0] for row in rows] == [0, 1, 2, 3]
    assert [row[1] for row in rows] == ["Background", "Left-Hippocampus", "my-region", "Brainstem"]
    assert [row[2] for row in rows] == [tuple(int(c) for c in rgb) for rgb in colours]
    assert rows[3][2] == (119, 159, 176) and {row[3] for row in rows} == {0}
    assert [p.name for p in tmp_path.iterdir()] == ["seg_LUT.txt"]  # no temporary file left


@pytest.mark.parametrize("output, lut", [
    ("out/sub01_seg.nii.gz", "out/sub01_seg_LUT.txt"), ("sub01_seg.nii", "sub01_seg_LUT.txt"),
    ("a.b/seg.mgz", "a.b/seg_LUT.txt"), ("SEG.NII.GZ", "SEG_LUT.txt"),
])
def test_lut_path_for(output, lut):
    assert lut_path_for(output) == Path(lut)


def test_qc_picture_is_the_same_in_any_orientation(tmp_path):
    image, labels, affine = phantom()
    (image2, labels2), affine2 = reorient_by_hand([image, labels], affine)
    assert nib.aff2axcodes(affine2) == ("I", "L", "P")
    first = render_qc(image, labels, affine, NAMES, tmp_path / "ras.png", title="phantom")
    second = render_qc(image2, labels2, affine2, NAMES, tmp_path / "ilp.png", title="phantom")
    assert np.array_equal(pixels(tmp_path / "ras.png"), pixels(tmp_path / "ilp.png"))
    assert first["classes"] == second["classes"] == [1, 2, 3]
    np.testing.assert_allclose(affine @ [*first["slices"], 1], affine2 @ [*second["slices"], 1])
    assert first["slices"] == tuple(np.rint(np.argwhere(labels).mean(axis=0)).astype(int))  # centre of mass

    chosen = (10, 30, 20)
    render_qc(image, labels, affine, NAMES, tmp_path / "a.png", slices=chosen)
    voxel = np.rint(np.linalg.solve(affine2, affine @ [*chosen, 1])[:3]).astype(int)
    result = render_qc(image2, labels2, affine2, NAMES, tmp_path / "b.png", slices=voxel)
    assert result["slices"] == tuple(voxel)
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))


def test_qc_legend_lists_only_present_classes(tmp_path):
    image, labels, affine = phantom()
    picture_path = tmp_path / "qc.png"
    render_qc(image, labels, affine, NAMES, picture_path, size=128)
    picture = pixels(picture_path)
    colours = label_colors(NAMES)
    assert all(has_colour(picture, colours[i]) for i in (1, 2, 3))  # the legend swatches
    assert not has_colour(picture, colours[4])
    assert 3 * 128 <= picture.shape[1] <= 3 * 128 + 64 and picture.shape[0] > 128


def test_qc_panels_keep_the_true_aspect_ratio(tmp_path):
    image, _, affine = phantom()
    labels = np.ones(image.shape, np.int8)  # each panel fills with one colour at alpha 1
    size, gap = 200, 8
    render_qc(image, labels, affine, NAMES[:2], tmp_path / "qc.png", alpha=1.0, size=size)
    picture = pixels(tmp_path / "qc.png")
    boxes = []
    for n in range(3):
        x0 = gap + n * (size + gap)
        ys, xs = np.nonzero((picture[gap:gap + size, x0:x0 + size] == label_colors(NAMES[1:2])[0]).all(-1))
        boxes.append((xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))
    scale = size / 72.0  # the longest side is z: 36 voxels of 2 mm
    x, y = round(40 * scale), round(57.6 * scale)  # 40 voxels of 1 mm, 48 of 1.2 mm
    assert boxes == [(y, size), (x, size), (x, y)]


def test_qc_without_labels_and_with_bad_input(tmp_path):
    image, labels, affine = phantom()
    result = render_qc(image, np.zeros_like(labels), affine, NAMES, tmp_path / "empty.png", size=64)
    assert result == {"slices": (20, 24, 18), "classes": []}
    with pytest.raises(ValueError, match="class names"):
        render_qc(image, labels, affine, NAMES[:3], tmp_path / "x.png")
    with pytest.raises(ValueError, match="shape"):
        render_qc(image[:-1], labels, affine, NAMES, tmp_path / "x.png")
    with pytest.raises(ValueError, match="slices"):
        render_qc(image, labels, affine, NAMES, tmp_path / "x.png", slices=(40, 0, 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png"]


def test_qc_legend_is_capped(tmp_path):
    labels = np.arange(24 * 24 * 24).reshape(24, 24, 24) % 400
    names = ["Background"] + [f"Region_{i}" for i in range(1, 400)]
    size = 96
    result = render_qc(np.random.default_rng(1).random(labels.shape), labels, np.eye(4), names,
                       tmp_path / "many.png", size=size)
    assert len(result["classes"]) == 399
    assert pixels(tmp_path / "many.png").shape[0] <= 3 * size + 40  # 2 * size of legend at most


@pytest.mark.skipif(not (TEMPLATES / "aal.nii.gz").exists() or not (TEMPLATES / "ch2.nii.gz").exists(),
                    reason="MRIcron templates (ch2, aal) not installed")
def test_qc_of_a_real_brain(tmp_path):
    scan, atlas = nib.load(TEMPLATES / "ch2.nii.gz"), nib.load(TEMPLATES / "aal.nii.gz")
    names = ["Background"] + [line.split()[1] for line in (TEMPLATES / "aal.nii.txt").read_text().splitlines()
                              if line.strip()]
    result = render_qc(np.asarray(scan.dataobj), np.asarray(atlas.dataobj), scan.affine, names,
                       tmp_path / "ch2_aal.png", title="ch2 + AAL")
    assert result["classes"] == list(range(1, 117))
    picture = pixels(tmp_path / "ch2_aal.png")
    assert picture.shape[1] == 3 * 256 + 32 and picture.shape[0] > 256 + 116 // 5 * 17
    colours = label_colors(names)
    assert all(has_colour(picture, colours[i]) for i in result["classes"])


def test_qc_score_is_the_mean_dice_of_each_view_with_the_aggregate():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:6, 2:6, 2:6] = 1  # 64 voxels
    labels[6:8, 2:6, 2:6] = 2  # 32 voxels
    same = labels.copy()
    shifted = np.zeros_like(labels)
    shifted[3:7, 2:6, 2:6] = 1  # overlaps class 1 on 48 of 64 voxels: Dice 0.75
    scores = qc_scores(labels, {"axial": same, "coronal": shifted}, 4)
    assert np.isnan(scores[0]) and np.isnan(scores[3])  # background; a class absent from the labels
    assert scores[1] == pytest.approx((1.0 + 0.75) / 2)
    assert scores[2] == pytest.approx((1.0 + 0.0) / 2)  # the shifted view lost class 2
    assert np.isnan(qc_scores(labels, {"axial": same}, 4)).all()  # one view: nothing to compare


def test_low_score_warning_names_the_structures_below_the_threshold():
    scores = np.array([np.nan, 0.9, 0.31, np.nan, QC_THRESHOLD - 0.01])
    line = low_score_warning(scores, NAMES)
    assert "\n" not in line and line.startswith("warning: QC score below 0.6")
    assert line.index("Right-Thalamus 0.31") < line.index("Left-Amygdala 0.59")  # the lowest first
    assert "Left-Hippocampus" not in line and "Brain-Stem" not in line
    assert low_score_warning(np.array([np.nan, 0.9, 0.8, np.nan, 0.7]), NAMES) is None
