"""What ``gan-seg occlusion`` and ``gan-seg features`` inspect: ``--model`` and INPUT resolved into one
network and the array it takes.

``--model``: a shipped name, a run directory or a ``.keras`` file. In a folder the network is
- the view network ``VIEW/model.keras`` of a segmentation model (``--view``, default axial);
- else ``classifier.keras`` when the folder holds one, else the GAN's ``--network`` (``discriminator``
  when an image is given, ``generator`` otherwise).

INPUT, by kind: an image file (or ``.npy``) for a classifier or discriminator, fitted to its input (grey
or RGB, resized); a scan (or the shipped example brain) for a segmentation network, conformed at the
model's voxel size and cut at ``--slice`` along the view's axis (default: the middle slice); nothing
for a generator, which gets a latent draw from ``--seed`` (and ``--label`` for a CGAN, default class 0).
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

import gan_seg.seg.layers  # noqa: F401 - registers the custom layers of the brain networks
from gan_seg.errors import InputError
from gan_seg.explain.targets import (
    CLASSIFIER,
    DISCRIMINATOR,
    GENERATOR,
    KINDS,
    NETWORKS,
    SEGMENTATION,
    class_index,
    discriminator_target,
    network_kind,
)
from gan_seg.gan.config import CLASSIFIER_FILE, DISCRIMINATOR_FILE, GENERATOR_FILE
from gan_seg.gan.data import read_image
from gan_seg.gan.sampling import latent_batch
from gan_seg.io.presets import list_presets, resolve_model_file, weights_dir
from gan_seg.io.saving import load_model
from gan_seg.seg import config as seg_config
from gan_seg.seg.preprocessing import conform
from gan_seg.seg.scans import example_scan
from gan_seg.seg.views import VIEW_AXIS, VIEWS, to_slices
from gan_seg.seg.volumes import load_volume

NETWORK_FILES = {CLASSIFIER: CLASSIFIER_FILE, DISCRIMINATOR: DISCRIMINATOR_FILE, GENERATOR: GENERATOR_FILE}


@dataclasses.dataclass(frozen=True)
class Subject:
    """One loaded network: its kind, class names, the file it came from and (segmentation) the model's
    voxel size and view."""

    model: object
    kind: str
    class_names: list | None
    path: Path
    voxel_size: float | None = None
    view: str | None = None


@dataclasses.dataclass(frozen=True)
class Input:
    """What the network takes (a batch of one: an array or a list of arrays), the image shown in
    pictures (H, W, C in [0, 1], display orientation; None for a generator) and a description."""

    batch: object
    picture: np.ndarray | None
    where: str


def _folder(spec):
    """The folder a non-file ``--model`` names (a directory or a preset), or None."""
    path = Path(spec)
    if path.is_dir():
        return path
    return weights_dir() / str(spec) if str(spec) in list_presets() else None


def _is_segmentation(folder):
    config = folder / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text()).get("model") in seg_config.MODELS
    except ValueError:
        raise InputError(f"{config} is not valid JSON") from None


def network_file(spec, network=None, view=None, has_input=True):
    """The ``.keras`` file ``--model`` / ``--network`` / ``--view`` name (a preset's sha256 checked)."""
    if network is not None and network not in NETWORKS:
        raise InputError(f"--network {network!r}: choose one of {', '.join(NETWORKS)}")
    if view is not None and view not in VIEWS:
        raise InputError(f"--view {view!r}: choose one of {', '.join(VIEWS)}")
    folder = None if Path(spec).suffix == ".keras" else _folder(spec)
    if folder is not None and _is_segmentation(folder):
        if network is not None:
            raise InputError(f"--network applies to GAN models; {spec} is a segmentation model (use --view)")
        return resolve_model_file(spec, f"{view or VIEWS[0]}/{seg_config.MODEL_FILE}")
    if view is not None:
        raise InputError(f"--view applies to segmentation models, not to {spec}")
    if folder is None:
        return resolve_model_file(spec, GENERATOR_FILE)  # a .keras file, or the error for a bad name
    if network is None and (folder / CLASSIFIER_FILE).is_file():
        return resolve_model_file(spec, CLASSIFIER_FILE)
    return resolve_model_file(spec, NETWORK_FILES[network or (DISCRIMINATOR if has_input else GENERATOR)])


def open_subject(spec, network=None, view=None, has_input=True):
    """Load the network ``spec`` names (see :func:`network_file`) as a :class:`Subject`."""
    path = network_file(spec, network, view, has_input)
    model, metadata = load_model(path)
    kind = metadata.get("kind") if metadata.get("kind") in KINDS else network_kind(model)
    if kind != network_kind(model):
        raise InputError(f"{path} says it holds a {kind} but its shapes are those of a {network_kind(model)}")
    names = metadata.get("class_names")
    if kind == SEGMENTATION:
        return Subject(model, kind, names, path, float(metadata.get("voxel_size", 1.0)),
                       metadata.get("view", view or VIEWS[0]))
    return Subject(model, kind, list(names) if names else None, path)


def check_input_kind(subject, source, example, slice_index=None):
    """InputError when the INPUT (or ``--slice``) given does not suit the network."""
    if slice_index is not None and subject.kind != SEGMENTATION:
        raise InputError(f"--slice applies to brain models (a scan's slice), not to the {subject.kind} "
                         f"{subject.path}")
    if subject.kind == GENERATOR:
        if source is not None or example:
            raise InputError(f"{subject.path} is a generator: it takes --seed (and --label), not an INPUT")
        return
    if source is not None and example:
        raise InputError("give INPUT or --example, not both")
    if example and subject.kind != SEGMENTATION:
        raise InputError("--example is the shipped example brain: it needs a segmentation model")
    if source is None and not example:
        what = "scan (or --example)" if subject.kind == SEGMENTATION else "image file"
        raise InputError(f"give an INPUT {what} for the {subject.kind} {subject.path}")


def image_input(subject, source):
    """An image file fitted to the network's input: ``Input`` whose batch is (1, H, W, C)."""
    shape = tuple(int(n) for n in subject.model.inputs[0].shape[1:])
    image = read_image(source, shape)
    return Input(image[None], image, f"{source} as {'x'.join(map(str, shape))}")


def slice_input(subject, source, index=None, example=False):
    """One slice of the conformed scan along the view's axis: ``Input`` with a (1, H, W, 1) batch."""
    path = example_scan() if example else Path(source)
    conformed = conform(load_volume(path), subject.voxel_size)
    slices = to_slices(conformed.data, subject.view)
    count = len(slices)
    index = count // 2 if index is None else index
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise InputError(f"--slice {index} is outside the conformed scan: its {subject.view} slices are "
                         f"0..{count - 1} ({subject.voxel_size:g} mm apart)")
    axis = VIEW_AXIS[subject.view]
    world = conformed.affine[axis, 3] + index * conformed.affine[axis, axis]
    where = (f"{path.name}: {subject.view} slice {index} of 0..{count - 1} ({'xyz'[axis]} = {world:.1f} mm "
             f"in the scan's world space)")
    image = np.ascontiguousarray(slices[index], np.float32)[..., None]
    return Input(image[None], display(image), where)


def display(array):
    """A conformed slice (A, B[, C]) in display orientation: rows superior/anterior first."""
    return np.swapaxes(array, 0, 1)[::-1]


def shown(subject, array):
    """``array`` (H, W[, C], the network's orientation) as pictures show it."""
    return display(array) if subject.kind == SEGMENTATION else array


def latent_input(subject, seed=0, label=None):
    """A generator's latent draw z ~ U(-1, 1) from ``seed`` (CGAN: and the one-hot ``label``)."""
    model = subject.model
    z = latent_batch(1, int(model.inputs[0].shape[-1]), seed)
    if len(model.inputs) == 1:
        if label is not None:
            raise InputError("--label: this generator is unconditional (DCGAN); drop --label")
        return Input(z, None, f"latent draw of --seed {seed}")
    count = int(model.inputs[1].shape[-1])
    names = subject.class_names or [str(i) for i in range(count)]
    index = 0 if label is None else class_index(label, names, "--label")
    return Input([z, np.eye(count, dtype=np.float32)[index:index + 1]], None,
                 f"latent draw of --seed {seed}, label {index} ({names[index]})")


def network_input(subject, source=None, example=False, slice_index=None, seed=0, label=None):
    """The :class:`Input` of ``subject`` for ``gan-seg features``: an image, a brain slice or a latent
    draw; a conditional discriminator also gets ``label`` (default: the label it finds most real)."""
    check_input_kind(subject, source, example, slice_index)
    if subject.kind == GENERATOR:
        return latent_input(subject, seed, label)
    if subject.kind == SEGMENTATION:
        return slice_input(subject, source, slice_index, example)
    found = image_input(subject, source)
    if subject.kind == DISCRIMINATOR and len(subject.model.inputs) == 2:
        index = discriminator_target(subject.model, found.picture, label, subject.class_names).index
        onehot = np.eye(int(subject.model.inputs[1].shape[-1]), dtype=np.float32)[index:index + 1]
        return Input([found.batch, onehot], found.picture, f"{found.where}, label {index}")
    if label is not None:
        raise InputError(f"--label applies to conditional GANs, not to the {subject.kind} {subject.path}")
    return found
