"""``segment`` on files: one scan or a cohort, outputs on the input's own grid.

One scan: load and check -> conform -> segment -> labels back onto the input grid (nearest neighbour in
world space) with the input's affine and header, a FreeSurfer-format colour table beside them, and the
optional volumes CSV, QC picture, posteriors (4D, written one class at a time) and MC-dropout
uncertainty. Every output is checked before work starts and written atomically.

A cohort (a folder of scans, or a text/CSV list) writes ``NAME_seg.nii.gz``, ``NAME_volumes.csv`` and
``NAME_qc.png`` per scan into an output folder, skips scans already finished, reports a bad scan and goes
on, takes every n-th scan with ``shard=(i, n)``, and gathers all scans' volumes into a summary CSV.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gan_seg.engine.progress import Progress
from gan_seg.errors import InputError
from gan_seg.io.files import check_output_dir, check_output_file, write_csv
from gan_seg.seg.preprocessing import conform, resample_to_input, to_input_grid
from gan_seg.seg.qc import lut_path_for, render_qc, write_lut
from gan_seg.seg.volumes import SUFFIXES, load_volume, save_frames, save_like, volume_name


@dataclass
class ScanOutputs:
    """Where one scan's results go (None = not wanted)."""

    labels: Path
    volumes: Path | None = None
    qc: Path | None = None
    posteriors: Path | None = None
    uncertainty: Path | None = None

    def paths(self):
        found = [p for p in (self.labels, self.volumes, self.qc, self.posteriors, self.uncertainty) if p]
        return [*found, lut_path_for(self.labels)]


def _suffix_ok(path, suffixes, what):
    if not str(path).lower().endswith(suffixes):
        raise InputError(f"{what} {path} must end in {' or '.join(suffixes)}")


def check_outputs(outputs, mc_samples, force):
    """Check every output path at once (suffixes, existence without ``force``, writability, distinctness)."""
    _suffix_ok(outputs.labels, SUFFIXES, "output")
    if outputs.volumes:
        _suffix_ok(outputs.volumes, (".csv",), "--volumes")
    if outputs.qc:
        _suffix_ok(outputs.qc, (".png",), "--qc")
    if outputs.posteriors:
        _suffix_ok(outputs.posteriors, (".nii.gz", ".nii"), "--posteriors")
    if outputs.uncertainty:
        _suffix_ok(outputs.uncertainty, SUFFIXES, "--uncertainty")
        if mc_samples < 2:
            raise InputError("--uncertainty needs --mc-samples N with N >= 2")
    paths = [Path(p).resolve() for p in outputs.paths()]
    if len(set(paths)) != len(paths):
        raise InputError("two outputs name the same file; give each output its own path")
    problems = []
    for path in outputs.paths():
        try:
            check_output_file(path, force)
        except InputError as err:
            problems.append(str(err))
    if problems:
        raise InputError("; ".join(problems))


def segment_scan(segmenter, input_path, outputs, batch_size=16, mc_samples=0, seed=0, progress=True):
    """Segment one scan into ``outputs`` (already checked); returns the volume table rows."""
    image = load_volume(input_path)
    conformed = conform(image, segmenter.voxel_size)
    total = segmenter.slice_count(conformed.data) * max(1, mc_samples)
    bar = Progress(0, total, enabled=progress, noun="slice", unit="slices/s")
    done = [0]

    def advance(count):
        done[0] += count
        bar.update(done[0], {}, done[0])

    result = segmenter.segment(conformed.data, batch_size, mc_samples, seed, advance)
    labels = to_input_grid(result.labels, conformed, image)
    names = segmenter.class_names
    save_like(labels, image, outputs.labels, np.uint8 if len(names) <= 256 else np.int16)
    write_lut(lut_path_for(outputs.labels), names)
    rows = volume_rows(labels, image.affine, names, result.sample_counts)
    if outputs.volumes:
        write_csv(outputs.volumes, rows)
    if outputs.qc:
        render_qc(image.get_fdata(dtype=np.float32), labels, image.affine, names, outputs.qc,
                  title=f"{volume_name(input_path)} - {segmenter.model_dir.name}")
    if outputs.posteriors:
        save_frames(outputs.posteriors, image, len(names),
                    lambda c: resample_to_input(np.ascontiguousarray(result.probabilities[..., c]),
                                                conformed, image, order=1),
                    np.uint8, 1 / 255)
    if outputs.uncertainty:
        save_like(resample_to_input(result.uncertainty, conformed, image, order=1), image,
                  outputs.uncertainty, np.float32)
    return rows


