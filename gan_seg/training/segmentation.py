"""QuickNAT training: one 2D network per view, trained one view after another in one run directory.

Data: every volume is conformed (see :mod:`gan_seg.preprocessing`), its labels resampled onto the same
grid by nearest neighbour, and cut into slices along each view; slices that are >= ``background_max``
background are dropped. Sagittal networks merge left/right classes (expanded back at inference).
Held-out split: whole volumes when there are at least 3 (``val_fraction`` of them, at least one), else
every ``round(1 / val_fraction)``-th block of 8 consecutive slices of each volume.

Loss: weighted cross-entropy + soft Dice. Pixel weights = median-frequency class weights (from the
training slices, capped at ``class_weight_cap``) + ``omega0`` on label boundaries, omega0 = 2 x the largest
class weight (the paper's 2 f_median / f_min when uncapped). Adam with decoupled weight decay, learning
rate x ``lr_gamma`` every ``lr_step_epochs`` epochs.

Engine: the same as the GAN trainer (``strategy.run`` over a distributed dataset, stateless per-step
randomness, atomic checkpoints, exact resume). After every epoch the held-out slices are segmented and
the per-structure Dice is appended to ``VIEW/validation.csv``; the best mean Dice is kept as
``VIEW/model.keras``.
"""

import dataclasses
import json
import math
import time
from pathlib import Path

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
from gan_seg.views import VIEWS, lr_merge, parse_views, to_slices

MODELS = ("quicknat", "unet")
MODEL_FILE = "model.keras"
TRAIN_CSV, VALIDATION_CSV, BEST = "train.csv", "validation.csv", "best.json"
_ORDER_SALT, _AUGMENT_SALT = 11, 12
ARCHITECTURE_FIELDS = ("model", "filters", "kernel_size", "se", "se_combine", "dropout")


@dataclasses.dataclass
class SegConfig(RunOptions):
    """Every option of a segmentation run; saved as the run's ``config.json``."""

    model: str = "quicknat"
    data: str | None = None
    classes: str | None = None
    views: tuple = VIEWS
    filters: int = 64
    kernel_size: int = 5
    se: str | None = "scse"
    se_combine: str = "max"
    dropout: float = 0.2
    epochs: int = 10
    batch_size: int = 8
    learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    lr_step_epochs: int = 3
    lr_gamma: float = 0.1
    val_fraction: float = 0.2
    augment: bool = True
    background_max: float = 0.99
    class_weight_cap: float = 5.0
    voxel_size: float = 1.0
    init: str | None = None
    keep_checkpoints: int = 2

    def validate(self):
        """Raise one InputError listing every invalid option."""
        problems = self.common_problems()
        if self.model not in MODELS:
            problems.append(f"model {self.model!r} is not one of {', '.join(MODELS)}")
        if self.data is None:
            problems.append("--data DATASET is required (a folder with images/, labels/, classes.json "
                            "or a CSV with image,label columns plus --classes)")
        try:
            self.views = parse_views(self.views)
        except InputError as err:
            problems.append(str(err))
        for name in ("filters", "kernel_size", "epochs", "batch_size", "lr_step_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        checks = {
            "learning_rate": self.learning_rate > 0, "weight_decay": self.weight_decay >= 0,
            "lr_gamma": 0 < self.lr_gamma <= 1, "val_fraction": 0 <= self.val_fraction < 1,
            "dropout": 0 <= self.dropout < 1, "background_max": 0 < self.background_max <= 1,
            "class_weight_cap": self.class_weight_cap > 0, "voxel_size": 0.1 <= self.voxel_size <= 10,
        }
        problems += [f"{name.replace('_', '-')} {getattr(self, name)!r} is out of range"
                     for name, ok in checks.items() if not ok]
        if problems:
            raise InputError("; ".join(problems))

    def to_json(self):
        return {**dataclasses.asdict(self), "views": list(self.views)}

    @classmethod
    def from_json(cls, data):
        options = cls.known_options(data)
        options["views"] = tuple(options.get("views", VIEWS))
        return cls(**options)


