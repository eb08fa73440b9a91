"""The seed's alternating GAN algorithm (DCGAN and CGAN), saved and resumable.

One iteration (one "step"):
1. ``d_steps`` discriminator updates, each on a fresh real minibatch labelled 1.0 (``1 - label_smoothing``
   with one-sided smoothing) and a generated minibatch labelled 0.0; only D's variables change.
2. One generator update through the adversarial model ``D(G(z))`` on fresh noise labelled 1.0 (the
   non-saturating loss); D is frozen: the update touches only G's variables.

With ``aux_weight`` (CGAN, projection discriminator) a classification head on D's image features (which
do not see the label) is trained with D on the real images' labels, and G's loss adds the head's
cross-entropy for the label asked for (AC-GAN, Odena et al. 2017, on top of projection); the head is
frozen in the G update like D.

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

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from gan_seg.engine.distribute import replica_layout, seed_stream, sum_over_replicas
from gan_seg.engine.loop import Board, Hook, LoopPlan, export_float32, run_loop
from gan_seg.engine.options import absolute_path
from gan_seg.engine.run_dir import METRICS
from gan_seg.engine.runs import open_run, reopen_run, resume_entry
from gan_seg.errors import InputError
from gan_seg.gan.config import (
    DISCRIMINATOR,
    DISCRIMINATOR_FILE,
    GENERATOR,
    GENERATOR_FILE,
    LOSS_CURVES,
    SAMPLES,
    GanConfig,
)
from gan_seg.gan.data import load_image_data, require_labels
from gan_seg.gan.models import build_adversarial, build_discriminator, build_generator
from gan_seg.gan.sampling import class_blocks, generate, latent_batch
from gan_seg.io.pictures import make_grid, render_loss_curves, save_png

_DATA_SALT, _D_NOISE_SALT, _D_LABEL_SALT, _G_NOISE_SALT, _G_LABEL_SALT = 1, 2, 3, 4, 5


class GanTrainer:
    """Models, optimizers and the compiled step of one GAN run under a tf.distribute strategy."""

    def __init__(self, config, data_x, data_y, num_classes, strategy, precision):
        config = config.checked()  # the recipe's defaults filled in
        self.config, self.strategy = config, strategy
        self.num_classes = num_classes
        self.image_shape = tuple(data_x.shape[1:])
        self.x, self.y = data_x, data_y
        keras.utils.set_random_seed(config.seed)
        dtype = None if precision == "float32" else precision
        synchronized = strategy.num_replicas_in_sync > 1
        with strategy.scope():
            self.generator = build_generator(config.latent_dim, self.image_shape, num_classes, dtype=dtype,
                                             synchronized_bn=synchronized)
            self.discriminator = build_discriminator(self.image_shape, num_classes, dtype=dtype,
                                                     **discriminator_options(config))
            self.adversarial = build_adversarial(self.generator, self.discriminator)
            self.aux_head = self.critic = None
            if config.aux_weight:
                self.critic, self.aux_head = _auxiliary_classifier(self.discriminator, num_classes, dtype)
            self.d_optimizer = _optimizer(config, config.d_learning_rate, config.d_decay, "d_optimizer")
            self.g_optimizer = _optimizer(config, config.g_learning_rate, config.g_decay, "g_optimizer")
            self.d_optimizer.build(self.d_variables)
            self.g_optimizer.build(self.generator.trainable_variables)
            self.ema_generator = None
            if config.ema:
                self.ema_generator = build_generator(config.latent_dim, self.image_shape, num_classes,
                                                     dtype=dtype, synchronized_bn=synchronized)
                self.ema_generator.set_weights(self.generator.get_weights())
        self._step = tf.function(self._distributed_step)

    @property
    def d_variables(self):
        """What a D update trains: D's trainable variables and the auxiliary head's."""
        head = self.aux_head.trainable_variables if self.aux_head is not None else []
        return self.discriminator.trainable_variables + head

    @property
    def sampler(self):
        """The generator that draws samples: the moving average of G's weights, or G without one."""
        return self.ema_generator or self.generator

    # -- the algorithm -----------------------------------------------------------------------------
    def _inputs(self, images_or_z, labels):
        if self.num_classes is None:
            return images_or_z
        return [images_or_z, tf.one_hot(labels, self.num_classes)]

    def _auxiliary_loss(self, features, labels, training):
        """Weighted cross-entropy of the auxiliary head's class logits against ``labels``, summed and
        divided by the global batch size; and the head's accuracy on them (the same normalisation)."""
        logits = tf.cast(self.aux_head(features, training=training), tf.float32)
        per_image = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=labels.dtype), labels), tf.float32)
        return (self.config.aux_weight * tf.reduce_sum(per_image) / self.config.batch_size,
                tf.reduce_sum(hits) / self.config.batch_size)

    def d_update(self, batch, i):
        """1. One discriminator update on real minibatch ``i`` (-> 1, smoothed) and fakes (-> 0).

        Only D's variables (and the auxiliary head's) change (G runs forward in training mode, so its
        BatchNorm moving statistics move too). Returns the loss, the probabilities D gave the real and
        the fake images, and the auxiliary head's accuracy on the real labels (0 without a head).
        """
        real = tf.cast(batch["real"][i], tf.float32) / 255.0
        fake = self.generator(self._inputs(batch["d_noise"][i], batch["d_fake_labels"][i]), training=True)
        local = tf.shape(real)[0]
        images = tf.concat([real, fake], axis=0)
        labels = tf.concat([batch["real_labels"][i], batch["d_fake_labels"][i]], axis=0)
        aux_acc = tf.constant(0.0)
        with tf.GradientTape() as tape:
            if self.critic is None:
                score = self.discriminator(self._inputs(images, labels), training=True)
            else:
                score, features = self.critic(self._inputs(images, labels), training=True)
            if self.config.loss == "hinge":
                per_image = tf.concat([tf.nn.relu(1.0 - score[:local]), tf.nn.relu(1.0 + score[local:])],
                                      axis=0)[:, 0]
            else:
                smoothed = tf.fill([local, 1], 1.0 - self.config.label_smoothing)
                targets = tf.concat([smoothed, tf.zeros([local, 1])], axis=0)
                per_image = keras.losses.binary_crossentropy(targets, score)
            loss = tf.reduce_sum(per_image) / (2 * self.config.batch_size)
            if self.critic is not None:
                aux_loss, aux_acc = self._auxiliary_loss(features[:local], batch["real_labels"][i], True)
                loss += aux_loss
        variables = self.d_variables
        grads = tape.gradient(loss, variables)
        self.d_optimizer.apply(grads, variables)
        return loss, score[:local], score[local:], aux_acc

    def g_update(self, batch):
        """2. One generator update through the adversarial model on fresh noise labelled 1.0.

        D is frozen: only G's trainable variables are handed to the optimizer. With the auxiliary head,
        G's fakes go through D (inference mode, as inside the adversarial model) to reach both its score
        and its features. Returns the loss.
        """
        inputs = self._inputs(batch["g_noise"], batch["g_labels"])
        with tf.GradientTape() as tape:
            if self.critic is None:
                fooled = self.adversarial(inputs, training=True)
            else:
                fooled, features = self.critic([self.generator(inputs, training=True), inputs[1]],
                                               training=False)
            if self.config.loss == "hinge":
                per_image = -fooled[:, 0]
            else:
                per_image = keras.losses.binary_crossentropy(tf.ones_like(fooled), fooled)
            loss = tf.reduce_sum(per_image) / self.config.batch_size
            if self.critic is not None:
                loss += self._auxiliary_loss(features, batch["g_labels"], False)[0]
        grads = tape.gradient(loss, self.adversarial.trainable_variables)
        self.g_optimizer.apply(grads, self.adversarial.trainable_variables)
        return loss

    def _replica_step(self, batch):
        """One iteration on this replica's slice: ``d_steps`` D updates, then one G update."""
        d_losses = []
        for i in range(self.config.d_steps):
            d_loss, p_real, p_fake, aux_acc = self.d_update(batch, i)
            d_losses.append(d_loss)
        g_loss = self.g_update(batch)
        threshold = 0.0 if self.config.loss == "hinge" else 0.5  # a logit of 0 is a probability of 0.5
        metrics = {
            "d_loss": tf.add_n(d_losses) / len(d_losses),
            "d_acc_real": tf.reduce_sum(tf.cast(p_real > threshold, tf.float32)) / self.config.batch_size,
            "d_acc_fake": tf.reduce_sum(tf.cast(p_fake < threshold, tf.float32)) / self.config.batch_size,
            "g_loss": g_loss,
        }
        if self.aux_head is not None:
            metrics["aux_acc_real"] = aux_acc  # the head's accuracy on the last real minibatch
        return metrics

    def _update_ema(self):
        """3. The moving average of G's trainable weights follows G."""
        decay = self.config.ema
        for average, weight in zip(self.ema_generator.trainable_weights, self.generator.trainable_weights,
                                   strict=True):
            average.assign(decay * average + (1.0 - decay) * weight)

    def _ema_statistics(self, batch):
        """4. The averaged generator's BatchNorm statistics follow ITS activations (averaging G's own
        statistics gives values that do not fit the averaged weights): one forward pass in training mode
        on the step's generator noise."""
        self.ema_generator(self._inputs(batch["g_noise"], batch["g_labels"]), training=True)

    def _distributed_step(self, iterator):
        batch = next(iterator)
        per_replica = self.strategy.run(self._replica_step, args=(batch,))
        if self.ema_generator is not None:
            self._update_ema()
            self.strategy.run(self._ema_statistics, args=(batch,))
        return sum_over_replicas(self.strategy, per_replica)

    def step(self, iterator):
        """Run one iteration; returns its metrics as floats."""
        return {k: float(v) for k, v in self._step(iterator).items()}

    # -- data ----------------------------------------------------------------------------------------
    def dataset(self, start_step, total_steps):
        """Distributed dataset of steps ``start_step+1 .. total_steps``: each replica's slice of the
        global batch of real images, noise and labels, all stateless functions of ``(seed, step)``."""
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
                    "d_noise": _noise(d_shape, cfg.latent_dim, seed_for(_D_NOISE_SALT, step))[:, rows],
                    "d_fake_labels": _classes(d_shape, classes, seed_for(_D_LABEL_SALT, step))[:, rows],
                    "g_noise": _noise(g_shape, cfg.latent_dim, seed_for(_G_NOISE_SALT, step))[rows],
                    "g_labels": _classes(g_shape, classes, seed_for(_G_LABEL_SALT, step))[rows],
                }

            steps = tf.data.Dataset.range(start_step * local, total_steps * local)
            return steps.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
                .prefetch(tf.data.AUTOTUNE)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # -- state ---------------------------------------------------------------------------------------
    def checkpoint_groups(self):
        """Every variable a checkpoint holds: both models (BatchNorm statistics included), both optimizers
        and the moving average of G."""
        groups = {
            "generator": self.generator.variables,
            "discriminator": self.discriminator.variables,
            "g_optimizer": self.g_optimizer.variables,
            "d_optimizer": self.d_optimizer.variables,
        }
        if self.ema_generator is not None:
            groups["ema_generator"] = self.ema_generator.variables
        if self.aux_head is not None:
            groups["aux_head"] = self.aux_head.variables
        return groups


