"""``gan-seg models``: the pretrained models shipped in weights/."""

import click

from gan_seg import api
from gan_seg_cli.common import CONTEXT, call


@click.command(context_settings=CONTEXT)
@click.pass_context
def command(ctx):
    """List the pretrained models (name and description)."""
    models = call(ctx, api.list_models)
    if not models:
        click.echo("no pretrained models installed")
    width = max((len(name) for name, _ in models), default=0)
    for name, description in models:
        click.echo(f"{name.ljust(width)}  {description}")