# -- data --------------------------------------------------------------------------------------------
def load_training_volumes(config):
    """Conform every image of the data set and its labels; returns ``([(name, image, labels)], names)``."""
    import nibabel as nib

    from gan_seg.data.volumes import check_labels, list_dataset, load_volume
    from gan_seg.preprocessing import conform, conform_labels

    pairs, class_names = list_dataset(config.data, config.classes)
    volumes, problems = [], []
    for image_path, label_path, name in pairs:
        try:
            img = load_volume(image_path)
            label_img = nib.load(label_path)
            check_labels(np.asarray(label_img.dataobj), len(class_names), name, img.shape[:3])
            conformed = conform(img, config.voxel_size)
            labels = conform_labels(label_img, conformed).astype(np.uint8)
        except InputError as err:
            problems.append(str(err))
            continue
        except Exception as err:  # noqa: BLE001 - nibabel raises many types for broken label files
            problems.append(f"{label_path}: unreadable ({err})")
            continue
        volumes.append((name, conformed.data, labels))
    if problems:
        raise InputError("; ".join(problems))
    return volumes, class_names


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


def view_slices(parts, view, label_map, size, background_max):
    """Stack the kept slices of ``parts`` along ``view``: images float32 (N, A, B), labels uint8 (N, A, B).

    Slices are zero-padded to ``size``; ``label_map`` maps class ids (sagittal merging).
    """
    images, labels = [], []
    for _, image, label, block in parts:
        s_img, s_lab = to_slices(image, view), to_slices(label, view)
        keep = (s_lab > 0).reshape(len(s_lab), -1).mean(axis=1) > 1.0 - background_max
        if block is not None:
            in_val = (np.arange(len(s_lab)) // 8) % block[1] == 0
            keep &= in_val if block[0] == "val" else ~in_val
        pad = [(0, 0), (0, size[0] - s_img.shape[1]), (0, size[1] - s_img.shape[2])]
        images.append(np.pad(s_img[keep], pad))
        labels.append(np.pad(label_map[s_lab[keep]], pad).astype(np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def view_size(volumes, view):
    """In-plane size (A, B) holding every volume's slices for ``view``; multiples of 16 already."""
    shapes = np.array([to_slices(image, view).shape[1:] for _, image, _ in volumes])
    return tuple(int(s) for s in shapes.max(axis=0))


# -- the trainer ---------------------------------------------------------------------------------------
class ViewTrainer:
    """One view's network, optimizer and compiled step under a tf.distribute strategy."""

    def __init__(self, config, view, class_names, train, val, strategy, precision, steps_per_epoch):
        import keras
        import tensorflow as tf

        from gan_seg.losses import median_frequency_weights

        self.config, self.view, self.strategy = config, view, strategy
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

    def _replica_step(self, images, labels):
        import tensorflow as tf

        from gan_seg.losses import combined_loss, weight_map

        weights = weight_map(labels, self.class_weights, self.omega0)
        with tf.GradientTape() as tape:
            probs = self.model(images, training=True)
            per_example = combined_loss(labels, probs, weights, len(self.class_names), per_example=True)
            loss = tf.reduce_sum(per_example) / self.config.batch_size
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply(grads, self.model.trainable_variables)
        return loss

    def _distributed_step(self, iterator):
        import tensorflow as tf

        images, labels = next(iterator)
        loss = self.strategy.run(self._replica_step, args=(images, labels))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)

    def step(self, iterator):
        return float(self._step(iterator))

    def dataset(self, start_step, total_steps):
        """Distributed dataset of (images, labels) for steps ``start_step+1 .. total_steps``; order and
        augmentation are stateless functions of ``(seed, view, step)``."""
        import tensorflow as tf

        from gan_seg.training.augment import augment

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

    def validate(self, batch_size=16):
        """Per-class Dice of the held-out slices (NaN where a class is in neither truth nor prediction)."""
        import keras

        classes = len(self.class_names)
        inter, pred_sum, true_sum = (np.zeros(classes) for _ in range(3))
        for start in range(0, len(self.val_x), batch_size):
            probs = self.model(self.val_x[start:start + batch_size, ..., None], training=False)
            pred = keras.ops.convert_to_numpy(keras.ops.argmax(probs, axis=-1)).ravel()
            true = self.val_y[start:start + batch_size].ravel()
            inter += np.bincount(true[pred == true], minlength=classes)
            pred_sum += np.bincount(pred, minlength=classes)
            true_sum += np.bincount(true, minlength=classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 2 * inter / (pred_sum + true_sum)

    def checkpoint_groups(self):
        return {"model": self.model.variables, "optimizer": self.optimizer.variables}


def build_view_model(config, num_classes, dtype=None, synchronized_bn=False):
    """The configured architecture for any slice size (spatial dims None)."""
    from gan_seg.models.quicknat import ARCHITECTURES

    return ARCHITECTURES[config.model](
        (None, None, 1), num_classes, filters=config.filters, kernel_size=config.kernel_size, se=config.se,
        se_combine=config.se_combine, dropout=config.dropout, synchronized_bn=synchronized_bn, dtype=dtype)


# -- runs ----------------------------------------------------------------------------------------------
def _view_classes(view, class_names):
    if view == "sagittal":
        merged, full_to_merged = lr_merge(class_names)
        return merged, full_to_merged
    return list(class_names), np.arange(len(class_names), dtype=np.int32)


def _apply_init(config):
    """Adopt the architecture of the ``--init`` model; returns its directory, or None."""
    if not config.init:
        return None
    from gan_seg.presets import resolve_run_dir

    init_dir = resolve_run_dir(config.init)
    record = RunDirectory(init_dir).read_config()
    if record.get("model") not in MODELS:
        raise InputError(f"--init {config.init}: not a segmentation model ({record.get('model')!r})")
    for field in ARCHITECTURE_FIELDS:
        setattr(config, field, record[field])
    return init_dir


def _load_init_weights(model, init_dir, view, class_names):
    """Start from ``init_dir``'s network of ``view``: all weights, or all but the classifier when the
    label set differs (a new head)."""
    from gan_seg.models.saving import load_model

    source, metadata = load_model(init_dir / view / MODEL_FILE)
    same = metadata.get("class_names") == list(class_names)
    for layer in model.layers:
        if not layer.weights or (not same and layer.name.startswith("classifier")):
            continue
        layer.set_weights(source.get_layer(layer.name).get_weights())
    return "all weights" if same else "all weights but the classifier (new label set)"


def train_segmentation(config, out, force=False, progress=True):
    """Start a segmentation run in ``out``: train every requested view; returns the run directory."""
    config.validate()
    for field in ("data", "classes", "init"):
        setattr(config, field, absolute_path(getattr(config, field)))
    run = RunDirectory(out, writer=starts_as_chief(config.strategy))
    if run.writer:
        check_output_dir(run.path, force=force)
    init = _apply_init(config)
    volumes, class_names = load_training_volumes(config)
    strategy, chief = setup_strategy(config.strategy, config.devices, config.deterministic)
    run.writer = chief
    record = {
        **config.to_json(),
        "class_names": class_names,
        "resolved": {"precision": resolve_precision(config.precision), "volumes": [v[0] for v in volumes],
                     "replicas": strategy.num_replicas_in_sync,
                     "init": str(init) if init else None},
        "versions": versions(),
    }
    run.create(record, force=force)
    _train_views(config, run, record, volumes, strategy, init, progress, resume=False)
    return run.path if run.writer else None


def resume_segmentation(out, epochs=None, progress=True):
    """Continue the run in ``out``: finish the interrupted view and the ones after it (to ``epochs``)."""
    run = RunDirectory(out, writer=False)
    record = run.read_config()
    config = SegConfig.from_json(record)
    if epochs is not None:
        if not isinstance(epochs, int) or epochs < config.epochs:
            raise InputError(f"--epochs {epochs} is below the run's {config.epochs} epochs")
        config.epochs = epochs
    volumes, _ = load_training_volumes(config)
    strategy, chief = setup_strategy(config.strategy, config.devices, config.deterministic)
    run.writer = chief
    record["epochs"] = config.epochs
    record.setdefault("resumes", []).append({"epochs": config.epochs, "versions": versions()})
    if chief:
        write_json(run.config_path, record)
    init = record["resolved"].get("init")
    _train_views(config, run, record, volumes, strategy, init, progress, resume=True)
    return run.path if run.writer else None


def _train_views(config, run, record, volumes, strategy, init, progress, resume):
    class_names = record["class_names"]
    check_global_batch(config.batch_size, strategy)
    train_parts, val_parts = split_volumes(volumes, config.val_fraction, config.seed)
    for view in config.views:
        view_run = RunDirectory(run.path / view, writer=run.writer)
        names, label_map = _view_classes(view, class_names)
        size = view_size(volumes, view)
        train = view_slices(train_parts, view, label_map, size, config.background_max)
        val = view_slices(val_parts, view, label_map, size, 1.0) if val_parts else train
        if len(train[0]) < config.batch_size:
            raise InputError(f"{view}: only {len(train[0])} training slices, fewer than --batch-size "
                             f"{config.batch_size}")
        steps_per_epoch = len(train[0]) // config.batch_size
        total = config.epochs * steps_per_epoch
        latest = view_run.latest_checkpoint() if resume else None
        if latest and latest[0] >= total:
            continue
        trainer = ViewTrainer(config, view, names, train, val, strategy, record["resolved"]["precision"],
                              steps_per_epoch)
        start = 0
        if latest:
            view_run.restore_checkpoint(latest[1], trainer.checkpoint_groups())
            start = latest[0]
            view_run.truncate_metrics(start, TRAIN_CSV)
            view_run.truncate_metrics(start, VALIDATION_CSV)
        elif init:
            how = _load_init_weights(trainer.model, Path(init), view, names)
            record["resolved"].setdefault("init_weights", {})[view] = how
            if run.writer:
                write_json(run.config_path, record)
        if view_run.writer:
            view_run.path.mkdir(parents=True, exist_ok=True)
        _train_view(trainer, view_run, record, names, start, total, progress)


def _train_view(trainer, run, record, names, start, total, progress):
    config = trainer.config
    best_path = run.path / BEST
    best = json.loads(best_path.read_text())["dice_mean"] if best_path.is_file() else -1.0
    bar = Progress(start, total, enabled=progress and run.writer, noun=f"{trainer.view} step",
                   unit="slices/s")
    iterator = iter(trainer.dataset(start, total))
    t0 = time.perf_counter()
    for step in range(start + 1, total + 1):
        loss = run_step(trainer.step, iterator, step, f"gan-seg train --resume {run.path.parent}")
        if not math.isfinite(loss):
            raise RunError(f"{trainer.view}: training diverged at step {step} (loss {loss}); resume from the "
                           "last checkpoint with a lower learning rate")
        images = (step - start) * config.batch_size
        bar.update(step, {"loss": loss}, images)
        if due(step, config.log_every, total):
            rate = images / max(time.perf_counter() - t0, 1e-9)
            run.append_metrics([{"step": step, "epoch": round(step / trainer.steps_per_epoch, 3),
                                 "loss": round(loss, 6), "slices_per_s": round(rate, 1)}], TRAIN_CSV)
        if due(step, trainer.steps_per_epoch, total):
            dice = trainer.validate()
            present = dice[1:][np.isfinite(dice[1:])]
            mean = float(present.mean()) if present.size else 0.0
            row = {"step": step, "epoch": step // trainer.steps_per_epoch, "dice_mean": round(mean, 5)}
            row.update({f"dice_{name}": ("" if not np.isfinite(d) else round(float(d), 5))
                        for name, d in zip(names[1:], dice[1:], strict=True)})
            run.append_metrics([row], VALIDATION_CSV)
            if mean > best and run.writer:
                best = mean
                _save_view_model(trainer, run, record, names, step, mean)
            run.save_checkpoint(step, trainer.checkpoint_groups(), keep=config.keep_checkpoints)


def _save_view_model(trainer, run, record, names, step, dice):
    """The best network so far as ``VIEW/model.keras`` (float32, any slice size) plus ``best.json``."""
    from gan_seg.models.saving import save_model

    model = build_view_model(trainer.config, len(names))
    model.set_weights(trainer.model.get_weights())
    metadata = {"kind": "segmentation", "architecture": trainer.config.model, "view": trainer.view,
                "class_names": list(names), "full_class_names": record["class_names"],
                "voxel_size": trainer.config.voxel_size, "step": step, "dice_mean": dice,
                "versions": record["versions"]}
    save_model(model, run.path / MODEL_FILE, metadata)
    write_json(run.path / BEST, {"step": step, "epoch": step // trainer.steps_per_epoch, "dice_mean": dice})
