"""Faults: ``gan-seg segment`` SIGKILLed while it works on a scan (single scan: while its outputs are being
written; cohort: while the second scan is segmented) leaves no output of that scan, and the rerun removes
the hidden temporaries of the killed write, skips the finished scans and redoes the interrupted one."""

import json
import signal
import subprocess
import sys
import time

import nibabel as nib
import pytest

from tests.helpers import PHANTOM_CLASSES, TIMEOUT, cli_env, gan_seg, make_phantom, ok, write_init_run

KILL_TRIES = 3  # the single-scan kill aims at a window of ~0.1 s; a process that finished first is retried


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny axial network (untrained: the outputs' contents do not matter here)."""
    path = write_init_run(tmp_path_factory.mktemp("model") / "run", PHANTOM_CLASSES)
    record = json.loads((path / "config.json").read_text())
    record.update(class_names=PHANTOM_CLASSES, voxel_size=2.0)
    (path / "config.json").write_text(json.dumps(record))
    return path


def _scans(folder, names):
    folder.mkdir()
    for seed, name in enumerate(names):
        image, _, affine = make_phantom(seed=seed)
        nib.save(nib.Nifti1Image(image, affine), folder / f"{name}.nii.gz")
    return folder


def _start(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "gan_seg", "segment", *map(str, args)], cwd=cwd,
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(proc, ready):
    """SIGKILL ``proc`` as soon as ``ready()`` is true; False when the process ended first."""
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.kill()
            proc.communicate(timeout=60)
            return True
        time.sleep(0.001)
    proc.communicate(timeout=60)
    return False


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.slow
def test_single_scan_killed_while_writing_leaves_no_output(tmp_path, model):
    _scans(tmp_path / "in", ["head"])
    args = ["in/head.nii.gz", "--model", model, "-o", "out/head_seg.nii.gz", "--volumes", "out/head.csv",
            "--qc", "out/head.png", "--mc-samples", 2, "--uncertainty", "out/head_unc.nii.gz", "--quiet"]
    (tmp_path / "out").mkdir()
    for _ in range(KILL_TRIES):
        proc = _start(*args, cwd=tmp_path)
        if _kill_when(proc, lambda: any((tmp_path / "out").iterdir())):
            break
        for path in (tmp_path / "out").iterdir():
            path.unlink()
    else:
        pytest.fail(f"segment finished before it could be killed, {KILL_TRIES} times")
    assert proc.returncode == -signal.SIGKILL
    left = _names(tmp_path / "out")
    assert left and all(name.startswith(".") and ".tmp" in name for name in left), left  # temporaries only
    ok(gan_seg("segment", *args, cwd=tmp_path))
    assert _names(tmp_path / "out") == ["head.csv", "head.png", "head_seg.nii.gz", "head_seg_LUT.txt",
                                        "head_unc.nii.gz"]


@pytest.mark.slow
def test_cohort_killed_mid_scan_reruns_only_the_interrupted_and_the_rest(tmp_path, model):
    _scans(tmp_path / "in", ["a", "b", "c"])
    proc = _start("in", "--model", model, "-o", "out", "--mc-samples", 8, cwd=tmp_path)
    started = []

    def second_scan_started():  # the report line "[2/3] b" comes once a's outputs are all in place
        started.append(proc.stderr.readline())
        return started[-1].startswith("[2/3] b")

    assert _kill_when(proc, second_scan_started), "".join(started)
    assert proc.returncode == -signal.SIGKILL
    finished = ["a_qc.png", "a_seg.nii.gz", "a_seg_LUT.txt", "a_uncertainty.nii.gz", "a_volumes.csv"]
    assert [name for name in _names(tmp_path / "out") if not name.startswith(".")] == finished
    a_time = (tmp_path / "out" / "a_seg.nii.gz").stat().st_mtime_ns
    rerun = ok(gan_seg("segment", "in", "--model", model, "-o", "out", "--mc-samples", 8, cwd=tmp_path))
    assert "[2/3] b" in rerun.stderr and "[3/3] c" in rerun.stderr and "[1/3] a" not in rerun.stderr
    assert (tmp_path / "out" / "a_seg.nii.gz").stat().st_mtime_ns == a_time  # a: skipped, not redone
    expected = sorted([*finished, *(n.replace("a", x, 1) for x in "bc" for n in finished), "volumes.csv"])
    assert _names(tmp_path / "out") == expected
