"""A training run's folder: its record (``config.json``), metrics CSVs and atomic checkpoints.

No Keras or TensorFlow here (checkpoints hold NumPy arrays of any framework's variables), so run
directories can be read, checked and listed on an install without TensorFlow.
"""

import contextlib
import csv
import dataclasses
import json
import re
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks, runs are not locked there
    fcntl = None

import numpy as np

from gan_seg.errors import InputError
from gan_seg.io.files import atomic_path, check_output_dir, write_json

CONFIG = "config.json"
METRICS = "metrics.csv"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
LOCK = ".lock"
_CKPT = re.compile(r"^ckpt-(\d{8})\.npz$")
_STALE = re.compile(r"^\.ckpt-\d{8}\.npz\..+\.tmp\.npz$")  # atomic_path's temporary of a checkpoint


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a run's ``config.json`` holds: every option, what the options resolved to, library versions.

    ``details`` are the family's own resolved facts (GAN: image shape, classes, data; QuickNAT: volumes,
    fine-tuning source). On disk the options are top-level keys beside ``class_names``, ``resolved``
    (precision, replicas and the details), ``versions`` and, after a resume, ``resumes``.
    """

    config: object
    class_names: tuple | None
    precision: str
    replicas: int
    versions: dict
    details: dict = dataclasses.field(default_factory=dict)
    resumes: tuple = ()

    def to_json(self):
        data = {**self.config.to_json(), "class_names": list(self.class_names) if self.class_names else None,
                "resolved": {"precision": self.precision, "replicas": self.replicas, **self.details},
                "versions": self.versions}
        if self.resumes:
            data["resumes"] = list(self.resumes)
        return data

    @classmethod
    def from_json(cls, data, config_class):
        """The record of ``config.json`` contents ``data`` whose options are a ``config_class``."""
        resolved = dict(data.get("resolved") or {})
        names = data.get("class_names") or resolved.pop("class_names", None)  # older GAN runs: in resolved
        resolved.pop("class_names", None)
        try:
            return cls(config_class.from_json(data), tuple(names) if names else None,
                       resolved.pop("precision"), int(resolved.pop("replicas", 1)), data.get("versions", {}),
                       resolved, tuple(data.get("resumes", ())))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{CONFIG} of this run is incomplete or edited ({err!r}); "
                             "start a new run") from None

    def resumed(self, config, **entry):
        """This record continued with ``config`` (e.g. more steps) and ``entry`` added to ``resumes``."""
        return dataclasses.replace(self, config=config, resumes=(*self.resumes, entry))


class RunDirectory:
    """A run's folder: ``config.json``, ``metrics.csv``, ``checkpoints/ckpt-STEP.npz``, ``logs/`` and outputs.

    ``writer=False`` (a non-chief worker) makes every write a no-op, so only the chief touches disk.
    """

    def __init__(self, path, writer=True):
        self.path = Path(path)
        self.writer = writer

    @property
    def config_path(self):
        return self.path / CONFIG

    @property
    def logs(self):
        """The TensorBoard log folder (``tensorboard --logdir RUN/logs``)."""
        return self.path / LOGS

    def check_new(self, force=False):
        """InputError unless the folder can hold a new run (new or empty, or ``force``)."""
        if self.writer:
            check_output_dir(self.path, force=force)

    @contextlib.contextmanager
    def hold(self):
        """Hold the run's lock while training into it: another process that tries to train (or resume)
        into the same folder meanwhile is refused; the lock ends with this block or this process. Once
        held, the hidden temporaries of checkpoint writes that a killed process left behind are removed."""
        if not self.writer or fcntl is None:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(f"{self.path} is being trained by another process; wait for it to end "
                                 f"or give another --out") from None
            for stale in (self.path / CHECKPOINTS).glob(".ckpt-*.tmp*"):
                if _STALE.match(stale.name):
                    stale.unlink(missing_ok=True)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def create(self, record, force=False):
        """Write ``config.json`` of a new run (after :meth:`check_new`); ``force`` first removes the
        metrics, checkpoints and TensorBoard events of an earlier run there."""
        if not self.writer:
            return
        if force and self.path.is_dir():
            for old in (self.path / METRICS, *self.checkpoints(), *self.logs.rglob("events.out.tfevents.*")):
                old.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_record(record)

    def write_record(self, record):
        if self.writer:
            write_json(self.config_path, record.to_json())

    def read_config(self):
        """The run's ``config.json`` as a dict; InputError when the folder is not a run directory."""
        try:
            data = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise InputError(f"{self.path} is not a run directory (no {CONFIG})") from None
        except (OSError, ValueError) as err:
            raise InputError(f"{self.config_path} is unreadable: {err}") from None
        if not isinstance(data, dict):
            raise InputError(f"{self.config_path} is not a run's config (not a JSON object)")
        return data

    def read_record(self, config_class):
        """The run's :class:`RunRecord` with options of ``config_class``."""
        return RunRecord.from_json(self.read_config(), config_class)

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
