"""THE step loop that every trainer plugs into, TensorBoard logging, and the float32 export of models.

A trainer supplies a compiled step (``strategy.run`` over a distributed dataset), the variables to
checkpoint and its hooks (sample grids, validation); :func:`run_loop` runs the steps and, in this order at
each step: stops on a non-finite metric, updates the progress line, logs the metrics (CSV in the run
folder and TensorBoard events in ``RUN/logs``), calls the hooks that are due, and writes the checkpoint
that is due. Only the chief writes anything.
"""

import dataclasses
import math
import time

import numpy as np
import tensorflow as tf

from gan_seg.engine.distribute import run_step
from gan_seg.engine.progress import Progress
from gan_seg.engine.run_dir import METRICS
from gan_seg.errors import RunError
from gan_seg.io.saving import save_model


def due(step, every, total):
    """True when a periodic event (log, checkpoint, sample) falls on ``step``: each ``every`` and the end."""
    return step == total or (every > 0 and step % every == 0)


@dataclasses.dataclass(frozen=True)
class Hook:
    """``call(step)`` on every ``every``-th step and on the last one."""

    every: int
    call: object


@dataclasses.dataclass(frozen=True)
class LoopPlan:
    """How one loop logs and saves: steps, periods, what a step consumes and how to continue the run."""

    total: int
    seed: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    items_per_step: int  # images (GAN) or slices (QuickNAT) one step consumes
    restart: str  # the command that continues the run, given when a worker is lost
    unit: str = "img"  # progress "img/s", CSV column "img_per_s"
    name: str = ""  # a prefix of the progress line and of errors (e.g. the view)
    metrics_csv: str = METRICS
    epoch_length: int | None = None  # adds an ``epoch`` column


class Board:
    """TensorBoard event files in ``folder`` (nothing is written when ``enabled`` is false)."""

    def __init__(self, folder, enabled=True):
        self.writer = tf.summary.create_file_writer(str(folder)) if enabled else None

    def scalars(self, step, values, prefix=""):
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(prefix + name, float(value))

    def image(self, step, tag, image):
        """``image`` uint8 (H, W, C) with C 1 or 3."""
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            tf.summary.image(tag, np.asarray(image)[None])

    def close(self):
        if self.writer is not None:
            self.writer.close()


def run_loop(run, plan, step_fn, iterator, start, checkpoint_groups, board, hooks=(), progress=True):
    """Run steps ``start+1 .. plan.total`` of ``step_fn(iterator)`` (a dict of float metrics)."""
    noun = f"{plan.name} step" if plan.name else "step"
    prefix = f"{plan.name}: " if plan.name else ""
    bar = Progress(start, plan.total, enabled=progress and run.writer, noun=noun, unit=f"{plan.unit}/s")
    t0 = time.perf_counter()
    for step in range(start + 1, plan.total + 1):
        metrics = run_step(step_fn, iterator, step, plan.restart)
        if not all(math.isfinite(v) for v in metrics.values()):
            shown = ", ".join(f"{k} {v}" for k, v in metrics.items())
            raise RunError(f"{prefix}training diverged at step {step} (non-finite loss: {shown}); resume "
                           "from the last checkpoint with a lower learning rate")
        items = (step - start) * plan.items_per_step
        bar.update(step, metrics, items)
        if due(step, plan.log_every, plan.total):
            rate = round(items / max(time.perf_counter() - t0, 1e-9), 1)
            row = {"step": step}
            if plan.epoch_length:
                row["epoch"] = round(step / plan.epoch_length, 3)
            row.update({k: round(v, 6) for k, v in metrics.items()})
            row[f"{plan.unit}_per_s"] = rate
            run.append_metrics([row], plan.metrics_csv)
            board.scalars(step, {**metrics, f"{plan.unit}_per_s": rate})
        for hook in hooks:
            if due(step, hook.every, plan.total):
                hook.call(step)
        if due(step, plan.checkpoint_every, plan.total):
            run.save_checkpoint(step, checkpoint_groups(), keep=plan.keep_checkpoints,
                                meta={"rng": {"kind": "stateless", "seed": plan.seed, "counter": step}})
    board.close()


def export_float32(build, trained, path, metadata):
    """Save ``trained``'s weights in ``build()`` (its architecture built in float32) with ``metadata``."""
    model = build()
    model.set_weights(trained.get_weights())
    save_model(model, path, metadata)
    return model
