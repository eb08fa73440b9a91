"""What the tests share (the one test module others import): tiny data, phantoms, CLI runners."""

import collections
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import nibabel.orientations as ornts
import numpy as np
import tensorflow as tf
from PIL import Image
from scipy import ndimage

from gan_seg.engine.run_dir import RunDirectory
from gan_seg.gan.config import GanConfig
from gan_seg.io.saving import save_model
from gan_seg.seg.config import MODEL_FILE, SegConfig
from gan_seg.seg.trainer import build_view_model

WORKERS = max(2, min(4, os.cpu_count() or 2))
TIMEOUT = 300
# Runs an argv through the click group in-process, then reports which heavy modules got imported.
DRIVER = """
import sys
from gan_seg_cli.main import cli
try:
    code = cli.main(sys.argv[1:], prog_name="gan-seg", standalone_mode=False)
finally:
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    print("HEAVY_MODULES=" + ",".join(heavy), file=sys.stderr)
sys.exit(code or 0)
"""


# -- GAN data ---------------------------------------------------------------------------------------
def make_images(n=64, size=16, classes=4, seed=0):
    """``n`` tiny greyscale images whose class shows as a bright band (so a GAN can learn it)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int32) % classes
    x = rng.integers(0, 40, (n, size, size, 1), dtype=np.uint8)
    band = size // classes
    for i, label in enumerate(y):
        x[i, label * band:(label + 1) * band] = 220
    return x, y


def tiny_config(**overrides):
    """A GanConfig small enough to train in seconds on 2 cores."""
    options = dict(model="cgan", steps=4, batch_size=16, latent_dim=8, precision="float32",
                   checkpoint_every=2, sample_every=2, log_every=1, seed=3, strategy="none")
    options.update(overrides)
    return GanConfig(**options)


# -- brain phantoms ------------------------------------------------------------------------------------
PHANTOM_CLASSES = ["Background", "Left-Blob", "Right-Blob", "Core"]


def make_phantom(shape=(44, 52, 40), seed=0, affine=None):
    """A head-like 3D phantom: (image float32, labels uint8, affine); left/right blobs and a core.

    Each seed shifts (up to 5 voxels), scales and re-shades the phantom a little, so a network trained on
    a few of them must learn shapes and contrasts, not positions and exact grey levels.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij"), axis=-1)
    jitter, scale = rng.uniform(-5, 5, 3), rng.uniform(0.9, 1.05)

    def inside(centre, radii):
        offset = grid - scale * np.asarray(centre) - jitter
        return ((offset / (scale * np.asarray(radii))) ** 2).sum(-1) <= 1

    labels = np.zeros(shape, np.uint8)
    head = inside((0, 0, 0), (16, 20, 14))
    labels[inside((-8, 0, 0), (6, 9, 7))] = 1
    labels[inside((8, 0, 0), (6, 9, 7))] = 2
    labels[inside((0, 6, 5), (5, 6, 6))] = 3
    intensity = np.array([0.0, 0.95, 0.7, 0.45], np.float32) + rng.uniform(-0.04, 0.04, 4).astype(np.float32)
    image = np.where(head, 0.15, 0.0).astype(np.float32)
    image = np.where(labels > 0, intensity[labels], image) + rng.normal(0, 0.02, shape).astype(np.float32)
    image = np.clip(image, 0, None) * 1000
    if affine is None:
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        affine[:3, 3] = -(np.array(shape) - 1) / 2
    return image, labels, affine


def write_phantom_dataset(root, count=3):
    """``root/images``, ``root/labels`` and ``classes.json`` with ``count`` phantoms. Every third one is
    blurred and every third one stored with 1.5 mm voxels, as if scanned at a lower resolution."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(count):
        image, labels, affine = make_phantom(seed=i)
        if i % 3 == 1:
            image = ndimage.gaussian_filter(image, 0.8)
        if i % 3 == 2:
            shape = tuple(int(n) for n in np.ceil(np.array(image.shape) / 1.5))
            matrix = np.diag([1.5, 1.5, 1.5, 1.0])
            image = ndimage.affine_transform(image, matrix, output_shape=shape, order=1)
            labels = ndimage.affine_transform(labels, matrix, output_shape=shape, order=0)
            affine = affine @ matrix
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"p{i}.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), root / "labels" / f"p{i}.nii.gz")
    (root / "classes.json").write_text(json.dumps({str(i): n for i, n in enumerate(PHANTOM_CLASSES)}))
    return root


# The architecture of the tiny model that fine-tuning tests start from (--init).
INIT_ARCHITECTURE = dict(model="quicknat", filters=4, kernel_size=3, se="scse", se_combine="max", dropout=0.0)


def generic_start(model, seed=0):
    """Move every BatchNorm gamma / beta and PReLU slope off its initial value (1 / 0 / 0)."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        kind = v.path.rsplit("/", 1)[-1]
        if kind == "gamma":
            v.assign(rng.uniform(0.8, 1.2, v.shape))
        elif kind == "beta":
            v.assign(rng.normal(0.0, 0.1, v.shape))
        elif kind == "alpha":
            v.assign(rng.uniform(0.05, 0.3, v.shape))


def write_init_run(path, class_names, seed=0):
    """A minimal run directory that ``gan-seg train --init`` accepts: ``config.json`` (the architecture)
    and ``axial/model.keras``, a fresh tiny QuickNAT moved to a generic start. Touches no global seed (it
    may run inside the pytest process)."""
    path = Path(path)
    (path / "axial").mkdir(parents=True, exist_ok=True)
    model = build_view_model(SegConfig(**INIT_ARCHITECTURE), len(class_names))  # any kernels will do
    generic_start(model, seed)
    save_model(model, path / "axial" / MODEL_FILE, {"kind": "segmentation", "architecture": "quicknat",
                                                 "view": "axial", "class_names": list(class_names)})
    (path / "config.json").write_text(json.dumps(INIT_ARCHITECTURE))
    return path


