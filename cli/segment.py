"""``gan-seg segment``: label a T1 brain scan (or a cohort) with a QuickNAT model, on the scan's own grid."""

import click

from gan_seg import api
from gan_seg.engine.options import PRECISIONS
from gan_seg.seg.config import DEFAULT_PRESET
from gan_seg_cli.common import CONTEXT, EXIT_RUN, call, input_error


@click.command(context_settings=CONTEXT)
@click.argument("source", metavar="[INPUT]", type=click.Path(), required=False)
@click.option("-o", "--output", "out", required=True, type=click.Path(),
              help="Label map (.nii.gz/.nii/.mgz) for one scan; a folder for a cohort.")
@click.option("--example", is_flag=True,
              help="Segment the shipped example brain (Colin27 head T1, 2 mm) instead of INPUT.")
@click.option("--model", default=DEFAULT_PRESET, show_default=True,
              help="Pretrained model name (see `gan-seg models`) or a segmentation run directory.")
@click.option("--views", help="Views to run, e.g. axial,coronal. [default: all the model has]")
@click.option("--view-weights", help="e.g. axial=0.4,coronal=0.4,sagittal=0.2 (the default).")
@click.option("--volumes", type=click.Path(),
              help="CSV of structure volumes and QC scores, total brain and intracranial volume.")
@click.option("--qc", type=click.Path(), help="QC picture (.png): three slices with the labels overlaid.")
@click.option("--posteriors", type=click.Path(), help="4D class probabilities (.nii.gz, uint8 x 1/255).")
@click.option("--mask", type=click.Path(), help="Intracranial mask (uint8 0/1): every class but background.")
@click.option("--brain", type=click.Path(), help="The input with voxels outside --mask's mask set to 0.")
@click.option("--mc-samples", type=int, default=0, show_default=True,
              help="MC-dropout passes (>= 2): mean prediction, uncertainty, volume CV in the CSV.")
@click.option("--uncertainty", type=click.Path(), help="Per-voxel uncertainty map (needs --mc-samples).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Slices per network call.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto = mixed_bfloat16 where the hardware has native bf16.")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads for the networks. [default: all cores]")
@click.option("--max-memory", type=float,
              help="GiB segmenting a scan may need (estimated from its header first). [default: 90% of the "
                   "memory available]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the MC-dropout masks.")
@click.option("--shard", help="Cohorts: process every n-th scan starting at i (i/n), e.g. for job arrays.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs (cohorts: redo finished scans).")
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.pass_context
def command(ctx, source, out, example, model, views, view_weights, volumes, qc, posteriors, mask, brain,
            mc_samples, uncertainty, batch_size, precision, threads, max_memory, seed, shard, force, quiet):
    """Segment INPUT: a scan (.nii, .nii.gz, .mgz; any orientation and voxel size), a folder of scans or a
    text/CSV list of scans; or, with --example, the shipped example brain.

    \b
    gan-seg segment t1.nii.gz -o t1_seg.nii.gz --volumes vols.csv --qc qc.png
    gan-seg segment --example -o seg.nii.gz --qc qc.png
    gan-seg segment scans/ -o segs/ --shard 0/4
    """
    if batch_size < 1:
        raise click.BadParameter(f"must be at least 1, got {batch_size}", param_hint="--batch-size")
    if example == (source is not None):
        input_error(ctx, "give INPUT or --example, not both" if example else
                    "give an INPUT scan, folder or list (or --example for the shipped example brain)")
    common = dict(model=model, views=views, view_weights=view_weights, mc_samples=mc_samples,
                  batch_size=batch_size, seed=seed, force=force, precision=precision, threads=threads,
                  max_memory=max_memory)
    if not api.is_cohort(source):
        if shard:
            input_error(ctx, "--shard splits a cohort; INPUT is a single scan")
        call(ctx, api.segment_scan, source, out, volumes=volumes, qc=qc, posteriors=posteriors,
             uncertainty=uncertainty, mask=mask, brain=brain, example=example, progress=not quiet,
             report=lambda line: click.echo(f"gan-seg segment: {line}", err=True), **common)
        click.echo(f"wrote {out}")
        return
    if volumes or qc or posteriors or uncertainty or mask or brain:
        input_error(ctx, "for a cohort, -o is a folder and every scan gets NAME_seg.nii.gz, NAME_volumes.csv "
                         "and NAME_qc.png there: drop --volumes/--qc/--posteriors/--uncertainty/--mask/"
                         "--brain")
    done, skipped, failed = call(ctx, api.segment_cohort, source, out, shard=shard,
                                 report=lambda line: click.echo(line, err=True), **common)
    click.echo(f"{len(done)} segmented, {len(skipped)} already done, {len(failed)} failed; results in {out}")
    if failed:
        click.echo(f"gan-seg segment: error: {len(failed)} scan(s) failed: {', '.join(failed)}", err=True)
        ctx.exit(EXIT_RUN)
