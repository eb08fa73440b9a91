"""``gan-seg train``: start a run, or continue one with ``--resume RUN_DIR --steps N``."""

import click
from click.core import ParameterSource
from gan_seg_cli.common import call

# Options of a new run; the keys are the library's GanConfig fields.
RUN_OPTIONS = (
    "model", "data", "image_shape", "latent_dim", "steps", "batch_size", "d_steps", "d_learning_rate",
    "g_learning_rate", "label_smoothing", "precision", "seed", "deterministic", "checkpoint_every",
    "sample_every", "log_every", "keep_checkpoints", "strategy", "devices",
)


def _image_shape(ctx, param, value):
    if value is None:
        return None
    try:
        parts = tuple(int(p) for p in value.lower().split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise click.BadParameter("expected HxWxC, e.g. 28x28x1 or 64x64x3")
    return parts


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", type=click.Choice(["dcgan", "cgan"]), default="dcgan", show_default=True,
              help="Architecture to train.")
@click.option("--data", default="fashion-mnist", show_default=True,
              help="fashion-mnist | mnist | DIR of images (class subfolders give labels) | "
                   "DIR of IDX files | FILE.npz (x, optional y).")
@click.option("--out", type=click.Path(), help="Run directory to create (must be new or empty).")
@click.option("--resume", type=click.Path(), help="Continue this run directory up to --steps.")
@click.option("--steps", type=int, default=10000, show_default=True, help="TOTAL number of iterations.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Global minibatch size.")
@click.option("--d-steps", type=int, default=1, show_default=True,
              help="Discriminator updates per iteration (k).")
@click.option("--image-shape", callback=_image_shape, help="Resize data to HxWxC (default: the data's).")
@click.option("--latent-dim", type=int, default=100, show_default=True)
@click.option("--d-lr", "d_learning_rate", type=float, default=2e-4, show_default=True,
              help="Discriminator RMSprop learning rate.")
@click.option("--g-lr", "g_learning_rate", type=float, default=1e-4, show_default=True,
              help="Generator (adversarial) RMSprop learning rate.")
@click.option("--label-smoothing", type=float, default=0.0, show_default=True,
              help="One-sided label smoothing: real targets become 1 - this.")
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed_bfloat16"]), default="auto",
              show_default=True, help="auto = mixed_bfloat16 where the hardware has native bf16.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--deterministic", is_flag=True, help="Turn on TensorFlow op determinism (slower).")
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
@click.option("--sample-every", type=int, default=500, show_default=True)
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--keep-checkpoints", type=int, default=3, show_default=True)
@click.option("--strategy", type=click.Choice(["auto", "none", "mirrored", "multi-worker"]),
              default="auto", show_default=True, help="tf.distribute strategy.")
@click.option("--devices", help="GPU ids (0,1) or cpu:N to split the CPU into N logical devices.")
@click.option("--force", is_flag=True, help="Start over in a non-empty --out directory.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def command(ctx, out, resume, force, quiet, **options):
    """Train a DCGAN or CGAN; runs are saved in --out and resumable.

    \b
    gan-seg train --model cgan --data fashion-mnist --steps 2000 --out runs/cgan
    gan-seg train --resume runs/cgan --steps 4000
    """
    from gan_seg import pipelines

    if resume is not None:
        given = [name for name in (*RUN_OPTIONS, "out", "force") if name != "steps"
                 and ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                                        ParameterSource.ENVIRONMENT)]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise click.UsageError(f"--resume continues a run with its own config; drop {flags}")
        if ctx.get_parameter_source("steps") != ParameterSource.COMMANDLINE:
            raise click.UsageError("--resume needs --steps N, the new total number of iterations")
        path = call(ctx, pipelines.resume, resume, options["steps"], progress=not quiet)
    else:
        if out is None:
            raise click.UsageError("--out RUN_DIR is required (or --resume RUN_DIR)")
        path = call(ctx, pipelines.train, options, out, force=force, progress=not quiet)
    click.echo(f"run saved in {path}")