def write_segment_model(path):
    """A run directory that ``gan-seg segment`` accepts: :func:`write_init_run`'s tiny axial network
    (untrained) with the phantom classes and a 2 mm grid."""
    path = write_init_run(path, PHANTOM_CLASSES)
    record = json.loads((path / "config.json").read_text())
    record.update(class_names=PHANTOM_CLASSES, voxel_size=2.0)
    (path / "config.json").write_text(json.dumps(record))
    return path


# -- geometry ---------------------------------------------------------------------------------------
def reoriented(data, affine, codes):
    """The same object stored with axis codes ``codes`` (flipped / permuted array, adjusted affine)."""
    ornt = ornts.ornt_transform(ornts.io_orientation(affine), ornts.axcodes2ornt(codes))
    return ornts.apply_orientation(data, ornt), affine @ ornts.inv_ornt_aff(ornt, data.shape)


def rotation(degrees_z, degrees_x):
    z, x = np.deg2rad(degrees_z), np.deg2rad(degrees_x)
    rz = [[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]]
    rx = [[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]]
    out = np.eye(4)
    out[:3, :3] = np.array(rz) @ np.array(rx)
    return out


def lookup(labels, affine, img):
    """``labels`` (grid ``affine``) at the voxel centres of ``img`` by nearest neighbour; outside -> 0."""
    ijk = np.indices(img.shape).reshape(3, -1)
    xyz = img.affine[:3, :3] @ ijk + img.affine[:3, 3:]
    idx = np.rint(np.linalg.solve(affine[:3, :3], xyz - affine[:3, 3:])).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(labels.shape)[:, None]), axis=0)
    out = np.zeros(idx.shape[1], labels.dtype)
    out[inside] = labels[tuple(idx[:, inside])]
    return out.reshape(img.shape)


# -- TensorBoard ------------------------------------------------------------------------------------
def event_tags(folder):
    """``{tag: (plugin, number of values)}`` over the TensorBoard event files directly in ``folder``."""
    found = collections.defaultdict(lambda: ["", 0])
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                entry = found[value.tag]
                entry[0] = entry[0] or value.metadata.plugin_data.plugin_name
                entry[1] += 1
    return {tag: tuple(entry) for tag, entry in found.items()}


# -- the command line in subprocesses -----------------------------------------------------------------
def cli_env(extra=None):
    """The environment of a CLI subprocess: quiet TensorFlow, none of gan-seg's own variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CONFIG", "GAN_SEG_WEIGHTS", "GAN_SEG_FASHION_MNIST_DIR")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def gan_seg(*args, cwd, env=None):
    """``python -m gan_seg ARGS`` in ``cwd``; returns the CompletedProcess (text stdout/stderr)."""
    return subprocess.run([sys.executable, "-m", "gan_seg", *map(str, args)], cwd=cwd,
                          env=cli_env(env), capture_output=True, text=True, timeout=TIMEOUT)


def gan_seg_many(calls):
    """Run ``[(args, cwd)]`` concurrently; the CompletedProcesses in the same order."""
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda call: gan_seg(*call[0], cwd=call[1]), calls))


def start_cli(*args, cwd=None):
    """``python -m gan_seg ARGS`` started in the background (stderr piped, text). SIGINT is reset to its
    default in the child: a child inherits an ignored SIGINT, and a pytest process may ignore it."""
    return subprocess.Popen([sys.executable, "-m", "gan_seg", *map(str, args)], cwd=cwd, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def kill_when(proc, ready, sig=signal.SIGKILL, delay=0.0):
    """Send ``sig`` to ``proc`` ``delay`` s after ``ready()`` turns true (polled every ms); returns
    ``(ready seen, exit code, stderr)``: not seen when the process ended first."""
    deadline = time.monotonic() + TIMEOUT
    seen = False
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            seen = True
            time.sleep(delay)
            break
        time.sleep(0.001)
    if proc.poll() is None:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    return seen, proc.returncode, stderr


def complete_checkpoint_steps(checkpoint_dir):
    """The steps of the listed checkpoints, oldest first, after asserting that each loads and names its
    own step (a half-written one would fail to load)."""
    steps = []
    for path in RunDirectory(checkpoint_dir).checkpoints():
        with np.load(path) as arrays:
            step = json.loads(str(arrays["__meta__"]))["step"]
        assert path.name == f"ckpt-{step:08d}.npz", path
        steps.append(step)
    return steps


def newer_checkpoint(checkpoint_dir, than):
    """A ``ready`` for :func:`kill_when`: a complete checkpoint newer than step ``than`` is listed."""
    def ready():
        if not (checkpoint_dir / "checkpoints").is_dir():
            return False
        found = RunDirectory(checkpoint_dir).latest_checkpoint()
        return bool(found) and found[0] > than
    return ready


def driver(*args, cwd, env=None):
    """The CLI in a fresh interpreter that reports on stderr which TensorFlow/Keras modules it imported."""
    return subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=cwd, env=cli_env(env),
                          capture_output=True, text=True, timeout=TIMEOUT)


def ok(result):
    """Assert a successful command; the message shows its output otherwise."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def snapshot(root):
    """{relative path: content digest or 'dir'} of everything under ``root``, hidden files too."""
    found = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        found[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def png_array(path):
    with Image.open(path) as img:
        return img.mode, np.asarray(img)


def write_png(path, size=16, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
