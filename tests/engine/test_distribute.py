"""tf.distribute: 2 replicas train exactly like 1, and multi-worker runs (chief-only writes, kill, resume).

The MirroredStrategy checks run in subprocesses (tests/distribute_worker.py for the GAN trainer,
tests/distribute_seg_worker.py for QuickNAT): the CPU can be split into logical devices only before
TensorFlow starts. The multi-worker tests start 2 ``python -m gan_seg train`` processes on 127.0.0.1 with
TF_CONFIG.
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

from gan_seg.engine.distribute import check_tf_config, is_chief_task, make_strategy
from gan_seg.engine.run_dir import RunDirectory
from gan_seg.errors import InputError
from tests.helpers import PHANTOM_CLASSES, write_init_run, write_phantom_dataset

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distribute_worker.py")
SEG_WORKER = Path(__file__).with_name("distribute_seg_worker.py")
TOLERANCE = dict(rtol=1e-5, atol=1e-6)
# One step of 2 replicas vs 1: RMSprop's first step (g / sqrt(0.1 g^2 + eps)) magnifies float32 rounding of
# gradients near its epsilon; measured on an AMD EPYC: at most 2.4e-6 on the synchronised-BatchNorm DCGAN,
# while the unsynchronised control differs by up to 2e-4 in 22 of 66 arrays (and still must fail).
REPLICA_TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _env(tf_config=None, keras_home=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    if keras_home is not None:
        env["KERAS_HOME"] = str(keras_home)
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
def _worker_procs(request, tmp_path_factory):
    """Start the worker scripts that this session's selected tests need, side by side (each spends most
    of its time tracing on one core): ``{fixture: (process, out_dir, results file)}``."""
    wanted = {name for item in request.session.items if getattr(item, "module", None) is request.module
              for name in ("mirrored", "seg_mirrored") if name in getattr(item, "fixturenames", ())}
    scripts = {"mirrored": (WORKER, (), "results.json"),
               "seg_mirrored": (SEG_WORKER, ("phantoms",), "seg_results.json")}
    procs = {}
    try:
        for name in sorted(wanted):
            script, fixtures, results = scripts[name]
            out = tmp_path_factory.mktemp(name)
            args = [str(request.getfixturevalue(f)) for f in fixtures]
            with (out / "worker.log").open("w") as stream:
                procs[name] = (subprocess.Popen([sys.executable, str(script), str(out), *args], env=_env(),
                                                cwd=out, stdout=stream, stderr=subprocess.STDOUT),
                               out, results)
        yield procs
    finally:
        _stop([proc for proc, _, _ in procs.values()])


def _worker_results(procs, name):
    proc, out, results = procs[name]
    try:
        code = proc.wait(timeout=600)
    finally:
        _stop([proc])
    assert code == 0, (out / "worker.log").read_text()[-4000:]
    return json.loads((out / results).read_text()), out


@pytest.fixture(scope="module")
def mirrored(_worker_procs):
    """tests/distribute_worker.py's results: ``(results, out_dir)``."""
    return _worker_results(_worker_procs, "mirrored")


def _assert_same_state(out, case):
    with np.load(out / f"{case}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    keys = sorted(k.split("/", 1)[1] for k in arrays if k.startswith("single/"))
    assert keys and all(f"mirrored/{k}" in arrays for k in keys)
    for key in keys:
        np.testing.assert_allclose(arrays[f"mirrored/{key}"], arrays[f"single/{key}"], err_msg=key,
                                   **REPLICA_TOLERANCE)
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
    assert {k.split("/")[0] for k in moved} == {"generator", "ema_generator", "discriminator", "g_optimizer",
                                                "d_optimizer"}  # the default recipe averages G
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
    code = ("from gan_seg.engine.distribute import make_strategy\n"
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
# The classic recipe, as for the BatchNorm cases above (Adam's raw-gradient moments expose the synchronised
# BatchNorm's float32 rounding: 26% of G's first kernel beyond rtol 1e-4 / atol 1e-5 after 4 steps, measured)
TRAIN = ["-m", "gan_seg", "train", "--model", "dcgan", "--recipe", "classic", "--batch-size", "16",
         "--latent-dim", "8", "--precision", "float32", "--seed", "3", "--log-every", "1", "--quiet"]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start_workers(args, cwds, logs, keras_home=None):
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
                    env=_env({"cluster": cluster, "task": {"type": "worker", "index": index}}, keras_home)))
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
    # 4 RMSprop steps of ~6e-4 per weight; float32 rounding of two processes vs one, magnified near
    # RMSprop's epsilon, reached 2.9e-5 on 16 of 16,384 weights on an Intel AMX CPU (measured); a shard or
    # gradient-averaging error moves weights by whole steps
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-4, err_msg=key)


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


