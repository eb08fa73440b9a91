"""Everything a segmentation run is configured by, and the names of the family's models and files
(no Keras)."""

import dataclasses

from gan_seg.engine.options import RunOptions, option
from gan_seg.errors import InputError
from gan_seg.seg.views import VIEWS, parse_views

MODELS = ("quicknat", "unet")
DEFAULT_PRESET = "quicknat-brain"
SEGMENTATION = "segmentation"  # the kind stored in each view network's metadata
MODEL_FILE = "model.keras"  # RUN/VIEW/model.keras: the best network of the view
TRAIN_CSV, VALIDATION_CSV, BEST = "train.csv", "validation.csv", "best.json"
SE_MODES = (None, "cse", "sse", "scse")
SE_COMBINES = ("max", "add")
ACTIVATIONS = ("prelu", "relu")
ARCHITECTURE_FIELDS = ("model", "filters", "kernel_size", "se", "se_combine", "dropout")


@dataclasses.dataclass(frozen=True)
class SegConfig(RunOptions):
    """Every option of a segmentation run; saved as the run's ``config.json``."""

    model: str = "quicknat"
    data: str | None = option(None, "DIR with images/, labels/, classes.json, or a CSV with image,label "
                              "columns (plus --classes).", default_text="required")
    classes: str | None = option(None, 'classes.json for a CSV data set ({"0": "Background", ...}).')
    views: tuple = option(VIEWS, "Views to train, in order.", type="list")
    filters: int = option(64, "Channels of every dense block.")
    kernel_size: int = option(5, "Dense block kernel size.")
    se: str | None = option("scse", "Squeeze-and-excitation.", choices=SE_MODES)
    se_combine: str = option("max", "scSE combination.", choices=SE_COMBINES)
    dropout: float = option(0.2, "Dropout after each block.")
    epochs: int = option(10, "Epochs per view.")
    batch_size: int = option(8, "Global minibatch size.")
    learning_rate: float = option(1e-4, "Adam learning rate.", "--lr")
    weight_decay: float = option(1e-5, "Decoupled weight decay.")
    lr_step_epochs: int = option(3, "Multiply the rate by --lr-gamma every N epochs.")
    lr_gamma: float = option(0.1, "Step decay factor.")
    val_fraction: float = option(0.2, "Held-out share.")
    augment: bool = option(True, "On-the-fly augmentation.", type=bool)
    background_max: float = 0.99
    class_weight_cap: float = option(5.0, "Cap of class weights.")
    voxel_size: float = option(1.0, "Conformed voxel size in mm.")
    init: str | None = option(None, "Fine-tune: start from this segmentation model (run directory or "
                              "preset); a different label set gets a new classifier head.")
    keep_checkpoints: int = option(2, "Checkpoints kept.")
    synth_share: float = option(0.0, "Share of training volumes synthesised from the label maps (random "
                                "contrast, shape, resolution, artefacts; the rest: real volumes, 3D-"
                                "augmented). 0 = real slices with 2D augmentation.")
    synth_slices: int = option(16, "Slices cut from each generated volume (it feeds one batch row for "
                               "that many steps).")

    def checked(self):
        """This config with its views parsed, after checking every option; one InputError lists all
        the invalid ones."""
        problems = self.common_problems()
        if self.model not in MODELS:
            problems.append(f"model {self.model!r} is not one of {', '.join(MODELS)}")
        if self.data is None:
            problems.append("--data DATASET is required (a folder with images/, labels/, classes.json "
                            "or a CSV with image,label columns plus --classes)")
        views = self.views
        try:
            views = parse_views(self.views)
        except InputError as err:
            problems.append(str(err))
        problems += self.count_problems(["filters", "kernel_size", "epochs", "batch_size", "lr_step_epochs",
                                         "synth_slices"])
        if self.se not in SE_MODES:
            problems.append(f"se {self.se!r} is not one of none, {', '.join(SE_MODES[1:])}")
        if self.se_combine not in SE_COMBINES:
            problems.append(f"se-combine {self.se_combine!r} is not one of {', '.join(SE_COMBINES)}")
        checks = {
            "learning_rate": self.learning_rate > 0, "weight_decay": self.weight_decay >= 0,
            "lr_gamma": 0 < self.lr_gamma <= 1, "val_fraction": 0 <= self.val_fraction < 1,
            "dropout": 0 <= self.dropout < 1, "background_max": 0 < self.background_max <= 1,
            "class_weight_cap": self.class_weight_cap > 0, "voxel_size": 0.1 <= self.voxel_size <= 10,
            "synth_share": _is_number(self.synth_share) and 0 <= self.synth_share <= 1,
        }
        problems += [f"{name.replace('_', '-')} {getattr(self, name)!r} is out of range"
                     for name, ok in checks.items() if not ok]
        if problems:
            raise InputError("; ".join(problems))
        return dataclasses.replace(self, views=views)


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float))


def parse_shard(text):
    """``"i/n"`` (``segment --shard``) -> ``(i, n)`` with 0 <= i < n; None stays None."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise InputError(f"--shard {text!r}: need 0 <= i < n")
    return index, count
