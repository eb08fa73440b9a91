"""Subprocess side of tests/test_distribute.py for QuickNAT: one ViewTrainer step, 1 replica vs 2.

Run as ``sys.executable tests/distribute_seg_worker.py OUT_DIR DATA_DIR`` (DATA_DIR: a phantom data set,
see tests/conftest.py). The CPU is split into 2 logical devices before TensorFlow starts; then the same
tiny QuickNAT trainer (axial slices of the phantoms) is built twice: with the default strategy (1 replica,
the full global batch, plain BatchNorm) and with a 2-replica MirroredStrategy (half the batch each,
BatchNorm synchronised because replicas > 1). Both start from one state and take one step.

Two things make an exact comparison meaningful (without them a 1-replica step on the same batch with its
rows in another order already differs from itself by up to 2 x the learning rate in a quarter to a third
of the arrays, so no tolerance could tell a distribution bug from round-off):

- Keras' default float type is float64 here (the trainer is still told ``precision="float32"``, which
  means "the Keras default"): in float32 a different summation order flips the sign of near-zero
  gradient elements, and Adam's first step turns each flip into a +-learning-rate update;
- the start state is generic (``generic_start``): at Keras' initial values (BatchNorm beta 0, PReLU slope
  0) the bottleneck's unpooled map has mean exactly 0, so decode4's first BatchNorm puts 3/4 of those
  outputs on the PReLU kink, where the gradient depends on the sign of round-off (even in float64).

Writes ``OUT_DIR/seg_<case>.npz`` (``start/``, ``single/``, ``mirrored/<group>/<i>``: every checkpointed
variable before and after the step; ``batch/{single,mirrored}/{images,labels}``: step 1's global batch as
each strategy feeds it, the replicas' halves concatenated) and ``OUT_DIR/seg_results.json``.
"""

import dataclasses
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

import gan_seg.seg.trainer as seg
from gan_seg.engine.distribute import make_strategy
from gan_seg.seg.trainer import (
    SegConfig,
    build_view_model,
    load_training_volumes,
    split_volumes,
    view_size,
    view_slices,
)
from tests.helpers import INIT_ARCHITECTURE, generic_start

REPLICAS = 2
VIEW = "axial"
BASE = dict(**INIT_ARCHITECTURE, views=(VIEW,), batch_size=8, epochs=1, learning_rate=1e-3, val_fraction=0.0,
            precision="float32", strategy="none", seed=5)


def _arrays(trainer, prefix):
    return {f"{prefix}/{group}/{i:05d}": np.array(v.numpy())
            for group, variables in trainer.checkpoint_groups().items()
            for i, v in enumerate(variables)}


def _assign(trainer, arrays, prefix):
    for group, variables in trainer.checkpoint_groups().items():
        for i, v in enumerate(variables):
            v.assign(arrays[f"{prefix}/{group}/{i:05d}"])


def _local(strategy, value):
    """The per-replica parts of ``value`` concatenated in replica order, as numpy."""
    return np.concatenate([np.asarray(part) for part in strategy.experimental_local_results(value)])


def _replica_spread(trainer):
    """Largest difference between the per-replica copies of any model variable (0 = in sync)."""
    worst = 0.0
    for v in trainer.model.variables:
        copies = [np.asarray(c.numpy()) for c in getattr(v.value, "values", [v.value])]
        worst = max(worst, *(float(np.abs(c - copies[0]).max()) for c in copies))
    return worst


def slices(data):
    """The training slices of ``VIEW`` of the phantoms in ``data``: ``(class_names, (x, y))``."""
    config = SegConfig(data=str(data), **BASE)
    volumes, class_names = load_training_volumes(config)
    train, _ = split_volumes(volumes, 0.0, config.seed)
    label_map = np.arange(len(class_names), dtype=np.int32)
    return class_names, view_slices(train, VIEW, label_map, view_size(volumes, VIEW), config.background_max)


