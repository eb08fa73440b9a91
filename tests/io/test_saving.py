"""Model files with metadata, and model files from strangers: refused before Keras runs anything of theirs."""

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from gan_seg.errors import InputError
from gan_seg.io.saving import load_model, read_metadata, save_model, untrusted_parts
from gan_seg_cli.main import cli
from tests.helpers import snapshot

ROOT = Path(__file__).resolve().parents[2]


def _tiny(name="generator"):
    z = keras.Input((4,), name="z")
    return keras.Model(z, keras.layers.Dense(3, name="d")(z), name=name)


def _lambda_model(marker):
    """A model whose Lambda layer writes ``marker`` whenever it runs (also when it is built on load)."""
    z = keras.Input((4,), name="z")

    def touch(x, path=str(marker)):
        with open(path, "w") as f:
            f.write("ran")
        return x

    return keras.Model(z, keras.layers.Lambda(touch, name="evil")(z), name="generator")


def _rewrite_config(source, target, edit):
    """Copy the .keras archive ``source`` to ``target`` with ``edit(config)`` applied to its config.json."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    edit(config)
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return target


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = _tiny()
    save_model(model, tmp_path / "m.keras", {"kind": "generator", "class_names": ["a", "b"]})
    loaded, metadata = load_model(tmp_path / "m.keras", "generator")
    assert metadata == read_metadata(tmp_path / "m.keras") == {"kind": "generator", "class_names": ["a", "b"]}
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="holds a 'generator' model, not a 'classifier'"):
        load_model(tmp_path / "m.keras", "classifier")


@pytest.mark.parametrize("path", sorted((ROOT / "weights").rglob("*.keras")), ids=lambda p: p.parent.name)
def test_shipped_models_name_only_keras_and_gan_seg(path):
    with zipfile.ZipFile(path) as archive:
        assert untrusted_parts(json.loads(archive.read("config.json"))) == []


def test_a_lambda_layer_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "ran.txt"
    model = _lambda_model(marker)
    marker.unlink()  # building the model above ran it once
    model.save(tmp_path / "evil.keras")
    marker.unlink(missing_ok=True)
    with pytest.raises(InputError, match="Lambda layer"):
        load_model(tmp_path / "evil.keras", "generator")
    assert not marker.exists()
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sample", "--model", "evil.keras", "-n", "2", "-o", "out.png"])
    assert result.exit_code == 2, result.output
    assert "refusing to load it" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before and not marker.exists()


@pytest.mark.parametrize(("field", "value", "named"), [
    ("module", "os", "module os"),
    ("module", "evil_package.layers", "module evil_package.layers"),
    ("registered_name", "evil>Dense", "class evil>Dense"),
])
def test_a_config_naming_foreign_code_is_refused(tmp_path, monkeypatch, field, value, named):
    save_model(_tiny(), tmp_path / "good.keras", {"kind": "generator"})

    def edit(config):
        config["config"]["layers"][1][field] = value

    _rewrite_config(tmp_path / "good.keras", tmp_path / "bad.keras", edit)
    with pytest.raises(InputError, match=named):
        load_model(tmp_path / "bad.keras")
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sample", "--model", "bad.keras", "-n", "2", "-o", "out.png"])
    assert result.exit_code == 2 and named in result.stderr, result.output
    assert snapshot(tmp_path) == before


def test_safe_mode_is_never_switched_off():
    offenders = [str(path.relative_to(ROOT)) for folder in ("gan_seg", "cli", "bench", "scripts")
                 for path in (ROOT / folder).rglob("*.py") if "safe_mode=False" in path.read_text()]
    assert offenders == []
