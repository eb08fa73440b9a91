"""``gan-seg occlusion``: where a network looks, by hiding one patch of its input at a time."""

import click

from gan_seg import api
from gan_seg.explain.occlusion import FILLS
from gan_seg.explain.targets import NETWORKS
from gan_seg.gan.config import CLASSIFIER_PRESET
from gan_seg_cli.common import CONTEXT, brain_slice_options, call


@click.command(context_settings=CONTEXT)
@click.argument("source", metavar="[INPUT]", type=click.Path(), required=False)
@click.option("--model", default=CLASSIFIER_PRESET, show_default=True,
              help="Pretrained model name (see `gan-seg models`), run directory or .keras file.")
@click.option("-o", "--output", "out", required=True, type=click.Path(),
              help="Heatmap .png; the drops per occluder position go beside it as .npy.")
@click.option("--target", help="Class (number or name) to watch. [default: the predicted class; a brain "
                               "model: every structure but background]")
@click.option("--patch", type=int, help="Occluder side in pixels. [default: 8; brain slices: 16]")
@click.option("--stride", type=int, help="Step between occluder positions. [default: 2; brain slices: 8]")
@click.option("--fill", type=click.Choice(FILLS), default="mean", show_default=True,
              help="What hides the patch: the image's mean, grey 0.5 or 0.")
@click.option("--network", type=click.Choice(NETWORKS),
              help="Which network of a GAN folder. [default: discriminator]")
@brain_slice_options
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.pass_context
def command(ctx, source, model, out, target, patch, stride, fill, network, view, slice_index, example, force):
    """Occlusion sensitivity (Zeiler & Fergus): slide a patch over INPUT and map how much the target score
    drops at each position (red: the region mattered).

    INPUT is an image (PNG, JPEG, ... or .npy) for a classifier or a GAN discriminator, a scan
    (.nii/.nii.gz/.mgz) for a brain model. Scores: a class probability (classifier), P(real)
    (discriminator; a CGAN's judged as --target), a structure's probability summed over the slice (brain).

    \b
    gan-seg occlusion boot.png -o boot_heat.png
    gan-seg occlusion boot.png --model dcgan-fashion-mnist -o d_heat.png
    gan-seg occlusion --example --model quicknat-brain --view coronal --slice 70 \
        --target Left-Hippocampus -o hippocampus.png
    """
    result = call(ctx, api.occlusion, model, source, out, target=target, patch=patch, stride=stride,
                  fill=fill, network=network, view=view, slice_index=slice_index, example=example,
                  force=force)
    click.echo(f"{result['where']}")
    top, left = result["max_at"]
    rows, cols = result["positions"]
    click.echo(f"{result['target']} = {result['base']:.4g} unoccluded; largest drop {result['max_drop']:.4g} "
               f"with the {result['patch']}-pixel patch at row {top}, column {left} ({rows}x{cols} "
               f"positions, stride {result['stride']})")
    click.echo(f"wrote {result['png']} and {result['npy']}")