def discriminator_options(config):
    """The :func:`build_discriminator` options a config asks for."""
    return {"spectral_norm": config.spectral_norm, "conditioning": config.conditioning,
            "logits": config.loss == "hinge"}


def _auxiliary_classifier(discriminator, num_classes, dtype):
    """D with its image features as a second output (the same layers) and a class head on them."""
    features = discriminator.get_layer("d_flatten").output
    critic = keras.Model(discriminator.inputs, [discriminator.outputs[0], features], name="critic")
    head = keras.Sequential([keras.Input(tuple(features.shape[1:])),
                             layers.Dense(num_classes, name="aux_logits", dtype=dtype)], name="aux_head")
    return critic, head


def _optimizer(config, learning_rate, decay, name):
    """Adam(``beta_1``), or the seed's RMSprop with Keras 2 ``decay`` (lr / (1 + decay * iterations))."""
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate, beta_1=config.beta_1, name=name)
    schedule = keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=decay)
    return keras.optimizers.RMSprop(learning_rate=schedule, name=name)


def _noise(shape, latent_dim, seed):
    return tf.random.stateless_uniform([*shape, latent_dim], seed=seed, minval=-1.0, maxval=1.0)


def _classes(shape, classes, seed):
    return tf.random.stateless_uniform(shape, seed=seed, minval=0, maxval=classes, dtype=tf.int32)


