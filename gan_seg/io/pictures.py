"""Image grids, PNG/NPZ sample outputs and loss-curve plots, with numpy and Pillow only."""

import csv
import math
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gan_seg.errors import InputError
from gan_seg.io.files import atomic_path, check_output_dir, check_output_file

SAMPLE_FORMS = ("NAME.png for one grid image, NAME.npz for arrays 'images' and 'labels', "
                "or a directory (no suffix or a trailing /) for one PNG per sample")
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


SAMPLE_NAME = re.compile(r"^\d{5}_-?\d+\.png$")


def to_uint8(images):
    """Float images in [0, 1] to uint8 via round(clip(x, 0, 1) * 255); uint8 passes through."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def make_grid(images, rows=None, pad=2, pad_value=0):
    """Tile (N, H, W, C) images into one uint8 (H', W', C) image, ``pad`` pixels around each cell.

    Default layout is near-square: cols = ceil(sqrt(N)), rows = ceil(N / cols); with ``rows``
    given, cols = ceil(N / rows). Empty cells and padding are ``pad_value`` (a 0-255 level).
    """
    images = to_uint8(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty (N, H, W, C) array, got shape {images.shape}")
    n, h, w, c = images.shape
    if rows is None:
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
    elif rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    else:
        cols = math.ceil(n / rows)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
    for i, image in enumerate(images):
        y = pad + (i // cols) * (h + pad)
        x = pad + (i % cols) * (w + pad)
        grid[y:y + h, x:x + w] = image
    return grid


def _png_image(array):
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"expected a uint8 (H, W, 1) or (H, W, 3) array, got {array.dtype} "
                         f"{array.shape}")
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def save_png(array, path):
    """Atomically write uint8 (H, W, 1) as grey 'L' or (H, W, 3) as RGB PNG, without metadata."""
    image = _png_image(array)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def plan_sample_output(out, force=False):
    """Check a ``sample -o`` target up front and return (kind, path), kind in png/npz/dir.

    Writes nothing; raises InputError for an unknown suffix or a target that cannot be written.
    """
    text = os.fspath(out)
    path = Path(text)
    suffix = path.suffix.lower()
    if text.endswith(("/", os.sep)) or not suffix:
        return "dir", check_output_dir(path, force)
    if suffix in (".png", ".npz"):
        return suffix[1:], check_output_file(path, force)
    raise InputError(f"output {text} has unsupported suffix '{path.suffix}'; use {SAMPLE_FORMS}")


def write_samples(images, labels, kind, path, rows=None):
    """Write samples as planned by plan_sample_output; ``labels`` None means unconditional (-1).

    Every form is atomic: a file appears complete or not at all, and a directory's PNGs are
    written into a temporary sibling that is then renamed (or, when the target is a non-empty
    directory, whose files are then moved in).
    """
    images = np.asarray(images)
    labels = np.full(len(images), -1, np.int32) if labels is None else np.asarray(labels, np.int32)
    if labels.shape != (len(images),):
        raise ValueError(f"expected {len(images)} labels, got shape {labels.shape}")
    path = Path(path)
    if kind == "png":
        save_png(make_grid(images, rows), path)
    elif kind == "npz":
        floats = images / 255.0 if images.dtype == np.uint8 else np.clip(images, 0.0, 1.0)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=floats.astype(np.float32), labels=labels)
    elif kind == "dir":
        _write_sample_dir(to_uint8(images), labels, path)
    else:
        raise ValueError(f"unknown sample output kind {kind!r}")


def _write_sample_dir(images, labels, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            _png_image(image).save(tmp / f"{i:05d}_{label}.png", format="PNG")
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        if path.exists():  # --force into a non-empty folder: earlier samples go, other files stay
            for old in path.iterdir():
                if SAMPLE_NAME.match(old.name):
                    old.unlink()
            for file in sorted(tmp.iterdir()):
                os.replace(file, path / file.name)
            tmp.rmdir()
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _read_curves(csv_path, columns):
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"loss log {csv_path} does not exist or is not a file")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    if "step" not in header:
        raise InputError(f"loss log {csv_path} has no 'step' column (columns: {header})")
    missing = [c for c in columns or () if c not in header]
    if missing:
        raise InputError(f"loss log {csv_path} has no column(s) {missing} (columns: {header})")
    curves = {}
    for name in columns or [c for c in header if c != "step"]:
        points = [(_number(r["step"]), _number(r[name])) for r in rows]
        curves[name] = [(x, y) for x, y in points if x is not None and y is not None]
    if columns is None:
        curves = {name: points for name, points in curves.items() if points}
    if not any(curves.values()):
        raise InputError(f"loss log {csv_path} has no numeric values to plot")
    return curves


def _tick_text(value):
    return f"{value:.0f}" if abs(value) >= 1000 or value == int(value) else f"{value:.4g}"


def _span(values):
    lo, hi = min(values), max(values)
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def render_loss_curves(csv_path, png_path, columns=None, width=800, height=400):
    """Plot the numeric columns of a CSV log (default: all but ``step``) against ``step`` as PNG."""
    curves = _read_curves(csv_path, columns)
    xs = [x for points in curves.values() for x, _ in points]
    ys = [y for points in curves.values() for _, y in points]
    (x_lo, x_hi), (y_lo, y_hi) = _span(xs), _span(ys)
    x_ticks = [x_lo + (x_hi - x_lo) * i / 4 for i in range(5)]
    y_ticks = [y_lo + (y_hi - y_lo) * i / 4 for i in range(5)]

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    text_h = font.getbbox("0")[3]
    left = 14 + max(draw.textlength(_tick_text(v), font=font) for v in y_ticks)
    x0, y0, x1, y1 = left, 16, width - 24, height - 2 * text_h - 22

    def px(x):
        return x0 + (x - x_lo) / (x_hi - x_lo) * (x1 - x0)

    def py(y):
        return y1 - (y - y_lo) / (y_hi - y_lo) * (y1 - y0)

    for v in x_ticks:
        draw.line([(px(v), y0), (px(v), y1)], fill=(225, 225, 225))
        draw.line([(px(v), y1), (px(v), y1 + 4)], fill="black")
        draw.text((px(v), y1 + 6), _tick_text(v), fill="black", font=font, anchor="ma")
    for v in y_ticks:
        draw.line([(x0, py(v)), (x1, py(v))], fill=(225, 225, 225))
        draw.line([(x0 - 4, py(v)), (x0, py(v))], fill="black")
        draw.text((x0 - 6, py(v)), _tick_text(v), fill="black", font=font, anchor="rm")
    draw.rectangle([x0, y0, x1, y1], outline="black")
    draw.text(((x0 + x1) / 2, height - 4), "step", fill="black", font=font, anchor="md")

    for i, points in enumerate(curves.values()):
        colour = PALETTE[i % len(PALETTE)]
        xy = [(px(x), py(y)) for x, y in sorted(points)]
        if len(xy) == 1:
            (cx, cy), = xy
            draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=colour)
        elif xy:
            draw.line(xy, fill=colour, width=2, joint="curve")

    line_h = text_h + 6
    legend_w = 34 + max(draw.textlength(name, font=font) for name in curves)
    lx, ly = x1 - legend_w - 8, y0 + 8
    draw.rectangle([lx, ly, lx + legend_w, ly + len(curves) * line_h + 6], fill="white",
                   outline=(160, 160, 160))
    for i, name in enumerate(curves):
        mid = ly + 6 + i * line_h + text_h / 2
        draw.line([(lx + 6, mid), (lx + 24, mid)], fill=PALETTE[i % len(PALETTE)], width=3)
        draw.text((lx + 30, mid), name, fill="black", font=font, anchor="lm")

    with atomic_path(png_path) as tmp:
        image.save(tmp, format="PNG")
