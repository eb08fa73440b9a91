"""Opening a run, new or resumed, in the same order for both trainers, so that nothing is written before
every check has passed: options -> chief? -> folder -> data -> strategy -> the family's own checks ->
``config.json``."""

import dataclasses

from gan_seg.engine.backend import resolve_precision, versions
from gan_seg.engine.cluster import starts_as_chief
from gan_seg.engine.distribute import check_global_batch, make_strategy
from gan_seg.engine.run_dir import RunDirectory, RunRecord


@dataclasses.dataclass
class OpenRun:
    """A run ready to train: its folder, record, loaded data and tf.distribute strategy."""

    run: RunDirectory
    record: RunRecord
    data: object
    strategy: object


def open_run(config, out, load, describe, force=False):
    """Check everything a new run in ``out`` needs; writes nothing (the caller calls
    ``opened.run.create(opened.record, force)`` once its models are built, the last check).

    ``load(config) -> (config, data)`` reads the data (and may complete the config, e.g. absolute paths);
    ``describe(config, data, strategy) -> (class_names, details)`` runs the family's own checks and
    returns what the record keeps.
    """
    config = config.checked()
    run = RunDirectory(out, writer=starts_as_chief(config.strategy))
    run.check_new(force)
    config, data = load(config)
    strategy = _strategy(run, config)
    class_names, details = describe(config, data, strategy)
    names = tuple(class_names) if class_names else None
    record = RunRecord(config, names, resolve_precision(config.precision), strategy.num_replicas_in_sync,
                       versions(), details)
    return OpenRun(run, record, data, strategy)


def reopen_run(out, config_class, load, extend):
    """Continue the run in ``out``: ``extend(record, run) -> record`` checks what the user asked for and
    returns the continued record (the caller writes it once its checkpoint is restored)."""
    run = RunDirectory(out, writer=False)
    record = extend(run.read_record(config_class), run)
    _, data = load(record.config)
    strategy = _strategy(run, record.config)
    return OpenRun(run, record, data, strategy)


def _strategy(run, config):
    strategy, chief = make_strategy(config.strategy, config.devices, config.deterministic)
    run.writer = chief
    check_global_batch(config.batch_size, strategy)
    return strategy


def resume_entry(**fields):
    """One ``resumes`` entry of a record: ``fields`` and the versions of this process."""
    return {**fields, "versions": versions()}
