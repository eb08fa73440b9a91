"""QuickNAT training: one 2D network per view, trained one view after another in one run directory.

Data: every volume is conformed (see :mod:`gan_seg.seg.preprocessing`), its labels resampled onto the same
grid by nearest neighbour, and cut into slices along each view; slices that are >= ``background_max``
background are dropped. Sagittal networks merge left/right classes (expanded back at inference).
Held-out split: whole volumes when there are at least 3 (``val_fraction`` of them, at least one), else
every ``round(1 / val_fraction)``-th block of 8 consecutive slices of each volume.

Loss: weighted cross-entropy + soft Dice. Pixel weights = median-frequency class weights (from the
training slices, capped at ``class_weight_cap``) + ``omega0`` on label boundaries, omega0 = 2 x the largest
class weight (the paper's 2 f_median / f_min when uncapped). Adam with decoupled weight decay, learning
rate x ``lr_gamma`` every ``lr_step_epochs`` epochs.

Synthetic training data (``synth_share > 0``, :mod:`gan_seg.seg.synth`): the training slices come from
3D volumes generated on the fly from the training subjects' generation labels (``generation/NAME`` in
the data set, else the target labels), a share ``synth_share`` of them synthetic and the rest the real
images with 3D augmentation; every volume feeds one row of the global batch for ``synth_slices``
consecutive steps (its non-background slices drawn at random without replacement, one per step). Volume
``k`` = step block ``step // synth_slices`` x global batch + row, drawn from a generator seeded by
``(seed, view, k)``, so every input pipeline generates exactly the volumes of its own rows and a resumed
run repeats the uninterrupted one. An epoch keeps the length of the real-data epoch; validation stays on
the real held-out slices. With fewer than 3 volumes (held-out slice blocks) the generator draws from
whole label maps, so the held-out slices' anatomy is in the training data (warped and recontrasted):
hold out a subject to measure generalisation. ``synth_share == 0`` runs the real-slice path below
unchanged and reads no generation labels.

Engine: the same loop as the GAN trainer (``strategy.run`` over a distributed dataset, stateless per-step
randomness, atomic checkpoints, exact resume, TensorBoard events in ``RUN/logs/VIEW``). After every epoch
the held-out slices are segmented and the per-structure Dice is appended to ``VIEW/validation.csv``; the
best mean Dice is kept as ``VIEW/model.keras``.
"""

import dataclasses
import functools
import json
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import tensorflow as tf

from gan_seg.engine.distribute import replica_layout, seed_stream, sum_over_replicas
from gan_seg.engine.loop import Board, Hook, LoopPlan, export_float32, run_loop
from gan_seg.engine.options import absolute_path
from gan_seg.engine.run_dir import RunDirectory
from gan_seg.engine.runs import open_run, reopen_run, resume_entry
from gan_seg.errors import InputError
from gan_seg.io.files import write_json
from gan_seg.io.presets import resolve_run_dir
from gan_seg.io.saving import load_model
from gan_seg.seg.augment import augment
from gan_seg.seg.config import (
    ARCHITECTURE_FIELDS,
    BEST,
    MODEL_FILE,
    MODELS,
    SEGMENTATION,
    TRAIN_CSV,
    VALIDATION_CSV,
    SegConfig,
)
from gan_seg.seg.evaluation import dice_scores
from gan_seg.seg.losses import combined_loss, median_frequency_weights, weight_map
from gan_seg.seg.models import ARCHITECTURES
from gan_seg.seg.preprocessing import conform, conform_labels
from gan_seg.seg.synth import (
    SliceStream,
    Source,
    Synthesizer,
    foreground_centre,
    generation_problems,
    synthesis_source,
)
from gan_seg.seg.views import VIEWS, lr_merge, to_slices
from gan_seg.seg.volumes import check_labels, list_dataset, load_volume, volume_name

_ORDER_SALT, _AUGMENT_SALT = 11, 12
VALIDATION_BATCH = 16
GENERATION_DIR = "generation"  # DATA/generation/NAME.nii.gz: the labels synthesis draws from (optional)
SYNTH_PARALLEL = 2  # volumes generated at once (each in flight peaks at ~170 MiB at 1 mm, measured)


# -- data --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The conformed volumes ``[(name, image, labels)]``, the class names, the ``--init`` model folder and,
    for synthetic training, each volume's :class:`~gan_seg.seg.synth.Source` by name."""

    volumes: list
    class_names: list
    init: Path | None = None
    sources: dict | None = None


