"""The seed's alternating algorithm: real freezing, BatchNorm modes, checkpoints and exact resume."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from gan_seg.engine.run_dir import RunDirectory
from gan_seg.errors import InputError, RunError
from gan_seg.gan.sampling import generate, latent_batch
from gan_seg.gan.trainer import GanTrainer, resume, train
from gan_seg.io.saving import load_model
from tests.helpers import event_tags, make_images, tiny_config


def _trainer(model, **overrides):
    x, y = make_images()
    config = tiny_config(model=model, **overrides)
    classes = 4 if model == "cgan" else None
    return GanTrainer(config, x, y if classes else None, classes, tf.distribute.get_strategy(), "float32")


def _batch(trainer):
    return next(iter(trainer.dataset(0, 1)))


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables, strict=True)]


def _bn_stats(generator):
    return [v for v in generator.non_trainable_variables if "moving" in v.path]


def _all_of_d_moved(trainer, before):
    """Whether every trainable D weight differs from ``before``; under the hinge loss the output bias is
    left out (its gradient is #fakes - #reals within the margin: 0 while every score is inside it)."""
    moved = dict(zip((v.path for v in trainer.discriminator.trainable_variables),
                     _changed(before, trainer.discriminator.trainable_variables), strict=True))
    if trainer.config.loss == "hinge":
        moved.pop(next(path for path in moved if path.startswith("d_dense/") and path.endswith("bias")))
    return all(moved.values())


# Every recipe keeps the seed's structure: D alone on D updates, G alone through the adversarial model.
VARIANTS = {"classic": dict(recipe="classic"), "sn-ema": dict(recipe="sn-ema"),
            "hinge-projection": dict(recipe="sn-ema", loss="hinge", conditioning="projection"),
            "aux-projection": dict(recipe="sn-ema", conditioning="projection", aux_weight=1.0)}
CASES = [(model, variant) for model in ("dcgan", "cgan") for variant in VARIANTS
         if model == "cgan" or "aux" not in variant]


def _head(trainer):
    return trainer.aux_head.trainable_variables if trainer.aux_head is not None else []


@pytest.mark.parametrize(("model", "variant"), CASES)
def test_d_update_trains_only_d(model, variant):
    t = _trainer(model, **VARIANTS[variant])
    batch = _batch(t)
    d0, g0 = _values(t.discriminator.trainable_variables), _values(t.generator.trainable_variables)
    stats0 = _values(_bn_stats(t.generator))
    head0 = _values(_head(t))
    t.d_update(batch, 0)
    assert _all_of_d_moved(t, d0), "every D weight moves on a D update"
    assert all(_changed(head0, _head(t))), "the auxiliary head trains with D"
    assert not any(_changed(g0, t.generator.trainable_variables)), "G's weights stay on a D update"
    # Documented: G makes the fakes in training mode, so its BatchNorm moving statistics move.
    assert all(_changed(stats0, _bn_stats(t.generator)))
    assert t.discriminator.trainable and t.discriminator.trainable_variables


@pytest.mark.parametrize(("model", "variant"), CASES)
def test_g_update_trains_only_g(model, variant):
    t = _trainer(model, **VARIANTS[variant])
    batch = _batch(t)
    d0, g0 = _values(t.discriminator.variables), _values(t.generator.trainable_variables)
    d_opt0, head0 = _values(t.d_optimizer.variables), _values(_head(t))
    t.g_update(batch)
    assert not any(_changed(d0, t.discriminator.variables)), "D is frozen inside the adversarial model"
    assert not any(_changed(head0, _head(t))), "the auxiliary head is frozen in the G update"
    assert not any(_changed(d_opt0, t.d_optimizer.variables))
    assert all(_changed(g0, t.generator.trainable_variables)), "every G weight moves on a G update"
    # Freezing is not done with the shared trainable flag: D still trains on its own afterwards.
    d1 = _values(t.discriminator.trainable_variables)
    t.d_update(batch, 0)
    assert _all_of_d_moved(t, d1)


@pytest.mark.parametrize(("model", "variant"), CASES)
def test_full_step_updates_both_in_one_graph(model, variant):
    t = _trainer(model, d_steps=2, **VARIANTS[variant])
    iterator = iter(t.dataset(0, 2))
    d0, g0 = _values(t.discriminator.trainable_variables), _values(t.generator.trainable_variables)
    metrics = t.step(iterator)
    aux = {"aux_acc_real"} if "aux" in variant else set()
    assert set(metrics) == {"d_loss", "d_acc_real", "d_acc_fake", "g_loss"} | aux
    assert 0 <= metrics["d_acc_real"] <= 1 and np.isfinite(metrics["g_loss"]) and metrics["d_loss"] > 0
    assert _all_of_d_moved(t, d0)
    assert all(_changed(g0, t.generator.trainable_variables))
    assert int(t.d_optimizer.iterations.numpy()) == 2 and int(t.g_optimizer.iterations.numpy()) == 1
    assert t.step(iterator) and t._step.experimental_get_tracing_count() == 1


def test_samples_use_moving_statistics():
    t = _trainer("dcgan")
    iterator = iter(t.dataset(0, 3))
    for _ in range(3):
        t.step(iterator)
    z = latent_batch(8, 8, 0)
    sampled = generate(t.generator, z)
    np.testing.assert_allclose(sampled, t.generator(z, training=False).numpy(), atol=1e-6)
    assert not np.allclose(sampled, t.generator(z, training=True).numpy(), atol=1e-3)


def test_moving_average_follows_g_and_draws_the_samples():
    t = _trainer("cgan", recipe="sn-ema", ema=0.75)
    average0 = _values(t.ema_generator.trainable_weights)
    stats0 = _values(_bn_stats(t.ema_generator))
    for start, weight in zip(average0, t.generator.trainable_weights, strict=True):
        np.testing.assert_array_equal(start, weight.numpy())  # starts as G
    t.step(iter(t.dataset(0, 1)))
    weights = zip(average0, t.ema_generator.trainable_weights, t.generator.trainable_weights, strict=True)
    for before, average, weight in weights:
        expected = 0.75 * before + 0.25 * weight.numpy()
        np.testing.assert_allclose(average.numpy(), expected, rtol=1e-5, atol=1e-6)
    # Its BatchNorm statistics are its own (one training-mode pass per step), not an average of G's.
    assert all(_changed(stats0, _bn_stats(t.ema_generator)))
    assert all(_changed([v.numpy() for v in _bn_stats(t.generator)], _bn_stats(t.ema_generator)))
    assert t.sampler is t.ema_generator and "ema_generator" in t.checkpoint_groups()
    plain = _trainer("cgan", recipe="sn-ema", ema=0.0)
    assert plain.ema_generator is None and plain.sampler is plain.generator


def test_saved_generator_is_the_moving_average(tiny_run):
    generator, metadata = load_model(tiny_run / "generator.keras", "generator")
    assert metadata["ema"] == 0.999 and metadata["recipe"] == "sn-ema"
    _, arrays = _checkpoint_arrays(tiny_run)
    average = [arrays[k] for k in sorted(k for k in arrays if k.startswith("ema_generator/"))]
    raw = [arrays[k] for k in sorted(k for k in arrays if k.startswith("generator/"))]
    for saved, expected in zip(generator.get_weights(), average, strict=True):
        np.testing.assert_array_equal(saved, expected)
    assert any(not np.array_equal(a, b) for a, b in zip(average, raw, strict=True))


def test_recipe_fills_the_options_not_given():
    classic = tiny_config(recipe="classic").checked()
    assert (classic.optimizer, classic.d_learning_rate, classic.g_learning_rate, classic.ema,
            classic.spectral_norm, classic.loss) == ("rmsprop", 2e-4, 1e-4, 0.0, False, "bce")
    mixed = tiny_config(recipe="classic", optimizer="adam", ema=0.9).checked()
    assert (mixed.optimizer, mixed.ema, mixed.beta_1, mixed.spectral_norm) == ("adam", 0.9, 0.9, False)
    assert tiny_config().checked().recipe == "sn-ema"
    with pytest.raises(InputError, match="--recipe 'fancy'"):
        tiny_config(recipe="fancy").checked()
    with pytest.raises(InputError, match="label-smoothing applies to the bce loss only"):
        tiny_config(loss="hinge", label_smoothing=0.1).checked()


def test_label_smoothing_changes_d_targets():
    losses = []
    for smoothing in (0.0, 0.2):
        t = _trainer("dcgan", label_smoothing=smoothing)
        losses.append(float(t.d_update(_batch(t), 0)[0]))
    assert losses[0] != pytest.approx(losses[1])


def test_data_schedule_is_a_function_of_seed_and_step():
    t = _trainer("cgan")
    full = list(t.dataset(0, 5))
    tail = list(t.dataset(3, 5))
    for key in full[3]:
        np.testing.assert_array_equal(full[3][key].numpy(), tail[0][key].numpy())
    assert not np.array_equal(full[0]["real"].numpy(), full[1]["real"].numpy())
    # One epoch (64 images / batch 16 = 4 steps) uses every image exactly once.
    labels = np.concatenate([b["real_labels"].numpy().ravel() for b in full[:4]])
    assert np.bincount(labels).tolist() == [16, 16, 16, 16]


def test_run_directory_contents(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["model"] == "cgan" and config["seed"] == 3
    assert config["class_names"] == ["zero", "one", "two", "three"]
    assert {"keras", "tensorflow", "numpy", "gan_seg", "python"} <= set(config["versions"])
    with open(tiny_run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert {"d_loss", "d_acc_real", "d_acc_fake", "g_loss", "img_per_s"} <= set(rows[0])
    assert sorted(p.name for p in (tiny_run / "samples").iterdir()) == [
        "step_00000002.png", "step_00000004.png"]
    checkpoints = [p.name for p in RunDirectory(tiny_run).checkpoints()]
    assert checkpoints == ["ckpt-00000002.npz", "ckpt-00000004.npz"]
    assert (tiny_run / "generator.keras").is_file() and (tiny_run / "discriminator.keras").is_file()
    assert (tiny_run / "loss_curves.png").is_file()
    assert not list(tiny_run.rglob("*.tmp*"))


def test_short_run_always_leaves_outputs(tmp_path, tiny_npz):
    out = tmp_path / "run"
    train(tiny_config(data=str(tiny_npz), steps=3, checkpoint_every=500, sample_every=500,
                          log_every=10), out, progress=False)
    assert [p.name for p in RunDirectory(out).checkpoints()] == ["ckpt-00000003.npz"]
    assert [p.name for p in (out / "samples").iterdir()] == ["step_00000003.png"]
    assert (out / "metrics.csv").read_text().count("\n") == 2


def test_run_refuses_non_empty_out(tmp_path, tiny_npz):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="not empty"):
        train(tiny_config(data=str(tiny_npz)), tmp_path, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_cgan_needs_labels(tmp_path):
    x, _ = make_images()
    np.savez(tmp_path / "nolabels.npz", x=x)
    with pytest.raises(InputError, match="needs class labels"):
        train(tiny_config(data=str(tmp_path / "nolabels.npz")), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_invalid_options_reported_together():
    with pytest.raises(InputError) as err:
        tiny_config(steps=0, batch_size=-1, label_smoothing=0.7).checked()
    for option in ("steps", "batch-size", "label-smoothing"):
        assert option in str(err.value)


@pytest.mark.parametrize("overrides", [dict(model="dcgan", aux_weight=1.0),
                                       dict(model="cgan", conditioning="concat", aux_weight=1.0),
                                       dict(model="cgan", conditioning="projection", aux_weight=-1.0)])
def test_auxiliary_head_needs_a_projection_cgan(overrides):
    with pytest.raises(InputError, match="aux-weight"):
        tiny_config(**overrides).checked()


def _checkpoint_arrays(run):
    step, path = RunDirectory(run).latest_checkpoint()
    with np.load(path) as data:
        return step, {k: data[k] for k in data.files if k != "__meta__"}


def _losses(run):
    with open(run / "metrics.csv") as f:
        return np.array([(r["step"], r["d_loss"], r["g_loss"]) for r in csv.DictReader(f)], float)


def _grids(run):
    return sorted(p.name for p in (run / "samples").iterdir())


def test_interrupted_resume_is_exact(tmp_path, tiny_npz, monkeypatch):
    """A run killed at step 5 (last checkpoint 4) and resumed to 7 equals an uninterrupted run to 7."""
    options = dict(data=str(tiny_npz), steps=7, deterministic=True)
    straight = tmp_path / "straight"
    train(tiny_config(**options), straight, progress=False)

    interrupted = tmp_path / "interrupted"
    calls = {"n": 0}
    original = GanTrainer.step

    def dying_step(self, iterator):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # killed during step 6; step 5 was logged, not checkpointed
        return original(self, iterator)

    monkeypatch.setattr(GanTrainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(**options), interrupted, progress=False)
    monkeypatch.setattr(GanTrainer, "step", original)
    assert RunDirectory(interrupted).latest_checkpoint()[0] == 4
    with pytest.raises(InputError, match="not above"):
        resume(interrupted, 4, progress=False)
    resume(interrupted, 7, progress=False)

    step_a, a = _checkpoint_arrays(straight)
    step_b, b = _checkpoint_arrays(interrupted)
    assert step_a == step_b == 7 and a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    logged, expected = _losses(interrupted), _losses(straight)
    assert logged[:, 0].tolist() == list(range(1, 8))
    np.testing.assert_allclose(logged, expected, rtol=1e-4)
    grids = [f"step_{s:08d}.png" for s in (2, 4, 6, 7)]
    assert _grids(interrupted) == _grids(straight) == grids
    record = json.loads((interrupted / "config.json").read_text())
    assert record["resumes"][0]["from_step"] == 4 and record["steps"] == 7


def test_non_finite_loss_is_a_run_error(tmp_path, tiny_npz, monkeypatch):
    monkeypatch.setattr(GanTrainer, "step", lambda self, it: {"d_loss": float("nan"), "g_loss": 1.0})
    with pytest.raises(RunError, match="diverged at step 1"):
        train(tiny_config(data=str(tiny_npz)), tmp_path / "run", progress=False)


def test_tensorboard_shows_losses_accuracies_speed_and_sample_grids(tiny_run):
    tags = event_tags(tiny_run / "logs")
    for name in ("d_loss", "g_loss", "d_acc_real", "d_acc_fake", "img_per_s"):
        assert tags[name] == ("scalars", 4), name  # log_every=1, 4 steps
    assert tags["samples"] == ("images", 2)  # sample_every=2: steps 2 and 4