# -- QuickNAT under every strategy ---------------------------------------------------------------------
# Last in the file: the MirroredStrategy worker (started with the GAN one, see _worker_procs) traces in
# the background while the tests above and the multi-worker run below go on.
@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """A labelled data set of 2 tiny phantoms (3 training steps of 8 axial slices per epoch)."""
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "data", 2)


@pytest.mark.slow
def test_multi_worker_quicknat_matches_single_process(tmp_path, phantoms):
    """2 workers x 4 slices (each its own cwd and a relative --out) = 1 process x 8 for one epoch of
    one view: both exit 0, only the chief writes run/, and its final checkpoint, losses and validation
    Dice equal a --strategy none run's.

    As in tests/distribute_seg_worker.py the runs compute in float64 (Keras' floatx from a keras.json in
    KERAS_HOME) and start from a generic init (--init; its config has dropout 0, see _DROPOUT_BUG below): in
    float32, or from Keras' initial BatchNorm/PReLU values, round-off alone moves weights by up to ~lr and
    Adam slots by percents, so no tolerance could tell a distribution bug from it. Augmentation stays on.
    """
    keras_home = tmp_path / "keras"
    keras_home.mkdir()
    (keras_home / "keras.json").write_text(json.dumps({"floatx": "float64", "epsilon": 1e-07,
                                                       "backend": "tensorflow",
                                                       "image_data_format": "channels_last"}))
    init = write_init_run(tmp_path / "init", PHANTOM_CLASSES)
    args = ["-m", "gan_seg", "train", "--model", "quicknat", "--data", str(phantoms), "--views", "axial",
            "--filters", "4", "--kernel-size", "3", "--epochs", "1", "--batch-size", "8", "--precision",
            "float32", "--init", str(init), "--log-every", "1", "--quiet"]
    cwds = [tmp_path / "worker0", tmp_path / "worker1"]
    logs = [tmp_path / "logs" / f"{name}.log" for name in ("worker0", "worker1", "single")]
    single = tmp_path / "single"
    procs = _start_workers([*args, "--strategy", "multi-worker", "--out", "run"], cwds, logs[:2], keras_home)
    try:  # the reference run alongside (the workers spend most of their time tracing, one core each)
        with logs[2].open("w") as stream:
            procs.append(subprocess.Popen([sys.executable, *args, "--strategy", "none", "--out", str(single)],
                                          cwd=tmp_path, env=_env(keras_home=keras_home), stdout=stream,
                                          stderr=subprocess.STDOUT))
        codes = _wait(procs, timeout=300)
    finally:
        _stop(procs)
    assert codes == [0, 0, 0], _tails(logs)
    assert not list(cwds[1].iterdir()), "worker 1 wrote files"
    run = cwds[0] / "run"
    record = json.loads((run / "config.json").read_text())
    assert record["strategy"] == "multi-worker" and record["resolved"]["replicas"] == 2
    assert record["augment"] and record["dropout"] == 0 and record["views"] == ["axial"]
    assert record["resolved"]["init_weights"] == {"axial": "all weights"}
    for name in ("model.keras", "best.json", "train.csv", "validation.csv"):
        assert (run / "axial" / name).is_file(), name

    assert json.loads((single / "config.json").read_text())["resolved"]["replicas"] == 1
    assert ([p.name for p in RunDirectory(run / "axial").checkpoints()]
            == [p.name for p in RunDirectory(single / "axial").checkpoints()])
    step_a, a = _checkpoint(single / "axial")
    step_b, b = _checkpoint(run / "axial")
    assert step_a == step_b >= 2 and a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], err_msg=key, **TOLERANCE)
    for name in ("train.csv", "validation.csv"):
        with open(single / "axial" / name, newline="") as f:
            expected = list(csv.DictReader(f))
        with open(run / "axial" / name, newline="") as f:
            found = list(csv.DictReader(f))
        assert [r["step"] for r in found] == [r["step"] for r in expected], name
        for row_a, row_b in zip(expected, found, strict=True):
            for field, value in row_a.items():
                if field != "slices_per_s" and value != "":
                    assert float(row_b[field]) == pytest.approx(float(value), rel=1e-5, abs=1e-6), field