# -- runs ------------------------------------------------------------------------------------------------
def grid_latents(config, num_classes):
    """The run's fixed latent batch for sample grids: 8x8 (DCGAN) or 10 per class, one class a row."""
    n = 10 * num_classes if num_classes else 64
    z = latent_batch(n, config.latent_dim, [config.seed, 2**31 - 1])
    return z, (class_blocks(n, num_classes) if num_classes else None), (num_classes or 8)


def _load(config):
    """The run's images (checked: labels for a CGAN, at least one batch); data paths made absolute."""
    config = dataclasses.replace(config, data=absolute_path(config.data))
    data = load_image_data(config.data, config.image_shape)
    if config.model == "cgan":
        require_labels(data, "--model cgan")
    if len(data.x) < config.batch_size:
        raise InputError(f"{data.source} has {len(data.x)} images, fewer than one batch of "
                         f"{config.batch_size}; lower --batch-size")
    return config, data


def _describe(config, data, strategy):
    num_classes = data.num_classes if config.model == "cgan" else None
    details = {"image_shape": [int(d) for d in data.x.shape[1:]], "num_classes": num_classes,
               "data_source": data.source, "num_images": len(data.x)}
    return (data.class_names if num_classes else None), details


def _trainer(opened):
    record, data = opened.record, opened.data
    classes = record.details["num_classes"]
    return GanTrainer(record.config, data.x, data.y if classes else None, classes, opened.strategy,
                      record.precision)


