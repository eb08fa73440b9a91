"""The functions the CLI calls (files in, files out) and the registry of trainable models.

Every function checks its options and paths before any work starts. The modules that do the work are
imported inside the functions (the CLI imports this module for ``--help``, which must not load Keras or
TensorFlow), and TensorFlow only to train, so ``sample`` / ``segment`` run on an install without it.
"""

import dataclasses
import importlib
from pathlib import Path

import numpy as np

from gan_seg.engine.options import check_seed, flag_of
from gan_seg.engine.run_dir import RunDirectory
from gan_seg.errors import InputError
from gan_seg.explain.occlusion import check_occluder_options
from gan_seg.explain.occlusion import occlusion as occlude
from gan_seg.explain.render import render_feature_maps, render_heatmap
from gan_seg.explain.targets import check_occludable
from gan_seg.gan import config as gan_config
from gan_seg.io.files import check_output_file, staged_paths, write_json
from gan_seg.io.pictures import plan_sample_output, write_samples
from gan_seg.io.presets import list_presets, resolve_model_file, resolve_run_dir
from gan_seg.seg import config as seg_config
from gan_seg.seg.views import parse_view_weights


@dataclasses.dataclass(frozen=True)
class Family:
    """A family of trainable models: its config class, the module that trains it (``train`` and
    ``resume``) and the files a finished run holds."""

    name: str
    models: tuple
    config: type
    trainer: str
    outputs: tuple


FAMILIES = (
    Family("GAN", gan_config.MODELS, gan_config.GanConfig, "gan_seg.gan.trainer", gan_config.OUTPUTS),
    Family("QuickNAT", seg_config.MODELS, seg_config.SegConfig, "gan_seg.seg.trainer",
           tuple(f"{view}/{seg_config.MODEL_FILE}" for view in seg_config.VIEWS)),
)
MODELS = {model: family for family in FAMILIES for model in family.models}


def flag(name):
    """The CLI flag of the config field ``name`` in whichever family has it."""
    for family in FAMILIES:
        for field in dataclasses.fields(family.config):
            if field.name == name and flag_of(field):
                return flag_of(field)
    return "--" + name.replace("_", "-")


def _trainer(family):
    """The family's trainer module (TensorFlow loads here, only to train)."""
    return importlib.import_module(family.trainer)


def train(options, out, force=False, progress=True):
    """Start a training run in ``out`` from ``options`` (config field -> value; ``model`` picks the
    family, unset fields keep their defaults); returns the run directory."""
    options = dict(options)
    model = options.pop("model", "dcgan")
    if model not in MODELS:
        raise InputError(f"--model {model!r}: choose one of {', '.join(MODELS)}")
    family = MODELS[model]
    fields = {f.name for f in dataclasses.fields(family.config)}
    wrong = sorted(set(options) - fields)
    if wrong:
        flags = ", ".join(flag(name) for name in wrong)
        raise InputError(f"{flags} {'does' if len(wrong) == 1 else 'do'} not apply to --model {model}")
    config = family.config(model=model, **options).checked()
    return _trainer(family).train(config, out, force=force, progress=progress)


def resume(run_dir, steps=None, epochs=None, progress=True):
    """Continue the run in ``run_dir``: a GAN up to ``steps`` iterations, a segmentation run through its
    remaining views (to ``epochs`` when given)."""
    model = RunDirectory(run_dir).read_config().get("model")
    if model not in MODELS:
        raise InputError(f"{run_dir}: cannot resume a {model!r} run")
    trainer = _trainer(MODELS[model])
    if model in gan_config.MODELS:
        if steps is None or epochs is not None:
            raise InputError("resuming a GAN run needs --steps N (the new total) and no --epochs")
        return trainer.resume(run_dir, steps, progress=progress)
    if steps is not None:
        raise InputError("a segmentation run is resumed by epochs: drop --steps (optionally --epochs N)")
    return trainer.resume(run_dir, epochs, progress=progress)


def resolve_label(text, class_names):
    """A ``--label`` (number or class name, case-insensitive) -> class index; whether the model is
    conditional and the index in range is checked by :func:`gan_seg.gan.sampling.sample`."""
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


