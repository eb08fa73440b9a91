"""The functions the CLI calls: files in, files out. Each checks all its inputs and outputs first."""

from pathlib import Path

from gan_seg.errors import InputError

GAN_MODELS = ("dcgan", "cgan")
SEG_MODELS = ("quicknat", "unet")
DEFAULT_SAMPLE_MODEL = "cgan-fashion-mnist"
DEFAULT_SEGMENT_MODEL = "quicknat-brain"


def train(options, out, force=False, progress=True):
    """Start a training run in ``out`` from ``options`` (config field -> value; ``model`` picks the
    family, unset fields keep their defaults); returns the run directory."""
    import dataclasses

    from gan_seg.training.gan import GanConfig, train_gan
    from gan_seg.training.segmentation import SegConfig, train_segmentation

    options = dict(options)
    model = options.pop("model", "dcgan")
    if model in GAN_MODELS:
        config_class, run = GanConfig, train_gan
    elif model in SEG_MODELS:
        config_class, run = SegConfig, train_segmentation
    else:
        raise InputError(f"--model {model!r}: choose one of {', '.join(GAN_MODELS + SEG_MODELS)}")
    fields = {f.name for f in dataclasses.fields(config_class)}
    wrong = sorted(set(options) - fields)
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        raise InputError(f"{flags} {'does' if len(wrong) == 1 else 'do'} not apply to --model {model}")
    return run(config_class(model=model, **options), out, force=force, progress=progress)


def resume(run_dir, steps=None, epochs=None, progress=True):
    """Continue the run in ``run_dir``: a GAN up to ``steps`` iterations, a segmentation run through its
    remaining views (to ``epochs`` when given)."""
    from gan_seg.training.engine import RunDirectory
    from gan_seg.training.gan import resume_gan
    from gan_seg.training.segmentation import resume_segmentation

    model = RunDirectory(run_dir).read_config().get("model")
    if model in GAN_MODELS:
        if steps is None or epochs is not None:
            raise InputError("resuming a GAN run needs --steps N (the new total) and no --epochs")
        return resume_gan(run_dir, steps, progress=progress)
    if model in SEG_MODELS:
        if steps is not None:
            raise InputError("a segmentation run is resumed by epochs: drop --steps (optionally --epochs N)")
        return resume_segmentation(run_dir, epochs, progress=progress)
    raise InputError(f"{run_dir}: cannot resume a {model!r} run")


def check_seed(seed):
    """InputError unless ``seed`` is an integer in 0..2**32-1."""
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise InputError(f"--seed must be an integer in 0..2**32-1, got {seed!r}")


def resolve_label(text, class_names):
    """A ``--label`` (number or class name, case-insensitive) -> class index; whether the model is
    conditional and the index in range is checked by :func:`gan_seg.inference.sampling.sample`."""
    if text is None:
        return None
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    names = [name.lower() for name in class_names or []]
    if text.lower() in names:
        return names.index(text.lower())
    known = ", ".join(class_names) if class_names else "this model stores no class names: use a number"
    raise InputError(f"--label {text!r} is not one of the model's classes ({known})")


def sample(model=DEFAULT_SAMPLE_MODEL, n=64, seed=0, out="samples.png", label=None, interpolate=False,
           force=False):
    """Draw ``n`` images from a generator (preset, run directory or ``.keras`` file) into ``out``.

    ``out`` ``*.png`` = one grid; ``*.npz`` = arrays ``images`` and ``labels``; otherwise a directory of
    ``{index:05d}_{label}.png``. Returns ``(path, labels)``.
    """
    from gan_seg.imaging import plan_sample_output, write_samples
    from gan_seg.inference.sampling import sample as draw
    from gan_seg.models.gan import GENERATOR
    from gan_seg.models.saving import load_model
    from gan_seg.presets import resolve_model_file
    from gan_seg.training.gan import GENERATOR_FILE

    check_seed(seed)
    kind, path = plan_sample_output(out, force=force)
    generator, metadata = load_model(resolve_model_file(model, GENERATOR_FILE), GENERATOR)
    index = resolve_label(label, metadata.get("class_names"))
    images, labels, rows = draw(generator, n, seed=seed, label=index, interpolate=interpolate)
    write_samples(images, labels, kind, path, rows=rows)
    return Path(path), labels


def parse_view_weights(text):
    """``"axial=0.5,coronal=0.3,sagittal=0.2"`` -> dict; InputError when malformed."""
    if not text:
        return None
    from gan_seg.views import VIEWS

    weights = {}
    for part in text.split(","):
        view, _, value = part.partition("=")
        try:
            weights[view.strip().lower()] = float(value)
        except ValueError:
            weights = None
            break
    if not weights or set(weights) - set(VIEWS):
        raise InputError(f"--view-weights {text!r}: expected e.g. axial=0.4,coronal=0.4,sagittal=0.2")
    return weights


def segment(source, out, model=DEFAULT_SEGMENT_MODEL, views=None, view_weights=None, volumes=None, qc=None,
            posteriors=None, mc_samples=0, uncertainty=None, batch_size=16, seed=0, shard=None, force=False,
            progress=True, report=print):
    """Segment one scan (``out`` = a label file) or a cohort (a folder or list of scans; ``out`` = a
    folder). Returns the volume rows of a scan, or ``(done, skipped, failed)`` of a cohort."""
    from gan_seg.inference.scans import (
        ScanOutputs,
        check_outputs,
        parse_shard,
        segment_cohort,
        segment_scan,
    )
    from gan_seg.inference.segmentation import Segmenter
    from gan_seg.presets import resolve_run_dir

    source = Path(source)
    cohort = source.is_dir() or source.suffix.lower() in (".txt", ".csv")
    if not isinstance(mc_samples, int) or mc_samples < 0 or mc_samples == 1:
        raise InputError(f"--mc-samples {mc_samples}: use 0 (off) or N >= 2")
    shard = parse_shard(shard)
    check_seed(seed)
    weights = parse_view_weights(view_weights)
    if cohort:
        if volumes or qc or posteriors or uncertainty:
            raise InputError("for a cohort, -o is a folder and every scan gets NAME_seg.nii.gz, "
                             "NAME_volumes.csv and NAME_qc.png there: drop --volumes/--qc/--posteriors/"
                             "--uncertainty")
    else:
        if shard:
            raise InputError("--shard splits a cohort; INPUT is a single scan")
        if not source.is_file():
            raise InputError(f"input {source} does not exist")
        outputs = ScanOutputs(Path(out), volumes and Path(volumes), qc and Path(qc),
                              posteriors and Path(posteriors), uncertainty and Path(uncertainty))
        check_outputs(outputs, mc_samples, force)
    segmenter = Segmenter(resolve_run_dir(model), views, weights)
    if cohort:
        return segment_cohort(segmenter, source, out, batch_size, mc_samples, seed, shard, force, report)
    return segment_scan(segmenter, source, outputs, batch_size, mc_samples, seed, progress)


def list_models():
    """``[(name, description)]`` of the shipped models."""
    from gan_seg.presets import list_presets

    return [(name, meta.get("description", "")) for name, meta in list_presets().items()]
