"""A full disk (ENOSPC injected at the write call): one line "disk full (path)", exit 1, nothing half-written,
and what was there before (an earlier checkpoint, the user's files) intact."""

import errno
import json

import nibabel as nib
import numpy as np
from click.testing import CliRunner
from PIL import Image

from gan_seg.engine.run_dir import RunDirectory
from gan_seg_cli.main import cli
from tests.helpers import make_phantom, snapshot, write_segment_model


def _invoke(monkeypatch, cwd, *args):
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="gan-seg")


def _no_space(path):
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def _check_disk_full(result, command):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith(f"gan-seg {command}: error: disk full ("), lines
    assert "Traceback" not in result.output


def test_sample_on_a_full_disk_leaves_nothing(tmp_path, tiny_run, monkeypatch):
    (tmp_path / "mine.txt").write_text("the user's file")
    before = snapshot(tmp_path)

    def full(self, fp, *args, **kwargs):
        raise _no_space(fp)

    monkeypatch.setattr(Image.Image, "save", full)
    result = _invoke(monkeypatch, tmp_path, "sample", "--model", tiny_run, "-n", 4, "-o", "grid.png")
    _check_disk_full(result, "sample")
    assert snapshot(tmp_path) == before


def test_a_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, tiny_npz, monkeypatch):
    calls = {"n": 0}
    savez = np.savez

    def filling(file, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint
            raise _no_space(file)
        return savez(file, *args, **kwargs)

    monkeypatch.setattr(np, "savez", filling)
    result = _invoke(monkeypatch, tmp_path, "train", "--model", "cgan", "--data", tiny_npz, "--steps", 4,
                     "--batch-size", 16, "--latent-dim", 8, "--precision", "float32", "--checkpoint-every", 2,
                     "--sample-every", 100, "--strategy", "none", "--quiet", "--out", "run")
    _check_disk_full(result, "train")
    run = RunDirectory(tmp_path / "run")
    step, path = run.latest_checkpoint()
    assert step == 2 and [p.name for p in run.checkpoints()] == ["ckpt-00000002.npz"]
    with np.load(path) as data:
        assert json.loads(str(data["__meta__"]))["step"] == 2
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".")]


def test_segment_on_a_full_disk_writes_no_output(tmp_path, monkeypatch):
    model = write_segment_model(tmp_path / "model")  # a tiny axial network
    image, _, affine = make_phantom()
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "head.nii.gz")
    before = snapshot(tmp_path)

    def full(img, filename, *args, **kwargs):
        raise _no_space(filename)

    monkeypatch.setattr(nib, "save", full)
    result = _invoke(monkeypatch, tmp_path, "segment", "head.nii.gz", "--model", model, "-o", "seg.nii.gz",
                     "--volumes", "vols.csv", "--quiet")
    _check_disk_full(result, "segment")
    assert snapshot(tmp_path) == before
