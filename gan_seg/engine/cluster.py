"""Where this process stands in a multi-worker cluster, from ``TF_CONFIG``, without starting TensorFlow."""

import json
import os

from gan_seg.errors import InputError


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


def starts_as_chief(strategy):
    """Whether this process will write the run directory, known before TensorFlow starts: always, except
    for a non-chief worker of a multi-worker strategy (TF_CONFIG checked here)."""
    return is_chief_task(check_tf_config()) if strategy == "multi-worker" else True
