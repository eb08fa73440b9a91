"""End-to-end tests of the ``gan-seg`` command line, every command run in a subprocess.

Subprocesses, because the CLI ends with ``sys.exit`` and imports TensorFlow lazily (``--help`` must
not import it). A command that reaches the library imports TensorFlow, which costs seconds, so the
bad-input cases and the sampling runs are started concurrently.

Conventions checked: exit 2 for anything wrong with what the user passed, 1 for failures of the
work; one line ``gan-seg CMD: error: ...`` on stderr (click's usage errors keep click's own
``Error: ...`` format, also exit 2); no traceback; no output written on error.
"""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_seg import __version__
from gan_seg.imaging import make_grid, to_uint8
from gan_seg.models.saving import read_metadata

WORKERS = max(2, min(4, os.cpu_count() or 2))
TIMEOUT = 300
CLASS_BLOCKS_8 = [0, 0, 1, 1, 2, 2, 3, 3]  # a 4-class CGAN's labels for -n 8 without --label

# Runs an argv through the click group in-process, then reports which heavy modules got imported.
DRIVER = """
import sys
from gan_seg_cli.main import cli
code = cli.main(sys.argv[1:], prog_name="gan-seg", standalone_mode=False)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print("HEAVY_MODULES=" + ",".join(heavy), file=sys.stderr)
sys.exit(code or 0)
"""


# -- helpers ---------------------------------------------------------------------------------------
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


def driver(*args, cwd, env=None):
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


