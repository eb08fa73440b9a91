"""``gan-seg features``: a layer's feature maps for one input, or the table of a network's layers."""

import click

from gan_seg import api
from gan_seg.explain.targets import NETWORKS
from gan_seg.gan.config import CLASSIFIER_PRESET
from gan_seg_cli.common import CONTEXT, brain_slice_options, call, input_error


def _shape(shape):
    return "?" if shape is None else "(" + ", ".join("N" if n is None and i == 0 else str(n)
                                                     for i, n in enumerate(shape)) + ")"


@click.command(context_settings=CONTEXT)
@click.argument("source", metavar="[INPUT]", type=click.Path(), required=False)
@click.option("--model", default=CLASSIFIER_PRESET, show_default=True,
              help="Pretrained model name (see `gan-seg models`), run directory or .keras file.")
@click.option("--layer", help="Layer whose outputs to show (see --list-layers).")
@click.option("-o", "--output", "out", type=click.Path(), help="Feature-map grid .png.")
@click.option("--list-layers", is_flag=True, help="Print the layer names and output shapes, then stop.")
@click.option("--network", type=click.Choice(NETWORKS),
              help="Which network of a GAN folder. [default: discriminator with INPUT, generator without]")
@brain_slice_options
@click.option("--seed", type=int, default=0, show_default=True, help="Generator: the latent draw.")
@click.option("--label", help="CGAN generator or discriminator: the class (number or name). [default: 0 for "
                              "a generator, the most real label for a discriminator]")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.pass_context
def command(ctx, source, model, layer, out, list_layers, network, view, slice_index, example, seed, label,
            force):
    """Show the feature maps of one layer for INPUT (each map normalised on its own, its channel index in
    the corner): an image for a classifier or discriminator, a scan for a brain model, nothing for a
    generator (its input is the latent draw of --seed and --label).

    \b
    gan-seg features --model fashion-mnist-classifier --list-layers
    gan-seg features boot.png --layer conv0_1 -o conv0_1.png
    gan-seg features --model dcgan-fashion-mnist --layer g_deconv_2 --seed 3 -o g2.png
    gan-seg features --example --model quicknat-brain --view coronal --layer encode1_se_scse_max -o e1.png
    """
    if list_layers:
        if source or layer or out or example or slice_index is not None or label is not None:
            input_error(ctx, "--list-layers needs only --model (and --network or --view); drop the rest")
        path, rows = call(ctx, api.list_layers, model, network=network, view=view)
        click.echo(f"{path}")
        width = max(len(name) for name, _, _ in rows)
        for name, kind, shape in rows:
            click.echo(f"  {name:<{width}}  {kind:<22} {_shape(shape)}")
        return
    if not layer or not out:
        input_error(ctx, "give --layer NAME and -o OUT.png (or --list-layers to see the layer names)")
    result = call(ctx, api.features, model, source, out, layer, network=network, view=view,
                  slice_index=slice_index, seed=seed, label=label, example=example, force=force)
    height, width, channels = result["shape"]
    click.echo(f"{result['where']}")
    click.echo(f"{result['layer']}: {channels} feature maps of {height}x{width} (channels 0..{channels - 1})")
    click.echo(f"wrote {result['png']}")
