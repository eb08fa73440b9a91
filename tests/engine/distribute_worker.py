"""Subprocess side of tests/test_distribute.py: runs GAN steps under a 2-replica MirroredStrategy.

Logical CPU devices can only be configured before TensorFlow initialises, so the tests run this script
with ``sys.executable tests/distribute_worker.py OUT_DIR``. It splits the CPU into 2 logical devices and,
in one process, trains the same trainer with 1 replica (the default strategy, full batch on one device)
and with 2 replicas (MirroredStrategy, half the batch each), then writes:

- ``OUT_DIR/<case>.npz``: ``single/<group>/<i>`` and ``mirrored/<group>/<i>`` - every checkpointed
  variable (both models with BatchNorm statistics, both optimizers) after one step, plus ``start/...``;
- ``OUT_DIR/results.json``: the step metrics of each case and the freeze checks under the strategy.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import keras
import numpy as np  # noqa: E402
import tensorflow as tf
from keras import layers

import gan_seg.gan.trainer as gan_trainer
from gan_seg.engine.distribute import make_strategy
from gan_seg.gan.trainer import GanTrainer
from tests.helpers import make_images, tiny_config

REPLICAS = 2
# name: (GanConfig overrides, generator variant)
# The BatchNorm cases use the classic recipe: under Adam (the default recipe) the first moment holds the raw
# gradient, and the synchronised BatchNorm's float32 variance (sum of squares across replicas) gives G
# gradients that differ from the single replica's by up to ~1e-5 on entries of ~1e-4 (measured), beyond
# the tolerance; the no-BatchNorm case keeps the default recipe and matches it.
CASES = {
    "no_bn": (dict(model="dcgan", d_steps=2), "no_bn"),
    "dcgan": (dict(model="dcgan", recipe="classic"), "default"),
    "cgan": (dict(model="cgan", recipe="classic"), "default"),
    # Control: the default generator with BatchNorm NOT synchronised must differ from 1 replica, which
    # shows the comparison above is sensitive to per-replica batch statistics.
    "dcgan_unsynced_bn": (dict(model="dcgan", recipe="classic"), "unsynced_bn"),
}


def no_bn_generator(latent_dim=100, image_shape=(28, 28, 1), num_classes=None, dtype=None,
                    synchronized_bn=False):
    """A small generator without BatchNorm (same signature as the library's builder)."""
    height, width, channels = image_shape
    z = keras.Input((latent_dim,), name="z")
    inputs, x = [z], z
    if num_classes is not None:
        label = keras.Input((num_classes,), name="label")
        inputs.append(label)
        x = layers.Concatenate()([z, label])
    x = layers.Dense(height // 4 * width // 4 * 16, activation="relu")(x)
    x = layers.Reshape((height // 4, width // 4, 16))(x)
    x = layers.Conv2DTranspose(8, 5, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(channels, 5, strides=2, padding="same")(x)
    image = layers.Activation("sigmoid", dtype="float32")(x)
    return keras.Model(inputs if num_classes is not None else z, image, name="generator")


def _arrays(trainer, prefix):
    return {f"{prefix}/{group}/{i:05d}": np.array(v.numpy())
            for group, variables in trainer.checkpoint_groups().items()
            for i, v in enumerate(variables)}


def _copy_state(source, target):
    for group, variables in source.checkpoint_groups().items():
        for a, b in zip(variables, target.checkpoint_groups()[group], strict=True):
            b.assign(a.numpy())


def _replica_spread(trainer):
    """Largest difference between the per-replica copies of any model variable (0 = in sync)."""
    worst = 0.0
    for v in [*trainer.generator.variables, *trainer.discriminator.variables]:
        copies = [np.asarray(c.numpy()) for c in getattr(v.value, "values", [v.value])]
        worst = max(worst, *(float(np.abs(c - copies[0]).max()) for c in copies))
    return worst


def compare_case(name, overrides, variant, strategy, out):
    original = gan_trainer.build_generator
    if variant == "no_bn":
        gan_trainer.build_generator = no_bn_generator
    elif variant == "unsynced_bn":
        gan_trainer.build_generator = lambda *a, synchronized_bn=False, **k: original(*a, **k)
    try:
        x, y = make_images()
        config = tiny_config(**overrides)
        classes = 4 if config.model == "cgan" else None
        labels = y if classes else None
        single = GanTrainer(config, x, labels, classes, tf.distribute.get_strategy(), "float32")
        mirrored = GanTrainer(config, x, labels, classes, strategy, "float32")
    finally:
        gan_trainer.build_generator = original
    _copy_state(single, mirrored)
    arrays = {**_arrays(single, "start")}
    metrics = {"single": single.step(iter(single.dataset(0, 1))),
               "mirrored": mirrored.step(iter(mirrored.dataset(0, 1)))}
    arrays.update(_arrays(single, "single"))
    arrays.update(_arrays(mirrored, "mirrored"))
    np.savez(out / f"{name}.npz", **arrays)
    has_bn = any("moving" in v.path for v in mirrored.generator.variables)
    return {"metrics": metrics, "replicas": mirrored.strategy.num_replicas_in_sync,
            "replica_spread": _replica_spread(mirrored), "has_bn": has_bn}


def _state(optimizer):
    """An optimizer's variables that an update must move (its constant learning rate left out)."""
    return [v for v in optimizer.variables if not v.path.endswith("/learning_rate")]


def freeze_checks(strategy, model):
    """D/G update isolation under the strategy: which variable groups changed after each update."""
    x, y = make_images()
    config = tiny_config(model=model)
    classes = 4 if model == "cgan" else None
    t = GanTrainer(config, x, y if classes else None, classes, strategy, "float32")
    batch = next(iter(t.dataset(0, 1)))
    d_step = tf.function(lambda b: strategy.run(lambda rb: t.d_update(rb, 0)[0], args=(b,)))
    g_step = tf.function(lambda b: strategy.run(t.g_update, args=(b,)))
    groups = {
        "d_trainable": lambda: t.discriminator.trainable_variables,
        "d_all": lambda: t.discriminator.variables,
        "g_trainable": lambda: t.generator.trainable_variables,
        "g_bn_stats": lambda: [v for v in t.generator.non_trainable_variables if "moving" in v.path],
        "d_optimizer": lambda: _state(t.d_optimizer),
        "g_optimizer": lambda: _state(t.g_optimizer),
    }

    def snapshot():
        return {k: [np.array(v.numpy()) for v in get()] for k, get in groups.items()}

    def changed(before):
        return {k: [not np.array_equal(b, v.numpy()) for b, v in zip(before[k], get(), strict=True)]
                for k, get in groups.items()}

    result = {}
    for label, update in (("d_update", d_step), ("g_update", g_step), ("d_update_after_g", d_step)):
        before = snapshot()
        update(batch)
        result[label] = changed(before)
    result["replica_spread"] = _replica_spread(t)
    result["replicas"] = strategy.num_replicas_in_sync
    return result


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    strategy, _ = make_strategy("mirrored", f"cpu:{REPLICAS}")
    results = {"cases": {}, "freeze": {}}
    for name, (overrides, variant) in CASES.items():
        results["cases"][name] = compare_case(name, overrides, variant, strategy, out)
    for model in ("dcgan", "cgan"):
        results["freeze"][model] = freeze_checks(strategy, model)
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
