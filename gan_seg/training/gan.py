"""The seed's alternating GAN algorithm (DCGAN and CGAN), saved and resumable.

One iteration (one "step"):
1. ``d_steps`` discriminator updates, each on a fresh real minibatch labelled 1.0 (``1 - label_smoothing``
   with one-sided smoothing) and a generated minibatch labelled 0.0; only D's variables change.
2. One generator update through the adversarial model ``D(G(z))`` on fresh noise labelled 1.0 (the
   non-saturating loss); D is frozen: the update touches only G's variables.

BatchNorm (only G has it): G runs in training mode in both passes (batch statistics; its moving statistics
are updated by both forward passes). With several replicas BatchNorm is synchronised: it normalises with
the statistics of the whole global batch, so 2 replicas x 32 images train exactly like 1 x 64. Samples (the
training-time grids and ``gan-seg sample`` alike) use inference mode (moving statistics). Making the D
step's fakes in inference mode instead, as the classic ``predict`` recipe does, lets G fool D only in
training mode and gave all-black samples.

All randomness of a step (data order, noise, fake labels) is a stateless function of ``(seed, step)``
computed in the tf.data pipeline, so a resumed run repeats an uninterrupted one exactly and every replica
count sees the same global batch. Each replica gets its own slice of the global batch; losses are summed
over the slice and divided by the global batch size, so gradients all-reduced across replicas are means.
"""

import dataclasses
import math
import time

import numpy as np

from gan_seg.errors import InputError, RunError
from gan_seg.fileio import check_output_dir, write_json
from gan_seg.progress import Progress
from gan_seg.training.distribute import setup_strategy, starts_as_chief
from gan_seg.training.engine import (
    RunDirectory,
    RunOptions,
    absolute_path,
    check_global_batch,
    due,
    replica_layout,
    resolve_precision,
    run_step,
    seed_stream,
    versions,
)

MODELS = ("dcgan", "cgan")
GENERATOR_FILE = "generator.keras"
DISCRIMINATOR_FILE = "discriminator.keras"
SAMPLES = "samples"
_DATA_SALT, _D_NOISE_SALT, _D_LABEL_SALT, _G_NOISE_SALT, _G_LABEL_SALT = 1, 2, 3, 4, 5


