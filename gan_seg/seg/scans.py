"""``segment`` on files: one scan or a cohort, outputs on the input's own grid.

One scan: load and check -> conform -> segment -> class probabilities back onto the input grid (trilinear
at the input voxel centres, argmax; :class:`gan_seg.seg.preprocessing.InputGrid`) -> the label map with the
input's affine and header, a FreeSurfer-format colour table beside it, and the optional volumes CSV (with
per-structure QC scores, total brain and intracranial volumes), QC picture, posteriors (4D, written one
class at a time), MC-dropout uncertainty, brain mask and masked brain. Every output is checked before work
starts and written atomically; the label map is written last, and when writing fails the outputs this
call created are removed.

A cohort (a folder of scans, or a text/CSV list) writes ``NAME_seg.nii.gz``, ``NAME_volumes.csv`` and
``NAME_qc.png`` per scan into an output folder, skips scans already finished, reports a bad scan and goes
on, takes every n-th scan with ``shard=(i, n)``, and gathers all scans' volumes into a summary CSV.
"""

import contextlib
import csv
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gan_seg.engine.progress import Progress
from gan_seg.errors import InputError
from gan_seg.io.files import check_output_dir, check_output_file, remove_temporaries, staged_paths, write_csv
from gan_seg.seg.preprocessing import InputGrid, conform
from gan_seg.seg.qc import low_score_warning, lut_path_for, render_qc, write_lut
from gan_seg.seg.views import split_hemisphere
from gan_seg.seg.volumes import (
    READ_ERRORS,
    SUFFIXES,
    check_masked_output,
    load_volume,
    save_frames,
    save_like,
    save_masked,
    volume_name,
    voxel_sizes,
)

EXAMPLE = "colin27_t1_2mm.nii.gz"
MARGIN_MM, GRID_MULTIPLE = 8.0, 16  # conform's defaults: the conformed box's margin and size multiple
INPUT_BYTES = 20  # per input voxel: its float32 data, the canonical copy, the QC copy, labels, slabs back
NETWORK_BYTES = 1.25 * 2**30  # the backend, three view networks and their activations at --batch-size 16
MEMORY_SHARE = 0.9  # the default budget: this share of the memory available when the scan is checked
TOTAL_BRAIN, TOTAL_INTRACRANIAL = "Total-Brain", "Total-Intracranial"


def example_scan():
    """The example brain shipped with gan-seg (Colin27 head T1 at 2 mm; licence in example/LICENSE.txt)."""
    path = Path(str(importlib.resources.files("gan_seg.seg"))) / "example" / EXAMPLE
    if not path.is_file():
        raise InputError(f"the example brain {path} is missing from this installation; reinstall gan-seg")
    return path


def memory_estimate(image, voxel_size, classes, mc_samples=0):
    """Peak bytes segmenting ``image`` (nibabel image; only its header is used) needs: the copies on its own
    grid, the class probabilities on a conformed grid covering its whole field of view (an upper bound:
    conform crops to the head) and the networks. Colin27 at 1 mm with the shipped model (23 classes at
    1.5 mm, 3 views): 1976 MiB peak RSS measured, 2010 MiB estimated."""
    shape = np.array(image.shape[:3], float)
    zooms = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
    grid = np.ceil((shape * zooms + 2 * MARGIN_MM) / voxel_size / GRID_MULTIPLE) * GRID_MULTIPLE
    per_grid_voxel = 4 + 4 * classes * (3 if mc_samples > 1 else 2)  # volume, accumulator, probabilities
    return int(shape.prod() * INPUT_BYTES + grid.prod() * per_grid_voxel + NETWORK_BYTES)


