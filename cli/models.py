"""``gan-seg models``: the pretrained models shipped in weights/."""

import click

from gan_seg_cli.common import call


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def command(ctx):
    """List the pretrained models (name and description)."""
    from gan_seg import pipelines

    models = call(ctx, pipelines.list_models, needs_keras=False)
    if not models:
        click.echo("no pretrained models installed")
    width = max((len(name) for name, _ in models), default=0)
    for name, description in models:
        click.echo(f"{name.ljust(width)}  {description}")
