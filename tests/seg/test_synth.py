"""Training data synthesised from label maps (gan_seg.seg.synth) and the trainer's synthetic path."""

import json

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from gan_seg.engine.options import flag_of, flagged_fields
from gan_seg.engine.run_dir import RunDirectory
from gan_seg.errors import InputError
from gan_seg.seg import synth
from gan_seg.seg.config import SegConfig
from gan_seg.seg.trainer import (
    ViewTrainer,
    _load_volumes,
    resume,
    synthesis_shape,
    synthetic_dataset_fn,
    train,
)
from gan_seg.seg.views import VIEW_AXIS
from tests.helpers import PHANTOM_CLASSES, make_phantom, write_phantom_dataset

K = len(PHANTOM_CLASSES)  # 4 target classes; generation label 4 = the phantom's head outside the blobs
SHELL = K


def _phantom_source(seed=0, shell=True):
    image, labels, _ = make_phantom(seed=seed)
    generation = labels.copy()
    if shell:
        generation[(labels == 0) & (image > 75)] = SHELL
    image = (image / image.max()).astype(np.float32)
    return synth.Source(generation, image, synth.foreground_centre(generation))


def _synthesizer(**params):
    sources = [_phantom_source(0), _phantom_source(1)]
    return synth.Synthesizer(sources, PHANTOM_CLASSES, 1.0, (48, 64, 48), synth.SynthParams(**params))


def _with_generation(root, count=2):
    """A phantom data set with generation/: the head outside the blobs is extra class 4."""
    data = write_phantom_dataset(root, count)
    (data / "generation").mkdir()
    for path in sorted((data / "labels").iterdir()):
        labels_img = nib.load(path)
        labels = np.asarray(labels_img.dataobj)
        image = np.asarray(nib.load(data / "images" / path.name).dataobj)
        generation = np.where(labels > 0, labels, np.where(image > 75, SHELL, 0)).astype(np.uint8)
        nib.save(nib.Nifti1Image(generation, labels_img.affine), data / "generation" / path.name)
    return data


# -- the generator -------------------------------------------------------------------------------------
def test_volumes_are_seeded_shaped_and_in_range():
    generator = _synthesizer()
    for synthetic in (True, False):
        a_img, a_lab = generator.volume(np.random.default_rng(5), synthetic)
        b_img, b_lab = generator.volume(np.random.default_rng(5), synthetic)
        c_img, c_lab = generator.volume(np.random.default_rng(6), synthetic)
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_lab, b_lab)
        assert not np.array_equal(a_img, c_img) and not np.array_equal(a_lab, c_lab)
        assert a_img.shape == a_lab.shape == (48, 64, 48)
        assert a_img.dtype == np.float32 and a_lab.dtype == np.uint8
        assert 0.0 <= a_img.min() and a_img.max() <= 1.0 and a_img.max() > 0.5
    seen = set()
    for seed in range(12):
        image, target = generator.volume(np.random.default_rng(seed), seed % 2 == 0)
        seen |= set(np.unique(target).tolist())
        assert np.isfinite(image).all()
    assert seen == set(range(K)), seen  # the shell (generation label 4) never reaches the target


def test_identity_warp_gives_the_input_back_exactly():
    labels = np.random.default_rng(0).integers(0, 30, (20, 24, 18)).astype(np.uint8)
    coords = synth.coordinates(synth.Transform.identity(), labels.shape)
    np.testing.assert_array_equal(synth.warp(labels, coords, 0), labels)
    zero_field = synth.Transform(np.eye(3), np.zeros(3), np.zeros((3, 3, 3, 3), np.float32))
    np.testing.assert_array_equal(synth.warp(labels, synth.coordinates(zero_field, labels.shape), 0), labels)
    shifted = synth.Transform(np.eye(3), np.array([2.0, 0.0, 0.0]))
    np.testing.assert_array_equal(synth.warp(labels, synth.coordinates(shifted, labels.shape), 0)[:-2],
                                  labels[2:])


