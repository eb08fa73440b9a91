"""tf.distribute: 2 replicas train exactly like 1, and multi-worker runs (chief-only writes, kill, resume).

The MirroredStrategy checks run in a subprocess (tests/distribute_worker.py): the CPU can be split into
logical devices only before TensorFlow starts. The multi-worker tests start 2 ``python -m gan_seg train``
processes on 127.0.0.1 with TF_CONFIG.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gan_seg.training.engine import RunDirectory

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distribute_worker.py")
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def _env(tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _stop(procs):
    """Kill whatever is still running of ``procs`` (our own children only) and reap them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


# -- MirroredStrategy over 2 logical CPU devices -------------------------------------------------------
@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Run tests/distribute_worker.py once; returns ``(results, out_dir)``."""
    out = tmp_path_factory.mktemp("mirrored")
    log = out / "worker.log"
    with log.open("w") as stream:
        proc = subprocess.Popen([sys.executable, str(WORKER), str(out)], env=_env(), cwd=out,
                                stdout=stream, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=600)
        finally:
            _stop([proc])
    assert code == 0, log.read_text()[-4000:]
    return json.loads((out / "results.json").read_text()), out


def _assert_same_state(out, case):
    with np.load(out / f"{case}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    keys = sorted(k.split("/", 1)[1] for k in arrays if k.startswith("single/"))
    assert keys and all(f"mirrored/{k}" in arrays for k in keys)
    for key in keys:
        np.testing.assert_allclose(arrays[f"mirrored/{key}"], arrays[f"single/{key}"], err_msg=key,
                                   **TOLERANCE)
    moved = [k for k in keys if not np.array_equal(arrays[f"single/{k}"], arrays[f"start/{k}"])]
    return keys, moved


def _assert_same_metrics(metrics):
    assert metrics["mirrored"].keys() == metrics["single"].keys()
    for name, value in metrics["single"].items():
        assert metrics["mirrored"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_two_replicas_equal_one_replica_without_batchnorm(mirrored):
    """A model with no BatchNorm: 2 replicas x 8 images (d_steps 2) end one step where 1 x 16 does."""
    results, out = mirrored
    case = results["cases"]["no_bn"]
    assert case["replicas"] == 2 and not case["has_bn"]
    keys, moved = _assert_same_state(out, "no_bn")
    assert {k.split("/")[0] for k in moved} == {"generator", "discriminator", "g_optimizer", "d_optimizer"}
    _assert_same_metrics(case["metrics"])
    assert case["replica_spread"] == 0.0


@pytest.mark.parametrize("model", ["dcgan", "cgan"])
def test_two_replicas_equal_one_replica_with_synchronized_batchnorm(mirrored, model):
    """The default generator (BatchNorm synchronised across replicas): weights, BatchNorm moving
    statistics, optimizer slots and losses after one step match the single-replica step."""
    results, out = mirrored
    case = results["cases"][model]
    assert case["replicas"] == 2 and case["has_bn"]
    keys, moved = _assert_same_state(out, model)
    assert len(moved) == len(keys), "every variable (BatchNorm statistics included) moves in one step"
    _assert_same_metrics(case["metrics"])
    assert case["replica_spread"] == 0.0


def test_unsynchronized_batchnorm_would_differ(mirrored):
    """Control: per-replica BatchNorm statistics do change the step, so the test above can fail."""
    results, out = mirrored
    with pytest.raises(AssertionError):
        _assert_same_state(out, "dcgan_unsynced_bn")
    assert results["cases"]["dcgan_unsynced_bn"]["replica_spread"] > 0


@pytest.mark.parametrize("model", ["dcgan", "cgan"])
def test_updates_freeze_the_other_model_under_the_strategy(mirrored, model):
    """Under MirroredStrategy: a D update moves every D weight and no G weight; a G update the reverse
    (D and its optimizer untouched); D still trains afterwards; replicas hold identical copies."""
    results, _ = mirrored
    checks = results["freeze"][model]
    assert checks["replicas"] == 2
    for label in ("d_update", "d_update_after_g"):
        changed = checks[label]
        assert all(changed["d_trainable"]) and all(changed["d_optimizer"]), label
        assert not any(changed["g_trainable"]) and not any(changed["g_optimizer"]), label
        assert all(changed["g_bn_stats"]), "G makes the fakes in training mode (documented)"
    changed = checks["g_update"]
    assert all(changed["g_trainable"]) and all(changed["g_optimizer"])
    assert not any(changed["d_all"]) and not any(changed["d_optimizer"])
    assert checks["replica_spread"] == 0.0


# -- MultiWorkerMirroredStrategy ------------------------------------------------------------------------
def test_tf_config_chief_and_errors(monkeypatch):
    from gan_seg.errors import InputError
    from gan_seg.training.distribute import check_tf_config, is_chief_task, make_strategy

    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert is_chief_task({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    assert not is_chief_task({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    with_chief = {"chief": ["127.0.0.1:3"], **cluster}
    assert is_chief_task({"cluster": with_chief, "task": {"type": "chief", "index": 0}})
    assert not is_chief_task({"cluster": with_chief, "task": {"type": "worker", "index": 0}})
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief_task()
    with pytest.raises(InputError, match="needs the TF_CONFIG"):
        make_strategy("multi-worker")
    for bad, message in (("{not json", "malformed"), ('{"cluster": {}}', "malformed"),
                         (json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}}),
                          "outside the 2 workers")):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(InputError, match=message):
            check_tf_config()


def test_multi_worker_strategy_is_created_before_tensorflow_starts():
    """Regression: make_strategy listed logical devices (which starts TensorFlow's runtime) before
    creating MultiWorkerMirroredStrategy, which then raised 'Collective ops must be configured at program
    startup' in every worker. A one-worker cluster in a fresh process shows it without a second worker."""
    code = ("from gan_seg.training.distribute import make_strategy\n"
            "strategy, chief = make_strategy('multi-worker')\n"
            "import tensorflow as tf\n"
            "print(isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),\n"
            "      strategy.num_replicas_in_sync, chief)")
    tf_config = {"cluster": {"worker": [f"127.0.0.1:{_free_ports(1)[0]}"]},
                 "task": {"type": "worker", "index": 0}}
    done = subprocess.run([sys.executable, "-c", code], env=_env(tf_config), cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "1", "True"]


# 2 worker processes on 127.0.0.1, each running the same command line.
TRAIN = ["-m", "gan_seg", "train", "--model", "dcgan", "--batch-size", "16", "--latent-dim", "8",
         "--precision", "float32", "--seed", "3", "--log-every", "1", "--quiet"]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start_workers(args, cwds, logs):
    """Start one ``python -m gan_seg ...`` per cwd (same command line), on fresh 127.0.0.1 ports."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(len(cwds))]}
    procs = []
    try:
        for index, (cwd, log) in enumerate(zip(cwds, logs, strict=True)):
            cwd.mkdir(parents=True, exist_ok=True)
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("w") as stream:
                procs.append(subprocess.Popen(
                    [sys.executable, *args], cwd=cwd, stdout=stream, stderr=subprocess.STDOUT,
                    env=_env({"cluster": cluster, "task": {"type": "worker", "index": index}})))
    except BaseException:
        _stop(procs)
        raise
    return procs


def _wait(procs, timeout):
    deadline = time.monotonic() + timeout
    return [proc.wait(timeout=max(deadline - time.monotonic(), 0.1)) for proc in procs]


def _tails(logs):
    return "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs if log.exists())


def _checkpoint(run):
    step, path = RunDirectory(run).latest_checkpoint()
    with np.load(path) as data:
        return step, {k: data[k] for k in data.files if k != "__meta__"}


def _metric_steps(run):
    with open(run / "metrics.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def _logged_steps(run):
    """Steps in metrics.csv while the chief may be appending (a torn last line is skipped)."""
    try:
        return [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]
                if line.split(",")[0].isdigit()]
    except OSError:
        return []


@pytest.mark.slow
def test_multi_worker_training_matches_single_process(tmp_path, tiny_npz):
    """2 workers x 8 images (each its own shard) = 1 process x 16: only the chief writes the run."""
    args = [*TRAIN, "--data", str(tiny_npz), "--steps", "4", "--checkpoint-every", "2", "--sample-every", "2",
            "--strategy", "multi-worker", "--out", "run"]
    cwds = [tmp_path / "worker0", tmp_path / "worker1"]
    logs = [tmp_path / "logs" / "worker0.log", tmp_path / "logs" / "worker1.log"]
    procs = _start_workers(args, cwds, logs)
    try:
        codes = _wait(procs, timeout=300)
    finally:
        _stop(procs)
    assert codes == [0, 0], _tails(logs)

    run = cwds[0] / "run"
    assert not (cwds[1] / "run").exists() and not list(cwds[1].iterdir()), "worker 1 wrote files"
    record = json.loads((run / "config.json").read_text())
    assert record["resolved"]["replicas"] == 2 and record["strategy"] == "multi-worker"
    assert [p.name for p in RunDirectory(run).checkpoints()] == ["ckpt-00000002.npz", "ckpt-00000004.npz"]
    assert (run / "generator.keras").is_file() and (run / "discriminator.keras").is_file()
    assert _metric_steps(run) == [1, 2, 3, 4]

    single = tmp_path / "single"
    single_args = [*TRAIN, "--data", str(tiny_npz), "--steps", "4", "--checkpoint-every", "2",
                   "--sample-every", "2", "--strategy", "none", "--out", str(single)]
    done = subprocess.run([sys.executable, *single_args], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    step_a, a = _checkpoint(single)
    step_b, b = _checkpoint(run)
    assert step_a == step_b == 4 and a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_multi_worker_survives_a_killed_worker_by_resuming(tmp_path, tiny_npz):
    """SIGKILL the chief after its first checkpoint: the other worker fails by itself; restarting both
    with --resume completes the run with contiguous metrics and a recorded resume."""
    steps = 30
    run = tmp_path / "shared" / "run"
    args = [*TRAIN, "--data", str(tiny_npz), "--steps", str(steps), "--checkpoint-every", "3",
            "--sample-every", "0", "--strategy", "multi-worker", "--out", str(run)]
    cwds = [tmp_path / "worker0", tmp_path / "worker1"]
    logs = [tmp_path / "logs" / "worker0.log", tmp_path / "logs" / "worker1.log"]
    procs = _start_workers(args, cwds, logs)
    try:
        deadline = time.monotonic() + 300
        while not (RunDirectory(run).checkpoints() and max(_logged_steps(run), default=0) > 3):
            assert all(p.poll() is None for p in procs), "a worker ended early\n" + _tails(logs)
            assert time.monotonic() < deadline, "no checkpoint within 300 s\n" + _tails(logs)
            time.sleep(0.05)
        procs[0].send_signal(signal.SIGKILL)
        try:
            survivor = procs[1].wait(timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail("worker 1 still runs 180 s after the chief was killed\n" + _tails(logs))
        assert procs[0].wait(timeout=30) == -signal.SIGKILL
    finally:
        _stop(procs)
    assert survivor != 0, _tails(logs)
    killed_at = RunDirectory(run).latest_checkpoint()[0]
    assert killed_at < steps, "the run ended before the kill; raise its --steps"

    logs = [tmp_path / "logs" / "resume0.log", tmp_path / "logs" / "resume1.log"]
    procs = _start_workers(["-m", "gan_seg", "train", "--resume", str(run), "--steps", str(steps), "--quiet"],
                           cwds, logs)
    try:
        codes = _wait(procs, timeout=300)
    finally:
        _stop(procs)
    assert codes == [0, 0], _tails(logs)
    assert RunDirectory(run).latest_checkpoint()[0] == steps
    assert _metric_steps(run) == list(range(1, steps + 1))
    record = json.loads((run / "config.json").read_text())
    assert record["steps"] == steps
    assert [(r["from_step"], r["to_step"]) for r in record["resumes"]] == [(killed_at, steps)]
    assert (run / "generator.keras").is_file()
    assert not list(run.rglob("*.tmp*"))
    assert not any((cwd / "run").exists() for cwd in cwds)
