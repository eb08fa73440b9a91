"""``.keras`` files that carry gan-seg's metadata (kind, class names, training config).

The metadata is an extra ``gan_seg.json`` entry inside the ``.keras`` zip archive, so a model file is
self-describing (``sample --label sneaker`` works from the file alone) and Keras still loads it as is.

Model files from strangers are untrusted: before Keras sees one, its ``config.json`` is read and the file
is refused when it names any module outside Keras and gan-seg, a class registered by another package, or a
Lambda layer (stored Python code). Keras then loads it in safe mode.
"""

import json
import zipfile
from pathlib import Path

import keras

from gan_seg.errors import InputError
from gan_seg.io.files import atomic_path

METADATA_ENTRY = "gan_seg.json"
TRUSTED_PACKAGES = ("keras", "gan_seg")
CODE_CLASSES = ("Lambda", "__lambda__", "TFOpLambda")


def save_model(model, path, metadata):
    """Save ``model`` to ``path`` (``.keras``) atomically with ``metadata`` (a JSON-able dict)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(METADATA_ENTRY, json.dumps(metadata, indent=2, sort_keys=True))


def read_metadata(path):
    """gan-seg metadata of a ``.keras`` file; InputError when it is not a readable ``.keras`` file."""
    return _read(path)[1]


def _read(path):
    """``(config, metadata)`` of a ``.keras`` archive; InputError when it is missing or not readable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                raise InputError(f"{path} is not a Keras model file (.keras archive without config.json)")
            config = json.loads(archive.read("config.json"))
            return config, json.loads(archive.read(METADATA_ENTRY)) if METADATA_ENTRY in names else {}
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise InputError(f"{path} is not a readable .keras model file ({err})") from None


def untrusted_parts(config):
    """What a Keras model config names outside Keras and gan-seg: foreign modules, classes registered
    by other packages, Lambda layers (sorted, without repeats)."""
    found, stack = set(), [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            module, registered = node.get("module"), node.get("registered_name")
            if isinstance(module, str) and module.split(".")[0] not in TRUSTED_PACKAGES:
                found.add(f"module {module}")
            if isinstance(registered, str) and ">" in registered and \
                    registered.split(">")[0] not in TRUSTED_PACKAGES:
                found.add(f"class {registered}")
            if node.get("class_name") in CODE_CLASSES:
                found.add("a Lambda layer (stored Python code)")
            stack.extend(node.values())
    return sorted(found)


def load_model(path, kind=None):
    """Load a ``.keras`` file; with ``kind`` check it holds that kind of model (e.g. ``"generator"``).

    Returns ``(model, metadata)``.
    """
    config, metadata = _read(path)
    foreign = untrusted_parts(config)
    if foreign:
        raise InputError(f"{path} refers to code outside Keras and gan-seg ({', '.join(foreign)}); refusing "
                         "to load it: a model file can run such code when it is loaded")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for corrupt archives
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        reason = reason if len(reason) <= 200 else reason[:200] + "..."  # Keras may quote a whole config
        raise InputError(f"{path} could not be loaded as a Keras model: {reason}") from None
    found = metadata.get("kind", model.name)
    if kind is not None and found != kind:
        raise InputError(f"{path} holds a {found!r} model, not a {kind!r}; pass a {kind} model")
    return model, metadata