def test_rotation_keeps_class_volumes():
    _, labels, _ = make_phantom(shape=(64, 72, 64))
    centre = (np.array(labels.shape) - 1) / 2
    for angles in ((0.0, 0.0, 20.0), (20.0, -15.0, 10.0)):
        matrix = synth._rotation(np.deg2rad(angles))
        transform = synth.Transform(matrix, centre - matrix @ centre)
        rotated = synth.warp(labels, synth.coordinates(transform, labels.shape), 0)
        before, after = np.bincount(labels.ravel(), minlength=K), np.bincount(rotated.ravel(), minlength=K)
        np.testing.assert_allclose(after[1:], before[1:], rtol=0.03)
        assert not np.array_equal(rotated, labels)


def test_random_transforms_stay_in_their_ranges():
    params = synth.SynthParams()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        transform = synth.random_transform(rng, params, (40, 40, 40), np.full(3, 19.5), 1.0, elastic=False)
        forward = np.linalg.inv(transform.matrix)
        scales = np.sqrt(np.linalg.eigvalsh(forward.T @ forward))
        assert 0.84 < scales.min() and scales.max() < 1.16
        centre_to = forward @ (np.full(3, 19.5) - transform.offset)
        assert np.abs(centre_to - 19.5).max() <= 8.0 + 1e-9  # translation +-8 mm at 1 mm voxels


def test_left_right_mirror_swaps_the_sides():
    generator = _synthesizer(flip=1.0, strip=0.0)
    generator.sources = generator.sources[:1]
    for synthetic in (False, True):
        image, target = generator.volume(np.random.default_rng(2), synthetic)
        x = np.indices(target.shape)[0]
        assert x[target == 1].mean() < x[target == 2].mean()  # Left-Blob still on the left (x < centre)
    # the real phantom's left blob is the brighter one: mirrored, it is now the right blob
    image, target = generator.volume(np.random.default_rng(2), synthetic=False)
    assert image[target == 2].mean() > image[target == 1].mean()
    assert synth.lr_swap(PHANTOM_CLASSES).tolist() == [0, 2, 1, 3]


def test_skull_stripped_samples_lose_the_shell():
    source = _phantom_source(0)
    clean = np.where(source.generation > 0, source.image, 0.0)  # no noise outside the head
    source = synth.Source(source.generation, clean, source.centre)
    native = synth.SynthParams(native_resolution=1.0, isotropic_resolution=0.0)  # no blur across the edge
    for seed in range(3):
        images = {}
        for strip in (0.0, 1.0):  # the same draws apart from the stripping
            params = synth.SynthParams(**{**native.__dict__, "strip": strip})
            generator = synth.Synthesizer([source], PHANTOM_CLASSES, 1.0, (48, 64, 48), params)
            images[strip], target = generator.volume(np.random.default_rng(seed), synthetic=False)
        shell = (target == 0) & (images[0.0] > 0.1)
        assert shell.sum() > 2000 and np.median(images[1.0][shell]) < 0.04, np.median(images[1.0][shell])
        assert np.median(images[1.0][target > 0]) > 0.3


def test_resolution_simulation_blurs_along_the_thick_axis():
    noise = np.random.default_rng(0).standard_normal((48, 48, 64)).astype(np.float32)

    def lag_one(volume, axis):
        a = np.moveaxis(volume, axis, 0)
        a = a - a.mean()
        return float((a[1:] * a[:-1]).mean() / (a * a).mean())

    thick = synth.simulate_resolution(noise, (1.0, 1.0, 4.0), 4.0, 1.0, native_sigma=0.0)
    assert thick.shape == noise.shape and thick.dtype == np.float32
    assert lag_one(thick, 2) > 0.85, lag_one(thick, 2)
    assert abs(lag_one(thick, 0)) < 0.05 and abs(lag_one(thick, 1)) < 0.05
    iso = synth.simulate_resolution(noise, (2.0, 2.0, 2.0), 2.0, 1.0)
    assert min(lag_one(iso, axis) for axis in range(3)) > 0.6
    native = synth.simulate_resolution(noise, (1.0, 1.0, 1.0), 1.0, 1.0, native_sigma=0.0)
    np.testing.assert_array_equal(native, noise)
    # a coarse axis at 1.5 mm voxels: 6 mm slices blur less in voxels than at 1 mm
    coarse = synth.simulate_resolution(noise, (1.5, 1.5, 6.0), 6.0, 1.5, native_sigma=0.0)
    assert 0.7 < lag_one(coarse, 2) < lag_one(synth.simulate_resolution(noise, (1, 1, 6.0), 6.0, 1.0, 0.0), 2)