@dataclasses.dataclass
class GanConfig(RunOptions):
    """Every option of a GAN run; saved as the run's ``config.json``."""

    model: str = "dcgan"
    data: str = "fashion-mnist"
    image_shape: tuple | None = None
    latent_dim: int = 100
    steps: int = 10000
    batch_size: int = 64
    d_steps: int = 1
    d_learning_rate: float = 2e-4
    g_learning_rate: float = 1e-4
    d_decay: float = 6e-8
    g_decay: float = 3e-8
    label_smoothing: float = 0.0
    checkpoint_every: int = 500
    sample_every: int = 500

    def validate(self):
        """Raise one InputError listing every invalid option."""
        problems = self.common_problems()
        if self.model not in MODELS:
            problems.append(f"model {self.model!r} is not one of {', '.join(MODELS)}")
        for name in ("latent_dim", "steps", "batch_size", "d_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("checkpoint_every", "sample_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                problems.append(f"{name.replace('_', '-')} must be >= 0 (0 = only at the end), got {value!r}")
        for name in ("d_learning_rate", "g_learning_rate"):
            if not getattr(self, name) > 0:
                problems.append(f"{name.replace('_', '-')} must be > 0")
        for name in ("d_decay", "g_decay"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name.replace('_', '-')} must be >= 0")
        if not 0.0 <= self.label_smoothing < 0.5:
            problems.append(f"label-smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if problems:
            raise InputError("; ".join(problems))

    def to_json(self):
        data = dataclasses.asdict(self)
        data["image_shape"] = list(self.image_shape) if self.image_shape else None
        return data

    @classmethod
    def from_json(cls, data):
        options = cls.known_options(data)
        if options.get("image_shape"):
            options["image_shape"] = tuple(options["image_shape"])
        return cls(**options)


class GanTrainer:
    """Models, optimizers and the compiled step of one GAN run under a tf.distribute strategy."""

    def __init__(self, config, data_x, data_y, num_classes, strategy, precision):
        import keras
        import tensorflow as tf

        from gan_seg.models.gan import build_adversarial, build_discriminator, build_generator

        self.config, self.strategy, self.precision = config, strategy, precision
        self.num_classes = num_classes
        self.image_shape = tuple(data_x.shape[1:])
        self.x, self.y = data_x, data_y
        keras.utils.set_random_seed(config.seed)
        dtype = None if precision == "float32" else precision
        with strategy.scope():
            self.generator = build_generator(config.latent_dim, self.image_shape, num_classes, dtype=dtype,
                                             synchronized_bn=strategy.num_replicas_in_sync > 1)
            self.discriminator = build_discriminator(self.image_shape, num_classes, dtype=dtype)
            self.adversarial = build_adversarial(self.generator, self.discriminator)
            self.d_optimizer = _rmsprop(keras, config.d_learning_rate, config.d_decay, "d_optimizer")
            self.g_optimizer = _rmsprop(keras, config.g_learning_rate, config.g_decay, "g_optimizer")
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self.g_optimizer.build(self.generator.trainable_variables)
        self._step = tf.function(self._distributed_step)

    # -- the algorithm -----------------------------------------------------------------------------
    def _inputs(self, images_or_z, labels):
        import tensorflow as tf

        if self.num_classes is None:
            return images_or_z
        return [images_or_z, tf.one_hot(labels, self.num_classes)]

    def d_update(self, batch, i):
        """1. One discriminator update on real minibatch ``i`` (-> 1, smoothed) and fakes (-> 0).

        Only D's variables change (G runs forward in training mode, so its BatchNorm moving statistics
        move too). Returns the loss and the probabilities D gave the real and the fake images.
        """
        import keras
        import tensorflow as tf

        real = tf.cast(batch["real"][i], tf.float32) / 255.0
        fake = self.generator(self._inputs(batch["d_noise"][i], batch["d_fake_labels"][i]), training=True)
        local = tf.shape(real)[0]
        images = tf.concat([real, fake], axis=0)
        labels = tf.concat([batch["real_labels"][i], batch["d_fake_labels"][i]], axis=0)
        smoothed = tf.fill([local, 1], 1.0 - self.config.label_smoothing)
        targets = tf.concat([smoothed, tf.zeros([local, 1])], axis=0)
        with tf.GradientTape() as tape:
            prob = self.discriminator(self._inputs(images, labels), training=True)
            loss = tf.reduce_sum(keras.losses.binary_crossentropy(targets, prob))
            loss = loss / (2 * self.config.batch_size)
        grads = tape.gradient(loss, self.discriminator.trainable_variables)
        self.d_optimizer.apply(grads, self.discriminator.trainable_variables)
        return loss, prob[:local], prob[local:]

    def g_update(self, batch):
        """2. One generator update through the adversarial model on fresh noise labelled 1.0.

        D is frozen: only G's trainable variables are handed to the optimizer. Returns the loss.
        """
        import keras
        import tensorflow as tf

        with tf.GradientTape() as tape:
            fooled = self.adversarial(self._inputs(batch["g_noise"], batch["g_labels"]), training=True)
            loss = tf.reduce_sum(keras.losses.binary_crossentropy(tf.ones_like(fooled), fooled))
            loss = loss / self.config.batch_size
        grads = tape.gradient(loss, self.generator.trainable_variables)
        self.g_optimizer.apply(grads, self.generator.trainable_variables)
        return loss

    def _replica_step(self, batch):
        """One iteration on this replica's slice: ``d_steps`` D updates, then one G update."""
        import tensorflow as tf

        d_losses = []
        for i in range(self.config.d_steps):
            d_loss, p_real, p_fake = self.d_update(batch, i)
            d_losses.append(d_loss)
        g_loss = self.g_update(batch)
        return {
            "d_loss": tf.add_n(d_losses) / len(d_losses),
            "d_acc_real": tf.reduce_sum(tf.cast(p_real > 0.5, tf.float32)) / self.config.batch_size,
            "d_acc_fake": tf.reduce_sum(tf.cast(p_fake < 0.5, tf.float32)) / self.config.batch_size,
            "g_loss": g_loss,
        }

    def _distributed_step(self, iterator):
        import tensorflow as tf

        per_replica = self.strategy.run(self._replica_step, args=(next(iterator),))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    def step(self, iterator):
        """Run one iteration; returns its metrics as floats."""
        return {k: float(v) for k, v in self._step(iterator).items()}

    # -- data ----------------------------------------------------------------------------------------
    def dataset(self, start_step, total_steps):
        """Distributed dataset of steps ``start_step+1 .. total_steps``: each replica's slice of the
        global batch of real images, noise and labels, all stateless functions of ``(seed, step)``."""
        import tensorflow as tf

        cfg = self.config
        n, global_batch = len(self.x), cfg.batch_size
        per_epoch = n // global_batch
        x = tf.constant(self.x)
        y = tf.constant(self.y if self.y is not None else np.zeros(n, np.int32))
        classes = self.num_classes or 1
        seed_for = seed_stream(cfg.seed)

        def dataset_fn(context):
            batch, local, first = replica_layout(context, global_batch)

            def element(k):
                step, replica = k // local, first + k % local
                rows = slice(replica * batch, (replica + 1) * batch)
                real, real_labels = [], []
                for i in range(cfg.d_steps):
                    draw = step * cfg.d_steps + i
                    order = tf.random.experimental.stateless_shuffle(
                        tf.range(n), seed_for(_DATA_SALT, draw // per_epoch))
                    index = order[(draw % per_epoch) * global_batch:][rows]
                    real.append(tf.gather(x, index))
                    real_labels.append(tf.gather(y, index))
                d_shape, g_shape = [cfg.d_steps, global_batch], [global_batch]
                return {
                    "real": tf.stack(real),
                    "real_labels": tf.stack(real_labels),
                    "d_noise": _noise(tf, d_shape, cfg.latent_dim, seed_for(_D_NOISE_SALT, step))[:, rows],
                    "d_fake_labels": _classes(tf, d_shape, classes, seed_for(_D_LABEL_SALT, step))[:, rows],
                    "g_noise": _noise(tf, g_shape, cfg.latent_dim, seed_for(_G_NOISE_SALT, step))[rows],
                    "g_labels": _classes(tf, g_shape, classes, seed_for(_G_LABEL_SALT, step))[rows],
                }

            steps = tf.data.Dataset.range(start_step * local, total_steps * local)
            return steps.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
                .prefetch(tf.data.AUTOTUNE)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # -- state ---------------------------------------------------------------------------------------
    def checkpoint_groups(self):
        """Every variable a checkpoint holds: both models (BatchNorm statistics included), both optimizers."""
        return {
            "generator": self.generator.variables,
            "discriminator": self.discriminator.variables,
            "g_optimizer": self.g_optimizer.variables,
            "d_optimizer": self.d_optimizer.variables,
        }


def _rmsprop(keras, learning_rate, decay, name):
    """The seed's RMSprop with Keras 2 ``decay`` (lr / (1 + decay * iterations)) as a schedule."""
    schedule = keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=decay)
    return keras.optimizers.RMSprop(learning_rate=schedule, name=name)


def _noise(tf, shape, latent_dim, seed):
    return tf.random.stateless_uniform([*shape, latent_dim], seed=seed, minval=-1.0, maxval=1.0)


def _classes(tf, shape, classes, seed):
    return tf.random.stateless_uniform(shape, seed=seed, minval=0, maxval=classes, dtype=tf.int32)


# -- runs ------------------------------------------------------------------------------------------------
def grid_latents(config, num_classes):
    """The run's fixed latent batch for sample grids: 8x8 (DCGAN) or 10 per class, one class a row."""
    from gan_seg.inference.sampling import class_blocks, latent_batch

    n = 10 * num_classes if num_classes else 64
    z = latent_batch(n, config.latent_dim, [config.seed, 2**31 - 1])
    return z, (class_blocks(n, num_classes) if num_classes else None), (num_classes or 8)


def _load_data(config):
    from gan_seg.data.images import load_image_data, require_labels

    data = load_image_data(config.data, config.image_shape)
    if config.model == "cgan":
        require_labels(data, "--model cgan")
    if len(data.x) < config.batch_size:
        raise InputError(f"{data.source} has {len(data.x)} images, fewer than one batch of "
                         f"{config.batch_size}; lower --batch-size")
    return data


def train_gan(config, out, force=False, progress=True):
    """Start a new run in ``out`` and train it to ``config.steps``; returns the run directory."""
    config.validate()
    config.data = absolute_path(config.data)
    run = RunDirectory(out, writer=starts_as_chief(config.strategy))
    if run.writer:
        check_output_dir(run.path, force=force)
    data = _load_data(config)
    image_shape = tuple(int(d) for d in data.x.shape[1:])
    strategy, chief = setup_strategy(config.strategy, config.devices, config.deterministic)
    run.writer = chief
    precision = resolve_precision(config.precision)
    num_classes = data.num_classes if config.model == "cgan" else None
    check_global_batch(config.batch_size, strategy)
    trainer = GanTrainer(config, data.x, data.y if num_classes else None, num_classes, strategy, precision)
    record = {
        **config.to_json(),
        "resolved": {
            "precision": precision,
            "image_shape": list(image_shape),
            "num_classes": num_classes,
            "class_names": list(data.class_names) if (num_classes and data.class_names) else None,
            "data_source": data.source,
            "num_images": len(data.x),
            "replicas": strategy.num_replicas_in_sync,
        },
        "versions": versions(),
    }
    run.create(record, force=force)
    _train(trainer, run, record, 0, config.steps, progress)
    return run.path if run.writer else None


def resume_gan(out, steps, progress=True):
    """Continue the run in ``out`` from its last checkpoint up to ``steps`` total iterations."""
    run = RunDirectory(out, writer=False)
    record = run.read_config()
    config = GanConfig.from_json(record)
    latest = run.latest_checkpoint()
    if latest is None:
        raise InputError(f"{out} has no checkpoint to resume from; start a new run instead")
    done, path = latest
    if not isinstance(steps, int) or steps <= done:
        raise InputError(f"--steps {steps} is not above the run's current step {done}; "
                         f"pass a larger total number of steps")
    data = _load_data(config)
    strategy, chief = setup_strategy(config.strategy, config.devices, config.deterministic)
    run.writer = chief
    check_global_batch(config.batch_size, strategy)
    resolved = record["resolved"]
    trainer = GanTrainer(config, data.x, data.y if resolved["num_classes"] else None,
                         resolved["num_classes"], strategy, resolved["precision"])
    run.restore_checkpoint(path, trainer.checkpoint_groups())
    record["steps"] = steps
    record.setdefault("resumes", []).append({"from_step": done, "to_step": steps, "versions": versions()})
    if chief:
        write_json(run.config_path, record)
        run.truncate_metrics(done)
    _train(trainer, run, record, done, steps, progress)
    return run.path if run.writer else None


def _train(trainer, run, record, start, total, progress):
    """The step loop: log, sample grids, checkpoints, and the final models."""
    from gan_seg.imaging import make_grid, render_loss_curves, save_png
    from gan_seg.inference.sampling import generate

    config = trainer.config
    grid_z, grid_labels, grid_rows = grid_latents(config, trainer.num_classes)
    images_per_step = config.batch_size * config.d_steps
    bar = Progress(start, total, enabled=progress and run.writer)
    iterator = iter(trainer.dataset(start, total))
    t0 = time.perf_counter()
    for step in range(start + 1, total + 1):
        metrics = run_step(trainer.step, iterator, step, f"gan-seg train --resume {run.path} --steps {total}")
        if not all(math.isfinite(v) for v in metrics.values()):
            raise RunError(f"training diverged at step {step} (non-finite loss {metrics}); "
                           f"resume from the last checkpoint with a lower learning rate")
        images = (step - start) * images_per_step
        bar.update(step, metrics, images)
        if due(step, config.log_every, total):
            rate = images / max(time.perf_counter() - t0, 1e-9)
            run.append_metrics([{"step": step, **{k: round(v, 6) for k, v in metrics.items()},
                                 "img_per_s": round(rate, 1)}])
        if run.writer and due(step, config.sample_every, total):
            grid = generate(trainer.generator, grid_z, grid_labels)
            save_png(make_grid(grid, rows=grid_rows), run.path / SAMPLES / f"step_{step:08d}.png")
        if due(step, config.checkpoint_every, total):
            run.save_checkpoint(step, trainer.checkpoint_groups(), keep=config.keep_checkpoints,
                                meta={"rng": {"kind": "stateless", "seed": config.seed, "counter": step}})
    if run.writer:
        _save_final_models(trainer, run, record)
        render_loss_curves(run.path / "metrics.csv", run.path / "loss_curves.png",
                           columns=["d_loss", "g_loss", "d_acc_real", "d_acc_fake"])


def _save_final_models(trainer, run, record):
    """``generator.keras`` / ``discriminator.keras`` in float32 with class names and the run's config."""
    from gan_seg.models.gan import DISCRIMINATOR, GENERATOR, build_discriminator, build_generator
    from gan_seg.models.saving import save_model

    resolved = record["resolved"]
    shape, classes = tuple(resolved["image_shape"]), resolved["num_classes"]
    metadata = {"architecture": record["model"], "class_names": resolved["class_names"],
                "image_shape": list(shape), "num_classes": classes, "step": record["steps"],
                "latent_dim": record["latent_dim"], "versions": record["versions"]}
    for kind, built, trained, name in (
        (GENERATOR, build_generator(record["latent_dim"], shape, classes), trainer.generator, GENERATOR_FILE),
        (DISCRIMINATOR, build_discriminator(shape, classes), trainer.discriminator, DISCRIMINATOR_FILE),
    ):
        built.set_weights(trained.get_weights())
        save_model(built, run.path / name, {**metadata, "kind": kind})
