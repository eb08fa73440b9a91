"""End-to-end tests of the ``gan-seg`` command line.

The bad inputs run in-process through click's CliRunner (a few also as real processes); the ``--help``
checks (no TensorFlow may be imported), real exit codes and the sampling and training runs run in
subprocesses, the sampling runs concurrently.

Conventions checked: exit 2 for anything wrong with what the user passed, 1 for failures of the
work; one line ``gan-seg CMD: error: ...`` on stderr (click's usage errors keep click's own
``Error: ...`` format, also exit 2); no traceback; no output written on error.
"""

import csv
import dataclasses
import gzip
import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import click
import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from gan_seg import __version__, api
from gan_seg.gan.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR
from gan_seg.gan.models import build_generator
from gan_seg.io.pictures import make_grid, to_uint8
from gan_seg.io.saving import read_metadata, save_model
from gan_seg_cli.main import COMMANDS, cli
from gan_seg_cli.train import command as train_command
from tests.gan.test_data import write_idx_dir
from tests.helpers import (
    TIMEOUT,
    cli_env,
    driver,
    gan_seg,
    gan_seg_many,
    ok,
    png_array,
    snapshot,
    write_png,
)

CLASS_BLOCKS_8 = [0, 0, 1, 1, 2, 2, 3, 3]  # a 4-class CGAN's labels for -n 8 without --label


def metric_steps(run):
    with open(run / "metrics.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


# -- --help and --version: no TensorFlow -------------------------------------------------------------
HELP_MENTIONS = {
    "": ["train", "sample", "evaluate", "segment", "occlusion", "features", "models", "--version",
         "--verbose", "--help"],
    "train": ["--model", "--data", "--out", "--resume", "--steps", "--batch-size", "--image-shape",
              "--latent-dim", "--precision", "--seed", "--checkpoint-every", "--strategy", "--devices",
              "--force", "--quiet", "fashion-mnist", "dcgan", "cgan", "--filters", "--lr", "--se"],
    "sample": ["--model", "-n", "--seed", "-o, --output", "--label", "--interpolate", "--force", ".png",
               ".npz", "cgan-fashion-mnist"],
    "evaluate": ["--model", "-n", "--seed", "--json", "--no-cas", "--force", "--quiet", "cgan-fashion-mnist",
                 "floor", "Frechet distance"],
    "segment": ["INPUT", "-o, --output", "--model", "quicknat-brain", "--views", "--view-weights", "--qc",
                "--posteriors", "--mc-samples", "--uncertainty", "--shard", "--force"],
    "occlusion": ["INPUT", "--model", "fashion-mnist-classifier", "--target", "--patch", "--stride", "--fill",
                  "--network", "--view", "--slice", "--example", "--force", ".npy"],
    "features": ["INPUT", "--model", "--layer", "--list-layers", "--network", "--view", "--slice", "--seed",
                 "--label", "-o, --output"],
    "models": ["pretrained models"],
}


def test_train_options_parse_to_the_config_field_types():
    """Each generated flag parses to its field's type (``float | None`` -> FLOAT, not a string)."""
    by_name = {param.name: param for param in train_command.params}
    for family in api.FAMILIES:
        for field in dataclasses.fields(family.config):
            kinds = set(typing.get_args(field.type)) or {field.type}
            if field.name in by_name and kinds & {int, float} and field.metadata.get("type") is None:
                expected = click.INT if int in kinds else click.FLOAT
                assert by_name[field.name].type == expected, field.name


def test_every_command_has_a_help_check():
    assert set(HELP_MENTIONS) == {"", *COMMANDS}


@pytest.mark.parametrize("name", list(HELP_MENTIONS), ids=lambda name: name or "group")
def test_help_mentions_options_without_importing_tensorflow(tmp_path, name):
    command, expected = [name] if name else [], HELP_MENTIONS[name]
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


# Bad arguments are answered before Keras (and TensorFlow) load: argv -> a substring of the message.
CHECKED_BEFORE_KERAS = {
    "train-zero-steps": (["train", "--steps", "0", "--out", "run"], "steps must be a positive integer"),
    "train-resume-missing-run": (["train", "--resume", "nope", "--steps", "10"], "is not a run directory"),
    "sample-negative-seed": (["sample", "--seed", "-1", "-o", "a.png"], "--seed must be an integer"),
    "sample-unknown-preset": (["sample", "--model", "no-such-model", "-o", "a.png"], "unknown model"),
    "evaluate-n-too-small": (["evaluate", "-n", "5"], "-n must be an integer in 20..60000"),
    "segment-missing-input": (["segment", "missing.nii.gz", "-o", "s.nii.gz"], "does not exist"),
    "segment-not-a-scan": (["segment", "photo.png", "-o", "s.nii.gz"], "not a NIfTI or MGZ file"),
    "segment-nan-view-weight": (["segment", "--example", "-o", "s.nii.gz", "--view-weights", "axial=nan"],
                                "finite number"),
    "segment-cohort-into-itself": (["segment", ".", "-o", "."], "is the input folder"),
    "occlusion-zero-patch": (["occlusion", "photo.png", "--patch", "0", "-o", "h.png"],
                             "--patch must be a positive integer"),
    "occlusion-existing-output": (["occlusion", "photo.png", "-o", "photo.png"], "already exists"),
    "features-without-layer": (["features", "photo.png", "-o", "f.png"], "give --layer NAME"),
}


@pytest.mark.parametrize("case", list(CHECKED_BEFORE_KERAS))
def test_bad_arguments_are_answered_before_keras_loads(case, tmp_path):
    args, message = CHECKED_BEFORE_KERAS[case]
    (tmp_path / "photo.png").write_bytes(b"not a scan")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), tmp_path / "t1.nii.gz")
    (tmp_path / "weights").mkdir()
    result = driver(*args, cwd=tmp_path, env={"GAN_SEG_WEIGHTS": tmp_path / "weights"})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and message in lines[0], result.stderr
    assert lines[-1] == "HEAVY_MODULES=", result.stderr


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


