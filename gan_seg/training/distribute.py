"""Choosing a tf.distribute strategy: one device, many GPUs on one machine, or many machines.

``devices`` is ``None`` (everything visible), GPU ids (``"0,1"``) or ``"cpu:N"`` (the CPU split into N
logical devices, to try replicas without a GPU). Devices must be configured before TensorFlow first uses
them, so call :func:`make_strategy` before building any model.
"""

import json
import os

from gan_seg.errors import InputError

STRATEGIES = ("auto", "none", "mirrored", "multi-worker")


def parse_devices(devices):
    """``None`` | ``("cpu", N)`` | ``("gpu", [ids])`` from the ``--devices`` text; InputError if malformed."""
    if devices in (None, ""):
        return None
    text = str(devices).strip().lower()
    if text.startswith("cpu:"):
        count = text[4:]
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"--devices {devices!r}: expected cpu:N with N >= 1, e.g. cpu:2")
        return ("cpu", int(count))
    ids = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in ids) or len(set(ids)) != len(ids):
        raise InputError(f"--devices {devices!r}: expected GPU ids like 0,1 or cpu:N")
    return ("gpu", [int(part) for part in ids])


def check_tf_config():
    """Parsed ``TF_CONFIG`` for multi-worker training; InputError when missing or malformed."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise InputError("--strategy multi-worker needs the TF_CONFIG environment variable "
                         "(cluster and task); see the README section 'Scaling out'")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        task_type, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"TF_CONFIG is malformed ({err}); expected "
                         '{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": 0}}') from None
    if task_type == "worker" and not 0 <= index < len(workers):
        raise InputError(f"TF_CONFIG task index {index} is outside the {len(workers)} workers")
    return config


def is_chief_task(tf_config=None):
    """True for the task that writes run directories: the chief, or worker 0 when there is no chief."""
    if tf_config is None:
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            return True
        tf_config = json.loads(raw)
    task = tf_config.get("task", {})
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def starts_as_chief(name):
    """Whether this process will write the run directory, known before TensorFlow starts: always, except
    for a non-chief worker of a multi-worker strategy (TF_CONFIG checked here)."""
    return is_chief_task(check_tf_config()) if name == "multi-worker" else True


def make_strategy(name="auto", devices=None):
    """Create the strategy ``name`` over ``devices``; returns ``(strategy, is_chief)``."""
    if name not in STRATEGIES:
        raise InputError(f"--strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    parsed = parse_devices(devices)
    if name == "multi-worker":
        tf_config = check_tf_config()  # checked before TensorFlow starts its server
    import tensorflow as tf

    if name == "multi-worker":
        # The strategy configures collective ops, which TensorFlow allows only before its runtime starts:
        # apply the device settings without listing logical devices (that would start it).
        _configure_physical_devices(tf, parsed)
        return tf.distribute.MultiWorkerMirroredStrategy(), is_chief_task(tf_config)
    names = _configure_devices(tf, parsed)
    if name == "mirrored" or (name == "auto" and len(names) > 1):
        cross = tf.distribute.ReductionToOneDevice() if "CPU" in names[0].upper() else None
        return tf.distribute.MirroredStrategy(names, cross_device_ops=cross), True
    if len(names) > 1:  # "none" with several devices: the first one
        return tf.distribute.OneDeviceStrategy(names[0]), True
    return tf.distribute.get_strategy(), True


def _configure_physical_devices(tf, parsed):
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


def _configure_devices(tf, parsed):
    """Apply ``parsed`` devices to TensorFlow; returns the device names replicas run on."""
    names = _configure_physical_devices(tf, parsed)
    if names:
        return names
    logical_gpus = tf.config.list_logical_devices("GPU")
    if logical_gpus:
        return [d.name for d in logical_gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def setup_strategy(name, devices, deterministic=False):
    """:func:`make_strategy`, after turning on TensorFlow op determinism when asked."""
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    return make_strategy(name, devices)
