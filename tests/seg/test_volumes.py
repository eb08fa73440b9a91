"""Tests of gan_seg.seg.volumes: checked loading, writing on a reference grid, data set listing."""

import gzip
import io
import json
import os
import struct
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from gan_seg.errors import InputError
from gan_seg.seg import volumes
from gan_seg.seg.volumes import (
    check_labels,
    check_masked_output,
    list_dataset,
    load_volume,
    save_like,
    save_masked,
    voxel_sizes,
)

SHAPE = (12, 14, 10)


def write(path, data=None, affine=None, kind=nib.Nifti1Image):
    """Save ``data`` (default: a small uint8 ramp) with ``affine`` (default: 1 mm RAS); returns the path."""
    data = np.arange(np.prod(SHAPE), dtype=np.uint8).reshape(SHAPE) if data is None else data
    nib.save(kind(data, np.eye(4) if affine is None else affine), path)
    return path


def test_load_volume_gives_float32_and_keeps_geometry(tmp_path):
    affine = np.diag([1.2, 1.0, 0.9, 1.0])
    affine[:3, 3] = [-5, 7, 3]
    img = load_volume(write(tmp_path / "scan.nii.gz", affine=affine))
    assert img.shape == SHAPE and isinstance(img, nib.Nifti1Image)
    assert img.get_fdata(dtype=np.float32).dtype == np.float32
    np.testing.assert_allclose(img.affine, affine)
    assert img.get_fdata(dtype=np.float32)[3, 2, 1] == (3 * 140 + 2 * 10 + 1) % 256


def test_single_frame_4d_is_squeezed(tmp_path):
    data = np.random.default_rng(0).random(SHAPE + (1,)).astype(np.float32)
    img = load_volume(write(tmp_path / "one_frame.nii", data))
    assert img.shape == SHAPE
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), data[..., 0])


def test_mgz_round_trip(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -12, -8]
    data = np.random.default_rng(1).random(SHAPE).astype(np.float32)
    img = load_volume(write(tmp_path / "scan.mgz", data, affine, kind=nib.MGHImage))
    assert isinstance(img, nib.MGHImage)
    save_like(img.get_fdata(dtype=np.float32) * 2, img, tmp_path / "out.mgz")
    back = load_volume(tmp_path / "out.mgz")
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_allclose(back.get_fdata(dtype=np.float32), data * 2, rtol=1e-6)
    nifti = nib.load(save_like(np.ones(SHAPE, np.int16), img, tmp_path / "out.nii.gz"))
    assert isinstance(nifti, nib.Nifti1Image) and nifti.get_data_dtype() == np.int16
    np.testing.assert_allclose(nifti.affine, affine)


def _truncated(path):
    write(path, np.random.default_rng(0).random((30, 30, 30)).astype(np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])


def _singular(path):
    img = nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4))
    img.set_sform(np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), code=2)
    img.set_qform(None, code=0)
    nib.save(img, path)


