"""Shipped models in ``weights/`` and how a ``--model`` argument is resolved.

A preset is a folder ``weights/NAME/`` holding the model file(s) and ``metadata.json`` with a
description, licence notes and the sha256 of every file (checked before loading). ``GAN_SEG_WEIGHTS``
points at another weights folder.
"""

import hashlib
import importlib.resources
import json
import os
import shutil
from pathlib import Path

from gan_seg.errors import InputError
from gan_seg.io.files import write_json

METADATA = "metadata.json"


def weights_dir():
    """The folder presets are read from."""
    override = os.environ.get("GAN_SEG_WEIGHTS")
    if override:
        return Path(override)
    try:
        return Path(str(importlib.resources.files("gan_seg.weights")))
    except ModuleNotFoundError:  # imported from a source checkout: weights/ sits beside gan_seg/
        return Path(__file__).resolve().parents[2] / "weights"


def list_presets():
    """``{name: metadata}`` of every preset folder, sorted by name."""
    root = weights_dir()
    found = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / METADATA).is_file():
            try:
                found[folder.name] = json.loads((folder / METADATA).read_text())
            except ValueError as err:
                raise InputError(f"preset {folder.name}: {METADATA} is corrupt ({err})") from None
    return found


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def preset_file(name, filename):
    """Path of ``filename`` in preset ``name`` after checking its sha256 against the metadata."""
    presets = list_presets()
    if name not in presets:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(presets) or 'none'} "
                         "(or pass a run directory or a .keras file)")
    path = weights_dir() / name / filename
    expected = presets[name].get("files", {}).get(filename)
    if expected is None or not path.is_file():
        raise InputError(f"model {name!r} has no {filename}")
    if sha256(path) != expected:
        raise InputError(f"{path} does not match its sha256 in {METADATA}: the file is damaged; "
                         "reinstall gan-seg")
    return path


def resolve_model_file(spec, filename):
    """The ``.keras`` file a ``--model`` argument names: a file, a run directory, or a preset name."""
    path = Path(spec)
    if path.suffix == ".keras" or path.is_file():
        if not path.is_file():
            raise InputError(f"model file {path} does not exist")
        return path
    if path.is_dir():
        if not (path / filename).is_file():
            raise InputError(f"{path} holds no {filename}: it is not a finished run directory "
                             "(finish it with `gan-seg train --resume`)")
        return path / filename
    if os.sep in str(spec) or "/" in str(spec):
        raise InputError(f"model {spec} does not exist")
    return preset_file(str(spec), filename)


def resolve_run_dir(spec):
    """The folder a ``--model`` or ``--init`` names: a run directory or a preset (sha256 checked)."""
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{path} is not a run directory (no config.json)")
        return path
    if os.sep in str(spec) or "/" in str(spec):
        raise InputError(f"model {spec} does not exist")
    presets = list_presets()
    if spec not in presets:
        raise InputError(f"unknown model {spec!r}; known models: {', '.join(presets) or 'none'} "
                         "(or pass a run directory)")
    for filename in presets[spec].get("files", {}):
        preset_file(spec, filename)
    return weights_dir() / spec


def export_preset(run_dir, name, description, files, extra=None, dest=None):
    """Copy ``files`` (paths relative to ``run_dir``) into ``weights/NAME/`` with their sha256s.

    ``extra`` adds fields to ``metadata.json`` (licence, training command, measured quality).
    """
    run_dir = Path(run_dir)
    folder = Path(dest or weights_dir()) / name
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for relative in files:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / relative, target)
        hashes[relative] = sha256(target)
    metadata = {"name": name, "description": description, "files": hashes, **(extra or {})}
    write_json(folder / METADATA, metadata)
    return folder