def test_resolution_draws_cover_native_isotropic_and_thick():
    params = synth.SynthParams()
    kinds = set()
    for seed in range(200):
        spacing, thickness = synth.draw_resolution(np.random.default_rng(seed), params, 1.0)
        assert np.all(spacing >= 1.0) and np.all(thickness <= spacing + 1e-9) and np.all(thickness >= 1.0)
        coarse = int(np.sum(spacing > 1.0))
        kinds.add("native" if coarse == 0 else "thick" if coarse == 1 else "iso")
        assert spacing.max() <= (6.0 if coarse == 1 else 4.0)
    assert kinds == {"native", "thick", "iso"}


def test_normalise_maps_the_head_percentiles_to_unit_range():
    rng = np.random.default_rng(0)
    volume = np.zeros((40, 40, 40), np.float32)
    volume[8:32, 8:32, 8:32] = rng.uniform(100, 200, (24, 24, 24))
    out = synth.normalise(volume.copy())
    assert out.min() == 0.0 and out.max() == 1.0
    inside = out[8:32, 8:32, 8:32]
    assert 0.004 < (inside == 0).mean() < 0.006 and 0.004 < (inside == 1).mean() < 0.006
    np.testing.assert_allclose(synth.normalise(3.0 * volume + 50.0), out, atol=1e-5)


def test_slices_are_drawn_from_the_foreground_and_mapped():
    generator = _synthesizer()
    merged = np.array([0, 1, 1, 2])
    stream = synth.SliceStream(generator, "sagittal", 6, 0.5, seed=3, label_map=merged)
    images, labels = stream(7)
    again_images, again_labels = stream(7)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(labels, again_labels)
    assert not np.array_equal(stream(8)[0], images)
    assert images.shape == labels.shape == (6, 64, 48) == (6, *stream.slice_shape)
    assert labels.max() <= 2 and all((s > 0).mean() > 0.01 for s in labels)
    assert len({s.tobytes() for s in images}) == 6  # without replacement
    image, target = np.zeros((4, 5, 6), np.float32), np.zeros((4, 5, 6), np.uint8)
    target[:, :, 2] = 1
    picked, picked_labels = synth.cut_slices(image, target, "axial", 3, np.random.default_rng(0))
    assert picked.shape == (3, 4, 5) and (picked_labels == 1).all()  # only the one labelled slice


# -- data ----------------------------------------------------------------------------------------------
def test_generation_labels_are_read_and_checked(tmp_path):
    data = _with_generation(tmp_path / "data")
    config = SegConfig(data=str(data), synth_share=1.0)
    volumes, names, sources = _load_volumes(config, with_sources=True)
    assert names == PHANTOM_CLASSES and set(sources) == {"p0", "p1"}
    for name, image, labels in volumes:
        generation = sources[name].generation
        assert generation.dtype == np.uint8 and SHELL in generation
        assert all(a >= b for a, b in zip(generation.shape, image.shape, strict=True))
        assert np.bincount(generation.ravel(), minlength=5)[1:K].tolist() == \
            np.bincount(labels.ravel(), minlength=K)[1:].tolist()
    without = _load_volumes(SegConfig(data=str(write_phantom_dataset(tmp_path / "plain", 2))), True)[2]
    assert SHELL not in without["p0"].generation

    broken = nib.load(data / "generation" / "p1.nii.gz")
    values = np.asarray(broken.dataobj).copy()
    values[values == 1] = 2  # a target class that disagrees with the labels
    nib.save(nib.Nifti1Image(values, broken.affine), data / "generation" / "p1.nii.gz")
    with pytest.raises(InputError) as err:
        _load_volumes(config, with_sources=True)
    assert "p1" in str(err.value) and "disagree" in str(err.value) and "\n" not in str(err.value)
    (data / "generation" / "p1.nii.gz").unlink()
    with pytest.raises(InputError, match="no generation labels for p1"):
        _load_volumes(config, with_sources=True)


