"""``gan-seg train``: start a run (DCGAN, CGAN, QuickNAT, U-Net), or continue one with ``--resume``."""

import dataclasses

import click
from click.core import ParameterSource

from gan_seg.training.gan import GanConfig
from gan_seg.training.segmentation import SegConfig
from gan_seg_cli.common import call

GAN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GanConfig)}
SEG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SegConfig)}


def _gan(field, text):
    return f"{text} [GAN default: {GAN_DEFAULTS[field]}]"


def _seg(field, text):
    return f"{text} [QuickNAT default: {SEG_DEFAULTS[field]}]"


def _both(field, text):
    return f"{text} [default: {GAN_DEFAULTS[field]} (GAN), {SEG_DEFAULTS[field]} (QuickNAT)]"


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


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--model", type=click.Choice(["dcgan", "cgan", "quicknat", "unet"]),
              help="Architecture to train. [default: dcgan]")
@click.option("--data", help="GAN: fashion-mnist | mnist | DIR of images (class subfolders give labels) | "
              "DIR of IDX files | FILE.npz (x, optional y) [default: fashion-mnist]. QuickNAT: DIR with "
              "images/, labels/, classes.json, or a CSV with image,label columns (plus --classes).")
@click.option("--out", type=click.Path(), help="Run directory to create (must be new or empty).")
@click.option("--resume", type=click.Path(), help="Continue this run directory (GAN: up to --steps; "
              "QuickNAT: the remaining views, optionally to more --epochs).")
@click.option("--force", is_flag=True, help="Start over in a non-empty --out directory.")
@click.option("--quiet", is_flag=True, help="No progress line.")
# shared
@click.option("--batch-size", type=int, help=_both("batch_size", "Global minibatch size."))
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed_bfloat16"]),
              help="auto = mixed_bfloat16 where the hardware has native bf16. [default: auto]")
@click.option("--seed", type=int, help="Seeds weights, data order, noise and augmentation. [default: 0]")
@click.option("--deterministic/--no-deterministic", default=None,
              help="TensorFlow op determinism (slower). [default: off]")
@click.option("--log-every", type=int, help="Log metrics every N steps. [default: 10]")
@click.option("--keep-checkpoints", type=int, help=_both("keep_checkpoints", "Checkpoints kept."))
@click.option("--strategy", type=click.Choice(["auto", "none", "mirrored", "multi-worker"]),
              help="tf.distribute strategy (see README 'Scaling out'). [default: auto]")
@click.option("--devices", help="GPU ids (0,1) or cpu:N to split the CPU into N logical devices.")
# GAN
@click.option("--steps", type=int, help=_gan("steps", "TOTAL number of iterations."))
@click.option("--d-steps", type=int, help=_gan("d_steps", "Discriminator updates per iteration (k)."))
@click.option("--image-shape", callback=_image_shape, help="Resize data to HxWxC. [default: the data's]")
@click.option("--latent-dim", type=int, help=_gan("latent_dim", "Size of z."))
@click.option("--d-lr", "d_learning_rate", type=float, help=_gan("d_learning_rate", "D RMSprop rate."))
@click.option("--g-lr", "g_learning_rate", type=float, help=_gan("g_learning_rate", "G RMSprop rate."))
@click.option("--label-smoothing", type=float,
              help=_gan("label_smoothing", "One-sided label smoothing: real targets become 1 - this."))
@click.option("--checkpoint-every", type=int, help=_gan("checkpoint_every", "Checkpoint every N steps."))
@click.option("--sample-every", type=int, help=_gan("sample_every", "Sample grid every N steps."))
# QuickNAT
@click.option("--classes", help="classes.json for a CSV data set ({\"0\": \"Background\", ...}).")
@click.option("--views", help="Views to train, in order. [default: axial,coronal,sagittal]")
@click.option("--init", help="Fine-tune: start from this segmentation model (run directory or preset); a "
              "different label set gets a new classifier head.")
@click.option("--epochs", type=int, help=_seg("epochs", "Epochs per view."))
@click.option("--lr", "learning_rate", type=float, help=_seg("learning_rate", "Adam learning rate."))
@click.option("--weight-decay", type=float, help=_seg("weight_decay", "Decoupled weight decay."))
@click.option("--lr-step-epochs", type=int, help=_seg("lr_step_epochs", "Multiply the rate by --lr-gamma "
              "every N epochs."))
@click.option("--lr-gamma", type=float, help=_seg("lr_gamma", "Step decay factor."))
@click.option("--filters", type=int, help=_seg("filters", "Channels of every dense block."))
@click.option("--kernel-size", type=int, help=_seg("kernel_size", "Dense block kernel size."))
@click.option("--se", type=click.Choice(["none", "cse", "sse", "scse"]),
              help=_seg("se", "Squeeze-and-excitation."))
@click.option("--se-combine", type=click.Choice(["max", "add"]), help=_seg("se_combine", "scSE combination."))
@click.option("--dropout", type=float, help=_seg("dropout", "Dropout after each block."))
@click.option("--val-fraction", type=float, help=_seg("val_fraction", "Held-out share."))
@click.option("--augment/--no-augment", default=None, help="On-the-fly augmentation. [default: on]")
@click.option("--class-weight-cap", type=float, help=_seg("class_weight_cap", "Cap of class weights."))
@click.option("--voxel-size", type=float, help=_seg("voxel_size", "Conformed voxel size in mm."))
@click.pass_context
def command(ctx, out, resume, force, quiet, **options):
    """Train a model; runs are saved in --out and resumable.

    \b
    gan-seg train --model cgan --data fashion-mnist --steps 2000 --out runs/cgan
    gan-seg train --resume runs/cgan --steps 4000
    gan-seg train --model quicknat --data brains/ --filters 16 --epochs 8 --out runs/qn
    gan-seg train --model quicknat --data manual/ --init runs/qn --lr 1e-5 --out runs/qn-ft
    """
    from gan_seg import pipelines

    given = {name: value for name, value in options.items()
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    if given.get("se") == "none":
        given["se"] = None
    if resume is not None:
        extra = sorted(set(given) - {"steps", "epochs"})
        extra += (["out"] if out else []) + (["force"] if force else [])
        if extra:
            flags = ", ".join("--" + name.replace("_", "-") for name in extra)
            raise click.UsageError(f"--resume continues a run with its own config; drop {flags}")
        path = call(ctx, pipelines.resume, resume, steps=given.get("steps"), epochs=given.get("epochs"),
                    progress=not quiet)
    else:
        if out is None:
            raise click.UsageError("--out RUN_DIR is required (or --resume RUN_DIR)")
        path = call(ctx, pipelines.train, given, out, force=force, progress=not quiet)
    click.echo(f"run saved in {path}" if path else "done; the chief worker saved the run, not this one")