@bad_input("train-damaged-idx-gzip", "error", "CRC check failed")
def _damaged_idx(cwd, run, npz):
    write_idx_dir(cwd / "idx", n=64, size=16)
    path = cwd / "idx" / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[:40] + bytes(64) + raw[104:])  # zeros inside the deflate stream
    return ["train", "--data", "idx", "--out", "out"], None


@bad_input("train-idx-declaring-more-images", "error", "is truncated or corrupt: header (640, 16, 16) needs")
def _idx_declares_more(cwd, run, npz):
    write_idx_dir(cwd / "idx", n=64, size=16)
    path = cwd / "idx" / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[4:8] = (640).to_bytes(4, "big")
    path.write_bytes(gzip.compress(bytes(raw)))
    return ["train", "--data", "idx", "--out", "out"], None


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


@bad_input("evaluate-other-image-shape", "error", "draws 16x16x1 images; the classifier judges 28x28x1")
def _evaluate_other_shape(cwd, run, npz):
    return ["evaluate", "--model", run, "-n", "100", "--json", "out.json"], None


@bad_input("evaluate-discriminator-file", "error", "holds a 'discriminator' model, not a 'generator'")
def _evaluate_discriminator(cwd, run, npz):
    return ["evaluate", "--model", run / "discriminator.keras", "-n", "100"], None


@bad_input("evaluate-n-too-small", "error", "-n must be an integer in 20..60000")
def _evaluate_n(cwd, run, npz):
    return ["evaluate", "--model", run, "-n", "5"], None


@bad_input("evaluate-json-exists", "error", "output out.json already exists; pass --force")
def _evaluate_json_exists(cwd, run, npz):
    (cwd / "out.json").write_text("{}\n")
    return ["evaluate", "--model", run, "-n", "100", "--json", "out.json"], None


@bad_input("evaluate-negative-seed", "error", "seed")
def _evaluate_negative_seed(cwd, run, npz):
    return ["evaluate", "--model", run, "--seed", "-1"], None


@bad_input("models-corrupt-metadata", "error", "metadata.json is corrupt")
def _corrupt_metadata(cwd, run, npz):
    (cwd / "weights" / "broken").mkdir(parents=True)
    (cwd / "weights" / "broken" / "metadata.json").write_text("{not json")
    return ["models"], {"GAN_SEG_WEIGHTS": cwd / "weights"}


def _image(cwd, *args):
    write_png(cwd / "img.png", size=28, value=90)
    return list(args), None


@bad_input("occlusion-patch-larger-than-image", "error", "--patch 40 is larger than the image (28x28")
def _occlusion_patch(cwd, run, npz):
    return _image(cwd, "occlusion", "img.png", "--patch", "40", "-o", "h.png")


@bad_input("occlusion-zero-stride", "error", "--stride must be a positive integer")
def _occlusion_stride(cwd, run, npz):
    return _image(cwd, "occlusion", "img.png", "--stride", "0", "-o", "h.png")


@bad_input("occlusion-generator", "error", "is a generator (a latent input, no image to occlude)")
def _occlusion_generator(cwd, run, npz):
    return _image(cwd, "occlusion", "img.png", "--model", "dcgan-fashion-mnist", "--network", "generator",
                  "-o", "h.png")


