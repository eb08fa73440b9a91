"""Tests for gan_seg.io.pictures: grids, PNG/NPZ sample outputs, loss-curve plots."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gan_seg.errors import InputError
from gan_seg.io.pictures import (
    make_grid,
    plan_sample_output,
    render_loss_curves,
    save_png,
    to_uint8,
    write_samples,
)


def _images(n, h=4, w=5, c=1):
    return np.random.default_rng(0).random((n, h, w, c), dtype=np.float32)


def test_to_uint8_rounds_and_clips():
    x = np.array([-0.5, 0.0, 0.5, 1 / 255 * 0.49, 1 / 255 * 0.51, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 0, 1, 255, 255]
    assert to_uint8(x).dtype == np.uint8


@pytest.mark.parametrize(("n", "rows", "grid_rows", "grid_cols"), [
    (1, None, 1, 1), (4, None, 2, 2), (5, None, 2, 3), (10, None, 3, 4),
    (16, None, 4, 4), (6, 1, 1, 6), (7, 2, 2, 4), (3, 5, 5, 1),
])
def test_make_grid_shape(n, rows, grid_rows, grid_cols):
    grid = make_grid(_images(n), rows=rows, pad=2)
    assert grid.dtype == np.uint8
    assert grid.shape == (grid_rows * 6 + 2, grid_cols * 7 + 2, 1)


def test_make_grid_places_cells_and_pads():
    images = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (10, 20, 30)])
    grid = make_grid(images, pad=1, pad_value=255)
    assert grid.shape == (7, 7, 3)
    assert (grid[1:3, 1:3] == 10).all() and (grid[1:3, 4:6] == 20).all()
    assert (grid[4:6, 1:3] == 30).all()
    assert (grid[4:6, 4:6] == 255).all() and (grid[0] == 255).all()


def test_make_grid_rejects_bad_input():
    with pytest.raises(ValueError):
        make_grid(np.zeros((0, 2, 2, 1)))
    with pytest.raises(ValueError):
        make_grid(np.zeros((2, 2, 1)))
    with pytest.raises(ValueError):
        make_grid(_images(2), rows=0)


def test_save_png_modes_and_byte_identical(tmp_path):
    grey = to_uint8(_images(1, c=1)[0])
    rgb = to_uint8(_images(1, c=3)[0])
    save_png(grey, tmp_path / "a.png")
    save_png(grey, tmp_path / "b.png")
    save_png(rgb, tmp_path / "c.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "L" and im.size == (5, 4)
        assert np.array_equal(np.asarray(im), grey[:, :, 0])
    with Image.open(tmp_path / "c.png") as im:
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im), rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]


def test_save_png_rejects_non_uint8(tmp_path):
    with pytest.raises(ValueError):
        save_png(np.zeros((2, 2, 1), np.float32), tmp_path / "x.png")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("out", "kind", "name"), [
    ("s.png", "png", "s.png"), ("s.PNG", "png", "s.PNG"), ("s.npz", "npz", "s.npz"),
    ("samples", "dir", "samples"), ("samples.d/", "dir", "samples.d"), ("a/b/c/", "dir", "c"),
])
def test_plan_sample_output_kinds(tmp_path, out, kind, name):
    planned_kind, path = plan_sample_output(f"{tmp_path}/{out}")
    assert planned_kind == kind and path.name == name
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("out", ["s.jpg", "s.txt", "samples.v2"])
def test_plan_sample_output_bad_suffix(tmp_path, out):
    with pytest.raises(InputError, match=r"\.png.*\.npz.*directory"):
        plan_sample_output(tmp_path / out)


@pytest.mark.parametrize("out", ["s.png", "s.npz"])
def test_plan_sample_output_existing_file(tmp_path, out):
    (tmp_path / out).write_bytes(b"old")
    with pytest.raises(InputError, match="already exists; pass --force"):
        plan_sample_output(tmp_path / out)
    assert plan_sample_output(tmp_path / out, force=True)[1] == tmp_path / out
    assert (tmp_path / out).read_bytes() == b"old"


def test_plan_sample_output_existing_dir(tmp_path):
    out = tmp_path / "samples"
    out.mkdir()
    assert plan_sample_output(out) == ("dir", out)
    (out / "x").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        plan_sample_output(out)
    assert plan_sample_output(out, force=True) == ("dir", out)


def test_plan_sample_output_dir_is_file(tmp_path):
    (tmp_path / "samples").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        plan_sample_output(tmp_path / "samples", force=True)


@pytest.mark.parametrize("out", ["s.png", "s.npz", "samples", "deeper/samples/"])
def test_plan_sample_output_unwritable_parent(tmp_path, out):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        plan_sample_output(tmp_path / "file" / out)


def test_write_samples_png(tmp_path):
    kind, path = plan_sample_output(tmp_path / "grid.png")
    write_samples(_images(6, c=3), None, kind, path, rows=2)
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (3 * 7 + 2, 2 * 6 + 2)
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_write_samples_npz(tmp_path):
    kind, path = plan_sample_output(tmp_path / "s.npz")
    images = _images(3)
    write_samples(images, [1, 2, 3], kind, path)
    with np.load(path) as data:
        assert sorted(data.files) == ["images", "labels"]
        assert data["images"].dtype == np.float32 and data["labels"].dtype == np.int32
        assert np.array_equal(data["images"], images)
        assert data["labels"].tolist() == [1, 2, 3]
    write_samples(to_uint8(images), None, kind, path)
    with np.load(path) as data:
        assert data["images"].dtype == np.float32 and data["images"].max() <= 1.0
        assert data["labels"].tolist() == [-1, -1, -1]
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_write_samples_dir(tmp_path):
    kind, path = plan_sample_output(tmp_path / "out" / "samples/")
    write_samples(_images(3), [3, 0, 7], kind, path)
    assert sorted(p.name for p in path.iterdir()) == ["00000_3.png", "00001_0.png", "00002_7.png"]
    assert [p.name for p in path.parent.iterdir()] == ["samples"]
    with Image.open(path / "00000_3.png") as im:
        assert im.mode == "L" and im.size == (5, 4)


def test_write_samples_dir_unconditional_into_existing(tmp_path):
    path = tmp_path / "samples"
    path.mkdir()
    write_samples(_images(2), None, "dir", path)
    assert sorted(p.name for p in path.iterdir()) == ["00000_-1.png", "00001_-1.png"]
    (path / "keep.txt").write_text("x")
    write_samples(_images(1, c=3), None, "dir", path)
    # The earlier samples are replaced (no stale 00001 beside the new draw); other files stay.
    assert sorted(p.name for p in path.iterdir()) == ["00000_-1.png", "keep.txt"]
    with Image.open(path / "00000_-1.png") as im:
        assert im.mode == "RGB"
    assert [p.name for p in tmp_path.iterdir()] == ["samples"]


def test_write_samples_dir_failure_leaves_nothing(tmp_path):
    images = np.zeros((2, 4, 4, 2), np.float32)  # two channels cannot be saved as PNG
    with pytest.raises(ValueError):
        write_samples(images, None, "dir", tmp_path / "samples")
    assert not any(tmp_path.iterdir())


def test_write_samples_label_count_mismatch(tmp_path):
    with pytest.raises(ValueError):
        write_samples(_images(2), [1], "npz", tmp_path / "s.npz")


def _write_log(path, n=200):
    lines = ["step,d_loss,g_loss,d_acc_real,d_acc_fake,note"]
    for i in range(n):
        acc = "" if i % 3 else f"{0.5 + i / 400:.3f}"
        lines.append(f"{i * 10},{1 / (1 + i):.4f},{2 - i / 200:.4f},{acc},0.5,text")
    path.write_text("\n".join(lines) + "\n")


def test_render_loss_curves(tmp_path):
    _write_log(tmp_path / "log.csv")
    render_loss_curves(tmp_path / "log.csv", tmp_path / "loss.png")
    render_loss_curves(tmp_path / "log.csv", tmp_path / "small.png", columns=["d_acc_real"],
                       width=320, height=200)
    with Image.open(tmp_path / "loss.png") as im:
        assert im.mode == "RGB" and im.size == (800, 400)
        assert len(im.getcolors(1 << 16)) > 4  # several curve colours, not a blank canvas
    with Image.open(tmp_path / "small.png") as im:
        assert im.size == (320, 200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "loss.png", "small.png"]


@pytest.mark.parametrize(("text", "columns", "match"), [
    ("epoch,d_loss\n1,0.5\n", None, "no 'step' column"),
    ("step,d_loss\n1,0.5\n", ["g_loss"], "no column"),
    ("step,d_loss\n1,\n2,\n", None, "no numeric values"),
])
def test_render_loss_curves_bad_log(tmp_path, text, columns, match):
    (tmp_path / "log.csv").write_text(text)
    with pytest.raises(InputError, match=match):
        render_loss_curves(tmp_path / "log.csv", tmp_path / "loss.png", columns=columns)
    with pytest.raises(InputError, match="does not exist"):
        render_loss_curves(tmp_path / "missing.csv", tmp_path / "loss.png")
    assert not (tmp_path / "loss.png").exists()


def test_import_is_light():
    code = ("import sys, gan_seg.io.pictures; "
            "sys.exit(any(m.split('.')[0] in ('keras', 'tensorflow') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
