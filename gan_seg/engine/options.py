"""Options every training run shares, and the field helper that makes a config field a CLI flag.

No Keras or TensorFlow here: the CLI builds its options from these dataclasses and checks them before the
backend starts. Each flagged field carries its flag and help text in its metadata (:func:`option`), so
the click options, their help and the "does not apply to --model X" messages come from one table.
"""

import dataclasses
from pathlib import Path

from gan_seg.errors import InputError

PRECISIONS = ("auto", "float32", "mixed_bfloat16")
STRATEGIES = ("auto", "none", "mirrored", "multi-worker")
SEED_LIMIT = 2**32


def option(default, help, flag=None, *, choices=None, type=None, default_text=None):
    """A config field that ``gan-seg train`` exposes as ``flag`` (default ``--field-name``).

    ``type`` overrides the click type derived from the default (``"shape"`` = HxWxC, ``"list"`` = a
    comma-separated list, ``bool`` = an on/off flag pair); ``default_text`` replaces the default in help.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "type": type, "default_text": default_text}
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field):
    """The CLI flag of a dataclass field made by :func:`option`, or None when it has none."""
    if "help" not in field.metadata:
        return None
    return field.metadata["flag"] or "--" + field.name.replace("_", "-")


def flagged_fields(config_class):
    """The fields of ``config_class`` that are CLI flags."""
    return [f for f in dataclasses.fields(config_class) if flag_of(f)]


def check_seed(seed, flag="--seed"):
    """InputError unless ``seed`` is an integer in 0..2**32-1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise InputError(f"{flag} must be an integer in 0..2**32-1, got {seed!r}")


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


def absolute_path(value):
    """``value`` made absolute when it names an existing path (so a run resumes from any folder)."""
    return str(Path(value).resolve()) if value and Path(value).exists() else value


def _is_count(value, minimum):
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Options every training run has; the families' configs extend it and are saved in ``config.json``."""

    precision: str = option("auto", "auto = mixed_bfloat16 where the hardware has native bf16.",
                            choices=PRECISIONS)
    seed: int = option(0, "Seeds weights, data order, noise and augmentation.")
    deterministic: bool = option(False, "TensorFlow op determinism (slower).", type=bool)
    log_every: int = option(10, "Log metrics every N steps (0 = only at the end).")
    keep_checkpoints: int = option(3, "Checkpoints kept.")
    strategy: str = option("auto", "tf.distribute strategy (see README 'Scaling out').", choices=STRATEGIES)
    devices: str | None = option(None, "GPU ids (0,1) or cpu:N to split the CPU into N logical devices.",
                                 default_text="all visible")

    def common_problems(self):
        """Messages for the invalid shared options (the families add their own and raise once)."""
        problems = []
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        try:
            check_seed(self.seed, "seed")
        except InputError as err:
            problems.append(str(err))
        problems += self.count_problems(["keep_checkpoints"]) + self.count_problems(["log_every"], 0)
        if self.strategy not in STRATEGIES:
            problems.append(f"--strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        try:
            parse_devices(self.devices)
        except InputError as err:
            problems.append(str(err))
        return problems

    def count_problems(self, names, minimum=1):
        """Messages for the fields ``names`` that are not integers >= ``minimum`` (1 or 0)."""
        what = "a positive integer" if minimum == 1 else ">= 0 (0 = only at the end)"
        return [f"{name.replace('_', '-')} must be {what}, got {getattr(self, name)!r}"
                for name in names if not _is_count(getattr(self, name), minimum)]

    def to_json(self):
        """The options as JSON-able values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data):
        """The config stored in a run's ``config.json`` (unknown keys ignored, lists back to tuples)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        return cls(**options)