def _with_nan(path):
    data = np.ones(SHAPE, np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    write(path, data)


def _rewrite(path, edit, data=None, kind=nib.Nifti1Image):
    """Save a small scan as ``kind``, then replace its bytes with ``edit(bytes)``."""
    write(path, np.ones(SHAPE, np.float32) if data is None else data, kind=kind)
    path.write_bytes(edit(path.read_bytes()))


def _header_only(path, shape, dtype=np.int16, kind=nib.Nifti1Header, gz=False):
    """A header declaring ``shape`` followed by 1 kB: far less data than it declares."""
    header = kind()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    buffer = io.BytesIO()
    header.write_to(buffer)
    buffer.write(bytes(4 + 1000))
    path.write_bytes(gzip.compress(buffer.getvalue()) if gz else buffer.getvalue())


def _damaged_deflate(raw):
    """Random bytes in the middle of the compressed stream (the gzip checksum catches it)."""
    raw = bytearray(raw)
    raw[len(raw) // 2:len(raw) // 2 + 64] = np.random.default_rng(1).integers(0, 256, 64, np.uint8).tobytes()
    return bytes(raw)


def _negative_dim(raw):
    raw = bytearray(raw)
    raw[42:44] = struct.pack("<h", -5)  # dim[1] of the NIfTI-1 header
    return bytes(raw)


def _near_singular(path):
    affine = np.array([[1.0, 1, 0, 0], [1, 1 + 1e-6, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    write(path, affine=affine)


BAD_FILES = {
    "missing.nii.gz": (lambda p: None, "no such file"),
    "random.nii.gz": (lambda p: p.write_bytes(os.urandom(3000)), "not a valid NIfTI"),
    "truncated.nii.gz": (_truncated, "damaged or truncated"),
    "truncated.nii": (_truncated, "damaged or truncated"),
    "text.nii": (lambda p: p.write_text("not an image\n" * 40), "not a valid NIfTI"),
    "scan.txt": (lambda p: p.write_text("x"), "not a NIfTI or MGZ file"),
    "frames.nii.gz": (lambda p: write(p, np.ones(SHAPE + (3,), np.float32)), "3 frames"),
    "flat.nii.gz": (lambda p: write(p, np.ones((12, 14), np.float32)), "not 3D (shape 12x14)"),
    "slice.nii.gz": (lambda p: write(p, np.ones((12, 14, 1), np.float32)), "a single slice"),
    "nan.nii.gz": (_with_nan, "2 non-finite voxels"),
    "empty.nii.gz": (lambda p: write(p, np.ones((0, 14, 10), np.float32)), "empty (shape 0x14x10)"),
    "singular.nii.gz": (_singular, "degenerate affine"),
    "tiny_voxels.nii.gz": (lambda p: write(p, affine=np.diag([0.01, 1, 1, 1])), "absurd voxel size"),
    "huge_fov.nii.gz": (lambda p: write(p, np.ones((260, 4, 4), np.uint8), np.diag([2.0, 1, 1, 1])),
                        "field of view 520x4x4 mm"),
    "too_many.nii.gz": (lambda p: write(p, np.ones((1100, 2, 2), np.uint8), np.diag([0.1, 1, 1, 1])),
                        "at most 1024 voxels per axis"),
    "nifti2_truncated.nii": (lambda p: _rewrite(p, lambda raw: raw[:700], kind=nib.Nifti2Image),
                             "damaged or truncated (the header declares 7,264 bytes, the file holds 700)"),
    "nifti2_garbage.nii": (lambda p: _rewrite(p, lambda raw: raw[:4] + os.urandom(300) + raw[304:],
                                              kind=nib.Nifti2Image), "not a valid NIfTI"),
    "truncated.mgz": (lambda p: _rewrite(p, lambda raw: raw[:len(raw) // 2], kind=nib.MGHImage),
                      "damaged or truncated"),
    "random.mgz": (lambda p: p.write_bytes(gzip.compress(os.urandom(4000))), "not a valid NIfTI-1/2 or MGZ"),
    "not_gzip.mgz": (lambda p: p.write_bytes(os.urandom(4000)), "not a valid NIfTI-1/2 or MGZ"),
    "header_only.mgz": (lambda p: _rewrite(p, lambda raw: gzip.compress(gzip.decompress(raw)[:284]),
                                           kind=nib.MGHImage), "the header declares 7,004 bytes"),
    "damaged_inside.nii.gz": (lambda p: _rewrite(p, _damaged_deflate, np.random.default_rng(0).random(SHAPE)),
                              "damaged or truncated"),
    "declares_more.nii": (lambda p: _header_only(p, (100, 100, 100)),
                          "the header declares 2,000,352 bytes, the file holds 1,356"),
    "declares_more.nii.gz": (lambda p: _header_only(p, (100, 100, 100), gz=True),
                             "the header declares 2,000,352 bytes, the file holds 1,356"),
    "nifti2_declares_more.nii": (lambda p: _header_only(p, (100, 100, 100), kind=nib.Nifti2Header),
                                 "the header declares 2,000,544 bytes"),
    "int_overflow.nii": (lambda p: _header_only(p, (32767, 32767, 32767), np.float64), "too large"),
    "nifti2_int_overflow.nii": (lambda p: _header_only(p, (2**40,) * 3, np.float64, nib.Nifti2Header),
                                "too large"),
    "negative_dim.nii": (lambda p: _rewrite(p, _negative_dim), "negative dimensions in the header"),
    "five_d.nii.gz": (lambda p: write(p, np.ones(SHAPE + (1, 2), np.float32)), "2 frames"),
    "near_singular.nii.gz": (_near_singular, "degenerate affine"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_load_volume_refuses_bad_files(tmp_path, name):
    make, expected = BAD_FILES[name]
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError) as info:
        load_volume(path)
    message = str(info.value)
    assert expected in message and message.startswith(f"{path}: ") and "\n" not in message


def test_a_header_declaring_more_than_the_file_holds_allocates_nothing(tmp_path):
    _header_only(tmp_path / "big.nii.gz", (400, 400, 400), gz=True)  # 128 MB declared, 1 kB held
    tracemalloc.start()
    with pytest.raises(InputError, match="the header declares 128,000,352 bytes"):
        load_volume(tmp_path / "big.nii.gz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8e6, peak


def _oblique():
    angle = np.deg2rad(20)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return affine


def _scaled(path):
    img = nib.Nifti1Image(np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 100, np.eye(4))
    img.header.set_slope_inter(2.0, 10.0)
    nib.save(img, path)


def _int16_extremes(path):
    data = np.zeros(SHAPE, np.int16)
    data[0], data[1] = 32767, -32768
    write(path, data)


RAMP_321 = (3 * 140 + 2 * 10 + 1) % 256  # voxel (3, 2, 1) of write()'s uint8 ramp
UNUSUAL_BUT_VALID = {  # name: (make, check of the float32 voxels read)
    "nifti2.nii.gz": (lambda p: write(p, kind=nib.Nifti2Image), lambda v: v[3, 2, 1] == RAMP_321),
    "single_frame_5d.nii.gz": (lambda p: write(p, np.ones(SHAPE + (1, 1), np.float32)),
                               lambda v: v.min() == 1),
    "scaled.nii.gz": (_scaled, lambda v: v[0, 0, 0] == 10 and v[0, 0, 1] == 12),  # slope 2, inter 10 applied
    "int16_extremes.nii.gz": (_int16_extremes, lambda v: v.max() == 32767 and v.min() == -32768),
    "thick_slices.nii.gz": (lambda p: write(p, affine=np.diag([0.5, 0.5, 3, 1])), lambda v: v.shape == SHAPE),
    "oblique.nii.gz": (lambda p: write(p, affine=_oblique()), lambda v: v.shape == SHAPE),
    "scan.mgz": (lambda p: write(p, kind=nib.MGHImage), lambda v: v[3, 2, 1] == RAMP_321),
}


@pytest.mark.parametrize("name", UNUSUAL_BUT_VALID)
def test_unusual_but_valid_scans_load(tmp_path, name):
    make, check = UNUSUAL_BUT_VALID[name]
    make(tmp_path / name)
    voxels = load_volume(tmp_path / name).get_fdata(dtype=np.float32)
    assert voxels.ndim == 3 and check(voxels)


def test_load_volume_reports_all_problems_at_once(tmp_path):
    data = np.ones((4, 4, 4, 3), np.float32)
    data[0, 0, 0, 0] = np.nan
    path = write(tmp_path / "scan.nii.gz", data, np.diag([30.0, 1, 1, 1]))
    with pytest.raises(InputError) as info:
        load_volume(path)
    message = str(info.value)
    for part in ("not 3D (shape 4x4x4x3, 3 frames)", "absurd voxel size 30x1x1 mm", "1 non-finite voxels"):
        assert part in message
    assert message.count(";") == 2 and "\n" not in message


def test_save_like_keeps_geometry_and_header(tmp_path):
    affine = np.array([[0, 0, -1.0, 90], [-1.0, 0, 0, 120], [0, 1.0, 0, -100], [0, 0, 0, 1]])  # LIA-like
    ref = nib.Nifti1Image(np.full(SHAPE, 100, np.int16), affine)
    ref.header.set_xyzt_units("mm", "sec")
    ref.header.set_slope_inter(2.0, 5.0)
    ref.header["descrip"] = b"t1 scan"
    ref.set_qform(affine, code=1)
    ref.set_sform(affine, code=1)
    nib.save(ref, tmp_path / "ref.nii.gz")
    ref = load_volume(tmp_path / "ref.nii.gz")
    labels = (np.arange(np.prod(SHAPE)) % 7).reshape(SHAPE)
    out = save_like(labels, ref, tmp_path / "seg.nii.gz", np.uint8)
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8 and np.asarray(img.dataobj).dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    np.testing.assert_allclose(img.affine, affine)
    assert img.header["qform_code"] == 1 and img.header["sform_code"] == 1
    assert img.header["descrip"] == b"t1 scan"
    assert img.header.get_slope_inter() in ((None, None), (1.0, 0.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.nii.gz", "seg.nii.gz"]
    with pytest.raises(ValueError, match="do not fit uint8"):
        save_like(labels + 250, ref, tmp_path / "seg2.nii.gz", np.uint8)


def test_save_like_is_atomic(tmp_path, monkeypatch):
    ref = load_volume(write(tmp_path / "ref.nii.gz"))
    target = tmp_path / "seg.nii.gz"
    target.write_bytes(b"old")
    seen = []

    def broken_save(img, path):
        seen.append(str(path))
        assert str(path).endswith(".nii.gz") and path.parent == tmp_path
        nib.loadsave.save(img, path)
        raise OSError("disk full")

    monkeypatch.setattr(volumes.nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_like(np.zeros(SHAPE, np.uint8), ref, target)
    assert target.read_bytes() == b"old" and len(seen) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.nii.gz", "seg.nii.gz"]


CLASSES = {"0": "Background", "1": "Cortex", "2": "White-Matter"}


def make_dataset(root, names=("sub1", "sub2"), classes=CLASSES):
    """A data set folder with images/, labels/ and classes.json (suffixes vary on purpose)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, name in enumerate(names):
        write(root / "images" / f"{name}.nii.gz")
        write(root / "labels" / (f"{name}.mgz" if i % 2 else f"{name}.nii"), kind=nib.MGHImage if i % 2
              else nib.Nifti1Image)
    if classes is not None:
        (root / "classes.json").write_text(json.dumps(classes))
    return root


def test_list_dataset_folder_and_csv(tmp_path):
    root = make_dataset(tmp_path / "set")
    (root / "images" / "README.txt").write_text("ignored")
    pairs, names = list_dataset(root)
    assert names == ["Background", "Cortex", "White-Matter"]
    assert [(im.name, lab.name, n) for im, lab, n in pairs] == [("sub1.nii.gz", "sub1.nii", "sub1"),
                                                         ("sub2.nii.gz", "sub2.mgz", "sub2")]
    table = root / "train.csv"
    table.write_text("image,label\nimages/sub2.nii.gz,labels/sub2.mgz\n")
    pairs, names = list_dataset(table)
    assert pairs == [(root / "images/sub2.nii.gz", root / "labels/sub2.mgz", "images/sub2")]
    other = tmp_path / "classes2.json"
    other.write_text(json.dumps({"0": "unknown", **{str(i): f"c{i}" for i in range(1, 12)}}))
    assert list_dataset(table, classes=other)[1] == ["unknown"] + [f"c{i}" for i in range(1, 12)]


def test_list_dataset_reports_all_problems(tmp_path):
    root = make_dataset(tmp_path / "set", classes={"0": "Background", "2": "Cortex"})
    write(root / "images" / "lonely.nii.gz")
    write(root / "labels" / "orphan.nii.gz")
    with pytest.raises(InputError) as info:
        list_dataset(root)
    message = str(info.value)
    for part in ("images/lonely.nii.gz: no label", "labels/orphan.nii.gz: no image", "contiguous"):
        assert part in message
    assert "\n" not in message

    table = root / "bad.csv"
    table.write_text("image,label\nimages/sub1.nii.gz,labels/missing.nii.gz\nimages/sub1.nii.gz,notes.txt\n")
    (root / "classes.json").write_text(json.dumps(CLASSES))
    with pytest.raises(InputError) as info:
        list_dataset(table)
    message = str(info.value)
    for part in ("line 2: label labels/missing.nii.gz not found", "line 3: notes.txt is not",
                 "line 3: image images/sub1.nii.gz listed twice"):
        assert part in message


def _empty(root):
    for path in [*(root / "images").iterdir(), *(root / "labels").iterdir()]:
        path.unlink()


@pytest.mark.parametrize("setup, expected", [
    (lambda root: (root / "classes.json").unlink(), "classes file not found"),
    (lambda root: (root / "classes.json").write_text('{"0": "Cortex", "1": "WM"}'), "class 0 must be"),
    (lambda root: (root / "classes.json").write_text("[1, 2"), "unreadable classes file"),
    (_empty, "no image/label pairs"),
    (lambda root: (root / "bad.csv").write_text("img,lab\n"), "needs the columns image,label"),
])
def test_list_dataset_bad_layouts(tmp_path, setup, expected):
    root = make_dataset(tmp_path / "set")
    setup(root)
    with pytest.raises(InputError, match=expected):
        list_dataset(root / "bad.csv" if (root / "bad.csv").exists() else root)


def test_check_labels():
    labels = np.array([[[0, 1], [2, 1]]], np.float32)
    out = check_labels(labels, 3, "sub1", image_shape=(1, 2, 2))
    assert out.dtype == np.int16 and out.tolist() == [[[0, 1], [2, 1]]]
    with pytest.raises(InputError) as info:
        check_labels(np.array([0, 1.5, 3, -1, 7]), 3, "sub1", image_shape=(4,))
    message = str(info.value)
    for part in ("sub1: label shape 5 differs from the image's 4", "1 non-integer", "outside 0..2: -1, 3, 7"):
        assert part in message


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mgz"])
def test_save_masked_keeps_the_input_type_and_values(tmp_path, suffix):
    data = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 300 - 20).astype(np.int16)
    affine = np.diag([0.9, 1.1, 2.0, 1.0])
    kind = nib.MGHImage if suffix == ".mgz" else nib.Nifti1Image
    source = write(tmp_path / f"in{suffix}", data, affine, kind)
    keep = np.zeros(SHAPE, bool)
    keep[2:9, 3:10, 1:8] = True
    out = save_masked(source, keep, tmp_path / f"brain{suffix}")
    result = nib.load(out)
    assert result.get_data_dtype().newbyteorder("=") == np.int16  # MGZ stores big-endian
    np.testing.assert_allclose(result.affine, affine, atol=1e-5)
    check_masked_output(source, tmp_path / "again.mgz")  # int16 from any of them fits MGZ
    np.testing.assert_array_equal(np.asarray(result.dataobj), np.where(keep, data, 0))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_save_masked_of_a_scaled_input_keeps_its_scaling(tmp_path):
    raw = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 200).astype(np.int16)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.25, 10.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    keep = np.indices(SHAPE)[0] < 6
    result = nib.load(save_masked(tmp_path / "scaled.nii.gz", keep, tmp_path / "brain.nii.gz"))
    assert result.get_data_dtype() == np.int16 and result.dataobj.slope == 0.25 and result.dataobj.inter == 10
    real = nib.load(tmp_path / "scaled.nii.gz").get_fdata()
    np.testing.assert_allclose(result.get_fdata(), np.where(keep, real, 0.0))
    with pytest.raises(InputError, match="MGZ cannot hold the input's scaled int16"):
        check_masked_output(tmp_path / "scaled.nii.gz", tmp_path / "brain.mgz")
    write(tmp_path / "f64.nii", np.zeros(SHAPE, np.float64))
    with pytest.raises(InputError, match="MGZ cannot hold the input's float64"):
        check_masked_output(tmp_path / "f64.nii", tmp_path / "brain.mgz")
    check_masked_output(tmp_path / "f64.nii", tmp_path / "brain.nii.gz")  # NIfTI holds any type


def test_voxel_sizes():
    affine = np.diag([0.9, 1.1, 2.0, 1.0])
    affine[:3, :3] = affine[:3, :3] @ np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]])
    np.testing.assert_allclose(voxel_sizes(affine), [1.1, 0.9, 2.0])
