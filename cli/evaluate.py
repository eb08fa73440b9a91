"""``gan-seg evaluate``: how good a generator is, judged by the shipped Fashion-MNIST classifier."""

import click

from gan_seg import api
from gan_seg.gan.config import DEFAULT_PRESET
from gan_seg.gan.report import evaluation_table
from gan_seg_cli.common import CONTEXT, call


@click.command(context_settings=CONTEXT)
@click.option("--model", default=DEFAULT_PRESET, show_default=True,
              help="Pretrained model name (see `gan-seg models`), run directory or generator .keras file.")
@click.option("-n", "n", type=int, default=10000, show_default=True,
              help="Generated images; the floor uses as many real training images (20..60000).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same numbers.")
@click.option("--json", "json_out", type=click.Path(), help="Also write every number to FILE.json.")
@click.option("--no-cas", is_flag=True,
              help="Skip the classification accuracy score (CGAN: two classifier trainings, most of the "
                   "time).")
@click.option("--force", is_flag=True, help="Overwrite an existing --json file.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@click.pass_context
def command(ctx, model, n, seed, json_out, no_cas, force, quiet):
    """Measure a 28x28 Fashion-MNIST generator with the shipped classifier.

    Frechet distance in the classifier's 128-d features between -n generated images and the 10,000 test
    images, beside the same distance for -n real training images (the floor); the predicted-class
    histogram (mode dropping); for a CGAN also per-class Frechet distances, conditional accuracy and the
    classification accuracy score (a classifier trained on -n generated images, tested on real ones,
    beside the same classifier trained on -n real images). A table on stdout; --json FILE keeps every
    number. The same --seed gives the same numbers.

    \b
    gan-seg evaluate --model runs/cgan --json runs/cgan/evaluation.json
    gan-seg evaluate --model cgan-fashion-mnist -n 1000 --no-cas      # a quick look
    """
    result = call(ctx, api.evaluate, model=model, n=n, seed=seed, json_out=json_out, cas=not no_cas,
                  force=force, progress=not quiet)
    click.echo(evaluation_table(result))
    if json_out:
        click.echo(f"wrote {json_out}")