def available_memory():
    """Bytes of memory available to a new allocation now (Linux: MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(image, path, voxel_size, classes, mc_samples=0, max_memory=None):
    """InputError (before the scan's voxels are read) when segmenting it needs more than ``max_memory``
    GiB, by default a share of the memory available now (no check where that is unknown)."""
    if max_memory is not None and not 0 < max_memory < float("inf"):
        raise InputError(f"--max-memory {max_memory}: give a positive number of GiB")
    if max_memory is not None:
        budget, what = max_memory * 2**30, "--max-memory"
    else:
        budget, what = (available_memory() or 0) * MEMORY_SHARE, "of the memory available"
    need = memory_estimate(image, voxel_size, classes, mc_samples)
    if budget and need > budget:
        shape = "x".join(str(int(n)) for n in image.shape[:3])
        raise InputError(f"{path}: segmenting its {shape} voxels needs about {need / 2**30:.1f} GiB, over "
                         f"the budget of {budget / 2**30:.1f} GiB ({what}); resample it to larger voxels or "
                         f"raise --max-memory")


@dataclass
class ScanOutputs:
    """Where one scan's results go (None = not wanted)."""

    labels: Path
    volumes: Path | None = None
    qc: Path | None = None
    posteriors: Path | None = None
    uncertainty: Path | None = None
    mask: Path | None = None
    brain: Path | None = None

    def paths(self):
        found = [p for p in (self.labels, self.volumes, self.qc, self.posteriors, self.uncertainty,
                             self.mask, self.brain) if p]
        return [*found, lut_path_for(self.labels)]


def _suffix_ok(path, suffixes, what):
    if not str(path).lower().endswith(suffixes):
        raise InputError(f"{what} {path} must end in {' or '.join(suffixes)}")


def check_outputs(outputs, mc_samples, force, source=None):
    """Check every output path at once (suffixes, existence without ``force``, writability, distinctness;
    with ``source``, that ``outputs.brain`` can hold its data type)."""
    _suffix_ok(outputs.labels, SUFFIXES, "output")
    if outputs.volumes:
        _suffix_ok(outputs.volumes, (".csv",), "--volumes")
    if outputs.qc:
        _suffix_ok(outputs.qc, (".png",), "--qc")
    if outputs.posteriors:
        _suffix_ok(outputs.posteriors, (".nii.gz", ".nii"), "--posteriors")
    for path, flag in ((outputs.uncertainty, "--uncertainty"), (outputs.mask, "--mask"),
                       (outputs.brain, "--brain")):
        if path:
            _suffix_ok(path, SUFFIXES, flag)
    if outputs.uncertainty and mc_samples < 2:
        raise InputError("--uncertainty needs --mc-samples N with N >= 2")
    if outputs.brain and source is not None:
        with contextlib.suppress(*READ_ERRORS):  # an unreadable input is reported when it is loaded
            check_masked_output(source, outputs.brain)
    paths = [Path(p).resolve() for p in outputs.paths()]
    if len(set(paths)) != len(paths):
        raise InputError("two outputs name the same file; give each output its own path")
    if source is not None and Path(source).resolve() in paths:
        raise InputError(f"output {outputs.paths()[paths.index(Path(source).resolve())]} is the input scan; "
                         f"write the results to another file (--force never replaces the input)")
    problems = []
    for path in outputs.paths():
        try:
            check_output_file(path, force)
        except InputError as err:
            problems.append(str(err))
    if problems:
        raise InputError("; ".join(problems))


def segment_scan(segmenter, input_path, outputs, batch_size=16, mc_samples=0, seed=0, progress=True,
                 report=None):
    """Segment one scan into ``outputs`` (already checked); returns the volume table rows.

    Every output appears together at the end (the label map last), or none does. ``report(line)``
    receives the warnings, once the work is done: views the model lacks, low QC scores (None: quiet)."""
    image = load_volume(input_path)
    if outputs.brain:
        check_masked_output(input_path, outputs.brain)
    values = np.asanyarray(image.dataobj)
    if values.min() == values.max():
        raise InputError(f"{input_path}: a constant image (every voxel is {float(values.flat[0]):g}); "
                         f"nothing to segment")
    conformed = conform(image, segmenter.voxel_size)
    total = segmenter.slice_count(conformed.data) * max(1, mc_samples)
    bar = Progress(0, total, enabled=progress, noun="slice", unit="slices/s")
    done = [0]

    def advance(count):
        done[0] += count
        bar.update(done[0], {}, done[0])

    result = segmenter.segment(conformed.data, batch_size, mc_samples, seed, advance)
    grid = InputGrid(conformed, image)
    labels = grid.labels(result.probabilities, result.labels)
    names = segmenter.class_names
    rows = volume_rows(labels, image.affine, names, result.sample_counts, result.qc_scores, segmenter.views)
    remove_temporaries(outputs.paths())  # an earlier run of this scan that was killed while writing
    with staged_paths(outputs.paths()) as staged:
        if outputs.posteriors:
            save_frames(staged[outputs.posteriors], image, len(names),
                        lambda c: grid.probability(result.probabilities, c), np.uint8, 1 / 255)
        if outputs.uncertainty:
            save_like(grid.entropy(result.probabilities), image, staged[outputs.uncertainty], np.float32)
        if outputs.mask:
            save_like((labels > 0).astype(np.uint8), image, staged[outputs.mask], np.uint8)
        if outputs.brain:
            save_masked(input_path, labels > 0, staged[outputs.brain])
        if outputs.qc:
            render_qc(image.get_fdata(dtype=np.float32), labels, image.affine, names, staged[outputs.qc],
                      title=f"{volume_name(input_path)} - {segmenter.model_dir.name}")
        if outputs.volumes:
            write_csv(staged[outputs.volumes], rows)
        write_lut(staged[lut_path_for(outputs.labels)], names)
        save_like(labels, image, staged[outputs.labels], np.uint8 if len(names) <= 256 else np.int16)
    for warning in (segmenter.note, low_score_warning(result.qc_scores, names)):
        if warning and report:
            report(warning)
    return rows


def is_csf(name):
    """True for a CSF class outside the ventricles (``CSF``, ``Other-CSF``, ``Left-CSF`` ...)."""
    return "csf" in "".join(c for c in split_hemisphere(name)[1].lower() if c.isalnum())


def volume_rows(labels, affine, names, sample_counts=None, qc_scores=None, views=None):
    """The volumes table on the input grid: one row per non-background class (voxels, mm^3, QC score),
    then the total brain (every class but background and CSF; ventricles included) and the total
    intracranial volume (every class but background); every row carries the input voxel size (and the
    views aggregated, when given). With MC samples, ``volume_cv`` is the coefficient of variation of the
    volume over the passes."""
    voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
    voxel = "x".join(f"{v:.4g}" for v in voxel_sizes(affine))
    counts = np.bincount(labels.ravel(), minlength=len(names))
    brain = np.array([label > 0 and not is_csf(name) for label, name in enumerate(names)])
    intracranial = np.arange(len(names)) > 0
    entries = [(label, names[label], counts[label], sample_counts[:, label] if sample_counts is not None
                else None, qc_scores[label] if qc_scores is not None else np.nan)
               for label in range(1, len(names))]
    for name, members in ((TOTAL_BRAIN, brain), (TOTAL_INTRACRANIAL, intracranial)):
        per_sample = sample_counts[:, members].sum(axis=1) if sample_counts is not None else None
        entries.append(("", name, counts[members].sum(), per_sample, np.nan))
    rows = []
    for label, name, count, per_sample, score in entries:
        row = {"label": label, "name": name, "voxels": int(count),
               "volume_mm3": round(float(count * voxel_mm3), 3),
               "qc_score": round(float(score), 4) if np.isfinite(score) else ""}
        if per_sample is not None:
            per_sample = per_sample.astype(float)
            mean = per_sample.mean()
            row["volume_cv"] = round(float(per_sample.std() / mean), 5) if mean > 0 else ""
        row["input_voxel_mm"] = voxel
        if views:
            row["views"] = "+".join(views)
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


def plan_cohort(source, out_dir, shard=None):
    """The scans of ``source`` (this shard's) after checking that ``out_dir`` can take their results."""
    scans = list_scans(source)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} exists and is not a directory")
    if Path(source).is_dir() and out_dir.resolve() == Path(source).resolve():
        raise InputError(f"output folder {out_dir} is the input folder: its label maps would be taken as "
                         f"scans on the next run; give another -o folder")
    check_output_dir(out_dir, force=True)  # re-runs write into it: finished scans are skipped
    return scans[shard[0]::shard[1]] if shard else scans


