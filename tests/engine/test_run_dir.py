"""RunDirectory: the run lock and what holding it cleans up."""

import pytest

from gan_seg.engine.run_dir import CHECKPOINTS, RunDirectory
from gan_seg.errors import InputError


def test_holding_the_lock_removes_only_checkpoint_temporaries(tmp_path):
    folder = tmp_path / "run" / CHECKPOINTS
    folder.mkdir(parents=True)
    stale = folder / ".ckpt-00000004.npz.x1y2z3ab.tmp.npz"  # what a kill during a write leaves
    kept = [folder / "ckpt-00000003.npz", folder / ".notes.txt", folder / ".ckpt-00000004.npz"]
    for path in (stale, *kept):
        path.write_bytes(b"x")
    run = RunDirectory(tmp_path / "run")
    with run.hold():
        assert not stale.exists() and all(path.exists() for path in kept)
        with pytest.raises(InputError, match="is being trained by another process"), \
                RunDirectory(tmp_path / "run").hold():
            pass
    with run.hold():  # released at the end of the block
        pass