def sample(model=gan_config.DEFAULT_PRESET, n=64, seed=0, out="samples.png", label=None, interpolate=False,
           force=False):
    """Draw ``n`` images from a generator (preset, run directory or ``.keras`` file) into ``out``.

    ``out`` ``*.png`` = one grid; ``*.npz`` = arrays ``images`` and ``labels``; otherwise a directory of
    ``{index:05d}_{label}.png``. Returns ``(path, labels)``.
    """
    check_seed(seed)
    kind, path = plan_sample_output(out, force=force)
    model_file = resolve_model_file(model, gan_config.GENERATOR_FILE)
    from gan_seg.gan.sampling import sample as draw  # noqa: PLC0415 - Keras loads once the arguments are checked
    from gan_seg.io.saving import load_model  # noqa: PLC0415 - idem

    generator, metadata = load_model(model_file, gan_config.GENERATOR)
    index = resolve_label(label, metadata.get("class_names"))
    images, labels, rows = draw(generator, n, seed=seed, label=index, interpolate=interpolate)
    write_samples(images, labels, kind, path, rows=rows)
    return Path(path), labels


def evaluate(model=gan_config.DEFAULT_PRESET, n=10000, seed=0, json_out=None, cas=True, force=False,
             progress=True):
    """Judge a generator (preset, run directory or ``.keras`` file) with the shipped Fashion-MNIST classifier
    (:func:`gan_seg.gan.evaluation.evaluate`: Frechet distance and its floor, class histogram, conditional
    accuracy, CAS); the numbers also go to ``json_out`` when given. Returns the result dict."""
    check_seed(seed)
    gan_config.check_evaluation_count(n)
    json_path = check_output_file(json_out, force=force) if json_out is not None else None
    model_file = resolve_model_file(model, gan_config.GENERATOR_FILE)
    from gan_seg.gan.evaluation import evaluate as judge  # noqa: PLC0415 - Keras loads once the arguments are checked
    from gan_seg.io.saving import load_model  # noqa: PLC0415 - idem

    generator, metadata = load_model(model_file, gan_config.GENERATOR)
    result = {"model": str(model), "model_file": str(model_file)}
    result.update(judge(generator, n=n, seed=seed, class_names=metadata.get("class_names"), cas=cas,
                        progress=progress, what=str(model_file)))
    if json_path is not None:
        write_json(json_path, result)
    return result


def _check_segment_options(mc_samples, seed):
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 0 or mc_samples == 1:
        raise InputError(f"--mc-samples {mc_samples}: use 0 (off) or N >= 2")
    check_seed(seed)


def is_cohort(source):
    """True when ``source`` names a cohort (a folder, or a .txt/.csv list of scans), not one scan."""
    if source is None:
        return False
    source = Path(source)
    return source.is_dir() or source.suffix.lower() in (".txt", ".csv")


def _segmenter(model_dir, views, weights, precision, threads):
    """The view networks of ``model_dir`` (Keras loads here, after every argument is checked)."""
    from gan_seg.engine.backend import limit_threads  # noqa: PLC0415 - Keras loads once the arguments are checked
    from gan_seg.seg.inference import Segmenter  # noqa: PLC0415 - idem

    limit_threads(threads)
    return Segmenter(model_dir, views, weights, precision)


