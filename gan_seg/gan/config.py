"""Everything a GAN run is configured by, and the names of the GAN family's models and files (no Keras)."""

import dataclasses

from gan_seg.engine.options import RunOptions, option
from gan_seg.errors import InputError

MODELS = ("dcgan", "cgan")
DEFAULT_PRESET = "cgan-fashion-mnist"
# Model kinds (stored in each .keras file's metadata) and the files of a finished run.
GENERATOR, DISCRIMINATOR, ADVERSARIAL = "generator", "discriminator", "adversarial"
GENERATOR_FILE, DISCRIMINATOR_FILE = "generator.keras", "discriminator.keras"
SAMPLES = "samples"
LOSS_CURVES = "loss_curves.png"
OUTPUTS = (GENERATOR_FILE, DISCRIMINATOR_FILE)


@dataclasses.dataclass(frozen=True)
class GanConfig(RunOptions):
    """Every option of a GAN run; saved as the run's ``config.json``."""

    model: str = "dcgan"
    data: str = option("fashion-mnist", "fashion-mnist | mnist | DIR of images (class subfolders give "
                       "labels) | DIR of IDX files | FILE.npz (x, optional y).")
    image_shape: tuple | None = option(None, "Resize data to HxWxC.", type="shape", default_text="the data's")
    latent_dim: int = option(100, "Size of z.")
    steps: int = option(10000, "TOTAL number of iterations.")
    batch_size: int = option(64, "Global minibatch size.")
    d_steps: int = option(1, "Discriminator updates per iteration (k).")
    d_learning_rate: float = option(2e-4, "D RMSprop rate.", "--d-lr")
    g_learning_rate: float = option(1e-4, "G RMSprop rate.", "--g-lr")
    d_decay: float = 6e-8
    g_decay: float = 3e-8
    label_smoothing: float = option(0.0, "One-sided label smoothing: real targets become 1 - this.")
    checkpoint_every: int = option(500, "Checkpoint every N steps.")
    sample_every: int = option(500, "Sample grid every N steps.")

    def checked(self):
        """This config after checking every option; one InputError lists all the invalid ones."""
        problems = self.common_problems()
        if self.model not in MODELS:
            problems.append(f"model {self.model!r} is not one of {', '.join(MODELS)}")
        problems += self.count_problems(["latent_dim", "steps", "batch_size", "d_steps"])
        problems += self.count_problems(["checkpoint_every", "sample_every"], 0)
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
        return self
