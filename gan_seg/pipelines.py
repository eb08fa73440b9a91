"""The functions the CLI calls: files in, files out. Each checks all its inputs and outputs first."""

from pathlib import Path

from gan_seg.errors import InputError

GAN_MODELS = ("dcgan", "cgan")
DEFAULT_SAMPLE_MODEL = "cgan-fashion-mnist"


def train(options, out, force=False, progress=True):
    """Start a training run of ``options['model']`` in ``out``; returns the run directory."""
    from gan_seg.training.gan import GanConfig, train_gan

    model = options.get("model")
    if model not in GAN_MODELS:
        raise InputError(f"--model {model!r}: choose one of {', '.join(GAN_MODELS)}")
    return train_gan(GanConfig(**options), out, force=force, progress=progress)


def resume(run_dir, steps, progress=True):
    """Continue the run in ``run_dir`` up to ``steps`` total iterations."""
    from gan_seg.training.engine import RunDirectory
    from gan_seg.training.gan import resume_gan

    model = RunDirectory(run_dir).read_config().get("model")
    if model not in GAN_MODELS:
        raise InputError(f"{run_dir}: cannot resume a {model!r} run")
    return resume_gan(run_dir, steps, progress=progress)


def resolve_label(text, class_names, num_classes):
    """A ``--label`` (number or class name, case-insensitive) -> class index."""
    if text is None:
        return None
    if num_classes is None:
        raise InputError("--label needs a conditional (CGAN) model; this generator is unconditional")
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < num_classes:
            raise InputError(f"--label {index} is outside the model's classes 0..{num_classes - 1}")
        return index
    names = [name.lower() for name in class_names or []]
    if text.lower() in names:
        return names.index(text.lower())
    known = ", ".join(class_names) if class_names else f"numbers 0..{num_classes - 1} only"
    raise InputError(f"--label {text!r} is not one of the model's classes ({known})")


def sample(model=DEFAULT_SAMPLE_MODEL, n=64, seed=0, out="samples.png", label=None, interpolate=False,
           force=False):
    """Draw ``n`` images from a generator (preset, run directory or ``.keras`` file) into ``out``.

    ``out`` ``*.png`` = one grid; ``*.npz`` = arrays ``images`` and ``labels``; otherwise a directory of
    ``{index:05d}_{label}.png``. Returns ``(path, labels)``.
    """
    from gan_seg.imaging import plan_sample_output, write_samples
    from gan_seg.models.gan import GENERATOR, num_classes_of
    from gan_seg.models.saving import load_model
    from gan_seg.presets import resolve_model_file
    from gan_seg.training.gan import GENERATOR_FILE

    if not isinstance(n, int) or n < 1:
        raise InputError(f"-n must be a positive number of images, got {n}")
    kind, path = plan_sample_output(out, force=force)
    generator, metadata = load_model(resolve_model_file(model, GENERATOR_FILE), GENERATOR)
    index = resolve_label(label, metadata.get("class_names"), num_classes_of(generator))
    from gan_seg.inference.sampling import sample as draw

    images, labels, rows = draw(generator, n, seed=seed, label=index, interpolate=interpolate)
    write_samples(images, labels, kind, path, rows=rows)
    return Path(path), labels


def list_models():
    """``[(name, description)]`` of the shipped models."""
    from gan_seg.presets import list_presets

    return [(name, meta.get("description", "")) for name, meta in list_presets().items()]