def volume_rows(labels, affine, names, sample_counts=None):
    """One row per non-background class: voxels and mm^3 on the input grid (+ MC volume CV)."""
    voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
    counts = np.bincount(labels.ravel(), minlength=len(names))
    rows = []
    for label in range(1, len(names)):
        row = {"label": label, "name": names[label], "voxels": int(counts[label]),
               "volume_mm3": round(counts[label] * voxel_mm3, 3)}
        if sample_counts is not None:
            per_sample = sample_counts[:, label].astype(float)
            mean = per_sample.mean()
            row["volume_cv"] = round(float(per_sample.std() / mean), 5) if mean > 0 else ""
        rows.append(row)
    return rows


# -- cohorts ---------------------------------------------------------------------------------------------
def list_scans(source):
    """Scans of a cohort: every NIfTI/MGZ file in a folder, or the paths listed in a text/CSV file
    (one per line, or an ``image`` column; relative to the list's folder). Names must be unique."""
    source = Path(source)
    if source.is_dir():
        scans = sorted(p for p in source.iterdir() if p.is_file() and volume_name(p))
    elif source.is_file():
        rows = list(csv.reader(source.read_text().splitlines()))
        rows = [r for r in rows if r and r[0].strip() and not r[0].lstrip().startswith("#")]
        column = 0
        if rows and "image" in [c.strip().lower() for c in rows[0]]:
            column = [c.strip().lower() for c in rows[0]].index("image")
            rows = rows[1:]
        scans = [(source.parent / r[column].strip()) for r in rows]
    else:
        raise InputError(f"input {source} does not exist")
    if not scans:
        raise InputError(f"{source} lists no scans (.nii, .nii.gz or .mgz)")
    names = [volume_name(p) or p.name for p in scans]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{source}: several scans are named {', '.join(duplicates)}; names must be unique")
    return scans


def segment_cohort(segmenter, source, out_dir, batch_size=16, mc_samples=0, seed=0, shard=None,
                   force=False, report=None):
    """Segment every scan of ``source`` into ``out_dir``; returns ``(done, skipped, failed)`` names.

    ``report(line)`` receives a line per scan (None: quiet)."""
    report = report or _quiet
    scans = list_scans(source)
    if shard:
        scans = scans[shard[0]::shard[1]]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} exists and is not a directory")
    check_output_dir(out_dir, force=True)  # re-runs write into it: finished scans are skipped
    out_dir.mkdir(parents=True, exist_ok=True)
    done, skipped, failed = [], [], []
    for number, scan in enumerate(scans, start=1):
        name = volume_name(scan) or scan.name
        outputs = ScanOutputs(out_dir / f"{name}_seg.nii.gz", out_dir / f"{name}_volumes.csv",
                              out_dir / f"{name}_qc.png",
                              uncertainty=out_dir / f"{name}_uncertainty.nii.gz" if mc_samples > 1 else None)
        if not force and outputs.labels.exists() and outputs.volumes.exists():
            skipped.append(name)
            continue
        report(f"[{number}/{len(scans)}] {name}")
        try:
            segment_scan(segmenter, scan, outputs, batch_size, mc_samples, seed, progress=False)
            done.append(name)
        except (InputError, OSError, ValueError) as err:
            failed.append(name)
            report(f"[{number}/{len(scans)}] {name}: skipped: {err}")
    summary = out_dir / (f"volumes_shard{shard[0]}of{shard[1]}.csv" if shard else "volumes.csv")
    rows = []
    for scan in scans:
        name = volume_name(scan) or scan.name
        table = out_dir / f"{name}_volumes.csv"
        if table.is_file():
            with table.open(newline="") as f:
                rows += [{"scan": name, **row} for row in csv.DictReader(f)]
    if rows:
        write_csv(summary, rows)
    return done, skipped, failed


def _quiet(line):
    """A ``report`` that says nothing."""