def load_training_volumes(config):
    """Conform every image of the data set and its labels; returns ``([(name, image, labels)], names)``."""
    volumes, class_names, _ = _load_volumes(config, with_sources=False)
    return volumes, class_names


def generation_files(data, names):
    """``{name: path}`` of the generation labels of a data set (``generation/NAME`` beside ``images/``;
    the CSV's folder for a CSV data set), or None without that folder; InputError when it lacks some."""
    root = Path(data) if Path(data).is_dir() else Path(data).parent
    folder = root / GENERATION_DIR
    if not folder.is_dir():
        return None
    found = {volume_name(f): f for f in sorted(folder.iterdir()) if not f.name.startswith(".")}
    missing = [name for name in names if name not in found]
    if missing:
        raise InputError(f"{folder}: no generation labels for {', '.join(missing)} (expected "
                         f"{GENERATION_DIR}/NAME.nii.gz for every image, or no {GENERATION_DIR}/ folder)")
    return {name: found[name] for name in names}


def _generation_source(path, conformed, label_img, num_classes, name):
    """The synthesis source of one volume from its generation labels (checked against its labels)."""
    try:
        gen_img = nib.load(path)
        generation = np.asarray(gen_img.dataobj)
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for broken files
        raise InputError(f"{path}: unreadable ({err})") from None
    labels = np.asarray(label_img.dataobj).reshape(label_img.shape[:3])
    problems = generation_problems(generation, labels, num_classes)
    if not problems and not np.allclose(gen_img.affine, label_img.affine, atol=1e-3):
        problems.append("its affine differs from the labels'")
    if problems:
        raise InputError(f"{GENERATION_DIR}/{path.name} ({name}): " + "; ".join(problems))
    return synthesis_source(conformed.data, conformed.affine, generation, gen_img.affine)


def _load_volumes(config, with_sources):
    """``(volumes, class_names, sources)``; sources (by name) only ``with_sources`` (else None)."""
    pairs, class_names = list_dataset(config.data, config.classes)
    generation = generation_files(config.data, [p[2] for p in pairs]) if with_sources else None
    volumes, problems, sources = [], [], {}
    for image_path, label_path, name in pairs:
        try:
            img = load_volume(image_path)
            label_img = nib.load(label_path)
            check_labels(np.asarray(label_img.dataobj), len(class_names), name, img.shape[:3])
            conformed = conform(img, config.voxel_size)
            labels = conform_labels(label_img, conformed).astype(np.uint8)
            if generation:
                sources[name] = _generation_source(generation[name], conformed, label_img, len(class_names),
                                                   name)
            elif with_sources:
                sources[name] = Source(labels, conformed.data, foreground_centre(labels))
        except InputError as err:
            problems.append(str(err))
            continue
        except Exception as err:  # noqa: BLE001 - nibabel raises many types for broken label files
            problems.append(f"{label_path}: unreadable ({err})")
            continue
        volumes.append((name, conformed.data, labels))
    if problems:
        raise InputError("; ".join(problems))
    return volumes, class_names, sources if with_sources else None


def split_volumes(volumes, val_fraction, seed):
    """Training and held-out parts: ``[(name, image, labels, slice_mask_or_None)]`` each (see module doc)."""
    if val_fraction == 0:
        return [(*v, None) for v in volumes], []
    if len(volumes) >= 3:
        count = max(1, round(val_fraction * len(volumes)))
        held = set(np.random.default_rng(seed).permutation(len(volumes))[:count].tolist())
        return ([(*v, None) for i, v in enumerate(volumes) if i not in held],
                [(*v, None) for i, v in enumerate(volumes) if i in held])
    period = max(2, round(1 / val_fraction))
    return [(*v, ("train", period)) for v in volumes], [(*v, ("val", period)) for v in volumes]


