"""The score occlusion watches, per kind of network, and the kind of a Keras network from its shapes.

- classifier (image -> softmax over classes): the probability of the target class (default: the class
  it predicts for the unoccluded image);
- discriminator (image [+ one-hot label] -> P(real) or a logit): the probability that the image is real;
  a conditional one judges it as the target class (default: the label it finds most real);
- segmentation (slice -> per-pixel class probabilities): the target structure's probability summed over
  the slice (default: every class but background, i.e. the sum of 1 - P(background)).

A generator (latent input) has nothing to occlude.
"""

import dataclasses

import numpy as np

from gan_seg.errors import InputError
from gan_seg.gan.config import CLASSIFIER, DISCRIMINATOR, GENERATOR
from gan_seg.seg.config import SEGMENTATION
from gan_seg.seg.views import split_hemisphere

KINDS = (CLASSIFIER, DISCRIMINATOR, GENERATOR, SEGMENTATION)
NETWORKS = (GENERATOR, DISCRIMINATOR)  # the networks of a GAN folder (--network)


@dataclasses.dataclass(frozen=True)
class Target:
    """A batch (N, H, W, C) -> (N,) score function, what it measures (for titles) and the class index."""

    score: object
    name: str
    index: int | None


def network_kind(model):
    """``classifier``, ``discriminator``, ``generator`` or ``segmentation`` from the input/output shapes."""
    first, out = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(first) == 2:
        return GENERATOR
    if len(first) == 4 and len(out) == 4:
        return SEGMENTATION
    if len(first) == 4 and len(out) == 2:
        return DISCRIMINATOR if out[-1] == 1 else CLASSIFIER
    raise InputError(f"model {model.name!r} (input {first}, output {out}) is not an image classifier, "
                     "discriminator, generator or segmentation network")


def class_index(text, names, option="--target"):
    """A class given by number or name (case-insensitive; a Left-/Right- name also finds the merged
    class of a sagittal network) -> its index in ``names``."""
    count = len(names)
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < count:
            raise InputError(f"{option} {index} is outside the network's classes 0..{count - 1}")
        return index
    lowered = [str(name).lower() for name in names]
    for key in (text.lower(), split_hemisphere(text)[1].lower()):
        if key in lowered:
            return lowered.index(key)
    shown = ", ".join(str(name) for name in names)
    raise InputError(f"{option} {text!r} is not one of the network's classes ({shown})")


def _names(names, count):
    return list(names) if names and len(names) == count else [str(i) for i in range(count)]


def classifier_target(model, image, target=None, class_names=None):
    """The target class's probability; default the predicted class of ``image``."""
    names = _names(class_names, int(model.outputs[0].shape[-1]))
    index = (int(np.argmax(model.predict_on_batch(image[None])[0])) if target is None
             else class_index(target, names))
    return Target(lambda batch: np.asarray(model.predict_on_batch(batch))[:, index], f"P({names[index]})",
                  index)


def outputs_logits(model):
    """Whether a discriminator ends in a raw score (its last layer's activation is not the sigmoid)."""
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "sigmoid") != "sigmoid"


def discriminator_target(model, image, target=None, class_names=None):
    """P(real) (a logit output goes through the sigmoid); a conditional discriminator judges the images
    as the target class, by default the one it finds most real for ``image``."""
    logits = outputs_logits(model)

    def real(scores):
        scores = np.asarray(scores, np.float64)[:, 0]
        return 1.0 / (1.0 + np.exp(-scores)) if logits else scores

    if len(model.inputs) == 1:
        if target is not None:
            raise InputError("--target: an unconditional discriminator has one output, P(real); drop it")
        return Target(lambda batch: real(model.predict_on_batch(batch)), "P(real)", None)
    count = int(model.inputs[1].shape[-1])
    names = _names(class_names, count)
    eye = np.eye(count, dtype=np.float32)
    if target is None:
        index = int(np.argmax(real(model.predict_on_batch([np.repeat(image[None], count, 0), eye]))))
    else:
        index = class_index(target, names)

    def score(batch):
        return real(model.predict_on_batch([batch, np.repeat(eye[index:index + 1], len(batch), 0)]))

    return Target(score, f"P(real | {names[index]})", index)


def segmentation_target(model, target=None, class_names=None):
    """The target structure's probability summed over the slice (default: all but background)."""
    names = _names(class_names, int(model.outputs[0].shape[-1]))
    if target is None:
        def score(batch):
            return (1.0 - np.asarray(model.predict_on_batch(batch), np.float64)[..., 0]).sum(axis=(1, 2))

        return Target(score, "summed P(not background)", None)
    index = class_index(target, names)

    def score(batch):
        return np.asarray(model.predict_on_batch(batch), np.float64)[..., index].sum(axis=(1, 2))

    return Target(score, f"summed P({names[index]})", index)


def check_occludable(model):
    """The network's kind; InputError for a generator (it has no image input)."""
    kind = network_kind(model)
    if kind == GENERATOR:
        raise InputError(f"model {model.name!r} is a generator (a latent input, no image to occlude); "
                         "occlusion inspects classifiers, discriminators (a GAN folder's --network "
                         "discriminator) and segmentation networks")
    return kind


def target_for(model, image, target=None, class_names=None):
    """The :class:`Target` of any network occlusion can inspect; InputError for a generator."""
    kind = check_occludable(model)
    if kind == CLASSIFIER:
        return classifier_target(model, image, target, class_names)
    if kind == DISCRIMINATOR:
        return discriminator_target(model, image, target, class_names)
    return segmentation_target(model, target, class_names)