def segment_scan(source, out, model=seg_config.DEFAULT_PRESET, views=None, view_weights=None, volumes=None,
                 qc=None, posteriors=None, mc_samples=0, uncertainty=None, batch_size=16, seed=0, force=False,
                 progress=True, mask=None, brain=None, precision="auto", threads=None, example=False,
                 report=None, max_memory=None):
    """Segment one scan (``source``, or the shipped example brain with ``example``) into the label file
    ``out`` and the optional outputs; returns the volume rows. ``threads`` (None: all cores) must be given
    before the backend has started; ``report(line)`` receives warnings (low QC score, missing views);
    ``max_memory`` (GiB; None: 90% of the memory available) refuses scans estimated to need more."""
    from gan_seg.seg.scans import ScanOutputs, check_memory, check_outputs, example_scan  # noqa: PLC0415 - nibabel, scipy
    from gan_seg.seg.scans import segment_scan as run  # noqa: PLC0415 - idem
    from gan_seg.seg.volumes import load_volume  # noqa: PLC0415 - idem

    _check_segment_options(mc_samples, seed)
    weights = parse_view_weights(view_weights)
    if example and source is not None:
        raise InputError("give INPUT or --example, not both")
    if not example and source is None:
        raise InputError("give an INPUT scan (or --example for the shipped example brain)")
    source = example_scan() if example else Path(source)
    if not source.is_file():
        raise InputError(f"input {source} does not exist")
    header = load_volume(source, read=False)  # the header's problems now, the voxels' after the networks
    outputs = ScanOutputs(Path(out), volumes and Path(volumes), qc and Path(qc),
                          posteriors and Path(posteriors), uncertainty and Path(uncertainty),
                          mask and Path(mask), brain and Path(brain))
    check_outputs(outputs, mc_samples, force, source)
    model_dir = resolve_run_dir(model)
    record = RunDirectory(model_dir).read_config()
    check_memory(header, source, float(record.get("voxel_size", 1.0)), len(record.get("class_names", [])),
                 mc_samples, max_memory)
    segmenter = _segmenter(model_dir, views, weights, precision, threads)
    return run(segmenter, source, outputs, batch_size, mc_samples, seed, progress, report)


def segment_cohort(source, out, model=seg_config.DEFAULT_PRESET, views=None, view_weights=None, mc_samples=0,
                   batch_size=16, seed=0, shard=None, force=False, report=None, precision="auto",
                   threads=None, max_memory=None):
    """Segment every scan of a cohort (folder or list) into the folder ``out``; returns
    ``(done, skipped, failed)`` scan names (a scan over the memory budget fails alone)."""
    from gan_seg.seg.scans import plan_cohort  # noqa: PLC0415 - nibabel, scipy
    from gan_seg.seg.scans import segment_cohort as run  # noqa: PLC0415 - idem

    _check_segment_options(mc_samples, seed)
    weights = parse_view_weights(view_weights)
    shard = seg_config.parse_shard(shard)
    plan_cohort(source, out, shard)
    segmenter = _segmenter(resolve_run_dir(model), views, weights, precision, threads)
    return run(segmenter, source, out, batch_size, mc_samples, seed, shard, force, report, max_memory)


OCCLUDER = {"image": (8, 2), "segmentation": (16, 8)}  # default (patch, stride) in pixels


def _same_file(path, source):
    return Path(source).exists() and Path(path).resolve() == Path(source).resolve()


def _png_output(out, force, source=None):
    """``out`` checked as a new ``.png`` (not the input itself); the input, when given, must exist."""
    path = check_output_file(out, force=force)
    if path.suffix.lower() != ".png":
        raise InputError(f"output {out}: give a .png file name")
    if source is not None and not Path(source).is_file():
        raise InputError(f"input {source} {'is not a file' if Path(source).exists() else 'does not exist'}")
    if source is not None and _same_file(path, source):
        raise InputError(f"output {out} is the input; choose another name")
    return path


def _subject(model, network, view, has_input):
    """The network ``--model`` names (Keras loads here, after the options are checked)."""
    from gan_seg.explain.subjects import open_subject  # noqa: PLC0415 - Keras loads once the arguments are checked

    return open_subject(model, network, view, has_input)


