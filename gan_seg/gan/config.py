"""Everything a GAN run is configured by, and the names of the GAN family's models and files (no Keras)."""

import dataclasses

from gan_seg.engine.options import RunOptions, option
from gan_seg.errors import InputError

MODELS = ("dcgan", "cgan")
DEFAULT_PRESET = "cgan-fashion-mnist"
# Model kinds (stored in each .keras file's metadata) and the files of a finished run.
GENERATOR, DISCRIMINATOR, ADVERSARIAL = "generator", "discriminator", "adversarial"
GENERATOR_FILE, DISCRIMINATOR_FILE = "generator.keras", "discriminator.keras"
# The shipped Fashion-MNIST classifier that judges the GANs (gan_seg.gan.evaluation).
CLASSIFIER, CLASSIFIER_PRESET, CLASSIFIER_FILE = "classifier", "fashion-mnist-classifier", "classifier.keras"
SAMPLES = "samples"
LOSS_CURVES = "loss_curves.png"
OUTPUTS = (GENERATOR_FILE, DISCRIMINATOR_FILE)
OPTIMIZERS = ("rmsprop", "adam")
LOSSES = ("bce", "hinge")
CONDITIONINGS = ("concat", "projection")
# A recipe gives the defaults of the options below it; an option given explicitly wins.
RECIPES = {
    "classic": dict(optimizer="rmsprop", d_learning_rate=2e-4, g_learning_rate=1e-4, beta_1=0.9,
                    ema=0.0, spectral_norm=False, loss="bce", conditioning="concat"),
    "sn-ema": dict(optimizer="adam", d_learning_rate=2e-4, g_learning_rate=2e-4, beta_1=0.5,
                   ema=0.999, spectral_norm=True, loss="bce", conditioning="concat"),
}
DEFAULT_RECIPE = "sn-ema"
EVALUATION_IMAGES = (20, 60000)  # -n of `gan-seg evaluate`: the floor draws n of the 60,000 training images


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
    recipe: str = option(DEFAULT_RECIPE, "Defaults of the options below: classic = the seed's (RMSprop "
                         "with decay, BCE, label as an image channel); sn-ema = Adam(beta_1 0.5), spectral "
                         "norm in D, a moving average of G for samples and the saved model.",
                         choices=tuple(RECIPES))
    optimizer: str | None = option(None, "Optimizer of D and G (rmsprop with the seed's decay, or adam).",
                                   choices=OPTIMIZERS, default_text="from --recipe")
    d_learning_rate: float | None = option(None, "D learning rate.", "--d-lr", default_text="from --recipe")
    g_learning_rate: float | None = option(None, "G learning rate.", "--g-lr", default_text="from --recipe")
    beta_1: float | None = option(None, "Adam beta_1.", default_text="from --recipe")
    ema: float | None = option(None, "Decay of the moving average of G's weights that draws the samples "
                               "and is saved (0 = off, the raw G).", default_text="from --recipe")
    spectral_norm: bool | None = option(None, "Spectral normalisation of D's layers.", type=bool,
                                        default_text="from --recipe")
    loss: str | None = option(None, "Adversarial loss: bce (non-saturating) or hinge.", choices=LOSSES,
                              default_text="from --recipe")
    conditioning: str | None = option(None, "CGAN discriminator: concat (label as an image channel) or "
                                      "projection.", choices=CONDITIONINGS, default_text="from --recipe")
    d_decay: float = 6e-8
    g_decay: float = 3e-8
    label_smoothing: float = option(0.0, "One-sided label smoothing: real targets become 1 - this.")
    aux_weight: float = option(0.0, "CGAN with projection: weight of an auxiliary classification loss "
                               "(AC-GAN): a head on D's features learns the real images' labels and G is "
                               "pushed towards images it classifies as the label asked for (0 = off).")
    checkpoint_every: int = option(500, "Checkpoint every N steps.")
    sample_every: int = option(500, "Sample grid every N steps.")

    def checked(self):
        """This config with the recipe's defaults filled in, after checking every option; one InputError
        lists all the invalid ones."""
        if self.recipe not in RECIPES:
            raise InputError(f"--recipe {self.recipe!r}: choose one of {', '.join(RECIPES)}")
        recipe = RECIPES[self.recipe]
        defaults = {name: value for name, value in recipe.items() if getattr(self, name) is None}
        config = dataclasses.replace(self, **defaults)
        problems = config.problems()
        if problems:
            raise InputError("; ".join(problems))
        return config

    def problems(self):
        """Messages for every invalid option (of a config whose recipe defaults are filled in)."""
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
        if not 0.0 <= self.ema < 1.0:
            problems.append(f"ema must be in [0, 1), got {self.ema}")
        if not 0.0 <= self.beta_1 < 1.0:
            problems.append(f"beta-1 must be in [0, 1), got {self.beta_1}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("loss", LOSSES), ("conditioning", CONDITIONINGS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if not self.aux_weight >= 0:
            problems.append(f"aux-weight must be >= 0, got {self.aux_weight}")
        elif self.aux_weight and (self.model != "cgan" or self.conditioning != "projection"):
            problems.append("aux-weight needs --model cgan --conditioning projection (the head classifies "
                            "D's image features, which must not see the label)")
        if self.loss == "hinge" and self.label_smoothing:
            problems.append("label-smoothing applies to the bce loss only")
        return problems


def check_evaluation_count(n):
    """InputError unless ``n`` is a usable number of images for ``gan-seg evaluate``."""
    low, high = EVALUATION_IMAGES
    if isinstance(n, bool) or not isinstance(n, int) or not low <= n <= high:
        raise InputError(f"-n must be an integer in {low}..{high} (the floor uses n of the {high} training "
                         f"images), got {n!r}")
