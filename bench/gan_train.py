"""Benchmark: speed of the GAN train step, gan-seg's trainer beside the classic Keras loop; JSON lines.

    python bench/gan_train.py                            # DCGAN, batch 64, 3 repetitions of 20 steps
    python bench/gan_train.py --model cgan --repeats 5
    python bench/gan_train.py --xla                      # also gan-seg's step compiled with XLA (slow on CPU)
    python bench/gan_train.py --inter-op 1 --intra-op 2  # TensorFlow's thread pools, set before it starts

In ONE run, each measured ``--repeats`` times (median, min and max are printed):
- ``matmul``: a 4096x4096 float32 and bfloat16 ``tf.matmul`` (GFLOP/s), the machine's reference rate,
  timed (3 products in a row) once per repetition between the variants;
- ``flop``: the counted FLOP of one iteration: 2 x the multiply-accumulates of every Dense / Conv2D /
  Conv2DTranspose in the forward and backward passes (weight gradients of the updated model; input
  gradients wherever the gradient must flow on, so not into z, labels or D's images on D's update;
  BatchNorm, activations and optimizer updates are not counted);
- ``train``: ms/step, img/s (real images consumed per second) and achieved GFLOP/s (counted FLOP / time,
  and its share of the matmul rate of the same compute dtype) of
  * ``classic-keras``: the seed's loop on Keras defaults in float32: ``G.predict(z)``, ``D.train_on_batch``
    on real + fake (-> 1 / 0), ``adversarial.train_on_batch(z, ones)`` (RMSprop with the seed's decay;
    ``keras_jit_compile`` shows whether Keras' ``jit_compile="auto"`` chose XLA for D and the adversarial);
  * ``gan-seg``: GanTrainer's compiled step, ``--recipe classic`` in float32 and mixed_bfloat16 and the
    default recipe at ``--precision auto``; with ``--xla`` also the classic recipe with its per-replica step
    compiled by XLA (``jit_compile=True``);
  and ``ratio``: each gan-seg variant's img/s over the classic loop's.
Every variant trains the same architecture at the same batch on the same in-memory images (random uint8
in Fashion-MNIST's shape; the step does not care). After ``--warmup`` steps (tracing, oneDNN set-up) the
variants are timed round-robin, one repetition of each in turn, so a busy machine slows them alike.
The load average before and after is printed: on a shared machine, compare variants of the same run only.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dcgan", choices=["dcgan", "cgan"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per repetition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--xla", action="store_true", help="also time gan-seg's step compiled with XLA")
    parser.add_argument("--xla-steps", type=int, default=3, help="steps per repetition of the XLA variants")
    parser.add_argument("--inter-op", type=int, help="TensorFlow inter-op threads (default: its own)")
    parser.add_argument("--intra-op", type=int, help="TensorFlow intra-op threads (default: its own)")
    parser.add_argument("--matmul-size", type=int, default=4096)
    return parser.parse_args()


ARGS = parse_args()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if ARGS.inter_op is not None:
    tf.config.threading.set_inter_op_parallelism_threads(ARGS.inter_op)
if ARGS.intra_op is not None:
    tf.config.threading.set_intra_op_parallelism_threads(ARGS.intra_op)

from gan_seg.engine.backend import cpu_has_bf16, resolve_precision, versions  # noqa: E402
from gan_seg.engine.distribute import make_strategy  # noqa: E402
from gan_seg.gan.config import DEFAULT_RECIPE, GanConfig  # noqa: E402
from gan_seg.gan.models import build_adversarial, build_discriminator, build_generator  # noqa: E402
from gan_seg.gan.trainer import GanTrainer, discriminator_options  # noqa: E402

LATENT, CLASSES, IMAGES = 100, 10, 6000
WEIGHTED = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv2DTranspose)


def emit(record):
    print(json.dumps(record), flush=True)


def spread(values):
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1)}


# -- counting ---------------------------------------------------------------------------------------------
def layer_macs(model):
    """``[(name, multiply-accumulates per image, input names)]`` of the model's Dense / Conv layers
    (inside SpectralNormalization too); ``input names`` are the model inputs feeding the layer directly."""
    inputs = {id(t): t.name for t in model.inputs}
    found = []
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, keras.layers.SpectralNormalization) else layer
        if not isinstance(inner, WEIGHTED):
            continue
        x, y = layer.input, layer.output
        if isinstance(inner, keras.layers.Dense):
            macs = int(x.shape[-1]) * inner.units
        else:
            kh, kw = inner.kernel_size
            rows, cols = (x.shape[1:3] if isinstance(inner, keras.layers.Conv2DTranspose) else y.shape[1:3])
            macs = int(rows) * int(cols) * kh * kw * int(x.shape[-1]) * inner.filters
        found.append((layer.name, macs, {inputs[id(x)]} if id(x) in inputs else set()))
    return found


def step_flop(generator, discriminator, batch, d_steps, ema):
    """The counted FLOP of one iteration and its parts (see the module docstring)."""
    g, d = layer_macs(generator), layer_macs(discriminator)
    g_fwd, d_fwd = sum(m for _, m, _ in g), sum(m for _, m, _ in d)
    image = discriminator.inputs[0].name
    d_input_grads_d_update = sum(m for _, m, fed in d if not fed)  # no gradient into D's own inputs
    d_input_grads_g_update = sum(m for _, m, fed in d if fed <= {image})  # the images' gradient flows to G
    g_input_grads = sum(m for _, m, fed in g if not fed)
    parts = {
        "d_update": d_steps * (batch * g_fwd + 2 * batch * (2 * d_fwd + d_input_grads_d_update)),
        "g_update": batch * (g_fwd + d_fwd + d_input_grads_g_update + g_fwd + g_input_grads),
        "ema_statistics": batch * g_fwd if ema else 0,
    }
    return 2 * sum(parts.values()), {name: round(2 * v / 1e9, 2) for name, v in parts.items()}, {
        "generator_forward_mmac_per_image": round(g_fwd / 1e6, 2),
        "discriminator_forward_mmac_per_image": round(d_fwd / 1e6, 2)}


# -- the machine's reference ------------------------------------------------------------------------------
class Matmul:
    """A ``size`` x ``size`` matmul of one dtype in a tf.function; :meth:`rate` times ``products`` of them."""

    def __init__(self, dtype, size, products=3):
        self.dtype, self.size, self.products = dtype, size, products
        self.a = tf.cast(tf.random.stateless_uniform((size, size), seed=[0, 1]), dtype)
        self.b = tf.cast(tf.random.stateless_uniform((size, size), seed=[0, 2]), dtype)
        self.product = tf.function(tf.matmul)
        self.product(self.a, self.b)[0, 0].numpy()  # trace, warm up

    def rate(self):
        """GFLOP/s (2 n^3 FLOP a product)."""
        start = time.perf_counter()
        for _ in range(self.products):
            self.product(self.a, self.b)[0, 0].numpy()
        return self.products * 2 * self.size**3 / (time.perf_counter() - start) / 1e9


# -- the variants -----------------------------------------------------------------------------------------
class ClassicKeras:
    """The seed's loop on Keras defaults (float32): predict, then the two train_on_batch calls."""

    name, recipe, precision, compute = "classic-keras", "classic", "float32", "float32"

    def __init__(self, x, y, classes, batch, config):
        keras.utils.set_random_seed(0)
        self.classes, self.batch = classes, batch
        self.generator = build_generator(LATENT, x.shape[1:], classes)
        self.discriminator = build_discriminator(x.shape[1:], classes)
        self.discriminator.compile(optimizer=_rmsprop(config.d_learning_rate, config.d_decay),
                                   loss="binary_crossentropy")
        self.adversarial = build_adversarial(self.generator, self.discriminator)
        self.adversarial.compile(optimizer=_rmsprop(config.g_learning_rate, config.g_decay),
                                 loss="binary_crossentropy")
        self.x, self.y = x.astype("float32") / 255.0, y
        self.targets = np.concatenate([np.ones((batch, 1)), np.zeros((batch, 1))]).astype("float32")
        self.rng, self.position = np.random.default_rng(0), 0

    def _inputs(self, z_or_images, labels):
        if self.classes is None:
            return z_or_images
        return [z_or_images, np.eye(self.classes, dtype="float32")[labels]]

    def step(self):
        if self.position + self.batch > len(self.x):
            self.position = 0
        rows = slice(self.position, self.position + self.batch)
        self.position += self.batch
        z = self.rng.uniform(-1, 1, (self.batch, LATENT)).astype("float32")
        fake_labels = self.rng.integers(0, self.classes or 1, self.batch)
        fake = self.generator.predict(self._inputs(z, fake_labels), verbose=0)
        images = np.concatenate([self.x[rows], fake])
        self.discriminator.train_on_batch(self._inputs(images, np.concatenate([self.y[rows], fake_labels])),
                                          self.targets)
        z = self.rng.uniform(-1, 1, (self.batch, LATENT)).astype("float32")
        g_labels = self.rng.integers(0, self.classes or 1, self.batch)
        self.adversarial.train_on_batch(self._inputs(z, g_labels), np.ones((self.batch, 1), "float32"))