def _kept(label_slices, block, background_max):
    """Which slices of one volume's view a part keeps: not (almost) all background, in its block."""
    keep = (label_slices > 0).reshape(len(label_slices), -1).mean(axis=1) > 1.0 - background_max
    if block is not None:
        in_val = (np.arange(len(label_slices)) // 8) % block[1] == 0
        keep &= in_val if block[0] == "val" else ~in_val
    return keep


def view_slices(parts, view, label_map, size, background_max):
    """Stack the kept slices of ``parts`` along ``view``: images float32 (N, A, B), labels uint8 (N, A, B).

    Slices are zero-padded to ``size``; ``label_map`` maps class ids (sagittal merging).
    """
    images, labels = [], []
    for _, image, label, block in parts:
        s_img, s_lab = to_slices(image, view), to_slices(label, view)
        keep = _kept(s_lab, block, background_max)
        pad = [(0, 0), (0, size[0] - s_img.shape[1]), (0, size[1] - s_img.shape[2])]
        images.append(np.pad(s_img[keep], pad))
        labels.append(np.pad(label_map[s_lab[keep]], pad).astype(np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def view_slice_count(parts, view, background_max):
    """How many slices :func:`view_slices` would stack, without stacking them."""
    return sum(int(_kept(to_slices(label, view), block, background_max).sum())
               for _, _, label, block in parts)


def view_size(volumes, view):
    """In-plane size (A, B) holding every volume's slices for ``view``; multiples of 16 already."""
    shapes = np.array([to_slices(image, view).shape[1:] for _, image, _ in volumes])
    return tuple(int(s) for s in shapes.max(axis=0))


# -- the trainer ---------------------------------------------------------------------------------------
class ViewTrainer:
    """One view's network, optimizer and compiled step under a tf.distribute strategy.

    ``synth``: a :class:`~gan_seg.seg.synth.SliceStream` for synthetic training (else the real slices
    ``train`` feed the steps; they set the class weights in both cases)."""

    def __init__(self, config, view, class_names, train, val, strategy, precision, steps_per_epoch,
                 synth=None):
        self.config, self.view, self.strategy, self.synth = config, view, strategy, synth
        self.class_names = class_names
        self.x, self.y = train
        self.val_x, self.val_y = val
        self.steps_per_epoch = steps_per_epoch
        counts = np.bincount(self.y.ravel(), minlength=len(class_names))
        self.class_weights = median_frequency_weights(counts, cap=config.class_weight_cap)
        self.omega0 = 2.0 * float(self.class_weights.max())
        keras.utils.set_random_seed(config.seed)
        self.dtype = None if precision == "float32" else precision
        with strategy.scope():
            self.model = build_view_model(config, len(class_names), self.dtype,
                                          synchronized_bn=strategy.num_replicas_in_sync > 1)
            schedule = keras.optimizers.schedules.ExponentialDecay(
                config.learning_rate, decay_steps=config.lr_step_epochs * steps_per_epoch,
                decay_rate=config.lr_gamma, staircase=True)
            self.optimizer = keras.optimizers.Adam(schedule, weight_decay=config.weight_decay or None)
            self.optimizer.build(self.model.trainable_variables)
        self._step = tf.function(self._distributed_step)
        # one graph for every validation batch (eager calls: 5x the validation time, measured)
        self._labels_of = tf.function(self._argmax_labels,
                                      input_signature=[tf.TensorSpec((None, None, None, 1), tf.float32)])

    def _argmax_labels(self, images):
        return tf.argmax(self.model(images, training=False), axis=-1, output_type=tf.int32)

    def _replica_step(self, images, labels):
        weights = weight_map(labels, self.class_weights, self.omega0)
        with tf.GradientTape() as tape:
            probs = self.model(images, training=True)
            per_example = combined_loss(labels, probs, weights, len(self.class_names), per_example=True)
            loss = tf.reduce_sum(per_example) / self.config.batch_size
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply(grads, self.model.trainable_variables)
        return {"loss": loss}

    def _distributed_step(self, iterator):
        images, labels = next(iterator)
        return sum_over_replicas(self.strategy, self.strategy.run(self._replica_step, args=(images, labels)))

    def step(self, iterator):
        """Run one step; returns its metrics (the loss) as floats."""
        return {k: float(v) for k, v in self._step(iterator).items()}

    def dataset(self, start_step, total_steps):
        """Distributed dataset of (images, labels) for steps ``start_step+1 .. total_steps``; order and
        augmentation are stateless functions of ``(seed, view, step)``."""
        if self.synth is not None:
            return self.strategy.distribute_datasets_from_function(
                synthetic_dataset_fn(self.synth, self.config.batch_size, start_step, total_steps))
        cfg, n = self.config, len(self.x)
        global_batch, per_epoch = cfg.batch_size, self.steps_per_epoch
        x, y = tf.constant(self.x), tf.constant(self.y)
        seed_for = seed_stream(cfg.seed, VIEWS.index(self.view))

        def dataset_fn(context):
            batch, local, first = replica_layout(context, global_batch)

            def example(k):
                step, rest = k // (local * batch), k % (local * batch)
                row = (first + rest // batch) * batch + rest % batch
                order = tf.random.experimental.stateless_shuffle(
                    tf.range(n), seed_for(_ORDER_SALT, step // per_epoch))
                index = order[(step % per_epoch) * global_batch + row]
                image, label = x[index][..., None], tf.cast(y[index], tf.int32)
                if cfg.augment:
                    image, label = augment(image, label, seed_for(_AUGMENT_SALT, step * global_batch + row))
                return image, label

            examples = tf.data.Dataset.range(start_step * local * batch, total_steps * local * batch)
            return examples.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
                .batch(batch).prefetch(tf.data.AUTOTUNE)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def validation_dice(self):
        """Per-class Dice of the held-out slices (NaN where a class is in neither truth nor prediction)."""
        predicted = np.empty_like(self.val_y)
        for start in range(0, len(self.val_x), VALIDATION_BATCH):
            predicted[start:start + VALIDATION_BATCH] = self._labels_of(
                self.val_x[start:start + VALIDATION_BATCH, ..., None]).numpy()
        return dice_scores(predicted, self.val_y, len(self.class_names))

    def checkpoint_groups(self):
        return {"model": self.model.variables, "optimizer": self.optimizer.variables}


def synthetic_dataset_fn(stream, global_batch, start_step, total_steps):
    """The ``dataset_fn`` of :meth:`ViewTrainer.dataset` for synthetic training (module docstring).

    Step ``s``, row ``r`` of the global batch is slice ``s % count`` of volume
    ``(s // count) * global_batch + r`` (``count = stream.count``), whatever the replica layout: each
    input pipeline generates the volumes of its own rows and yields its replicas' per-replica batches in
    order."""
    count = stream.count
    height, width = stream.slice_shape

    def dataset_fn(context):
        batch, local, first = replica_layout(context, global_batch)
        rows = tf.range(first * batch, (first + local) * batch, dtype=tf.int64)
        first_block, end_block = start_step // count, -(-total_steps // count)

        def volume_ids(block):
            return tf.data.Dataset.from_tensor_slices(block * global_batch + rows)

        def generate(k):
            images, labels = tf.numpy_function(stream, [k], [tf.float32, tf.uint8], stateful=False)
            return (tf.ensure_shape(images, (count, height, width)),
                    tf.ensure_shape(labels, (count, height, width)))

        def steps(images, labels):  # (rows, count, H, W) -> count x local per-replica batches
            images = tf.reshape(tf.transpose(images, [1, 0, 2, 3]), [count * local, batch, height, width])
            labels = tf.reshape(tf.transpose(labels, [1, 0, 2, 3]), [count * local, batch, height, width])
            return tf.data.Dataset.from_tensor_slices((images[..., None], tf.cast(labels, tf.int32)))

        volumes = tf.data.Dataset.range(first_block, end_block).flat_map(volume_ids) \
            .map(generate, num_parallel_calls=SYNTH_PARALLEL, deterministic=True)
        return volumes.batch(local * batch).flat_map(steps) \
            .skip((start_step - first_block * count) * local).take((total_steps - start_step) * local) \
            .prefetch(count * local)

    return dataset_fn


def build_view_model(config, num_classes, dtype=None, synchronized_bn=False):
    """The configured architecture for any slice size (spatial dims None)."""
    return ARCHITECTURES[config.model](
        (None, None, 1), num_classes, filters=config.filters, kernel_size=config.kernel_size, se=config.se,
        se_combine=config.se_combine, dropout=config.dropout, synchronized_bn=synchronized_bn, dtype=dtype)


# -- runs ----------------------------------------------------------------------------------------------
def _view_classes(view, class_names):
    if view == "sagittal":
        merged, full_to_merged = lr_merge(class_names)
        return merged, full_to_merged
    return list(class_names), np.arange(len(class_names), dtype=np.int32)


def _adopt_init(config):
    """``(config with the --init model's architecture, its folder)``; the config unchanged without --init."""
    if not config.init:
        return config, None
    init_dir = resolve_run_dir(config.init)
    record = RunDirectory(init_dir).read_config()
    if record.get("model") not in MODELS:
        raise InputError(f"--init {config.init}: not a segmentation model ({record.get('model')!r})")
    return dataclasses.replace(config, **{field: record[field] for field in ARCHITECTURE_FIELDS}), init_dir


def _load_init_weights(model, init_dir, view, class_names):
    """Start from ``init_dir``'s network of ``view``: all weights, or all but the classifier when the
    label set differs (a new head)."""
    source, metadata = load_model(init_dir / view / MODEL_FILE)
    same = metadata.get("class_names") == list(class_names)
    for layer in model.layers:
        if not layer.weights or (not same and layer.name.startswith("classifier")):
            continue
        layer.set_weights(source.get_layer(layer.name).get_weights())
    return "all weights" if same else "all weights but the classifier (new label set)"


def _load_new(config):
    """A new run's data: paths made absolute, the ``--init`` architecture adopted, volumes conformed."""
    config = dataclasses.replace(config, **{field: absolute_path(getattr(config, field))
                                            for field in ("data", "classes", "init")})
    config, init = _adopt_init(config)
    volumes, class_names, sources = _load_volumes(config, with_sources=config.synth_share > 0)
    return config, TrainingData(volumes, class_names, init, sources)


def _load_again(config):
    """A resumed run's data (its config already holds the --init architecture)."""
    volumes, class_names, sources = _load_volumes(config, with_sources=config.synth_share > 0)
    return config, TrainingData(volumes, class_names, sources=sources)


def _describe(config, data, strategy):
    """Check that every view has a batch of training slices; the record's class names and details."""
    train_parts, _ = split_volumes(data.volumes, config.val_fraction, config.seed)
    for view in config.views:
        count = view_slice_count(train_parts, view, config.background_max)
        if count < config.batch_size:
            raise InputError(f"{view}: only {count} training slices, fewer than --batch-size "
                             f"{config.batch_size}")
    details = {"volumes": [v[0] for v in data.volumes], "init": str(data.init) if data.init else None}
    if data.sources is not None:
        train_names = [part[0] for part in train_parts]
        counts = sum(np.bincount(data.sources[name].generation.ravel(), minlength=256)
                     for name in train_names)
        extra = [int(v) for v in np.flatnonzero(counts) if v >= len(data.class_names)]
        details["synthesis"] = {
            "generation_labels": generation_files(config.data, train_names) is not None,
            "subjects": train_names, "extra_labels": extra,
            "shape": list(synthesis_shape(data.volumes, [data.sources[name] for name in train_names]))}
    return data.class_names, details


def synthesis_shape(volumes, sources=()):
    """The grid synthetic volumes are generated on: on each axis the largest conformed volume or
    synthesis source foreground (a borrowed head may be larger than its skull-stripped image's box),
    rounded up to a multiple of 16. Without larger sources, every view's slices have the size of the
    real training slices (:func:`view_size`)."""
    shapes = [image.shape for _, image, _ in volumes]
    for source in sources:
        spans = [np.flatnonzero(source.generation.any(axis=tuple(a for a in range(3) if a != axis)))
                 for axis in range(3)]
        if all(span.size for span in spans):
            shapes.append(tuple(span[-1] - span[0] + 1 for span in spans))
    largest = np.max(shapes, axis=0)
    return tuple(int(n) for n in -(-largest // 16) * 16)


def _synthesizer(config, data, train_parts):
    """The generator over the training subjects, or None for real-slice training."""
    if config.synth_share <= 0:
        return None
    sources = [data.sources[part[0]] for part in train_parts]
    return Synthesizer(sources, data.class_names, config.voxel_size, synthesis_shape(data.volumes, sources))


def train(config, out, force=False, progress=True):
    """Start a segmentation run in ``out``: train every requested view; returns the run directory."""
    opened = open_run(config, out, _load_new, _describe, force=force)
    with opened.run.hold():
        opened.run.create(opened.record, force=force)
        _train_views(opened, progress, resume=False)
    return opened.run.path if opened.run.writer else None


def resume(out, epochs=None, progress=True):
    """Continue the run in ``out``: finish the interrupted view and the ones after it (to ``epochs``)."""
    def extend(record, run):
        config = record.config
        if epochs is not None:
            if not isinstance(epochs, int) or epochs < config.epochs:
                raise InputError(f"--epochs {epochs} is below the run's {config.epochs} epochs")
            config = dataclasses.replace(config, epochs=epochs)
        return record.resumed(config, **resume_entry(epochs=config.epochs))

    opened = reopen_run(out, SegConfig, _load_again, extend)
    with opened.run.hold():
        opened.run.write_record(opened.record)
        _train_views(opened, progress, resume=True)
    return opened.run.path if opened.run.writer else None


def _train_views(opened, progress, resume):
    run, record, volumes = opened.run, opened.record, opened.data.volumes
    config, init = record.config, record.details.get("init")
    train_parts, val_parts = split_volumes(volumes, config.val_fraction, config.seed)
    synthesizer = _synthesizer(config, opened.data, train_parts)
    for view in config.views:
        view_run = RunDirectory(run.path / view, writer=run.writer)
        names, label_map = _view_classes(view, record.class_names)
        size = view_size(volumes, view)
        train = view_slices(train_parts, view, label_map, size, config.background_max)
        val = view_slices(val_parts, view, label_map, size, 1.0) if val_parts else train
        steps_per_epoch = len(train[0]) // config.batch_size
        total = config.epochs * steps_per_epoch
        latest = view_run.latest_checkpoint() if resume else None
        if latest and latest[0] >= total:
            continue
        synth = None if synthesizer is None else SliceStream(
            synthesizer, view, config.synth_slices, config.synth_share, config.seed, config.background_max,
            label_map, augment=config.augment)
        trainer = ViewTrainer(config, view, names, train, val, opened.strategy, record.precision,
                              steps_per_epoch, synth)
        start = 0
        if latest:
            view_run.restore_checkpoint(latest[1], trainer.checkpoint_groups())
            start = latest[0]
            view_run.truncate_metrics(start, TRAIN_CSV)
            view_run.truncate_metrics(start, VALIDATION_CSV)
        elif init:
            how = _load_init_weights(trainer.model, Path(init), view, names)
            done = {**record.details.get("init_weights", {}), view: how}
            record = dataclasses.replace(record, details={**record.details, "init_weights": done})
            run.write_record(record)
        if view_run.writer:
            view_run.path.mkdir(parents=True, exist_ok=True)
        _train_view(trainer, view_run, Board(run.logs / view, enabled=run.writer), record, names, start,
                    total, progress)


def _train_view(trainer, run, board, record, names, start, total, progress):
    """One view's loop: after every epoch the held-out Dice (CSV + TensorBoard), the best network kept."""
    config = trainer.config
    best_path = run.path / BEST
    best = [json.loads(best_path.read_text())["dice_mean"] if best_path.is_file() else -1.0]
    export_model = functools.cache(lambda: build_view_model(config, len(names)))  # built once, refilled

    def validate(step):
        dice = trainer.validation_dice()
        present = dice[1:][np.isfinite(dice[1:])]
        mean = float(present.mean()) if present.size else 0.0
        row = {"step": step, "epoch": step // trainer.steps_per_epoch, "dice_mean": round(mean, 5)}
        row.update({f"dice_{name}": ("" if not np.isfinite(d) else round(float(d), 5))
                    for name, d in zip(names[1:], dice[1:], strict=True)})
        run.append_metrics([row], VALIDATION_CSV)
        board.scalars(step, {"dice_mean": mean, **{f"dice/{name}": d for name, d in zip(names[1:], dice[1:],
                                                                                       strict=True)
                                                    if np.isfinite(d)}}, prefix="validation/")
        if mean > best[0] and run.writer:
            best[0] = mean
            _save_view_model(trainer, run, record, names, step, mean, export_model)

    plan = LoopPlan(total=total, seed=config.seed, log_every=config.log_every,
                    checkpoint_every=trainer.steps_per_epoch, keep_checkpoints=config.keep_checkpoints,
                    items_per_step=config.batch_size, restart=f"gan-seg train --resume {run.path.parent}",
                    unit="slices", name=trainer.view, metrics_csv=TRAIN_CSV,
                    epoch_length=trainer.steps_per_epoch)
    run_loop(run, plan, trainer.step, iter(trainer.dataset(start, total)), start, trainer.checkpoint_groups,
             board, hooks=[Hook(trainer.steps_per_epoch, validate)], progress=progress)


def _save_view_model(trainer, run, record, names, step, dice, export_model):
    """The best network so far as ``VIEW/model.keras`` (float32, any slice size; the architecture from
    ``export_model()``) plus ``best.json``."""
    metadata = {"kind": SEGMENTATION, "architecture": trainer.config.model, "view": trainer.view,
                "class_names": list(names), "full_class_names": list(record.class_names),
                "voxel_size": trainer.config.voxel_size, "step": step, "dice_mean": dice,
                "versions": record.versions}
    export_float32(export_model, trainer.model, run.path / MODEL_FILE, metadata)
    write_json(run.path / BEST, {"step": step, "epoch": step // trainer.steps_per_epoch, "dice_mean": dice})
