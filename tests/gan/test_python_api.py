"""The keras.applications-style Python API: one call, a ready model; lazy top-level re-exports; the README's
"From Python" example runs as a doctest."""

import doctest
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gan_seg
import gan_seg.gan
from gan_seg.errors import InputError
from gan_seg.gan import pretrained
from gan_seg.gan.sampling import sample as sample_with_rows
from gan_seg.io.presets import list_presets
from gan_seg.seg import pretrained as seg_pretrained

ROOT = Path(__file__).resolve().parents[2]
needs = {name: pytest.mark.skipif(name not in list_presets(), reason=f"weights/{name} is not installed")
         for name in ("cgan-fashion-mnist", "fashion-mnist-classifier", "quicknat-brain")}


def test_public_names_load_keras_only_when_used():
    code = ("import sys, gan_seg, gan_seg.gan, gan_seg.gan.config\n"
            "from gan_seg import errors, InputError  # a submodule and a re-export\n"
            "assert errors.InputError is InputError\n"
            "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow'})\n"
            "before = heavy()\n"
            "from gan_seg import generator, build_quicknat\n"
            "print(before, heavy(), generator.__module__, build_quicknat.__module__)")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "['keras',", "'tensorflow']", "gan_seg.gan.pretrained",
                                     "gan_seg.seg.models"]


def test_every_public_name_resolves():
    for module in (gan_seg, gan_seg.gan):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
        assert set(module.__all__) <= set(dir(module))
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            module.nope  # noqa: B018 - the attribute access is the test
    assert gan_seg.generator is pretrained.generator and gan_seg.segmenter is seg_pretrained.segmenter


def test_weights_none_builds_the_asked_architecture():
    g = gan_seg.generator(weights=None, latent_dim=8, image_shape=(16, 16, 1), num_classes=4)
    d = gan_seg.discriminator(weights=None, image_shape=(16, 16, 1), num_classes=4, spectral_norm=True)
    c = gan_seg.classifier(weights=None, image_shape=(16, 16, 1), num_classes=4)
    assert tuple(g.output.shape[1:]) == (16, 16, 1) and g.inputs[1].shape[-1] == 4
    assert any(type(layer).__name__ == "SpectralNormalization" for layer in d.layers)
    assert c.output.shape[-1] == 4 and c.get_layer("features").output.shape[-1] == 128
    net = gan_seg.quicknat(weights=None, input_shape=(32, 32, 1), num_classes=3, filters=4)
    assert tuple(net.output.shape[1:]) == (32, 32, 3)


def test_a_run_directory_gives_its_models_and_the_same_samples_as_the_library(tiny_run):
    g = gan_seg.generator(tiny_run, num_classes=4, latent_dim=8)  # architecture checked, not rebuilt
    d = gan_seg.discriminator(tiny_run / "discriminator.keras", image_shape=(16, 16, 1))
    assert len(d.inputs) == 2
    images, labels = gan_seg.sample(g, 8, seed=1)
    expected, expected_labels, _ = sample_with_rows(g, 8, seed=1)
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, expected_labels)
    by_name, labels = gan_seg.sample(tiny_run, 8, seed=1)  # the same from the run directory
    np.testing.assert_array_equal(by_name, images)
    _, twos = gan_seg.sample(tiny_run, 4, seed=0, label="TWO")  # class names from the model's metadata
    assert twos.tolist() == [2] * 4 and gan_seg.class_names(tiny_run) == ["zero", "one", "two", "three"]
    with pytest.raises(InputError, match="pass the generator by name or file, or use a number"):
        gan_seg.sample(g, 4, label="two")


def test_wrong_kinds_and_architectures_are_input_errors_naming_the_file(tiny_run):
    d_file, g_file = tiny_run / "discriminator.keras", tiny_run / "generator.keras"
    with pytest.raises(InputError, match=f"{re.escape(str(d_file))} holds a 'discriminator' model, not a "
                                         "'generator'"):
        gan_seg.generator(d_file)
    with pytest.raises(InputError, match=f"{re.escape(str(g_file))} holds a 'generator' model, not a "
                                         "'classifier'"):
        gan_seg.classifier(g_file)
    with pytest.raises(InputError, match=f"{re.escape(str(g_file))} holds a model with num_classes=4, not "
                                         "num_classes=10"):
        gan_seg.generator(tiny_run, num_classes=10)
    with pytest.raises(InputError, match="dtype= cannot be combined with weights"):
        gan_seg.generator(tiny_run, dtype="mixed_bfloat16")
    with pytest.raises(InputError, match="weights must be a model name"):
        gan_seg.generator(weights=3)
    with pytest.raises(InputError, match="is not a segmentation model"):
        gan_seg.segmenter(tiny_run)
    with pytest.raises(InputError, match="holds no coronal/model.keras"):
        gan_seg.quicknat(tiny_run, view="coronal")


def test_a_damaged_preset_is_refused(tmp_path, tiny_run, monkeypatch):
    preset = tmp_path / "weights" / "tiny"
    preset.mkdir(parents=True)
    shutil.copy(tiny_run / "generator.keras", preset / "generator.keras")
    (preset / "metadata.json").write_text(json.dumps({"files": {"generator.keras": "0" * 64}}))
    monkeypatch.setenv("GAN_SEG_WEIGHTS", str(tmp_path / "weights"))
    with pytest.raises(InputError, match="does not match its sha256"):
        gan_seg.generator("tiny")


@needs["quicknat-brain"]
def test_the_brain_model_loads_verified():
    net = gan_seg.quicknat(view="sagittal")
    segmenter = gan_seg.segmenter(views="axial,coronal")
    assert segmenter.views == ("axial", "coronal") and len(segmenter.class_names) == 23
    assert net.output.shape[-1] < 23  # sagittal networks predict merged left/right classes
    with pytest.raises(InputError, match="view 'top' is not one of axial, coronal, sagittal"):
        gan_seg.quicknat(view="top")
    with pytest.raises(InputError, match="cannot be combined with weights"):
        gan_seg.quicknat(filters=8)


def readme_examples(title):
    """The ``python`` code blocks of the README section ``title`` (fences blanked out, so a block's last
    expected output ends at its fence), and the section's first line number."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n") + 1
    end = text.find("\n## ", start)
    lines, inside = [], False
    for line in text[start:end if end > 0 else None].splitlines():
        if line.strip().startswith("```"):
            inside = line.strip() == "```python"
            lines.append("")
        else:
            lines.append(line if inside else "")
    return "\n".join(lines), text[:start].count("\n")


@needs["cgan-fashion-mnist"]
@needs["fashion-mnist-classifier"]
@needs["quicknat-brain"]
def test_readme_from_python_example_runs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    examples, line = readme_examples("From Python")
    test = doctest.DocTestParser().get_doctest(examples, {}, "README.md: From Python", "README.md", line)
    assert len(test.examples) >= 10, "the example lost its >>> lines"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
