"""On-the-fly augmentation of 2D training slices (TensorFlow ops, run in the tf.data pipeline).

Spatial: one random affine (rotation +-15 deg, scale 0.9-1.1, shear +-0.1, shift +-6%) plus a smooth
elastic displacement (5x5 control grid, ~2.5 px), image resampled bilinearly, labels by nearest neighbour.
Intensity, in the spirit of SynthSeg: contrast randomisation (a random monotonic piecewise-linear
intensity curve), gamma, a smooth multiplicative bias field, a Gaussian blur of random width (resolution)
and Gaussian noise. A fifth of the slices
pass unchanged. Every draw is a stateless function of ``seed``, so resumed runs repeat exactly.
"""

import math

import tensorflow as tf


def _seed(seed, salt):
    return tf.random.experimental.stateless_fold_in(seed, salt)


def _smooth_field(shape, coarse, stddev, seed, channels=1):
    noise = tf.random.stateless_normal([coarse, coarse, channels], seed, stddev=stddev)
    return tf.image.resize(noise, shape, method="bicubic")


def _bilinear(image, y, x):
    """Sample ``image`` (H, W, C) at float coordinates; points outside are 0."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    y0, x0 = tf.floor(y), tf.floor(x)
    out = 0.0
    for dy in (0.0, 1.0):
        for dx in (0.0, 1.0):
            yy, xx = y0 + dy, x0 + dx
            weight = (1.0 - tf.abs(y - yy)) * (1.0 - tf.abs(x - xx))
            out += _gather(image, yy, xx, height, width) * weight[..., None]
    return out


def _gather(image, y, x, height, width):
    yi, xi = tf.cast(y, tf.int32), tf.cast(x, tf.int32)
    inside = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
    values = tf.gather_nd(image, tf.stack([tf.clip_by_value(yi, 0, height - 1),
                                           tf.clip_by_value(xi, 0, width - 1)], axis=-1))
    return values * tf.cast(inside, image.dtype)[..., None]


def spatial(image, label, seed):
    """Random affine + elastic warp of ``image`` (H, W, 1) float and ``label`` (H, W) int."""
    shape = tf.shape(image)[:2]
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    u = tf.random.stateless_uniform([6], _seed(seed, 1), -1.0, 1.0)
    angle = u[0] * math.radians(15)
    scale_y, scale_x, shear = 1.0 + 0.1 * u[1], 1.0 + 0.1 * u[2], 0.1 * u[3]
    cos, sin = tf.cos(angle), tf.sin(angle)
    yy, xx = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
    cy, cx = (height - 1) / 2, (width - 1) / 2
    py, px = (yy - cy) * scale_y, (xx - cx) * scale_x + shear * (yy - cy)
    displacement = _smooth_field(shape, 5, 2.5, _seed(seed, 2), channels=2)
    src_y = cos * py - sin * px + cy + 0.06 * height * u[4] + displacement[..., 0]
    src_x = sin * py + cos * px + cx + 0.06 * width * u[5] + displacement[..., 1]
    warped = _bilinear(image, src_y, src_x)
    nearest = _gather(label[..., None], tf.round(src_y), tf.round(src_x), shape[0], shape[1])[..., 0]
    return warped, nearest


def blur(image, sigma):
    """Separable Gaussian blur (5 taps) of an (H, W, 1) image; ``sigma`` in pixels (0 = unchanged)."""
    taps = tf.range(-2.0, 3.0)
    kernel = tf.exp(-taps**2 / (2.0 * sigma**2 + 1e-6))
    kernel /= tf.reduce_sum(kernel)
    out = tf.nn.conv2d(image[None], tf.reshape(kernel, [5, 1, 1, 1]), 1, "SAME")
    return tf.nn.conv2d(out, tf.reshape(kernel, [1, 5, 1, 1]), 1, "SAME")[0]


def intensity(image, seed):
    """Contrast randomisation, gamma, bias field and noise on an image in [0, 1]; result in [0, 1]."""
    knots = 6
    steps = tf.random.stateless_uniform([knots - 1], _seed(seed, 3), 0.2, 1.0)
    curve = tf.concat([[0.0], tf.cumsum(steps)], 0)
    curve /= curve[-1]
    position = tf.clip_by_value(image, 0.0, 1.0) * (knots - 1)
    low = tf.minimum(tf.floor(position), knots - 2)
    frac = position - low
    low = tf.cast(low, tf.int32)
    image = tf.gather(curve, low) * (1.0 - frac) + tf.gather(curve, low + 1) * frac
    gamma = tf.exp(tf.random.stateless_normal([], _seed(seed, 4), stddev=0.3))
    image = tf.pow(tf.maximum(image, 1e-6), gamma)
    image *= tf.exp(_smooth_field(tf.shape(image)[:2], 4, 0.25, _seed(seed, 5)))
    image = blur(image, tf.random.stateless_uniform([], _seed(seed, 8), 0.0, 1.2))
    sigma = tf.random.stateless_uniform([], _seed(seed, 6), 0.0, 0.04)
    image += tf.random.stateless_normal(tf.shape(image), _seed(seed, 7), stddev=sigma)
    return tf.clip_by_value(image / tf.maximum(tf.reduce_max(image), 1e-6), 0.0, 1.0)


def augment(image, label, seed, keep_probability=0.2):
    """Augment one slice: ``image`` (H, W, 1) float32 in [0, 1], ``label`` (H, W) int32."""
    def changed():
        warped, warped_label = spatial(image, label, seed)
        return intensity(warped, seed), warped_label

    keep = tf.random.stateless_uniform([], _seed(seed, 0)) < keep_probability
    return tf.cond(keep, lambda: (image, label), changed)