def occlusion(model, source, out, target=None, patch=None, stride=None, fill="mean", network=None, view=None,
              slice_index=None, example=False, force=False, batch_size=None):
    """Occlusion sensitivity of a classifier, discriminator or brain view network on ``source`` (an image;
    a scan cut at ``slice_index`` or, with ``example``, the shipped example brain): the heatmap PNG
    ``out`` and the drop at every occluder position in ``out`` with ``.npy`` (rows x columns; see
    :mod:`gan_seg.explain.occlusion`). ``patch`` / ``stride`` default to 8 / 2 pixels for images and
    16 / 8 for brain slices. Returns a dict describing the result."""
    check_occluder_options(1 if patch is None else patch, 1 if stride is None else stride, fill)
    png = _png_output(out, force, source)
    npy = check_output_file(png.with_suffix(".npy"), force=force)
    if source is not None and _same_file(npy, source):
        raise InputError(f"output {npy} is the input; choose another -o name")
    from gan_seg.explain.subjects import check_input_kind, image_input, shown, slice_input  # noqa: PLC0415 - Keras loads once the arguments are checked

    subject = _subject(model, network, view, has_input=True)
    check_occludable(subject.model)
    check_input_kind(subject, source, example, slice_index)
    segmentation = subject.kind == seg_config.SEGMENTATION
    if segmentation:
        found = slice_input(subject, source, slice_index, example)
    else:
        found = image_input(subject, source)
    default_patch, default_stride = OCCLUDER["segmentation" if segmentation else "image"]
    patch, stride = patch or default_patch, stride or default_stride
    result, chosen = occlude(subject.model, found.batch[0], target, patch, stride, fill, subject.class_names,
                             batch_size)
    pixels = shown(subject, result.pixel_map(found.batch[0].shape[:2]))
    title = f"{chosen.name} = {result.base:.4g} unoccluded; patch {patch}, stride {stride}, fill {fill}"
    subtitle = f"{subject.path.parent.name}/{subject.path.name} - {found.where}"
    with staged_paths([png, npy]) as staged:
        render_heatmap(found.picture, pixels, staged[png], title, caption=f"drop in {chosen.name}",
                       subtitle=subtitle)
        with open(staged[npy], "wb") as f:
            np.save(f, result.drops)
    strongest = np.unravel_index(int(np.argmax(result.drops)), result.drops.shape)
    return {"png": png, "npy": npy, "target": chosen.name, "base": result.base, "where": found.where,
            "positions": result.drops.shape, "max_drop": float(result.drops.max()),
            "max_at": (int(result.tops[strongest[0]]), int(result.lefts[strongest[1]])), "patch": patch,
            "stride": stride}


def features(model, source, out, layer, network=None, view=None, slice_index=None, seed=0, label=None,
             example=False, force=False):
    """A grid of ``layer``'s feature maps (PNG ``out``) for ``source`` (an image, a scan's slice or, for a
    generator, the latent draw of ``seed`` and ``label``). Returns a dict describing the result."""
    check_seed(seed)
    png = _png_output(out, force, source)
    from gan_seg.explain.features import feature_maps, find_layer, main_output, spatial  # noqa: PLC0415 - Keras loads once the arguments are checked
    from gan_seg.explain.subjects import network_input, shown  # noqa: PLC0415 - idem

    subject = _subject(model, network, view, has_input=source is not None or example)
    chosen = find_layer(subject.model, layer)
    shape = tuple(main_output(chosen).shape)
    if not spatial(shape):
        raise InputError(f"--layer {layer!r} outputs {shape[1:]}, not 2-D feature maps; pick a convolution "
                         "layer (--list-layers shows the shapes)")
    found = network_input(subject, source, example, slice_index, seed, label)
    maps = shown(subject, feature_maps(subject.model, found.batch, layer)[0])
    title = f"{layer}: {maps.shape[2]} maps of {maps.shape[0]}x{maps.shape[1]} - {found.where}"
    render_feature_maps(maps, png, title)
    return {"png": png, "layer": layer, "shape": maps.shape, "where": found.where, "model_file": subject.path}


def list_layers(model, network=None, view=None):
    """``(model file, [(name, class name, output shape)])`` of the network ``model`` names."""
    from gan_seg.explain.features import layer_table  # noqa: PLC0415 - Keras loads once the arguments are checked

    subject = _subject(model, network, view, has_input=network == "discriminator")
    return subject.path, layer_table(subject.model)


def list_models():
    """``[(name, description)]`` of the shipped models."""
    return [(name, meta.get("description", "")) for name, meta in list_presets().items()]