def test_synthesis_source_keeps_a_borrowed_head():
    image, labels, affine = make_phantom()
    conformed = np.zeros((32, 32, 32), np.float32)  # a box around the blobs only
    conformed_affine = affine.copy()
    conformed_affine[:3, 3] = affine[:3, 3] + 6
    generation = np.where(labels > 0, labels, np.where(image > 75, SHELL, 0)).astype(np.uint8)
    source = synth.synthesis_source(conformed, conformed_affine, generation, affine)
    assert np.bincount(source.generation.ravel(), minlength=5)[SHELL] == np.sum(generation == SHELL)
    assert source.image.shape == source.generation.shape and source.image.sum() == 0


def test_config_options_and_checks():
    flags = [flag_of(f) for f in flagged_fields(SegConfig)]
    assert "--synth-share" in flags and "--synth-slices" in flags
    assert SegConfig().synth_share == 0
    for bad in (dict(synth_share=1.5), dict(synth_share=-0.1), dict(synth_slices=0), dict(synth_share="x")):
        with pytest.raises(InputError, match="synth"):
            SegConfig(data="d", **bad).checked()
    SegConfig(data="d", synth_share=1, synth_slices=4).checked()


# -- the tf.data pipeline ------------------------------------------------------------------------------
class _Recorder:
    """A cheap slice stream whose slices encode (volume, slice); it records the volumes it generated."""

    count, slice_shape = 3, (2, 2)

    def __init__(self):
        self.generated = []

    def __call__(self, k):
        self.generated.append(int(k))
        images = np.stack([np.full(self.slice_shape, 10.0 * int(k) + j, np.float32) for j in range(3)])
        return images, np.full((3, *self.slice_shape), int(k) % 7, np.uint8)


def _global_batches(pipelines, replicas, start, total, batch=8):
    """Every step's global batch (values) as the pipelines feed it, replicas in order."""
    per_pipeline, streams = [], []
    for pipeline in range(pipelines):
        stream = _Recorder()
        context = tf.distribute.InputContext(pipelines, pipeline, replicas)
        elements = list(synthetic_dataset_fn(stream, batch, start, total)(context))
        per_pipeline.append([np.asarray(images)[:, 0, 0, 0] for images, _ in elements])
        streams.append(stream)
    local = replicas // pipelines
    steps = []
    for step in range(total - start):
        steps.append(np.concatenate([per_pipeline[p][step * local + r] for p in range(pipelines)
                                     for r in range(local)]))
    return np.stack(steps), streams


