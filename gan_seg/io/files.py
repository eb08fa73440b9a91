"""Safe output files: checks before work starts, atomic writes, no overwrite without ``force``."""

import collections
import contextlib
import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path

from gan_seg.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)


def check_output_file(path, force=False):
    """Raise InputError unless ``path`` can be (over)written; returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output {path} is a directory; give a file name")
    if path.exists() and not force:
        raise InputError(f"output {path} already exists; pass --force to overwrite it")
    check_writable_dir(path.parent if str(path.parent) else Path("."))
    return path


def check_output_dir(path, force=False):
    """Raise InputError unless ``path`` is a new or empty directory (or ``force``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise InputError(f"output directory {path} is not empty; pass --force to write into it")
    parent = path
    while not parent.exists():
        parent = parent.parent
    check_writable_dir(parent)
    return path


def check_writable_dir(directory):
    """Raise InputError when files cannot be created in ``directory`` (or its nearest existing parent)."""
    directory = Path(directory)
    while not directory.exists():
        directory = directory.parent
    if not directory.is_dir():
        raise InputError(f"cannot write under {directory}: it is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"cannot write under {directory}: permission denied")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On any error the temporary file is removed, so ``path`` is either old or complete, never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes),
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_temporaries(paths):
    """Delete the hidden temporaries that a killed :func:`atomic_path` left beside ``paths``: names of its
    own pattern only (``.NAME.`` + mkstemp's 8 characters + ``.tmp``, and temporaries of those). Each
    folder is listed once."""
    names = collections.defaultdict(list)
    for path in map(Path, paths):
        names[path.parent].append(re.escape(path.name))
    for folder, escaped in names.items():
        pattern = re.compile(rf"\.+(?:{'|'.join(escaped)})\.[a-z0-9_]{{8}}\.tmp.*")
        for found in folder.iterdir() if folder.is_dir() else ():
            if pattern.fullmatch(found.name) and found.is_file():
                found.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_paths(paths):
    """Yield ``{path: temporary path beside it}`` for files written together: when the block succeeds the
    temporaries replace their paths, the first path last (name the file that marks completion first);
    on any error all are removed. A failure never leaves some of the files new and others missing, and a
    kill leaves at most hidden temporaries, never the first path without the others."""
    with contextlib.ExitStack() as stack:
        yield {Path(path): stack.enter_context(atomic_path(path)) for path in paths}


def write_json(path, data):
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path, rows, fields=None):
    """Write dict rows as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields or list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