def metric_steps(run):
    with open(run / "metrics.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def write_png(path, size=16, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


# -- --help and --version: no TensorFlow -------------------------------------------------------------
@pytest.mark.parametrize(("command", "expected"), [
    ([], ["train", "sample", "models", "--version", "--verbose", "--help"]),
    (["train"], ["--model", "--data", "--out", "--resume", "--steps", "--batch-size", "--image-shape",
                 "--latent-dim", "--precision", "--seed", "--checkpoint-every", "--strategy",
                 "--devices", "--force", "--quiet", "fashion-mnist", "dcgan", "cgan"]),
    (["sample"], ["--model", "-n", "--seed", "-o, --output", "--label", "--interpolate", "--force",
                  ".png", ".npz", "cgan-fashion-mnist"]),
    (["models"], ["pretrained models"]),
], ids=["group", "train", "sample", "models"])
def test_help_mentions_options_without_importing_tensorflow(tmp_path, command, expected):
    result = ok(driver(*command, "--help", cwd=tmp_path))
    assert result.stdout.startswith(f"Usage: gan-seg {' '.join(command)}".rstrip()), result.stdout
    for text in expected:
        assert text in result.stdout, f"{text!r} missing from --help of {command}"
    assert result.stderr.strip().splitlines()[-1] == "HEAVY_MODULES=", result.stderr


def test_help_and_version_in_a_real_process(tmp_path):
    assert ok(gan_seg("sample", "-h", cwd=tmp_path)).stdout.startswith("Usage:")
    version = ok(gan_seg("--version", cwd=tmp_path))
    assert version.stdout.strip() == f"gan-seg, version {__version__}"
    script = Path(sys.executable).with_name("gan-seg")
    if script.is_file():  # the installed console script, when the package is installed
        installed = subprocess.run([str(script), "--version"], cwd=tmp_path, env=cli_env(),
                                   capture_output=True, text=True, timeout=TIMEOUT)
        assert installed.returncode == 0 and __version__ in installed.stdout


def test_unknown_command_is_a_usage_error(tmp_path):
    result = gan_seg("paint", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: No such command 'paint'")
    assert not list(tmp_path.iterdir())


# -- gan-seg models ------------------------------------------------------------------------------------
def test_models_with_empty_weights_dir(tmp_path):
    (tmp_path / "weights").mkdir()
    result = ok(gan_seg("models", cwd=tmp_path, env={"GAN_SEG_WEIGHTS": tmp_path / "weights"}))
    assert result.stdout.strip() == "no pretrained models installed"
    assert result.stderr == ""


def test_models_lists_presets_without_importing_tensorflow(tmp_path):
    for name, description in (("cgan-b", "second model"), ("a-gan", "first model")):
        (tmp_path / "weights" / name).mkdir(parents=True)
        (tmp_path / "weights" / name / "metadata.json").write_text(
            json.dumps({"description": description, "files": {}}))
    (tmp_path / "weights" / "not-a-preset").mkdir()  # no metadata.json: ignored
    result = ok(driver("models", cwd=tmp_path, env={"GAN_SEG_WEIGHTS": tmp_path / "weights"}))
    assert result.stdout.splitlines() == ["a-gan   first model", "cgan-b  second model"]
    assert result.stderr.strip() == "HEAVY_MODULES="


# -- bad inputs: exit 2, one line on stderr, nothing written ---------------------------------------
# Each case: setup(cwd, run, npz) -> (argv, env); the expected kind ("error": the CLI's own one-line
# message, "usage": click's format, "any": either) and a substring of the message.
BAD_INPUTS = {}


def bad_input(name, kind, message):
    def register(setup):
        BAD_INPUTS[name] = (setup, kind, message)
        return setup
    return register


def _random_bytes(path, n=2000):
    path.write_bytes(np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes())


def _copy_run(run, cwd):
    shutil.copytree(run, cwd / "run")
    return "run"


@bad_input("train-missing-data", "error", "data 'missing.npz' does not exist")
def _missing_data(cwd, run, npz):
    return ["train", "--data", "missing.npz", "--out", "out"], None


@bad_input("train-fashion-mnist-not-installed", "error",
           "install it with `apt-get install -y dataset-fashion-mnist`")
def _fashion_mnist_missing(cwd, run, npz):
    (cwd / "empty").mkdir()
    return ["train", "--data", "fashion-mnist", "--out", "out"], {
        "GAN_SEG_FASHION_MNIST_DIR": cwd / "empty"}


@bad_input("train-cgan-without-labels", "error", "needs class labels")
def _cgan_without_labels(cwd, run, npz):
    np.savez(cwd / "unlabelled.npz", x=np.zeros((32, 16, 16, 1), np.uint8))
    return ["train", "--model", "cgan", "--data", "unlabelled.npz", "--out", "out"], None


@bad_input("train-image-shape-not-multiple-of-4", "error", "multiples of 4")
def _image_shape_not_multiple(cwd, run, npz):
    return ["train", "--data", npz, "--image-shape", "30x30x1", "--out", "out"], None


@bad_input("train-image-shape-malformed", "usage", "Invalid value for '--image-shape'")
def _image_shape_malformed(cwd, run, npz):
    return ["train", "--data", npz, "--image-shape", "abc", "--out", "out"], None


@bad_input("train-corrupt-npz", "error", "corrupt.npz is not a readable .npz file")
def _corrupt_npz(cwd, run, npz):
    _random_bytes(cwd / "corrupt.npz")
    return ["train", "--data", "corrupt.npz", "--out", "out"], None


@bad_input("train-non-image-in-folder", "error", "notes.txt is not an image")
def _non_image_in_folder(cwd, run, npz):
    for label in ("a", "b"):
        for i in range(3):
            write_png(cwd / "images" / label / f"{i}.png")
    (cwd / "images" / "b" / "notes.txt").write_text("not an image\n")
    return ["train", "--model", "cgan", "--data", "images", "--out", "out"], None


@bad_input("train-out-missing", "usage", "--out RUN_DIR is required")
def _out_missing(cwd, run, npz):
    return ["train", "--data", npz], None


@bad_input("train-out-not-empty", "error", "is not empty; pass --force")
def _out_not_empty(cwd, run, npz):
    (cwd / "out").mkdir()
    (cwd / "out" / "keep.txt").write_text("mine\n")
    return ["train", "--data", npz, "--out", "out"], None


@bad_input("train-bad-devices", "error", "--devices 'foo'")
def _bad_devices(cwd, run, npz):
    return ["train", "--data", npz, "--devices", "foo", "--out", "out"], None


@bad_input("train-multi-worker-without-tf-config", "error", "needs the TF_CONFIG environment variable")
def _multi_worker(cwd, run, npz):
    return ["train", "--data", npz, "--strategy", "multi-worker", "--out", "out"], None


@bad_input("train-negative-seed", "error", "seed")
def _train_negative_seed(cwd, run, npz):
    return ["train", "--data", npz, "--seed", "-1", "--steps", "1", "--batch-size", "16",
            "--latent-dim", "8", "--precision", "float32", "--quiet", "--out", "out"], None


@bad_input("resume-with-another-option", "usage", "drop --seed")
def _resume_with_seed(cwd, run, npz):
    return ["train", "--resume", _copy_run(run, cwd), "--steps", "6", "--seed", "1"], None


@bad_input("resume-with-out", "usage", "drop --out")
def _resume_with_out(cwd, run, npz):
    return ["train", "--resume", _copy_run(run, cwd), "--steps", "6", "--out", "other"], None


@bad_input("resume-without-steps", "any", "--steps")
def _resume_without_steps(cwd, run, npz):
    return ["train", "--resume", _copy_run(run, cwd)], None


@bad_input("resume-steps-not-above-current", "error", "--steps 4 is not above the run's current step 4")
def _resume_steps_not_above(cwd, run, npz):
    return ["train", "--resume", _copy_run(run, cwd), "--steps", "4"], None


@bad_input("resume-not-a-run", "error", "is not a run directory")
def _resume_not_a_run(cwd, run, npz):
    (cwd / "folder").mkdir()
    return ["train", "--resume", "folder", "--steps", "6"], None


@bad_input("sample-unknown-label", "error", "--label 'seven' is not one of the model's classes "
                                            "(zero, one, two, three)")
def _unknown_label(cwd, run, npz):
    return ["sample", "--model", run, "--label", "seven", "-n", "4", "-o", "a.png"], None


@bad_input("sample-n-zero", "usage", "Invalid value for -n")
def _n_zero(cwd, run, npz):
    return ["sample", "--model", run, "-n", "0", "-o", "a.png"], None


@bad_input("sample-output-missing", "usage", "Missing option '-o' / '--output'")
def _output_missing(cwd, run, npz):
    return ["sample", "--model", run, "-n", "4"], None


@bad_input("sample-output-exists", "error", "output a.png already exists; pass --force")
def _output_exists(cwd, run, npz):
    (cwd / "a.png").write_bytes(b"mine")
    return ["sample", "--model", run, "-n", "4", "-o", "a.png"], None


@bad_input("sample-output-dir-not-empty", "error", "is not empty; pass --force")
def _output_dir_not_empty(cwd, run, npz):
    (cwd / "samples").mkdir()
    (cwd / "samples" / "keep.txt").write_text("mine\n")
    return ["sample", "--model", run, "-n", "4", "-o", "samples"], None


@bad_input("sample-output-unwritable", "error", "cannot write under blocker: it is not a directory")
def _output_unwritable(cwd, run, npz):
    (cwd / "blocker").write_text("a regular file\n")
    return ["sample", "--model", run, "-n", "4", "-o", "blocker/a.png"], None


@bad_input("sample-discriminator-file", "error", "holds a 'discriminator' model, not a 'generator'")
def _discriminator(cwd, run, npz):
    return ["sample", "--model", run / "discriminator.keras", "-n", "4", "-o", "a.png"], None


@bad_input("sample-random-bytes-keras", "error", "x.keras is not a readable .keras model file")
def _random_keras(cwd, run, npz):
    _random_bytes(cwd / "x.keras")
    return ["sample", "--model", "x.keras", "-n", "4", "-o", "a.png"], None


@bad_input("sample-text-file-model", "error", "model.txt is not a readable .keras model file")
def _text_model(cwd, run, npz):
    (cwd / "model.txt").write_text("this is not a model\n")
    return ["sample", "--model", "model.txt", "-n", "4", "-o", "a.png"], None


@bad_input("sample-unfinished-run", "error", "is not a finished run directory")
def _unfinished_run(cwd, run, npz):
    (cwd / "run").mkdir()
    (cwd / "run" / "config.json").write_text("{}\n")
    return ["sample", "--model", "run", "-n", "4", "-o", "a.png"], None


@bad_input("sample-unknown-preset", "error", "unknown model 'no-such-model'")
def _unknown_preset(cwd, run, npz):
    (cwd / "weights").mkdir()
    return ["sample", "--model", "no-such-model", "-n", "4", "-o", "a.png"], {
        "GAN_SEG_WEIGHTS": cwd / "weights"}


@bad_input("sample-damaged-preset", "error", "does not match its sha256")
def _damaged_preset(cwd, run, npz):
    preset = cwd / "weights" / "tiny"
    preset.mkdir(parents=True)
    shutil.copy(run / "generator.keras", preset / "generator.keras")
    (preset / "metadata.json").write_text(json.dumps({"files": {"generator.keras": "0" * 64}}))
    return ["sample", "--model", "tiny", "-n", "4", "-o", "a.png"], {"GAN_SEG_WEIGHTS": cwd / "weights"}


@bad_input("sample-negative-seed", "error", "seed")
def _sample_negative_seed(cwd, run, npz):
    return ["sample", "--model", run, "--seed", "-1", "-n", "4", "-o", "a.png"], None


@bad_input("models-corrupt-metadata", "error", "metadata.json is corrupt")
def _corrupt_metadata(cwd, run, npz):
    (cwd / "weights" / "broken").mkdir(parents=True)
    (cwd / "weights" / "broken" / "metadata.json").write_text("{not json")
    return ["models"], {"GAN_SEG_WEIGHTS": cwd / "weights"}


@pytest.fixture(scope="module")
def bad_input_runs(request, tmp_path_factory, tiny_run, tiny_npz):
    """Start every selected bad-input case at once, each in its own directory.

    Returns {name: (command, cwd, snapshot before, future of the CompletedProcess)}.
    """
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "module", None) is request.module
                and getattr(item, "originalname", "") == "test_bad_input"]
    runs = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        for name in selected:
            setup = BAD_INPUTS[name][0]
            cwd = tmp_path_factory.mktemp(name)
            args, env = setup(cwd, tiny_run, tiny_npz)
            before = snapshot(cwd)
            runs[name] = (args[0], cwd, before, pool.submit(gan_seg, *args, cwd=cwd, env=env))
        yield runs


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(bad_input_runs, case):
    _, kind, message = BAD_INPUTS[case]
    command, cwd, before, future = bad_input_runs[case]
    result = future.result()
    shown = f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stderr, shown
    assert result.stdout == "", shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if kind == "any":  # either form is fine
        kind = "usage" if lines[-1].startswith("Error: ") else "error"
    if kind == "error":
        assert len(lines) == 1, shown
        assert lines[0].startswith(f"gan-seg {command}: error: "), shown
    else:
        assert lines[0].startswith("Usage: "), shown
        assert lines[-1].startswith("Error: "), shown
    assert message in lines[-1], shown
    assert snapshot(cwd) == before, "the failed command changed its directory"