@pytest.fixture(scope="module")
def seg_mirrored(_worker_procs):
    """tests/distribute_seg_worker.py's results: ``(results, out_dir)``."""
    return _worker_results(_worker_procs, "seg_mirrored")


@pytest.mark.parametrize("case", ["augment", "plain"])
def test_quicknat_two_replicas_equal_one_replica(seg_mirrored, case):
    """One ViewTrainer step of a tiny QuickNAT (scSE, BatchNorm synchronised because replicas > 1): 2
    replicas x 4 slices end where 1 replica x 8 does - weights, BatchNorm moving statistics, Adam slots
    and loss - with augmentation on (seeded per example, so the global batch is the same) and off."""
    results, out = seg_mirrored
    case_results = results["cases"][case]
    assert case_results["replicas"] == 2 and case_results["single_replicas"] == 1
    assert case_results["augment"] == (case == "augment")
    assert all(case_results["synchronized_bn"]) and not any(case_results["single_synchronized_bn"])
    with np.load(out / f"seg_{case}.npz") as data:
        for name in ("images", "labels"):
            np.testing.assert_array_equal(data[f"batch/mirrored/{name}"], data[f"batch/single/{name}"],
                                          err_msg=f"step 1's global batch ({name}) differs")
    keys, moved = _assert_same_state(out, f"seg_{case}")
    assert {k.split("/")[0] for k in moved} == {"model", "optimizer"}
    # All but a few arrays move: a unit whose ReLU is off for the whole batch gets no gradient.
    assert len(moved) >= 0.95 * len(keys), f"only {len(moved)} of {len(keys)} arrays moved"
    paths = case_results["paths"]["model"]
    statistics = [k for k in keys if k.startswith("model/") and "moving" in paths[int(k.split("/")[1])]]
    assert statistics and set(statistics) <= set(moved), "every BatchNorm moving statistic moves"
    assert case_results["losses"]["mirrored"] == pytest.approx(case_results["losses"]["single"],
                                                               rel=1e-5, abs=1e-6)
    assert case_results["replica_spread"] == 0.0


def test_quicknat_augmented_batch_differs_from_plain(seg_mirrored):
    """The augmentation case really augments: step 1's slices and labels are not the plain ones."""
    _, out = seg_mirrored
    with np.load(out / "seg_augment.npz") as augmented, np.load(out / "seg_plain.npz") as plain:
        assert not np.array_equal(augmented["batch/single/images"], plain["batch/single/images"])
        assert not np.array_equal(augmented["batch/single/labels"], plain["batch/single/labels"])


def test_quicknat_unsynchronized_batchnorm_would_differ(seg_mirrored):
    """Control: the same 2-replica step with per-replica BatchNorm statistics ends elsewhere, so the
    comparison above can fail."""
    results, out = seg_mirrored
    case = results["cases"]["unsynced_bn"]
    assert case["replicas"] == 2 and not any(case["synchronized_bn"])
    with pytest.raises(AssertionError):
        _assert_same_state(out, "seg_unsynced_bn")
    assert case["replica_spread"] > 0


def test_quicknat_dropout_check_ran(seg_mirrored):
    """The dropout checks below ran on QuickNAT's 8 dropout layers (their seed states are variables)."""
    results, _ = seg_mirrored
    assert results["dropout"]["layers"] == 8 and results["dropout"]["seed_states"] == 8


def test_quicknat_dropout_masks_match_one_replica(seg_mirrored):
    """Training-mode forward pass with dropout 0.2, same weights and seed states: 2 replicas on the
    global batch's halves give what 1 replica gives on the whole batch."""
    results, _ = seg_mirrored
    assert results["dropout"]["max_diff_vs_single"] < 1e-6


def test_quicknat_dropout_masks_differ_between_replicas(seg_mirrored):
    """2 replicas fed the SAME 4 slices must still drop different units (independent masks)."""
    results, _ = seg_mirrored
    assert results["dropout"]["same_input_replica_diff"] > 0