@bad_input("occlusion-gan-without-discriminator", "error", "has no discriminator.keras")
def _occlusion_no_discriminator(cwd, run, npz):
    return _image(cwd, "occlusion", "img.png", "--model", "cgan-fashion-mnist", "-o", "h.png")


@bad_input("occlusion-unknown-target", "error", "--target 'hat' is not one of the network's classes")
def _occlusion_target(cwd, run, npz):
    return _image(cwd, "occlusion", "img.png", "--target", "hat", "-o", "h.png")


@bad_input("occlusion-target-of-an-unconditional-discriminator", "error", "unconditional discriminator")
def _occlusion_dcgan_target(cwd, run, npz):
    return _image(cwd, "occlusion", "img.png", "--model", "dcgan-fashion-mnist", "--target", "3", "-o",
                  "h.png")


@bad_input("occlusion-slice-outside-the-scan", "error", "--slice 999 is outside the conformed scan")
def _occlusion_slice(cwd, run, npz):
    return ["occlusion", "--example", "--model", "quicknat-brain", "--slice", "999", "-o", "h.png"], None


@bad_input("occlusion-slice-of-an-image", "error", "--slice applies to brain models")
def _occlusion_image_slice(cwd, run, npz):
    return _image(cwd, "occlusion", "img.png", "--slice", "3", "-o", "h.png")


@bad_input("occlusion-view-of-a-classifier", "error", "--view applies to segmentation models")
def _occlusion_view(cwd, run, npz):
    return _image(cwd, "occlusion", "img.png", "--view", "axial", "-o", "h.png")


@bad_input("occlusion-example-for-a-classifier", "error", "--example is the shipped example brain")
def _occlusion_example(cwd, run, npz):
    return ["occlusion", "--example", "-o", "h.png"], None


@bad_input("occlusion-not-png", "error", "give a .png file name")
def _occlusion_jpg(cwd, run, npz):
    return _image(cwd, "occlusion", "img.png", "-o", "h.jpg")


@bad_input("occlusion-npy-exists", "error", "output h.npy already exists; pass --force")
def _occlusion_npy_exists(cwd, run, npz):
    (cwd / "h.npy").write_bytes(b"older")
    return _image(cwd, "occlusion", "img.png", "-o", "h.png")


@bad_input("occlusion-output-is-the-input", "error", "is the input")
def _occlusion_onto_input(cwd, run, npz):
    return _image(cwd, "occlusion", "img.png", "-o", "img.png", "--force")


@bad_input("occlusion-missing-input", "error", "input missing.png does not exist")
def _occlusion_missing(cwd, run, npz):
    return ["occlusion", "missing.png", "-o", "h.png"], None


@bad_input("occlusion-not-an-image", "error", "not an image Pillow can read")
def _occlusion_random_bytes(cwd, run, npz):
    _random_bytes(cwd / "noise.png")
    return ["occlusion", "noise.png", "-o", "h.png"], None


@bad_input("occlusion-no-input", "error", "give an INPUT image file")
def _occlusion_no_input(cwd, run, npz):
    return ["occlusion", "-o", "h.png"], None


@bad_input("features-unknown-layer", "error", "'conv0_2': model 'classifier' has no such layer (nearest")
def _features_layer(cwd, run, npz):
    return _image(cwd, "features", "img.png", "--layer", "conv0_2", "-o", "f.png")


@bad_input("features-vector-layer", "error", "not 2-D feature maps")
def _features_vector(cwd, run, npz):
    return _image(cwd, "features", "img.png", "--layer", "features", "-o", "f.png")


@bad_input("features-generator-given-an-image", "error", "is a generator: it takes --seed")
def _features_generator_image(cwd, run, npz):
    return _image(cwd, "features", "img.png", "--model", "dcgan-fashion-mnist", "--network", "generator",
                  "--layer", "g_deconv_1", "-o", "f.png")


@bad_input("features-label-of-a-dcgan", "error", "this generator is unconditional")
def _features_dcgan_label(cwd, run, npz):
    return ["features", "--model", "dcgan-fashion-mnist", "--label", "2", "--layer", "g_deconv_1", "-o",
            "f.png"], None


@bad_input("features-unknown-label", "error", "--label 'hat' is not one of the network's classes")
def _features_cgan_label(cwd, run, npz):
    return ["features", "--model", "cgan-fashion-mnist", "--label", "hat", "--layer", "g_deconv_1", "-o",
            "f.png"], None


@bad_input("features-without-layer", "error", "give --layer NAME and -o OUT.png")
def _features_no_layer(cwd, run, npz):
    return _image(cwd, "features", "img.png", "-o", "f.png")


