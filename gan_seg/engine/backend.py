"""What the Keras backend and the hardware under it are: library versions, native bfloat16 support, and
how many CPU threads it may use."""

import os
import platform
import sys
from pathlib import Path

import keras
import numpy as np

from gan_seg import __version__
from gan_seg.errors import InputError, RunError


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


def available_cores():
    """CPU cores this process may run on (its affinity mask; all cores without one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def limit_threads(threads=None):
    """Let the backend use ``threads`` CPU threads (None: all cores, nothing changes); returns the count.

    Must run before the backend starts its runtime (before a model is built or loaded): TensorFlow's
    intra-/inter-op pools are set through ``tf.config.threading`` (plus ``TF_NUM_INTRAOP_THREADS``,
    ``TF_NUM_INTEROP_THREADS`` and ``OMP_NUM_THREADS`` for libraries that read them). XLA on the CPU (JAX)
    sizes its pool from the cores the process may run on and has no thread-count option, so on JAX the
    process (every thread) is restricted to ``threads`` of its cores, chosen from its pid so that
    concurrent jobs tend to land on different cores; ``threads=1`` also turns off XLA's multi-threaded
    Eigen kernels.
    """
    if threads is None:
        return available_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"--threads must be a positive integer, got {threads!r}")
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ[name] = str(threads)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 - backend-specific: only on the TensorFlow backend

        threading = tf.config.threading
        if (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()) \
                != (threads, threads):
            try:
                threading.set_intra_op_parallelism_threads(threads)
                threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError as err:
                raise RunError(f"--threads {threads}: TensorFlow has already started with other thread "
                               f"counts ({err})") from None
    elif backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if threads == 1 and "--xla_cpu_multi_thread_eigen=false" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
        _restrict_affinity(threads)
    return threads


def _restrict_affinity(threads):
    """Run every thread of this process on ``threads`` of its allowed cores (Linux; elsewhere a no-op)."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if threads >= len(cores):
        return
    start = os.getpid() % len(cores)
    chosen = {cores[(start + i) % len(cores)] for i in range(threads)}
    tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]
    for task in tasks:
        try:
            os.sched_setaffinity(int(task), chosen)
        except OSError:  # a thread that ended meanwhile
            continue
