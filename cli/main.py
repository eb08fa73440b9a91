"""The ``gan-seg`` command: a click group whose subcommands are imported only when used.

``gan-seg --help`` and ``gan-seg CMD --help`` never import TensorFlow.
"""

import importlib

import click

from gan_seg import __version__

COMMANDS = {
    "train": ("gan_seg_cli.train", "Train a model (DCGAN, CGAN, QuickNAT) or resume a run."),
    "sample": ("gan_seg_cli.sample", "Draw images from a trained generator."),
    "evaluate": ("gan_seg_cli.evaluate", "Measure a generator's quality with the Fashion-MNIST classifier."),
    "segment": ("gan_seg_cli.segment", "Label a T1 brain scan (or a cohort) with QuickNAT."),
    "occlusion": ("gan_seg_cli.occlusion", "Map where a network looks by hiding patches of its input."),
    "features": ("gan_seg_cli.features", "Show a layer's feature maps (or list a network's layers)."),
    "models": ("gan_seg_cli.models", "List the pretrained models shipped in weights/."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is looked up."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name][0]).command

    def format_commands(self, ctx, formatter):
        rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gan-seg")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's logs and full tracebacks on errors.")
@click.pass_context
def cli(ctx, verbose):
    """gan-seg: DCGAN / conditional GAN image generation and QuickNAT brain MRI segmentation."""
    ctx.obj = {"verbose": verbose}
