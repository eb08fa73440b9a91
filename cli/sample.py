"""``gan-seg sample``: images from a trained generator as a grid PNG, an .npz or a folder of PNGs."""

import click

from gan_seg import api
from gan_seg.gan.config import DEFAULT_PRESET
from gan_seg_cli.common import CONTEXT, call


@click.command(context_settings=CONTEXT)
@click.option("--model", default=DEFAULT_PRESET, show_default=True,
              help="Pretrained model name (see `gan-seg models`), run directory or generator .keras file.")
@click.option("-n", "n", type=int, default=64, show_default=True, help="Total number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same images.")
@click.option("-o", "--output", "out", required=True, type=click.Path(),
              help="OUT.png (one grid), OUT.npz (images, labels) or a directory (one PNG per image).")
@click.option("--label", help="CGAN class: a number or a class name (e.g. 7 or sneaker).")
@click.option("--interpolate", is_flag=True, help="Walk the latent space between random points.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.pass_context
def command(ctx, model, n, seed, out, label, interpolate, force):
    """Draw -n images from a generator.

    \b
    gan-seg sample --model runs/cgan -n 100 -o grid.png
    gan-seg sample --model cgan-fashion-mnist --label sneaker -n 16 -o sneakers/
    """
    if n < 1:
        raise click.BadParameter(f"must be at least 1, got {n}", param_hint="-n")
    path, _ = call(ctx, api.sample, model=model, n=n, seed=seed, out=out, label=label,
                   interpolate=interpolate, force=force)
    click.echo(f"wrote {n} images to {path}")
