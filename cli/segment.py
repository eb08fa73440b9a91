"""``gan-seg segment``: label a T1 brain scan (or a cohort) with a QuickNAT model, on the scan's own grid."""

import click

from gan_seg_cli.common import EXIT_RUN, call


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("source", metavar="INPUT", type=click.Path())
@click.option("-o", "--output", "out", required=True, type=click.Path(),
              help="Label map (.nii.gz/.nii/.mgz) for one scan; a folder for a cohort.")
@click.option("--model", default="quicknat-brain", show_default=True,
              help="Pretrained model name (see `gan-seg models`) or a segmentation run directory.")
@click.option("--views", help="Views to run, e.g. axial,coronal. [default: all the model has]")
@click.option("--view-weights", help="e.g. axial=0.4,coronal=0.4,sagittal=0.2 (the default).")
@click.option("--volumes", type=click.Path(), help="CSV of structure volumes (label,name,voxels,volume_mm3).")
@click.option("--qc", type=click.Path(), help="QC picture (.png): three slices with the labels overlaid.")
@click.option("--posteriors", type=click.Path(), help="4D class probabilities (.nii.gz, uint8 x 1/255).")
@click.option("--mc-samples", type=int, default=0, show_default=True,
              help="MC-dropout passes (>= 2): mean prediction, uncertainty, volume CV in the CSV.")
@click.option("--uncertainty", type=click.Path(), help="Per-voxel uncertainty map (needs --mc-samples).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Slices per network call.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the MC-dropout masks.")
@click.option("--shard", help="Cohorts: process every n-th scan starting at i (i/n), e.g. for job arrays.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs (cohorts: redo finished scans).")
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.pass_context
def command(ctx, source, out, model, views, view_weights, volumes, qc, posteriors, mc_samples, uncertainty,
            batch_size, seed, shard, force, quiet):
    """Segment INPUT: a scan (.nii, .nii.gz, .mgz; any orientation and voxel size), a folder of scans or a
    text/CSV list of scans.

    \b
    gan-seg segment t1.nii.gz -o t1_seg.nii.gz --volumes vols.csv --qc qc.png
    gan-seg segment scans/ -o segs/ --shard 0/4
    """
    from gan_seg import pipelines

    if batch_size < 1:
        raise click.BadParameter(f"must be at least 1, got {batch_size}", param_hint="--batch-size")
    result = call(ctx, pipelines.segment, source, out, model=model, views=views, view_weights=view_weights,
                  volumes=volumes, qc=qc, posteriors=posteriors, mc_samples=mc_samples,
                  uncertainty=uncertainty, batch_size=batch_size, seed=seed, shard=shard, force=force,
                  progress=not quiet, report=lambda line: click.echo(line, err=True))
    if isinstance(result, tuple):
        done, skipped, failed = result
        click.echo(f"{len(done)} segmented, {len(skipped)} already done, {len(failed)} failed; "
                   f"results in {out}")
        if failed:
            click.echo(f"gan-seg segment: error: {len(failed)} scan(s) failed: {', '.join(failed)}", err=True)
            ctx.exit(EXIT_RUN)
    else:
        click.echo(f"wrote {out}")
