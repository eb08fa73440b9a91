"""Brain MRI volumes: checked loading (NIfTI-1/2, MGZ), writing on an input's grid, segmentation data sets.

Every check reports all the problems of a file (or of a data set) at once, in one :class:`InputError`.
"""

import contextlib
import csv
import gzip
import json
import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from gan_seg.errors import InputError
from gan_seg.io.files import atomic_path

SUFFIXES = (".nii.gz", ".nii", ".mgz")
VOXEL_MM = (0.05, 20.0)  # accepted voxel sizes: above the first, at most the second
MAX_AXIS = 1024
MAX_FOV_MM = 500.0
READ_ERRORS = (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, OSError, EOFError,
               zlib.error, ValueError, KeyError, OverflowError)
_IMAGE_TYPES = (nib.Nifti1Image, nib.Nifti2Image, nib.MGHImage)
MGH_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.int16, np.int32, np.float32))


def _strip_suffix(text):
    return next((text[:-len(s)] for s in SUFFIXES if text.lower().endswith(s) and len(text) > len(s)), None)


def volume_name(path):
    """The file name without its volume suffix, or None when it has none of :data:`SUFFIXES`."""
    return _strip_suffix(Path(path).name)


def _reason(error):
    if isinstance(error, KeyError):  # nibabel's look-up of a header code
        return f"unknown header code {error}"
    return " ".join(str(error).split()) or type(error).__name__


def _dims(values, unit=""):
    return "x".join(f"{v:g}" for v in values) + unit


@contextlib.contextmanager
def _quiet_nibabel():
    """Mute nibabel's logger, which writes header repairs ("sizeof_hdr should be 540") on stderr: the
    InputError raised for such a file says what is wrong, in one line."""
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _stored_bytes(path):
    """The bytes the file holds: its size, or for gzip its decompressed length, streamed through in 1 MiB
    chunks so that the checksum is verified (a damaged .nii.gz fails here, not later as odd voxels)."""
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return path.stat().st_size
    total = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
    return total