def test_pipeline_rows_do_not_depend_on_the_replica_layout():
    single, (stream,) = _global_batches(1, 1, 0, 7)
    # step s, row r: slice s % 3 of volume (s // 3) * 8 + r
    expected = np.array([[10.0 * ((s // 3) * 8 + r) + s % 3 for r in range(8)] for s in range(7)])
    np.testing.assert_array_equal(single, expected)
    assert sorted(stream.generated) == list(range(24))  # each volume once (in parallel)
    mirrored, _ = _global_batches(1, 2, 0, 7)
    np.testing.assert_array_equal(mirrored, single)
    workers, streams = _global_batches(2, 4, 0, 7)
    np.testing.assert_array_equal(workers, single)
    assert sorted(streams[0].generated) == [b * 8 + r for b in range(3) for r in range(4)]
    assert sorted(streams[1].generated) == [b * 8 + r for b in range(3) for r in range(4, 8)]
    resumed, _ = _global_batches(2, 4, 4, 7)
    np.testing.assert_array_equal(resumed, single[4:])


# -- the trainer -----------------------------------------------------------------------------------------
def _config(data, **overrides):
    options = dict(data=str(data), views=("axial",), filters=4, kernel_size=3, epochs=2, batch_size=8,
                   learning_rate=3e-3, lr_step_epochs=100, val_fraction=0.25, precision="float32",
                   strategy="none", log_every=2, synth_share=0.5, synth_slices=3)
    options.update(overrides)
    return SegConfig(**options)


def _checkpoint(run, view="axial"):
    step, path = RunDirectory(run / view).latest_checkpoint()
    with np.load(path) as arrays:
        return step, {key: arrays[key] for key in arrays.files if key != "__meta__"}


@pytest.mark.slow
def test_synthetic_training_trains_and_records(tmp_path):
    data = _with_generation(tmp_path / "data")
    run = train(_config(data, views=("axial", "sagittal"), epochs=1), tmp_path / "run", progress=False)
    record = json.loads((run / "config.json").read_text())
    assert record["synth_share"] == 0.5 and record["synth_slices"] == 3
    synthesis = record["resolved"]["synthesis"]
    assert synthesis["extra_labels"] == [SHELL] and synthesis["generation_labels"] is True
    assert synthesis["subjects"] == ["p0", "p1"] and len(synthesis["shape"]) == 3
    for view in ("axial", "sagittal"):
        rows = (run / view / "train.csv").read_text().splitlines()
        assert len(rows) > 1 and (run / view / "model.keras").is_file()
        losses = [float(row.split(",")[2]) for row in rows[1:]]
        assert all(np.isfinite(losses))


@pytest.mark.slow
def test_interrupted_synthetic_run_resumes_exactly(tmp_path, monkeypatch):
    data = _with_generation(tmp_path / "data")
    options = dict(deterministic=True)
    straight = train(_config(data, **options), tmp_path / "straight", progress=False)
    original, calls = ViewTrainer.step, {"n": 0}

    def dying(self, iterator):
        calls["n"] += 1
        if calls["n"] == self.steps_per_epoch + 2:  # killed in epoch 2, after epoch 1's checkpoint
            raise KeyboardInterrupt
        return original(self, iterator)

    monkeypatch.setattr(ViewTrainer, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(_config(data, **options), tmp_path / "cut", progress=False)
    monkeypatch.setattr(ViewTrainer, "step", original)
    first = RunDirectory(tmp_path / "cut" / "axial").latest_checkpoint()[0]
    assert 0 < first < calls["n"]
    resume(tmp_path / "cut", progress=False)
    step_a, a = _checkpoint(straight)
    step_b, b = _checkpoint(tmp_path / "cut")
    assert step_a == step_b
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # and the synthetic data mattered: a run with another seed ends elsewhere
    other = train(_config(data, seed=1, **options), tmp_path / "other", progress=False)
    _, c = _checkpoint(other)
    assert any(not np.allclose(a[key], c[key]) for key in a)


@pytest.mark.slow
def test_share_zero_is_the_real_slice_path(tmp_path):
    """synth_share 0 reads no generation labels (a broken generation/ changes nothing) and trains exactly
    like a data set without them; a positive share reads them (and refuses the broken file)."""
    plain = write_phantom_dataset(tmp_path / "plain", 2)
    data = _with_generation(tmp_path / "data")
    (data / "generation" / "p0.nii.gz").write_bytes(b"not a volume")
    options = dict(synth_share=0.0, epochs=1, augment=True)
    a = train(_config(plain, **options), tmp_path / "a", progress=False)
    b = train(_config(data, **options, synth_slices=5), tmp_path / "b", progress=False)
    (step_a, arrays_a), (step_b, arrays_b) = _checkpoint(a), _checkpoint(b)
    assert step_a == step_b
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)
    with pytest.raises(InputError, match="unreadable"):
        train(_config(data, epochs=1), tmp_path / "c", progress=False)


def test_synthesis_shape_holds_every_volume_and_source():
    volumes = [("a", np.zeros((48, 64, 32)), None), ("b", np.zeros((32, 80, 48)), None)]
    shape = synthesis_shape(volumes)
    assert shape == (48, 80, 48)
    for view, axis in VIEW_AXIS.items():  # the real training slices' size (view_size) in every view
        sizes = np.max([np.delete(np.array(v[1].shape), axis) for v in volumes], axis=0)
        assert tuple(np.delete(np.array(shape), axis)) == tuple(sizes), view
    head = np.zeros((90, 60, 60), np.uint8)
    head[5:76, 10:20, 10:20] = 1  # a borrowed head 71 voxels long
    source = synth.Source(head, np.zeros(head.shape, np.float32), synth.foreground_centre(head))
    assert synthesis_shape(volumes, [source]) == (80, 80, 48)
