"""``.keras`` files that carry gan-seg's metadata (kind, class names, training config).

The metadata is an extra ``gan_seg.json`` entry inside the ``.keras`` zip archive, so a model file is
self-describing (``sample --label sneaker`` works from the file alone) and Keras still loads it as is.
"""

import json
import zipfile
from pathlib import Path

import keras

from gan_seg.errors import InputError
from gan_seg.io.files import atomic_path

METADATA_ENTRY = "gan_seg.json"


def save_model(model, path, metadata):
    """Save ``model`` to ``path`` (``.keras``) atomically with ``metadata`` (a JSON-able dict)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(METADATA_ENTRY, json.dumps(metadata, indent=2, sort_keys=True))


def read_metadata(path):
    """gan-seg metadata of a ``.keras`` file; InputError when it is not a readable ``.keras`` file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                raise InputError(f"{path} is not a Keras model file (.keras archive without config.json)")
            return json.loads(archive.read(METADATA_ENTRY)) if METADATA_ENTRY in names else {}
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise InputError(f"{path} is not a readable .keras model file ({err})") from None


def load_model(path, kind=None):
    """Load a ``.keras`` file; with ``kind`` check it holds that kind of model (e.g. ``"generator"``).

    Returns ``(model, metadata)``.
    """
    metadata = read_metadata(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises many types for corrupt archives
        raise InputError(f"{path} could not be loaded as a Keras model: {str(err).splitlines()[0]}") from None
    found = metadata.get("kind", model.name)
    if kind is not None and found != kind:
        raise InputError(f"{path} holds a {found!r} model, not a {kind!r}; pass a {kind} model")
    return model, metadata