def load_volume(path, read=True):
    """Load a 3D scan (.nii, .nii.gz, .mgz) with float32 data, keeping its affine and header.

    A single-frame 4D image is squeezed to 3D. Raises InputError listing every problem found: missing,
    unreadable or non-NIfTI/MGZ file, not 3D, empty axis, absurd size, voxel size or field of view,
    degenerate affine, colour (RGB) or complex voxels, non-finite voxels. With ``read=False`` only the
    header is checked and the unread image is returned.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if volume_name(path) is None:
        raise InputError(f"{path}: not a NIfTI or MGZ file (expected {', '.join(SUFFIXES)})")
    try:
        with _quiet_nibabel():
            img = nib.load(path)
    except READ_ERRORS as e:
        damaged = isinstance(e, (EOFError, zlib.error))
        kind = "damaged or truncated" if damaged else "not a valid NIfTI-1/2 or MGZ file"
        raise InputError(f"{path}: unreadable, {kind} ({_reason(e)})") from e
    if not isinstance(img, _IMAGE_TYPES):
        raise InputError(f"{path}: a {type(img).__name__}, not a NIfTI-1/2 or MGZ image")

    problems = []
    shape = img.shape
    frames = int(np.prod(shape[3:], dtype=np.int64))
    if len(shape) < 3:
        problems.append(f"not 3D (shape {_dims(shape)})")
    elif 1 in shape[:3]:
        problems.append(f"not 3D (shape {_dims(shape)}, a single slice)")
    elif frames > 1:
        problems.append(f"not 3D (shape {_dims(shape)}, {frames} frames)")
    if 0 in shape:
        problems.append(f"empty (shape {_dims(shape)})")
    if min(shape, default=0) < 0:
        problems.append(f"negative dimensions in the header (shape {_dims(shape)})")
    if max(shape[:3], default=0) > MAX_AXIS:
        problems.append(f"too large (shape {_dims(shape)}; at most {MAX_AXIS} voxels per axis)")

    affine = img.affine
    if not np.all(np.isfinite(affine)):
        problems.append("affine has non-finite values")
    else:
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        if np.any(zooms <= VOXEL_MM[0]) or np.any(zooms > VOXEL_MM[1]):
            problems.append(f"absurd voxel size {_dims(zooms.round(3), ' mm')} "
                            f"(accepted: over {VOXEL_MM[0]:g} and up to {VOXEL_MM[1]:g} mm)")
        elif abs(np.linalg.det(affine[:3, :3])) < 1e-3 * np.prod(zooms):
            problems.append("degenerate affine (voxel axes nearly parallel, not invertible)")
        fov = zooms * np.array((shape + (1, 1, 1))[:3])
        if np.any(fov > MAX_FOV_MM):
            problems.append(f"field of view {_dims(fov.round(1), ' mm')} over {MAX_FOV_MM:g} mm")

    dtype = img.get_data_dtype()
    grey = dtype.fields is None and dtype.kind != "c"
    if not grey:
        problems.append(f"not one grey value per voxel ({'RGB/vector' if dtype.fields else 'complex'} data); "
                        f"convert it to a single-channel scan")
    readable = grey and min(shape, default=0) > 0 and max(shape[:3], default=0) <= MAX_AXIS
    if read and readable and (frames == 1 or np.prod(shape) <= 2**24):
        # the data size is checked before reading, so a header declaring more than the file holds
        # allocates nothing
        declared = img.dataobj.offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        try:
            stored = _stored_bytes(path)
            if stored < declared:
                raise EOFError(f"the header declares {declared:,} bytes, the file holds {stored:,}")
            data = img.get_fdata(dtype=np.float32)
        except READ_ERRORS as e:
            problems.append(f"unreadable, damaged or truncated ({_reason(e)})")
        else:
            bad = data.size - int(np.count_nonzero(np.isfinite(data)))
            if bad:
                problems.append(f"{bad} non-finite voxels (NaN/Inf)")
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return type(img)(data.reshape(shape[:3]), affine, img.header) if read else img


def save_like(array, reference, path, dtype=None):
    """Write ``array`` (3D, the reference's grid) with the reference's affine and header, atomically.

    ``dtype`` (default: the array's) becomes the header data type, unscaled; the display range is reset.
    The format follows the suffix of ``path`` (.nii, .nii.gz or .mgz).
    """
    array = np.asarray(array)
    dtype = np.dtype(dtype or array.dtype)
    if array.shape != reference.shape[:3]:
        raise ValueError(f"array shape {array.shape} is not the reference's {reference.shape[:3]}")
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ValueError(f"values {array.min()}..{array.max()} do not fit {dtype}")
    array = array.astype(dtype, copy=False)
    if str(path).lower().endswith(".mgz"):
        header = reference.header if isinstance(reference, nib.MGHImage) else None
        img = nib.MGHImage(array, reference.affine, header)
    elif isinstance(reference, nib.Nifti1Image):  # NIfTI-2 included
        img = type(reference)(array, reference.affine, reference.header)
        img.header["cal_min"] = img.header["cal_max"] = 0
    else:
        img = nib.Nifti1Image(array, reference.affine)
        img.header.set_xyzt_units("mm")
    img.set_data_dtype(dtype)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def voxel_sizes(affine):
    """Voxel edge lengths (mm) of a voxel->world ``affine``."""
    return np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))


def _scaling(proxy):
    """``(slope, intercept)`` a file's stored values are scaled by ((1, 0) when unscaled)."""
    slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
    return (slope if np.isfinite(slope) and slope != 0 else 1.0), (inter if np.isfinite(inter) else 0.0)


def check_masked_output(source, path):
    """InputError when :func:`save_masked` could not write ``source``'s data type to ``path`` (MGZ holds
    only unscaled uint8, int16, int32 and float32)."""
    img = nib.load(source)
    dtype = img.get_data_dtype().newbyteorder("=")  # MGZ stores big-endian
    scaled = _scaling(img.dataobj) != (1.0, 0.0)
    if str(path).lower().endswith(".mgz") and (dtype not in MGH_DTYPES or scaled):
        raise InputError(f"--brain {path}: MGZ cannot hold the input's {'scaled ' * (dtype in MGH_DTYPES)}"
                         f"{dtype} voxels; use .nii.gz")


def save_masked(source, keep, path):
    """Write the scan file ``source`` with its voxels outside the boolean ``keep`` set to 0, in the input's
    own data type and scaling (the stored values inside ``keep`` are copied unchanged), atomically."""
    img = nib.load(source)
    proxy = img.dataobj
    raw = np.asanyarray(proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else proxy)
    raw = raw.reshape(img.shape[:3]).astype(img.get_data_dtype().newbyteorder("="), copy=False)
    slope, inter = _scaling(proxy)
    zero = -inter / slope
    if raw.dtype.kind in "iu":
        info = np.iinfo(raw.dtype)
        zero = np.clip(np.rint(zero), info.min, info.max)
    out = np.where(keep, raw, np.array(zero).astype(raw.dtype))
    if str(path).lower().endswith(".mgz"):
        result = nib.MGHImage(out, img.affine, img.header if isinstance(img, nib.MGHImage) else None)
    elif isinstance(img, nib.Nifti1Image):  # NIfTI-2 included
        result = type(img)(out, img.affine, img.header)
        result.header["cal_min"] = result.header["cal_max"] = 0
        result.header.set_slope_inter(slope, inter)
    else:
        result = nib.Nifti1Image(out, img.affine)
        result.header.set_xyzt_units("mm")
    result.set_data_dtype(raw.dtype)
    with atomic_path(path) as tmp:
        nib.save(result, tmp)
    return Path(path)


def read_classes(path):
    """Class names from a classes.json ``{"0": "Background", "1": ...}``; InputError when invalid."""
    path = Path(path)
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: classes file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable classes file ({e})") from e
    if not isinstance(table, dict) or not all(isinstance(v, str) and v.strip() for v in table.values()):
        raise InputError(f'{path}: expected an object {{"0": "Background", "1": "name", ...}}')
    if set(table) != {str(i) for i in range(len(table))} or len(table) < 2:
        raise InputError(f"{path}: keys must be the class ids 0..K-1 (K >= 2, contiguous), got "
                         f"{sorted(table, key=lambda k: (len(k), k))}")
    if table["0"].strip().lower() not in ("background", "unknown"):
        raise InputError(f'{path}: class 0 must be the background ("Background"), got {table["0"]!r}')
    return [table[str(i)] for i in range(len(table))]


def _folder_pairs(root, problems):
    found = {}
    for sub in ("images", "labels"):
        folder = root / sub
        if not folder.is_dir():
            problems.append(f"{folder}: missing folder")
            continue
        files = {}
        for f in sorted(folder.iterdir()):
            name = volume_name(f)
            if name is None or f.name.startswith("."):
                continue
            if name in files:
                problems.append(f"{sub}/{name}: two files ({files[name].name}, {f.name})")
            files[name] = f
        found[sub] = files
    if len(found) < 2:
        return []
    images, labels = found["images"], found["labels"]
    problems.extend(f"images/{images[n].name}: no label (expected labels/{n}.nii.gz or another "
                    f"{'/'.join(SUFFIXES)})" for n in sorted(images.keys() - labels.keys()))
    problems.extend(f"labels/{labels[n].name}: no image" for n in sorted(labels.keys() - images.keys()))
    return [(images[n], labels[n], n) for n in sorted(images.keys() & labels.keys())]


def _csv_pairs(table, problems):
    try:
        with open(table, newline="") as f:
            reader = csv.DictReader(f)
            columns, rows = reader.fieldnames or [], list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        problems.append(f"{table}: unreadable CSV ({e})")
        return []
    if not {"image", "label"} <= set(columns):
        problems.append(f"{table}: needs the columns image,label (found {','.join(columns) or 'none'})")
        return []
    pairs, names = [], set()
    for line, row in enumerate(rows, start=2):
        values = [(row[column] or "").strip() for column in ("image", "label")]
        for column, value in zip(("image", "label"), values, strict=True):
            if not value:
                problems.append(f"{table.name} line {line}: empty {column}")
            elif _strip_suffix(value) is None:
                problems.append(f"{table.name} line {line}: {value} is not a {'/'.join(SUFFIXES)} file")
            elif not (table.parent / value).is_file():
                problems.append(f"{table.name} line {line}: {column} {value} not found")
        name = _strip_suffix(values[0]) or values[0]
        if name in names:
            problems.append(f"{table.name} line {line}: image {values[0]} listed twice")
        names.add(name)
        pairs.append((table.parent / values[0], table.parent / values[1], name))
    return pairs


def list_dataset(path, classes=None):
    """List a segmentation data set: ``(pairs [(image, label, name)], class_names)``.

    ``path`` is a folder with ``images/NAME.nii.gz``, ``labels/NAME.nii.gz`` (any of :data:`SUFFIXES`) and
    ``classes.json``, or a CSV with columns ``image,label`` (paths relative to the CSV's folder) and a
    ``classes.json`` beside it. ``classes`` overrides the classes.json path. Raises InputError listing all
    problems at once.
    """
    path = Path(path)
    problems = []
    if path.is_dir():
        pairs = _folder_pairs(path, problems)
    elif path.is_file() and path.suffix.lower() == ".csv":
        pairs = _csv_pairs(path, problems)
    else:
        raise InputError(f"data set {path}: expected a folder with images/, labels/ and classes.json, "
                         "or a .csv file with columns image,label")
    class_names = None
    try:
        class_names = read_classes(classes or (path if path.is_dir() else path.parent) / "classes.json")
    except InputError as e:
        problems.append(str(e))
    if not pairs and not problems:
        problems.append(f"no image/label pairs (volumes must end in {', '.join(SUFFIXES)})")
    if problems:
        raise InputError(f"data set {path}: " + "; ".join(problems))
    return pairs, class_names


def check_labels(labels, num_classes, name, image_shape=None):
    """Return ``labels`` as int16 after checking: integer values in 0..num_classes-1 and the image's shape."""
    labels = np.asarray(labels)
    problems = []
    if image_shape is not None and labels.shape != tuple(image_shape):
        problems.append(f"label shape {_dims(labels.shape)} differs from the image's {_dims(image_shape)}")
    fractional = int(np.count_nonzero(labels != np.round(labels)))
    if fractional:
        problems.append(f"{fractional} non-integer label values")
    outside = np.unique(labels[(labels < 0) | (labels >= num_classes)])
    if outside.size:
        shown = ", ".join(f"{v:g}" for v in outside[:8]) + (", ..." if outside.size > 8 else "")
        problems.append(f"label values outside 0..{num_classes - 1}: {shown}")
    if problems:
        raise InputError(f"{name}: " + "; ".join(problems))
    return labels.astype(np.int16)


def save_frames(path, reference, frames, frame, dtype=np.uint8, scale=1.0):
    """Write a 4D NIfTI of ``frames`` 3D frames on ``reference``'s grid, one frame at a time, atomically.

    ``frame(i)`` returns frame ``i`` as float; it is stored as ``round(value / scale)`` in ``dtype`` with
    ``scl_slope = scale``, so at most one frame is in memory (e.g. uint8 posteriors: scale 1/255).
    """
    shape = tuple(reference.shape[:3])
    header = nib.Nifti1Header()
    header.set_data_shape((*shape, frames))
    header.set_data_dtype(dtype)
    header.set_qform(reference.affine, code=1)
    header.set_sform(reference.affine, code=1)
    header.set_xyzt_units("mm")
    header.set_slope_inter(scale if np.dtype(dtype).kind in "iu" else 1.0, 0.0)
    header["vox_offset"] = 352
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    with atomic_path(path) as tmp, opener(tmp, "wb") as f:
        f.write(header.binaryblock)
        f.write(b"\0" * 4)  # no extensions
        for i in range(frames):
            values = np.asarray(frame(i), np.float32)
            if np.dtype(dtype).kind in "iu":
                info = np.iinfo(dtype)
                values = np.clip(np.rint(values / scale), info.min, info.max)
            f.write(values.astype(dtype).tobytes(order="F"))