# -- gan-seg sample ----------------------------------------------------------------------------------
def test_sample_same_seed_same_images_in_every_form(tmp_path, tiny_run):
    (tmp_path / "b.png").write_bytes(b"an older output")  # replaced thanks to --force
    runs = gan_seg_many([
        (["sample", "--model", tiny_run, "-n", "8", "--seed", "1", "-o", "a.png"], tmp_path),
        (["sample", "--model", tiny_run, "-n", "8", "--seed", "1", "-o", "b.png", "--force"],
         tmp_path),
        (["sample", "--model", tiny_run, "-n", "8", "--seed", "2", "-o", "c.png"], tmp_path),
        (["sample", "--model", tiny_run, "-n", "8", "--seed", "1", "-o", "arrays.npz"], tmp_path),
    ])
    for result in runs:
        ok(result)
    assert runs[0].stdout.strip() == "wrote 8 images to a.png"
    assert runs[1].stdout.strip() == "wrote 8 images to b.png"
    a, b, c = ((tmp_path / f"{name}.png").read_bytes() for name in "abc")
    assert a == b, "the same seed gave different PNG bytes"
    assert a != c, "a different seed gave the same PNG bytes"

    with np.load(tmp_path / "arrays.npz") as data:
        assert sorted(data.files) == ["images", "labels"]
        images, labels = data["images"], data["labels"]
    assert images.dtype == np.float32 and images.shape == (8, 16, 16, 1)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.dtype == np.int32 and labels.tolist() == CLASS_BLOCKS_8
    mode, grid = png_array(tmp_path / "a.png")
    assert mode == "L"
    # One class per row (4 rows of 2) and the same images as the .npz of the same seed.
    np.testing.assert_array_equal(grid, make_grid(to_uint8(images), rows=4)[..., 0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left"


def test_sample_directory_labels_and_interpolation(tmp_path, tiny_run):
    (tmp_path / "twos").mkdir()
    (tmp_path / "twos" / "notes.txt").write_text("mine\n")  # non-empty: needs --force
    model = ["sample", "--model", tiny_run]
    runs = gan_seg_many([
        ([*model, "-n", "8", "-o", "samples"], tmp_path),
        ([*model, "-n", "4", "--label", "two", "-o", "twos/", "--force"], tmp_path),
        ([*model, "-n", "20", "--interpolate", "-o", "walk.npz"], tmp_path),
    ])
    for result in runs:
        ok(result)
    assert runs[0].stdout.strip() == "wrote 8 images to samples"
    names = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert names == [f"{i:05d}_{label}.png" for i, label in enumerate(CLASS_BLOCKS_8)]
    mode, first = png_array(tmp_path / "samples" / "00000_0.png")
    assert mode == "L" and first.shape == (16, 16)
    pngs = sorted(p.name for p in (tmp_path / "twos").glob("*.png"))
    assert pngs == [f"{i:05d}_2.png" for i in range(4)]
    assert (tmp_path / "twos" / "notes.txt").read_text() == "mine\n"
    with np.load(tmp_path / "walk.npz") as data:
        images, labels = data["images"], data["labels"]
    assert images.shape == (20, 16, 16, 1)
    assert labels.tolist() == [0] * 10 + [1] * 10  # two walks of 10, one class each
    assert not np.array_equal(images[0], images[9]), "a walk should change along the way"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left"


def test_sample_force_into_directory_leaves_only_the_new_samples(tmp_path, tiny_run):
    for i, label in enumerate(CLASS_BLOCKS_8):  # an earlier `sample -n 8 -o samples`
        write_png(tmp_path / "samples" / f"{i:05d}_{label}.png")
    ok(gan_seg("sample", "--model", tiny_run, "-n", "4", "--label", "3", "-o", "samples",
               "--force", cwd=tmp_path))
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        f"{i:05d}_3.png" for i in range(4)]


# -- gan-seg train ------------------------------------------------------------------------------------
TINY_TRAIN = ["--model", "cgan", "--batch-size", "16", "--latent-dim", "8", "--precision",
              "float32", "--quiet"]


@pytest.mark.slow
def test_train_then_resume(tmp_path, tiny_npz):
    first = ok(gan_seg("train", *TINY_TRAIN, "--data", tiny_npz, "--steps", "3", "--checkpoint-every",
                       "2", "--sample-every", "2", "--log-every", "1", "--out", "run", cwd=tmp_path))
    assert first.stdout.strip() == "run saved in run"
    run = tmp_path / "run"
    assert metric_steps(run) == [1, 2, 3]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "ckpt-00000002.npz", "ckpt-00000003.npz"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_00000002.png", "step_00000003.png"]
    for name in ("generator.keras", "discriminator.keras", "loss_curves.png", "config.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 3 and "resumes" not in config
    assert config["resolved"]["class_names"] == ["zero", "one", "two", "three"]

    second = ok(gan_seg("train", "--resume", "run", "--steps", "5", "--quiet", cwd=tmp_path))
    assert second.stdout.strip() == "run saved in run"
    assert metric_steps(run) == [1, 2, 3, 4, 5]
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 5
    assert [(r["from_step"], r["to_step"]) for r in config["resumes"]] == [(3, 5)]
    assert (run / "checkpoints" / "ckpt-00000005.npz").is_file()
    assert {"step_00000004.png", "step_00000005.png"} <= {p.name for p in (run / "samples").iterdir()}
    metadata = read_metadata(run / "generator.keras")
    assert metadata["step"] == 5 and metadata["kind"] == "generator"
    assert metadata["class_names"] == ["zero", "one", "two", "three"]
    assert not list(run.rglob(".*.tmp*")), "temporary files left"


@pytest.mark.slow
def test_resume_from_another_directory(tmp_path, tiny_npz):
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(tiny_npz, tmp_path / "project" / "data.npz")
    ok(gan_seg("train", *TINY_TRAIN, "--data", "data.npz", "--steps", "1", "--out", "run",
               cwd=tmp_path / "project"))
    resumed = gan_seg("train", "--resume", "../project/run", "--steps", "2", "--quiet",
                      cwd=tmp_path / "elsewhere")
    ok(resumed)
    assert metric_steps(tmp_path / "project" / "run")[-1] == 2