def train(config, out, force=False, progress=True):
    """Start a new run in ``out`` and train it to ``config.steps``; returns the run directory."""
    opened = open_run(config, out, _load, _describe, force=force)
    trainer = _trainer(opened)
    with opened.run.hold():
        opened.run.create(opened.record, force=force)
        _train(trainer, opened, 0, progress)
    return opened.run.path if opened.run.writer else None


def resume(out, steps, progress=True):
    """Continue the run in ``out`` from its last checkpoint up to ``steps`` total iterations."""
    def extend(record, run):
        latest = run.latest_checkpoint()
        if latest is None:
            raise InputError(f"{out} has no checkpoint to resume from; start a new run instead")
        done = latest[0]
        if not isinstance(steps, int) or steps <= done:
            raise InputError(f"--steps {steps} is not above the run's current step {done}; "
                             f"pass a larger total number of steps")
        return record.resumed(dataclasses.replace(record.config, steps=steps),
                              **resume_entry(from_step=done, to_step=steps))

    opened = reopen_run(out, GanConfig, _load, extend)
    trainer = _trainer(opened)
    with opened.run.hold():
        done, path = opened.run.latest_checkpoint()
        opened.run.restore_checkpoint(path, trainer.checkpoint_groups())
        opened.run.write_record(opened.record)
        opened.run.truncate_metrics(done)
        _train(trainer, opened, done, progress)
    return opened.run.path if opened.run.writer else None


def _train(trainer, opened, start, progress):
    """The run's loop (sample grids as a hook), then the final models and the loss curves."""
    run, config = opened.run, opened.record.config
    grid_z, grid_labels, grid_rows = grid_latents(config, trainer.num_classes)
    board = Board(run.logs, enabled=run.writer)

    def sample_grid(step):
        if run.writer:
            grid = make_grid(generate(trainer.sampler, grid_z, grid_labels), rows=grid_rows)
            save_png(grid, run.path / SAMPLES / f"step_{step:08d}.png")
            board.image(step, "samples", grid)

    plan = LoopPlan(total=config.steps, seed=config.seed, log_every=config.log_every,
                    checkpoint_every=config.checkpoint_every, keep_checkpoints=config.keep_checkpoints,
                    items_per_step=config.batch_size * config.d_steps,
                    restart=f"gan-seg train --resume {run.path} --steps {config.steps}")
    iterator = iter(trainer.dataset(start, config.steps))
    run_loop(run, plan, trainer.step, iterator, start, trainer.checkpoint_groups, board,
             hooks=[Hook(config.sample_every, sample_grid)], progress=progress)
    if run.writer:
        _save_final_models(trainer, opened.record, run)
        render_loss_curves(run.path / METRICS, run.path / LOSS_CURVES,
                           columns=["d_loss", "g_loss", "d_acc_real", "d_acc_fake"])


def _save_final_models(trainer, record, run):
    """``generator.keras`` / ``discriminator.keras`` in float32 with class names and the run's config."""
    config, classes = record.config, record.details["num_classes"]
    shape = tuple(record.details["image_shape"])
    metadata = {"architecture": config.model, "class_names": list(record.class_names or []) or None,
                "image_shape": list(shape), "num_classes": classes, "step": config.steps,
                "latent_dim": config.latent_dim, "recipe": config.recipe, "versions": record.versions}
    export_float32(lambda: build_generator(config.latent_dim, shape, classes), trainer.sampler,
                   run.path / GENERATOR_FILE, {**metadata, "kind": GENERATOR, "ema": config.ema})
    export_float32(lambda: build_discriminator(shape, classes, **discriminator_options(config)),
                   trainer.discriminator, run.path / DISCRIMINATOR_FILE,
                   {**metadata, "kind": DISCRIMINATOR, "output": "logit" if config.loss == "hinge" else
                    "probability", "conditioning": config.conditioning if classes else None})
