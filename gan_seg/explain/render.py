"""Pictures of what the networks see (Pillow): an occlusion heatmap over its input with a colour bar, and a
grid of a layer's feature maps with each channel's index."""

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gan_seg.io.pictures import save_png

BACKDROP, TEXT = (24, 24, 24), (235, 235, 235)
# Diverging colours: blue (the score rose when hidden) - near white (no effect) - red (the score fell).
COLD, NEUTRAL, HOT = np.array((59, 76, 192.0)), np.array((242, 242, 242.0)), np.array((180, 4, 38.0))


def diverging(values):
    """RGB float colours (..., 3) of ``values`` in [-1, 1]."""
    values = np.clip(np.asarray(values, np.float64), -1.0, 1.0)[..., None]
    return np.where(values >= 0, NEUTRAL + values * (HOT - NEUTRAL), NEUTRAL - values * (COLD - NEUTRAL))


def _rgb(image):
    """(H, W, 3) float 0..255 of an (H, W, C) image in [0, 1] (grey repeated, RGBA's alpha dropped)."""
    image = np.clip(np.asarray(image, np.float64), 0.0, 1.0)
    image = np.repeat(image[..., :1], 3, axis=2) if image.shape[2] in (1, 2) else image[..., :3]
    return image * 255.0


def _resize(array, size):
    """An (H, W[, 3]) float array resized to ``size`` (width, height): nearest for small images (pixels
    stay visible), bilinear otherwise."""
    small = max(array.shape[:2]) <= 64
    method = Image.Resampling.NEAREST if small else Image.Resampling.BILINEAR
    channels = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[2])]
    resized = [np.asarray(Image.fromarray(c.astype(np.float32)).resize(size, method)) for c in channels]
    return resized[0] if array.ndim == 2 else np.stack(resized, axis=-1)


def _tick(value):
    return f"{value:.3g}" if value else "0"


def render_heatmap(image, drops, path, title, caption="occluded: drop in the target", subtitle=None,
                   size=256):
    """Write a PNG: the input, the per-pixel ``drops`` (H, W) blended over it (red = the target fell when
    the region was hidden), a colour bar from -max|drop| to +max|drop|, ``title`` (and ``subtitle``)
    above."""
    height, width = drops.shape
    scale = size / max(height, width)
    shown = (max(1, round(width * scale)), max(1, round(height * scale)))
    base = _resize(_rgb(image), shown)
    limit = float(np.abs(drops).max()) or 1.0
    relative = _resize(drops / limit, shown)
    alpha = 0.85 * np.abs(relative)[..., None] ** 0.6
    overlay = (1 - alpha) * base + alpha * diverging(relative)

    font, big = ImageFont.load_default(size=12), ImageFont.load_default(size=14)
    gap, bar, top = 10, 16, 30 if subtitle is None else 46
    labels = [_tick(v) for v in (limit, 0.0, -limit)]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(probe.textlength(text, font=font) for text in labels)
    canvas_w = max(int(3 * gap + 2 * shown[0] + gap + bar + 6 + label_w + gap),
                   int(probe.textlength(title, font=big)) + 2 * gap,
                   int(probe.textlength(subtitle or "", font=font)) + 2 * gap)
    canvas = Image.new("RGB", (canvas_w, top + shown[1] + 24), BACKDROP)
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 8), title, fill=TEXT, font=big)
    if subtitle is not None:
        draw.text((gap, 27), subtitle, fill=TEXT, font=font)
    for n, (panel, text) in enumerate(((base, "input"), (overlay, caption))):
        x = gap + n * (shown[0] + gap)
        canvas.paste(Image.fromarray(np.rint(panel).astype(np.uint8)), (x, top))
        draw.text((x, top + shown[1] + 5), text, fill=TEXT, font=font)
    x = 3 * gap + 2 * shown[0]
    ramp = np.linspace(1.0, -1.0, shown[1])[:, None].repeat(bar, axis=1)
    canvas.paste(Image.fromarray(np.rint(diverging(ramp)).astype(np.uint8)), (x, top))
    for text, y in zip(labels, (top, top + shown[1] / 2, top + shown[1] - 1), strict=True):
        draw.line([(x + bar, y), (x + bar + 4, y)], fill=TEXT)
        draw.text((x + bar + 6, y), text, fill=TEXT, font=font, anchor="lm")
    save_png(np.asarray(canvas), path)


def render_feature_maps(maps, path, title, cell=96):
    """Write a PNG grid of ``maps`` (H, W, C): each channel min-max normalised on its own (a constant
    channel is black), upscaled to about ``cell`` pixels, its index in the corner; ``title`` above."""
    height, width, channels = maps.shape
    scale = max(1.0, cell / max(height, width))
    shown = (max(1, round(width * scale)), max(1, round(height * scale)))
    columns = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / columns)
    gap, top = 4, 28
    font, big = ImageFont.load_default(size=11), ImageFont.load_default(size=14)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    canvas_w = max(columns * (shown[0] + gap) + gap, int(probe.textlength(title, font=big)) + 2 * gap)
    canvas = Image.new("RGB", (canvas_w, top + rows * (shown[1] + gap) + gap), BACKDROP)
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 7), title, fill=TEXT, font=big)
    for c in range(channels):
        channel = maps[..., c].astype(np.float64)
        low, high = channel.min(), channel.max()
        normalised = (channel - low) / (high - low) if high > low else np.zeros_like(channel)
        tile = np.rint(_resize(normalised, shown) * 255).clip(0, 255).astype(np.uint8)
        x, y = gap + (c % columns) * (shown[0] + gap), top + (c // columns) * (shown[1] + gap)
        canvas.paste(Image.fromarray(tile), (x, y))
        draw.text((x + 2, y + 1), str(c), fill=(255, 230, 0), font=font, stroke_width=2,
                  stroke_fill=(0, 0, 0))
    save_png(np.asarray(canvas), path)
