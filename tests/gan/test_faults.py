"""Faults: a training process SIGKILLed at many moments (checkpoints written every step, so some kills land
during a write) leaves only complete checkpoints, and ``--resume`` (which removes the temporaries of
interrupted writes) then ends with the same weights as a run that was never interrupted."""

import json
import signal

import numpy as np
import pytest

from gan_seg.engine.run_dir import RunDirectory
from gan_seg.gan.trainer import train
from tests.helpers import (
    complete_checkpoint_steps,
    gan_seg,
    kill_when,
    newer_checkpoint,
    ok,
    start_cli,
    tiny_config,
)

STEPS = 14
# (signal, seconds after a new checkpoint appears): SIGKILL at once (often during the next write), a little
# later, and a Ctrl-C (SIGINT), which must end with one line and exit 130.
KILLS = ((signal.SIGKILL, 0.0), (signal.SIGKILL, 0.05), (signal.SIGINT, 0.1))


def _options(npz):
    """The CLI flags of ``tiny_config(**REFERENCE)``."""
    return ["--model", "cgan", "--data", npz, "--steps", STEPS, "--batch-size", 16, "--latent-dim", 8,
            "--precision", "float32", "--checkpoint-every", 1, "--keep-checkpoints", 3, "--sample-every", 100,
            "--log-every", 1, "--seed", 3, "--strategy", "none", "--deterministic", "--quiet"]


REFERENCE = dict(steps=STEPS, checkpoint_every=1, keep_checkpoints=3, sample_every=100, deterministic=True)


def _arrays(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _check_complete(run):
    """Every listed checkpoint is complete and config.json parses; returns the newest step (0 if none)."""
    json.loads((run / "config.json").read_text())
    return max(complete_checkpoint_steps(run), default=0)


@pytest.mark.slow
def test_kills_at_any_moment_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_npz):
    train(tiny_config(data=str(tiny_npz), **REFERENCE), tmp_path / "straight", progress=False)
    run = tmp_path / "killed"
    reached = []
    for n, (kill, delay) in enumerate(KILLS):
        argv = [*_options(tiny_npz), "--out", run] if n == 0 else ["--resume", run, "--steps", STEPS,
                                                                   "--quiet"]
        before = _check_complete(run) if (run / "config.json").exists() else 0
        _, code, stderr = kill_when(start_cli("train", *argv), newer_checkpoint(run, before), kill, delay)
        if kill == signal.SIGKILL:
            assert code == -signal.SIGKILL, f"the run ended (exit {code}) before it was killed"
        else:
            lines = stderr.strip().splitlines()
            assert code == 130 and lines == ["gan-seg train: error: interrupted"], stderr
        reached.append(_check_complete(run))
    assert reached == sorted(reached) and 0 < reached[0] and reached[-1] < STEPS, reached
    if reached[-1] < STEPS:
        ok(gan_seg("train", "--resume", run, "--steps", STEPS, cwd=tmp_path))
    step_a, path_a = RunDirectory(tmp_path / "straight").latest_checkpoint()
    step_b, path_b = RunDirectory(run).latest_checkpoint()
    assert step_a == step_b == STEPS
    a, b = _arrays(path_a), _arrays(path_b)
    assert a.keys() == b.keys()
    for key in a:
        if key != "__meta__":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    record = json.loads((run / "config.json").read_text())
    assert len(record["resumes"]) == len(KILLS)
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporaries
