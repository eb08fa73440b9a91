"""Where presets are read from."""

from pathlib import Path

from gan_seg.io import presets


def test_presets_are_found_from_a_source_checkout(monkeypatch):
    """Imported from a checkout (no gan_seg.weights package), presets come from weights/ beside gan_seg/."""
    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.delenv("GAN_SEG_WEIGHTS", raising=False)
    monkeypatch.setattr(presets.importlib.resources, "files", missing)
    assert presets.weights_dir() == Path(presets.__file__).resolve().parents[2] / "weights"
    assert "fashion-mnist-classifier" in presets.list_presets()
