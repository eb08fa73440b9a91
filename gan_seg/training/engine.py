"""The training engine shared by every trainer: run directories, checkpoints, the step loop.

A trainer supplies a compiled step (``strategy.run`` over a distributed dataset) and the variables to
checkpoint; the engine runs the steps, logs metrics to CSV, writes checkpoints atomically (only on the
chief), and restarts a run from its last complete checkpoint.
"""

import csv
import dataclasses
import json
import platform
import re
import sys
from pathlib import Path

import numpy as np

from gan_seg import __version__
from gan_seg.errors import InputError, RunError
from gan_seg.fileio import atomic_path, check_output_dir, write_json

CONFIG = "config.json"
METRICS = "metrics.csv"
CHECKPOINTS = "checkpoints"
_CKPT = re.compile(r"^ckpt-(\d{8})\.npz$")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")


def versions():
    """Library versions recorded in every run's config."""
    import keras
    import tensorflow as tf

    return {
        "gan_seg": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def resolve_precision(precision):
    """``auto`` -> ``mixed_bfloat16`` on a CPU with native bf16 (AMX / AVX512-BF16) or a GPU of compute
    capability >= 8.0, else ``float32``."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_bfloat16" if tuple(capability) >= (8, 0) else "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "mixed_bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"


@dataclasses.dataclass
class RunOptions:
    """Options every training run has; trainers' configs extend it and are saved as ``config.json``."""

    precision: str = "auto"
    seed: int = 0
    deterministic: bool = False
    log_every: int = 10
    keep_checkpoints: int = 3
    strategy: str = "auto"
    devices: str | None = None

    def common_problems(self):
        """Messages for the invalid shared options (the trainers add their own and raise once)."""
        problems = []
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            problems.append(f"seed must be an integer in 0..2**32-1, got {self.seed!r}")
        if not isinstance(self.keep_checkpoints, int) or self.keep_checkpoints < 1:
            problems.append(f"keep-checkpoints must be a positive integer, got {self.keep_checkpoints!r}")
        if not isinstance(self.log_every, int) or self.log_every < 0:
            problems.append(f"log-every must be >= 0 (0 = only at the end), got {self.log_every!r}")
        return problems

    @classmethod
    def known_options(cls, data):
        """The entries of ``data`` (a saved config) that are fields of ``cls``."""
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in data.items() if k in names}


def absolute_path(value):
    """``value`` made absolute when it names an existing path (so a run resumes from any folder)."""
    return str(Path(value).resolve()) if value and Path(value).exists() else value


