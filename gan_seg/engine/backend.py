"""What the Keras backend and the hardware under it are: library versions, native bfloat16 support."""

import platform
import sys
from pathlib import Path

import keras
import numpy as np

from gan_seg import __version__


def versions():
    """Library versions recorded in every run's config."""
    found = {"gan_seg": __version__, "keras": keras.__version__, "backend": keras.backend.backend()}
    backend = sys.modules.get(keras.backend.backend())
    if backend is not None and hasattr(backend, "__version__"):
        found[keras.backend.backend()] = backend.__version__
    return {**found, "numpy": np.__version__, "python": sys.version.split()[0],
            "platform": platform.platform()}


def _gpu_capability():
    """Compute capability (major, minor) of the first GPU the backend sees, or None without a GPU."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 - backend-specific: only on the TensorFlow backend

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))
    if keras.backend.backend() == "jax":
        import jax  # noqa: PLC0415 - backend-specific: only on the JAX backend

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            return None
        return tuple(int(p) for p in str(getattr(gpus[0], "compute_capability", "0.0")).split("."))
    return None


def cpu_has_bf16(cpuinfo=Path("/proc/cpuinfo")):
    """True when the CPU computes bfloat16 natively (AMX or AVX512-BF16)."""
    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision):
    """``auto`` -> ``mixed_bfloat16`` on a GPU of compute capability >= 8.0, or without a GPU on a CPU with
    native bf16 (AMX / AVX512-BF16); else ``float32``. Other values pass through."""
    if precision != "auto":
        return precision
    capability = _gpu_capability()
    if capability is not None:
        return "mixed_bfloat16" if capability >= (8, 0) else "float32"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"