class GanSeg:
    """GanTrainer's compiled step (optionally its per-replica step compiled by XLA)."""

    def __init__(self, x, y, classes, config, xla=False):
        self.recipe, self.precision = config.recipe, config.precision
        self.compute = "bfloat16" if config.precision == "mixed_bfloat16" else "float32"
        self.name = f"gan-seg {config.recipe} {config.precision}" + (" xla" if xla else "")
        strategy, _ = make_strategy("none", None)
        self.trainer = GanTrainer(config, x, y if classes else None, classes, strategy, config.precision)
        if xla:  # the trainer's own step, its per-replica part compiled by XLA
            self.trainer._replica_step = tf.function(self.trainer._replica_step, jit_compile=True)
            self.trainer._step = tf.function(self.trainer._distributed_step)
        self.iterator = iter(self.trainer.dataset(0, 10**6))

    def step(self):
        self.trainer.step(self.iterator)


def _rmsprop(learning_rate, decay):
    schedule = keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=decay)
    return keras.optimizers.RMSprop(learning_rate=schedule)


def main():
    load_before = os.getloadavg()
    emit({"what": "machine", "cpus": os.cpu_count(), "native_bf16": cpu_has_bf16(),
          "load_average": [round(v, 2) for v in load_before], "inter_op": ARGS.inter_op,
          "intra_op": ARGS.intra_op, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
          "versions": versions()})
    classes = CLASSES if ARGS.model == "cgan" else None
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (IMAGES, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, CLASSES, IMAGES).astype(np.int32)
    base = dict(model=ARGS.model, batch_size=ARGS.batch_size, latent_dim=LATENT, steps=10**6, strategy="none")
    classic = GanConfig(recipe="classic", precision="float32", **base).checked()
    configs = [classic, GanConfig(recipe="classic", precision="mixed_bfloat16", **base).checked(),
               GanConfig(recipe=DEFAULT_RECIPE, precision=resolve_precision("auto"), **base).checked()]

    variants = [ClassicKeras(x, y, classes, ARGS.batch_size, classic)]
    variants += [GanSeg(x, y, classes, config) for config in configs]
    if ARGS.xla:
        variants += [GanSeg(x, y, classes, config, xla=True) for config in configs[:2]]

    matmuls = [Matmul(dtype, ARGS.matmul_size) for dtype in (tf.float32, tf.bfloat16)]

    flops = {}
    for config in {(c.recipe, c.model): c for c in configs}.values():
        d = build_discriminator(x.shape[1:], classes, **discriminator_options(config))
        total, parts, per_image = step_flop(build_generator(LATENT, x.shape[1:], classes), d,
                                            config.batch_size, config.d_steps, config.ema)
        flops[config.recipe] = total
        emit({"what": "flop", "model": ARGS.model, "recipe": config.recipe, "batch_size": config.batch_size,
              "d_steps": config.d_steps, "gflop_per_step": round(total / 1e9, 2), "gflop_parts": parts,
              **per_image})

    for variant in variants:
        for _ in range(ARGS.warmup):
            variant.step()
    times = {variant.name: [] for variant in variants}
    rates = {matmul.dtype.name: [] for matmul in matmuls}
    for _ in range(ARGS.repeats):  # round-robin: each repetition times every variant once, matmuls included
        for matmul in matmuls:
            rates[matmul.dtype.name].append(matmul.rate())
        for variant in variants:
            steps = ARGS.xla_steps if variant.name.endswith("xla") else ARGS.steps
            start = time.perf_counter()
            for _ in range(steps):
                variant.step()
            times[variant.name].append(1000 * (time.perf_counter() - start) / steps)
    for dtype, values in rates.items():
        emit({"what": "matmul", "dtype": dtype, "size": ARGS.matmul_size, "repeats": ARGS.repeats,
              "gflop_per_s": spread(values)})
    rates = {dtype: statistics.median(values) for dtype, values in rates.items()}

    images_per_step = ARGS.batch_size * classic.d_steps
    reference = images_per_step * 1000 / statistics.median(times["classic-keras"])
    for variant in variants:
        ms = times[variant.name]
        flop = flops[variant.recipe]
        achieved = flop / (statistics.median(ms) / 1000) / 1e9
        matmul = rates[variant.compute]
        img_per_s = images_per_step * 1000 / statistics.median(ms)
        emit({"what": "train", "variant": variant.name, "model": ARGS.model, "recipe": variant.recipe,
              "precision": variant.precision, "batch_size": ARGS.batch_size, "repeats": ARGS.repeats,
              "steps_per_repeat": ARGS.xla_steps if variant.name.endswith("xla") else ARGS.steps,
              "ms_per_step": spread(ms), "img_per_s": round(img_per_s, 1),
              "gflop_per_s": round(achieved, 1),
              f"share_of_{variant.compute}_matmul": round(achieved / matmul, 3),
              "share_of_bfloat16_matmul": round(achieved / rates["bfloat16"], 3),
              "img_per_s_over_classic_keras": round(img_per_s / reference, 2),
              **({"keras_jit_compile": [variant.discriminator.jit_compile, variant.adversarial.jit_compile]}
                 if isinstance(variant, ClassicKeras) else {})})
    emit({"what": "machine_after", "load_average": [round(v, 2) for v in os.getloadavg()]})


if __name__ == "__main__":
    main()
