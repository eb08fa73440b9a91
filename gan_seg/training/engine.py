"""The training engine shared by every trainer: run directories, checkpoints, the step loop.

A trainer supplies a compiled step (``strategy.run`` over a distributed dataset) and the variables to
checkpoint; the engine runs the steps, logs metrics to CSV, writes checkpoints atomically (only on the
chief), and restarts a run from its last complete checkpoint.
"""

import csv
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

from gan_seg import __version__
from gan_seg.errors import InputError
from gan_seg.fileio import atomic_path, check_output_dir, write_json

CONFIG = "config.json"
METRICS = "metrics.csv"
CHECKPOINTS = "checkpoints"
_CKPT = re.compile(r"^ckpt-(\d{8})\.npz$")


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
    def append_metrics(self, rows):
        """Append metric rows (dicts with a ``step`` key) to ``metrics.csv``."""
        if not self.writer or not rows:
            return
        path = self.path / METRICS
        fields = list(rows[0])
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def truncate_metrics(self, last_step):
        """Drop rows after ``last_step`` (and any torn last line) before a resumed run appends."""
        path = self.path / METRICS
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


class Progress:
    """A one-line progress report on stderr: step, metrics, images/s and ETA."""

    def __init__(self, start, total, enabled=True, stream=None):
        self.start, self.total, self.enabled = start, total, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()
        self.last_line = 0.0

    def update(self, step, metrics, images):
        """Report ``step`` with its ``metrics``; ``images`` = real images consumed since ``start``."""
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = max(now - self.t0, 1e-9)
        rate = images / elapsed
        remaining = (self.total - step) * elapsed / max(step - self.start, 1)
        text = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        line = f"step {step}/{self.total}  {text}  {rate:.0f} img/s  eta {_duration(remaining)}"
        if self.tty:
            self.stream.write("\r" + line[:200].ljust(100))
        elif now - self.last_line >= 10 or step == self.total:
            self.stream.write(line + "\n")
            self.last_line = now
        if step == self.total and self.tty:
            self.stream.write("\n")
        self.stream.flush()


def _duration(seconds):
    seconds = int(math.ceil(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"