def segment_cohort(segmenter, source, out_dir, batch_size=16, mc_samples=0, seed=0, shard=None,
                   force=False, report=None, max_memory=None):
    """Segment every scan of ``source`` into ``out_dir``; returns ``(done, skipped, failed)`` names. A scan
    is done when all its outputs exist (they appear together).

    ``report(line)`` receives a line per scan and its QC warning (None: quiet)."""
    report = report or _quiet
    scans = plan_cohort(source, out_dir, shard)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done, skipped, failed = [], [], []
    for number, scan in enumerate(scans, start=1):
        name = volume_name(scan) or scan.name
        outputs = ScanOutputs(out_dir / f"{name}_seg.nii.gz", out_dir / f"{name}_volumes.csv",
                              out_dir / f"{name}_qc.png",
                              uncertainty=out_dir / f"{name}_uncertainty.nii.gz" if mc_samples > 1 else None)
        if not force and all(path.exists() for path in outputs.paths()):
            skipped.append(name)
            continue
        prefix = f"[{number}/{len(scans)}] {name}"
        report(prefix)
        try:
            check_memory(load_volume(scan, read=False), scan, segmenter.voxel_size,
                         len(segmenter.class_names), mc_samples, max_memory)
            segment_scan(segmenter, scan, outputs, batch_size, mc_samples, seed, progress=False,
                         report=lambda line, prefix=prefix: report(f"{prefix}: {line}"))
            done.append(name)
        except (InputError, OSError, ValueError) as err:
            failed.append(name)
            report(f"{prefix}: skipped: {err}")
    summary = out_dir / (f"volumes_shard{shard[0]}of{shard[1]}.csv" if shard else "volumes.csv")
    rows = []
    for scan in scans:
        name = volume_name(scan) or scan.name
        table = out_dir / f"{name}_volumes.csv"
        if table.is_file():
            with table.open(newline="") as f:
                rows += [{"scan": name, **row} for row in csv.DictReader(f)]
    if rows:
        fields = list(dict.fromkeys(key for row in rows for key in row))  # tables of older versions too
        write_csv(summary, rows, fields)
    return done, skipped, failed


def _quiet(line):
    """A ``report`` that says nothing."""