def step_case(single, mirrored, start, out, name):
    """Both trainers from ``start``: step 1's global batch as each feeds it, then one step each."""
    _assign(single, start, "start")
    _assign(mirrored, start, "start")
    arrays = dict(start)
    images, labels = next(iter(single.dataset(0, 1)))
    arrays["batch/single/images"], arrays["batch/single/labels"] = np.asarray(images), np.asarray(labels)
    images, labels = next(iter(mirrored.dataset(0, 1)))
    arrays["batch/mirrored/images"] = _local(mirrored.strategy, images)
    arrays["batch/mirrored/labels"] = _local(mirrored.strategy, labels)
    losses = {"single": single.step(iter(single.dataset(0, 1))),
              "mirrored": mirrored.step(iter(mirrored.dataset(0, 1)))}
    arrays.update(_arrays(single, "single"))
    arrays.update(_arrays(mirrored, "mirrored"))
    np.savez(out / f"seg_{name}.npz", **arrays)
    return {"losses": losses, "replicas": mirrored.strategy.num_replicas_in_sync,
            "single_replicas": single.strategy.num_replicas_in_sync,
            "replica_spread": _replica_spread(mirrored),
            "synchronized_bn": [layer.synchronized for layer in mirrored.model.layers
                                if hasattr(layer, "synchronized")],
            "single_synchronized_bn": [layer.synchronized for layer in single.model.layers
                                       if hasattr(layer, "synchronized")],
            "augment": single.config.augment and mirrored.config.augment,
            "paths": {group: [v.path for v in variables]
                      for group, variables in single.checkpoint_groups().items()}}


def dropout_checks(strategy, class_names, batch):
    """Dropout 0.2 in training mode, forward only: 1 replica on the global batch vs 2 replicas on its
    halves (same weights, same seed-generator states); and 2 replicas fed the SAME half. BatchNorm is
    frozen (moving statistics), so only the dropout masks can tell the replicas from 1 replica."""
    config = SegConfig(**{**INIT_ARCHITECTURE, "dropout": 0.2})
    keras.utils.set_random_seed(1)
    single = build_view_model(config, len(class_names))
    generic_start(single)
    keras.utils.set_random_seed(1)
    with strategy.scope():
        mirrored = build_view_model(config, len(class_names), synchronized_bn=True)
    for a, b in zip(single.variables, mirrored.variables, strict=True):
        b.assign(a.numpy())
    for layer in [*single.layers, *mirrored.layers]:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    seed_states = [np.array(v.numpy()) for v in single.variables if "seed_generator" in v.path]

    @tf.function
    def forward(parts):
        return strategy.run(lambda x: mirrored(x, training=True), args=(parts,))

    def per_replica(parts):
        return strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(parts[context.replica_id_in_sync_group]))

    half = len(batch) // REPLICAS
    expected = np.asarray(single(tf.constant(batch), training=True))
    split = _local(strategy, forward(per_replica([batch[:half], batch[half:]])))
    same = [np.asarray(p) for p in strategy.experimental_local_results(
        forward(per_replica([batch[:half], batch[:half]])))]
    return {"layers": sum(isinstance(layer, keras.layers.Dropout) for layer in mirrored.layers),
            "seed_states": len(seed_states),
            "max_diff_vs_single": float(np.abs(split - expected).max()),
            "same_input_replica_diff": float(np.abs(same[0] - same[1]).max())}


def main(out, data):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    strategy, _ = make_strategy("mirrored", f"cpu:{REPLICAS}")
    keras.config.set_floatx("float64")
    class_names, train = slices(data)
    config = seg.SegConfig(data=str(data), **{**BASE, "augment": True})
    steps_per_epoch = len(train[0]) // config.batch_size

    def trainer(on):
        return seg.ViewTrainer(config, VIEW, class_names, train, train, on, "float32", steps_per_epoch)

    single, mirrored = trainer(tf.distribute.get_strategy()), trainer(strategy)
    generic_start(single.model)
    start = _arrays(single, "start")
    results = {"slices": len(train[0]), "cases": {}}
    # One trainer pair for both cases: the augmentation flag is read when the dataset is built, so the
    # second case reuses the compiled step (tracing a synchronised-BatchNorm step takes most of the time).
    results["cases"]["augment"] = step_case(single, mirrored, start, out, "augment")
    single.config = mirrored.config = dataclasses.replace(config, augment=False)
    results["cases"]["plain"] = step_case(single, mirrored, start, out, "plain")
    results["traces"] = {"single": single._step.experimental_get_tracing_count(),
                         "mirrored": mirrored._step.experimental_get_tracing_count()}

    # Control: the same 2-replica step with per-replica BatchNorm statistics must differ.
    original = seg.build_view_model
    seg.build_view_model = lambda *a, synchronized_bn=False, **k: original(*a, **k)
    try:
        unsynced = trainer(strategy)
    finally:
        seg.build_view_model = original
    results["cases"]["unsynced_bn"] = step_case(single, unsynced, start, out, "unsynced_bn")

    batch = np.load(out / "seg_plain.npz")["batch/single/images"]
    results["dropout"] = dropout_checks(strategy, class_names, batch)
    (out / "seg_results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