@bad_input("features-list-layers-with-input", "error", "--list-layers needs only --model")
def _features_list_with_input(cwd, run, npz):
    return _image(cwd, "features", "img.png", "--list-layers")


@bad_input("features-unknown-network", "usage", "Invalid value for '--network'")
def _features_network(cwd, run, npz):
    return ["features", "--network", "critic", "--list-layers"], None


IN_A_REAL_PROCESS = ("train-missing-data", "resume-with-another-option", "sample-output-exists",
                     "evaluate-other-image-shape")


def _check_failure(case, command, code, stdout, stderr, changed):
    _, kind, message = BAD_INPUTS[case]
    shown = f"exit {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert code == 2, shown
    assert "Traceback" not in stderr, shown
    assert stdout == "", shown
    lines = [line for line in stderr.splitlines() if line.strip()]
    if kind == "any":  # either form is fine
        kind = "usage" if lines[-1].startswith("Error: ") else "error"
    if kind == "error":
        assert len(lines) == 1, shown
        assert lines[0].startswith(f"gan-seg {command}: error: "), shown
    else:
        assert lines[0].startswith("Usage: "), shown
        assert lines[-1].startswith("Error: "), shown
    assert message in lines[-1], shown
    assert not changed, "the failed command changed its directory"


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(case, tmp_path, tiny_run, tiny_npz, monkeypatch):
    """In-process through click's CliRunner: exit 2, one line on stderr, nothing written."""
    args, env = BAD_INPUTS[case][0](tmp_path, tiny_run, tiny_npz)
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    clean = {name: None for name in ("TF_CONFIG", "GAN_SEG_WEIGHTS", "GAN_SEG_FASHION_MNIST_DIR")}
    result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="gan-seg",
                                env={**clean, **{k: str(v) for k, v in (env or {}).items()}})
    assert isinstance(result.exception, SystemExit), result.exception
    changed = snapshot(tmp_path) != before
    _check_failure(case, args[0], result.exit_code, result.stdout, result.stderr, changed)


@pytest.mark.parametrize("case", IN_A_REAL_PROCESS)
def test_bad_input_in_a_real_process(case, tmp_path, tiny_run, tiny_npz):
    args, env = BAD_INPUTS[case][0](tmp_path, tiny_run, tiny_npz)
    before = snapshot(tmp_path)
    result = gan_seg(*args, cwd=tmp_path, env=env)
    changed = snapshot(tmp_path) != before
    _check_failure(case, args[0], result.returncode, result.stdout, result.stderr, changed)


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


# -- gan-seg evaluate ---------------------------------------------------------------------------------
EVALUATION_KEYS = ["fd", "fd_floor", "fd_ratio", "per_class_fd", "histogram", "min_class_share",
                   "conditional_accuracy", "per_class_conditional_accuracy", "per_class_real_accuracy",
                   "cas_generated", "cas_real", "seconds"]


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_evaluate_prints_the_table_and_writes_the_json(tmp_path):
    save_model(build_generator(8, (28, 28, 1), 10), tmp_path / "g.keras",
               {"kind": "generator", "class_names": list(FASHION_MNIST_CLASSES)})  # untrained, 28x28 grey
    result = ok(gan_seg("evaluate", "--model", "g.keras", "-n", "100", "--seed", "3", "--json", "e.json",
                        "--quiet", cwd=tmp_path))
    data = json.loads((tmp_path / "e.json").read_text())
    assert [key for key in EVALUATION_KEYS if key not in data] == []
    assert data["model"] == "g.keras" and data["n"] == 100 and data["seed"] == 3
    lines = result.stdout.splitlines()
    assert lines[0].startswith("g.keras: CGAN, 100 generated images, seed 3")
    for text in (f"{data['fd']:.4f}", f"{data['fd_floor']:.4f}", f"{data['conditional_accuracy']:.4f}",
                 "Ankle boot", "judged at n = 10000 only"):
        assert text in result.stdout, text
    assert lines[-1] == "wrote e.json" and result.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "g.keras"]


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
    assert config["class_names"] == ["zero", "one", "two", "three"]

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


HOLDER = """
import sys, time
from gan_seg.engine.run_dir import RunDirectory
with RunDirectory(sys.argv[1]).hold():
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_run_held_by_another_process_is_refused(tmp_path, tiny_run):
    """Two trainings into one folder: the second is refused while the first holds the run's lock."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        result = CliRunner().invoke(cli, ["train", "--resume", str(run), "--steps", "6"], prog_name="gan-seg")
        assert result.exit_code == 2 and "is being trained by another process" in result.stderr, result.stderr
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    api.resume(run, steps=5, progress=False)  # the lock ended with its process
    assert metric_steps(run)[-1] == 5