class RunDirectory:
    """A run's folder: ``config.json``, ``metrics.csv``, ``checkpoints/ckpt-STEP.npz`` and outputs.

    ``writer=False`` (a non-chief worker) makes every write a no-op, so only the chief touches disk.
    """

    def __init__(self, path, writer=True):
        self.path = Path(path)
        self.writer = writer

    @property
    def config_path(self):
        return self.path / CONFIG

    def create(self, config, force=False):
        """Check the folder is new or empty (or ``force``) and write ``config.json``."""
        if not self.writer:
            return
        check_output_dir(self.path, force=force)
        if force and self.path.is_dir():
            for old in (self.path / METRICS, *self.checkpoints()):
                old.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, config)

    def read_config(self):
        """The run's config; InputError when the folder is not a run directory."""
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise InputError(f"{self.path} is not a run directory (no {CONFIG})") from None
        except (OSError, ValueError) as err:
            raise InputError(f"{self.config_path} is unreadable: {err}") from None

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoints(self):
        """Complete checkpoint files, oldest first."""
        folder = self.path / CHECKPOINTS
        found = [p for p in folder.glob("ckpt-*.npz") if _CKPT.match(p.name)] if folder.is_dir() else []
        return sorted(found)

    def latest_checkpoint(self):
        """``(step, path)`` of the newest checkpoint, or None."""
        found = self.checkpoints()
        return (int(_CKPT.match(found[-1].name).group(1)), found[-1]) if found else None

    def save_checkpoint(self, step, groups, meta=None, keep=3):
        """Write every variable of ``groups`` ({name: [variables]}) for ``step``; keep the newest ``keep``."""
        if not self.writer:
            return
        arrays = {
            f"{name}/{i:05d}": np.asarray(v.numpy() if hasattr(v, "numpy") else v)
            for name, variables in groups.items()
            for i, v in enumerate(variables)
        }
        arrays["__meta__"] = np.array(json.dumps({"step": step, **(meta or {})}))
        with atomic_path(self.path / CHECKPOINTS / f"ckpt-{step:08d}.npz") as tmp:
            np.savez(tmp, **arrays)
        for old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)

    @staticmethod
    def restore_checkpoint(path, groups):
        """Assign the arrays of checkpoint ``path`` to ``groups``' variables; returns its metadata."""
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise InputError(f"checkpoint {path} is unreadable: {err}") from None
        for name, variables in groups.items():
            stored = sorted(k for k in arrays if k.startswith(f"{name}/"))
            if len(stored) != len(variables):
                raise InputError(
                    f"checkpoint {path} holds {len(stored)} {name} variables, the model has "
                    f"{len(variables)}; it belongs to another model"
                )
            for key, variable in zip(stored, variables, strict=True):
                if tuple(arrays[key].shape) != tuple(variable.shape):
                    raise InputError(f"checkpoint {path}: {key} has shape {arrays[key].shape}, "
                                     f"the model expects {tuple(variable.shape)}")
                variable.assign(arrays[key])
        return json.loads(str(arrays["__meta__"]))

    # -- metrics ---------------------------------------------------------------------------------
    def append_metrics(self, rows, name=METRICS):
        """Append metric rows (dicts with a ``step`` key) to the CSV ``name`` (``metrics.csv``)."""
        if not self.writer or not rows:
            return
        path = self.path / name
        fields = list(rows[0])
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def truncate_metrics(self, last_step, name=METRICS):
        """Drop rows after ``last_step`` (and any torn last line) before a resumed run appends."""
        path = self.path / name
        if not self.writer or not path.exists():
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            rows = [r for r in reader if _complete(r, fields) and int(r["step"]) <= last_step]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


def _complete(row, fields):
    try:
        int(row["step"])
    except (KeyError, TypeError, ValueError):
        return False
    return all(row.get(k) not in (None, "") for k in fields)


def due(step, every, total):
    """True when a periodic event (log, checkpoint, sample) falls on ``step``: each ``every`` and the end."""
    return step == total or (every > 0 and step % every == 0)


def seed_stream(*words):
    """``seed_for(salt, counter)``: stateless TF seeds derived from ``(*words, salt, counter)``, so every
    random draw of a run is a pure function of its seed, the purpose (salt) and the step."""
    import tensorflow as tf

    base = tf.constant([words[0], 0], tf.int64)
    for word in words[1:]:
        base = tf.random.experimental.stateless_fold_in(base, word)

    def seed_for(salt, counter):
        return tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(base, salt), counter)

    return seed_for


def check_global_batch(batch_size, strategy):
    """InputError unless the global batch splits evenly over the strategy's replicas."""
    if batch_size % strategy.num_replicas_in_sync:
        raise InputError(f"--batch-size {batch_size} must be a multiple of the "
                         f"{strategy.num_replicas_in_sync} replicas")


def replica_layout(context, global_batch):
    """``(per-replica batch, replicas this input pipeline feeds, global index of its first replica)``."""
    local = context.num_replicas_in_sync // context.num_input_pipelines
    return context.get_per_replica_batch_size(global_batch), local, context.input_pipeline_id * local


def run_step(step_fn, iterator, step, restart):
    """``step_fn(iterator)``; a lost peer under multi-worker training becomes a RunError that gives the
    ``restart`` command (the collectives fail on every worker when one dies)."""
    import tensorflow as tf

    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError)
    try:
        return step_fn(iterator)
    except lost as err:
        raise RunError(f"lost contact with another worker at step {step} ({type(err).__name__}); restart "
                       f"every worker with: {restart}") from None
