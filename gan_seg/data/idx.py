"""Read IDX files, the format of MNIST and Fashion-MNIST (gzipped when the name ends in .gz)."""

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from gan_seg.errors import InputError

# IDX type byte -> big-endian numpy dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Return the array stored in the IDX file ``path`` (native byte order, writable)."""
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"IDX file {path} does not exist") from None
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] or raw[1]:
        raise InputError(f"{path} is not an IDX file (bad magic number)")
    dtype = IDX_DTYPES.get(raw[2])
    if dtype is None:
        raise InputError(f"{path} has an unknown IDX data type 0x{raw[2]:02x}")
    start = 4 + 4 * raw[3]
    if len(raw) < start:
        raise InputError(f"IDX file {path} is truncated (header cut short)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", raw[3], offset=4))
    count = math.prod(dims)
    size = count * np.dtype(dtype).itemsize
    if len(raw) - start != size:
        raise InputError(f"IDX file {path} is truncated or corrupt: header {dims} needs {size} "
                         f"data bytes, found {len(raw) - start}")
    return np.frombuffer(raw, dtype, count, offset=start).astype(dtype[1:]).reshape(dims)
