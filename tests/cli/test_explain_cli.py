"""``gan-seg occlusion`` and ``gan-seg features`` on the shipped models, in-process through CliRunner."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gan_seg.gan.data import load_image_data
from gan_seg_cli.main import cli


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="gan-seg")
    assert result.exit_code == 0, f"{result.output}\n{result.stderr}\n{result.exception}"
    return result


@pytest.fixture(scope="module")
def boot(tmp_path_factory):
    """The first Fashion-MNIST test image (an ankle boot) as a PNG, and its pixels."""
    image = load_image_data("fashion-mnist", split="test").x[0, :, :, 0]
    path = tmp_path_factory.mktemp("images") / "boot.png"
    Image.fromarray(image).save(path)
    return path, image


def test_classifier_occlusion_sits_on_the_garment(tmp_path, boot):
    path, image = boot
    out = tmp_path / "heat.png"
    result = run("occlusion", path, "-o", out)
    assert "P(Ankle boot)" in result.stdout and f"wrote {out}" in result.stdout
    drops = np.load(tmp_path / "heat.npy")
    assert drops.shape == (11, 11)  # 28x28, patch 8, stride 2
    top, left = np.unravel_index(np.argmax(drops), drops.shape)
    assert drops.max() > 0.2
    assert image[2 * top:2 * top + 8, 2 * left:2 * left + 8].mean() > 60  # the patch covers the boot
    with Image.open(out) as picture:
        assert picture.mode == "RGB" and picture.width > 2 * 256
    run("occlusion", path, "-o", out, "--force", "--patch", "4", "--stride", "4", "--fill", "zero")
    assert np.load(tmp_path / "heat.npy").shape == (7, 7)


def test_discriminator_occlusion_and_features_of_each_gan_network(tmp_path, boot):
    path, _ = boot
    result = run("occlusion", path, "--model", "dcgan-fashion-mnist", "-o", tmp_path / "d.png")
    assert "P(real)" in result.stdout
    result = run("features", path, "--model", "dcgan-fashion-mnist", "--layer", "d_conv_2", "-o",
                 tmp_path / "d2.png")
    assert "d_conv_2: 64 feature maps of 7x7" in result.stdout
    result = run("features", "--model", "dcgan-fashion-mnist", "--layer", "g_deconv_2", "--seed", "3", "-o",
                 tmp_path / "g2.png")
    assert "latent draw of --seed 3" in result.stdout
    assert "g_deconv_2: 64 feature maps of 28x28" in result.stdout
    result = run("features", "--model", "cgan-fashion-mnist", "--layer", "g_deconv_1", "--label", "sneaker",
                 "-o", tmp_path / "c1.png")
    assert "label 7 (Sneaker)" in result.stdout
    for name in ("d2.png", "g2.png", "c1.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_classifier_features_and_layer_list(tmp_path, boot):
    path, _ = boot
    listed = run("features", "--list-layers").stdout.splitlines()
    assert listed[0].endswith("classifier.keras")
    assert any(line.split()[:3] == ["conv0_1", "Conv2D", "(N,"] for line in listed[1:])
    result = run("features", path, "--layer", "conv0_1", "-o", tmp_path / "f.png")
    assert "conv0_1: 32 feature maps of 28x28 (channels 0..31)" in result.stdout
    with Image.open(tmp_path / "f.png") as picture:
        assert picture.width >= 6 * 96  # 32 maps: 6 columns of ~96 pixels


def test_brain_occlusion_and_features_on_the_example(tmp_path):
    out = tmp_path / "hippocampus.png"
    result = run("occlusion", "--example", "--model", "quicknat-brain", "--view", "coronal", "--slice", "70",
                 "--target", "Left-Hippocampus", "--patch", "48", "--stride", "48", "-o", out)
    assert "coronal slice 70 of 0.." in result.stdout and "mm in the scan's world space" in result.stdout
    assert "summed P(Left-Hippocampus)" in result.stdout
    assert np.load(tmp_path / "hippocampus.npy").shape == (3, 3)  # 144 pixels, patch = stride = 48
    result = run("features", "--example", "--model", "quicknat-brain", "--view", "sagittal", "--layer",
                 "encode1_se_scse_max", "-o", tmp_path / "e1.png")
    assert "sagittal slice" in result.stdout and "16 feature maps" in result.stdout
