"""tf.distribute for both trainers: one device, many GPUs on one machine, or many machines.

``devices`` is ``None`` (everything visible), GPU ids (``"0,1"``) or ``"cpu:N"`` (the CPU split into N
logical devices, to try replicas without a GPU). Devices must be configured before TensorFlow first uses
them, so call :func:`make_strategy` before building any model. The input helpers make every random draw
a stateless function of the run's seed and the step, and give each replica its slice of the global batch.
"""

import tensorflow as tf

from gan_seg.engine.cluster import check_tf_config, is_chief_task
from gan_seg.engine.options import STRATEGIES, parse_devices
from gan_seg.errors import InputError, RunError

_LOST_PEER = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
              tf.errors.CancelledError)


def make_strategy(name="auto", devices=None, deterministic=False):
    """Create the strategy ``name`` over ``devices`` (op determinism first when asked); returns
    ``(strategy, is_chief)``."""
    if name not in STRATEGIES:
        raise InputError(f"--strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    parsed = parse_devices(devices)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if name == "multi-worker":
        tf_config = check_tf_config()  # checked before TensorFlow starts its server
        # The strategy configures collective ops, which TensorFlow allows only before its runtime starts:
        # apply the device settings without listing logical devices (that would start it).
        _configure_physical_devices(parsed)
        return tf.distribute.MultiWorkerMirroredStrategy(), is_chief_task(tf_config)
    names = _configure_devices(parsed)
    if name == "mirrored" or (name == "auto" and len(names) > 1):
        cross = tf.distribute.ReductionToOneDevice() if "CPU" in names[0].upper() else None
        return tf.distribute.MirroredStrategy(names, cross_device_ops=cross), True
    if len(names) > 1:  # "none" with several devices: the first one
        return tf.distribute.OneDeviceStrategy(names[0]), True
    return tf.distribute.get_strategy(), True


def _configure_physical_devices(parsed):
    """Apply ``parsed`` devices to TensorFlow without starting its runtime; returns the device names
    replicas run on, or None when nothing was configured (or the runtime had already started)."""
    gpus = tf.config.list_physical_devices("GPU")
    try:
        if parsed and parsed[0] == "cpu":
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * parsed[1])
            tf.config.set_visible_devices([], "GPU")
            return [f"/cpu:{i}" for i in range(parsed[1])]
        if parsed and parsed[0] == "gpu":
            missing = [i for i in parsed[1] if i >= len(gpus)]
            if missing:
                raise InputError(f"--devices: GPU {missing[0]} does not exist ({len(gpus)} visible)")
            tf.config.set_visible_devices([gpus[i] for i in parsed[1]], "GPU")
            return [f"/gpu:{i}" for i in range(len(parsed[1]))]
    except RuntimeError:
        # Already initialised in this process (a second run in one Python session): keep its devices.
        pass
    return None


def _configure_devices(parsed):
    """Apply ``parsed`` devices to TensorFlow; returns the device names replicas run on."""
    names = _configure_physical_devices(parsed)
    if names:
        return names
    logical_gpus = tf.config.list_logical_devices("GPU")
    if logical_gpus:
        return [d.name for d in logical_gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def check_global_batch(batch_size, strategy):
    """InputError unless the global batch splits evenly over the strategy's replicas."""
    if batch_size % strategy.num_replicas_in_sync:
        raise InputError(f"--batch-size {batch_size} must be a multiple of the "
                         f"{strategy.num_replicas_in_sync} replicas")


def seed_stream(*words):
    """``seed_for(salt, counter)``: stateless TF seeds derived from ``(*words, salt, counter)``, so every
    random draw of a run is a pure function of its seed, the purpose (salt) and the step."""
    base = tf.constant([words[0], 0], tf.int64)
    for word in words[1:]:
        base = tf.random.experimental.stateless_fold_in(base, word)

    def seed_for(salt, counter):
        return tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(base, salt), counter)

    return seed_for


def replica_layout(context, global_batch):
    """``(per-replica batch, replicas this input pipeline feeds, global index of its first replica)``."""
    local = context.num_replicas_in_sync // context.num_input_pipelines
    return context.get_per_replica_batch_size(global_batch), local, context.input_pipeline_id * local


def sum_over_replicas(strategy, per_replica):
    """A dict of per-replica values summed across replicas (each replica's share of a global mean)."""
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}


def run_step(step_fn, iterator, step, restart):
    """``step_fn(iterator)``; a lost peer under multi-worker training becomes a RunError that gives the
    ``restart`` command (the collectives fail on every worker when one dies)."""
    try:
        return step_fn(iterator)
    except _LOST_PEER as err:
        raise RunError(f"lost contact with another worker at step {step} ({type(err).__name__}); restart "
                       f"every worker with: {restart}") from None
