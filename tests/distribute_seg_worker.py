"""Subprocess side of tests/test_distribute.py for QuickNAT: one ViewTrainer step, 1 replica vs 2.

Run as ``sys.executable tests/distribute_seg_worker.py OUT_DIR DATA_DIR`` (DATA_DIR: a phantom data set,
see tests/conftest.py). It splits the CPU into 2 logical devices before TensorFlow starts and, for each
case, builds a tiny QuickNAT trainer twice from the same slices: with the default strategy (1 replica,
the full global batch, plain BatchNorm) and with a 2-replica MirroredStrategy (half the batch each,
BatchNorm synchronised automatically), copies the first one's state into the second, runs one step of
each and writes:

- ``OUT_DIR/seg_<case>.npz``: ``start/``, ``single/`` and ``mirrored/<group>/<i>`` - every checkpointed
  variable (model weights, BatchNorm statistics, optimizer slots) before and after the step, and
  ``batch/single/{images,labels}`` and ``batch/mirrored/{images,labels}``: the global batch of step 1 as
  each strategy feeds it (the replicas' halves concatenated in replica order);
- ``OUT_DIR/seg_results.json``: per case the losses, replicas, replica spread and variable paths.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

REPLICAS = 2
VIEW = "axial"
# name: SegConfig overrides on top of BASE
CASES = {
    "augment": dict(augment=True),
    "plain": dict(augment=False),
}
BASE = dict(model="quicknat", views=(VIEW,), filters=4, kernel_size=3, se="scse", dropout=0.0, batch_size=8,
            epochs=1, learning_rate=1e-3, val_fraction=0.0, precision="float32", strategy="none", seed=5)


def _arrays(trainer, prefix):
    return {f"{prefix}/{group}/{i:05d}": np.array(v.numpy())
            for group, variables in trainer.checkpoint_groups().items()
            for i, v in enumerate(variables)}


def _copy_state(source, target):
    for group, variables in source.checkpoint_groups().items():
        for a, b in zip(variables, target.checkpoint_groups()[group], strict=True):
            b.assign(a.numpy())


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
    """The training slices of ``VIEW`` from the phantoms in ``data``: ``(class_names, (x, y))``."""
    from gan_seg.training.segmentation import (
        SegConfig,
        load_training_volumes,
        split_volumes,
        view_size,
        view_slices,
    )

    config = SegConfig(data=str(data), **BASE)
    volumes, class_names = load_training_volumes(config)
    train, _ = split_volumes(volumes, 0.0, config.seed)
    label_map = np.arange(len(class_names), dtype=np.int32)
    return class_names, view_slices(train, VIEW, label_map, view_size(volumes, VIEW), config.background_max)


def compare_case(name, overrides, strategy, class_names, train, out):
    import tensorflow as tf

    from gan_seg.training.segmentation import SegConfig, ViewTrainer

    config = SegConfig(data="unused", **{**BASE, **overrides})
    steps_per_epoch = len(train[0]) // config.batch_size
    single = ViewTrainer(config, VIEW, class_names, train, train, tf.distribute.get_strategy(), "float32",
                         steps_per_epoch)
    mirrored = ViewTrainer(config, VIEW, class_names, train, train, strategy, "float32", steps_per_epoch)
    _copy_state(single, mirrored)
    arrays = _arrays(single, "start")
    images, labels = next(iter(single.dataset(0, 1)))
    arrays["batch/single/images"], arrays["batch/single/labels"] = np.asarray(images), np.asarray(labels)
    images, labels = next(iter(mirrored.dataset(0, 1)))
    arrays["batch/mirrored/images"] = _local(strategy, images)
    arrays["batch/mirrored/labels"] = _local(strategy, labels)
    losses = {"single": single.step(iter(single.dataset(0, 1))),
              "mirrored": mirrored.step(iter(mirrored.dataset(0, 1)))}
    arrays.update(_arrays(single, "single"))
    arrays.update(_arrays(mirrored, "mirrored"))
    np.savez(out / f"seg_{name}.npz", **arrays)
    paths = {group: [v.path for v in variables] for group, variables in mirrored.checkpoint_groups().items()}
    sync_bn = [layer.synchronized for layer in mirrored.model.layers if hasattr(layer, "synchronized")]
    return {"losses": losses, "replicas": mirrored.strategy.num_replicas_in_sync,
            "single_replicas": single.strategy.num_replicas_in_sync, "replica_spread": _replica_spread(mirrored),
            "synchronized_bn": sync_bn, "paths": paths, "slices": len(train[0])}


def main(out, data):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from gan_seg.training.distribute import make_strategy

    strategy, _ = make_strategy("mirrored", f"cpu:{REPLICAS}")
    class_names, train = slices(data)
    results = {name: compare_case(name, overrides, strategy, class_names, train, out)
               for name, overrides in CASES.items()}
    (out / "seg_results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
