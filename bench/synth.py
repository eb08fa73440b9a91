"""Benchmark: synthetic training data (gan_seg.seg.synth) -- generator throughput against the QuickNAT
training step, and a PNG grid of samples.

    python bench/synth.py --data /work/data/brains2                          # JSON lines, ch2, 1 + 1.5 mm
    python bench/synth.py --data DIR --voxel-size 1.5 --filters 16 --steps 6
    python bench/synth.py --data DIR --png bench/synth_samples.png --no-timing

One JSON line per measurement:

- ``generator``: volumes of one kind (``synthetic`` / ``real``) generated and cut into ``--synth-slices``
  slices one after another in this process (one core's worth): volumes/s and slices/s;
- ``step``: the QuickNAT training step on a constant batch of ``--batch-size`` generated slices of
  ``--view`` (no input pipeline): slices/s;
- ``pipeline``: the same step fed by the trainer's synthetic tf.data pipeline (generation in parallel
  with the step, as in training): slices/s;
- ``ratio``: per step, the generator's CPU seconds (volumes per step = batch / synth slices, mixed at
  ``--synth-share``) over the step's CPU seconds, and the pipeline's speed over the step's (wall clock).

Each line has wall-clock seconds and this process's CPU seconds (``time.process_time``, all threads): on
a shared machine the CPU seconds are the steadier measure of what each part costs. The first
``--warmup`` steps (tracing) are excluded; the 1-minute load average is reported with each line.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from gan_seg.engine.backend import resolve_precision  # noqa: E402
from gan_seg.seg.config import SegConfig  # noqa: E402
from gan_seg.seg.qc import label_colors  # noqa: E402
from gan_seg.seg.synth import SliceStream, Synthesizer  # noqa: E402
from gan_seg.seg.trainer import ViewTrainer, _load_volumes, synthesis_shape  # noqa: E402
from gan_seg.seg.views import VIEW_AXIS  # noqa: E402


def _load(data, voxel_size):
    """``(volumes, class_names, sources)`` of the data set at ``voxel_size`` (generation labels read)."""
    return _load_volumes(SegConfig(data=str(data), voxel_size=voxel_size, synth_share=1.0), with_sources=True)


def _line(record):
    record["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(record), flush=True)
    return record


def measure_generator(synthesizer, view, count, share, volumes, voxel_size, seed=0):
    stream = SliceStream(synthesizer, view, count, share, seed)
    stream(10_000)  # first call: page in, warm caches
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(volumes):
        stream(k)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return _line({"what": "generator", "kind": "synthetic" if share == 1 else "real",
                  "voxel_size": voxel_size, "shape": list(synthesizer.shape), "volumes": volumes,
                  "seconds": round(seconds, 2), "volumes_per_s": round(volumes / seconds, 3),
                  "slices_per_s": round(volumes * count / seconds, 2),
                  "s_per_volume": round(seconds / volumes, 3), "cpu_s_per_volume": round(cpu / volumes, 3)})


def _trainer(config, view, class_names, stream, precision, steps):
    images, labels = stream(20_000)
    train = (images[:config.batch_size], labels[:config.batch_size])
    return ViewTrainer(config, view, class_names, train, train, tf.distribute.get_strategy(), precision,
                       steps, stream), train


def _timed_steps(trainer, iterator, steps, warmup):
    for _ in range(warmup):
        trainer.step(iterator)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.step(iterator)
    return time.perf_counter() - start, time.process_time() - cpu


def measure_step(config, view, class_names, stream, precision, steps, warmup, voxel_size):
    trainer, (images, labels) = _trainer(config, view, class_names, stream, precision, steps + warmup)
    batch = tf.data.Dataset.from_tensors((images[..., None], labels.astype(np.int32))).repeat()
    common = {"filters": config.filters, "batch_size": config.batch_size, "view": view,
              "voxel_size": voxel_size, "slice_shape": list(images.shape[1:]), "precision": precision,
              "steps": steps}
    lines = []
    for what, dataset in (("step", trainer.strategy.experimental_distribute_dataset(batch)),
                          ("pipeline", trainer.dataset(0, steps + warmup))):
        seconds, cpu = _timed_steps(trainer, iter(dataset), steps, warmup)
        extra = {"synth_share": stream.share, "synth_slices": stream.count} if what == "pipeline" else {}
        lines.append(_line({"what": what, **common, **extra, "s_per_step": round(seconds / steps, 3),
                            "cpu_s_per_step": round(cpu / steps, 3),
                            "slices_per_s": round(steps * config.batch_size / seconds, 2)}))
    return lines


def samples_png(path, synthesizer, class_names, subjects, rows, seed, panel=112):
    """``rows`` samples (synthetic, with a real one every fourth row): the three views, each as the image
    and the image with its target labels."""
    colours = label_colors(class_names).astype(np.float64)
    tiles, captions = [], []
    for row in range(rows):
        details = {}
        synthetic = row % 4 != 3
        image, target = synthesizer.volume(np.random.default_rng([seed, row]), synthetic, details=details)
        found = np.argwhere(target > 0)
        centre = ((found.min(0) + found.max(0)) // 2) if found.size else np.array(target.shape) // 2
        cells = []
        for view in ("axial", "coronal", "sagittal"):
            axis = VIEW_AXIS[view]
            grey = np.take(image, centre[axis], axis=axis).T[::-1]
            labels = np.take(target, centre[axis], axis=axis).T[::-1]
            rgb = np.repeat(grey[..., None] * 255.0, 3, axis=2)
            overlay = rgb.copy()
            mask = labels > 0
            overlay[mask] = 0.45 * overlay[mask] + 0.55 * colours[labels[mask]]
            for picture in (rgb, overlay):
                tile = Image.fromarray(np.rint(picture).astype(np.uint8))
                tile.thumbnail((panel, panel), Image.Resampling.LANCZOS)
                box = Image.new("RGB", (panel, panel))
                box.paste(tile, ((panel - tile.width) // 2, (panel - tile.height) // 2))
                cells.append(box)
        tiles.append(cells)
        spacing = "x".join(f"{v:g}" for v in details["spacing"])
        captions.append(f"{'synthetic' if synthetic else 'real'} from {subjects[details['subject']]}, "
                        f"{spacing} mm{', mirrored' if details['flip'] else ''}"
                        f"{', skull-stripped' if details['strip'] else ''}")
    caption_h = 14
    canvas = Image.new("RGB", (6 * panel, rows * (panel + caption_h)))
    draw = ImageDraw.Draw(canvas)
    for r, (cells, caption) in enumerate(zip(tiles, captions, strict=True)):
        y = r * (panel + caption_h)
        draw.text((4, y + 1), caption + "   (axial | coronal | sagittal: image, labels)", fill=(255, 255, 0))
        for c, cell in enumerate(cells):
            canvas.paste(cell, (c * panel, y + caption_h))
    canvas = canvas.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    canvas.save(path, optimize=True)
    return _line({"what": "png", "path": str(path), "bytes": os.path.getsize(path), "rows": rows})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True,
                        help="data set with generation/ (scripts/make_brain_dataset.py)")
    parser.add_argument("--subject", default="ch2")
    parser.add_argument("--voxel-size", type=float, action="append")
    parser.add_argument("--volumes", type=int, default=4)
    parser.add_argument("--synth-slices", type=int, default=16)
    parser.add_argument("--synth-share", type=float, default=0.8, help="the pipeline measurement's share")
    parser.add_argument("--filters", type=int, action="append")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--view", default="axial", choices=list(VIEW_AXIS))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--png", help="write a grid of samples here (1 mm, every subject)")
    parser.add_argument("--rows", type=int, default=8)
    args = parser.parse_args()
    precision = resolve_precision(args.precision)
    if args.png:
        volumes, class_names, sources = _load(args.data, 1.0)
        subjects = [sources[v[0]] for v in volumes]
        synthesizer = Synthesizer(subjects, class_names, 1.0, synthesis_shape(volumes, subjects))
        samples_png(args.png, synthesizer, class_names, [v[0] for v in volumes], args.rows, seed=1)
    if args.no_timing:
        return
    for voxel_size in args.voxel_size or [1.0, 1.5]:
        volumes, class_names, sources = _load(args.data, voxel_size)
        shape = synthesis_shape(volumes, list(sources.values()))
        synthesizer = Synthesizer([sources[args.subject]], class_names, voxel_size, shape)
        generated = {}
        for share in (1.0, 0.0):
            generated[share] = measure_generator(synthesizer, args.view, args.synth_slices, share,
                                                 args.volumes, voxel_size)
        share = args.synth_share
        mixed = share * generated[1.0]["cpu_s_per_volume"] + (1 - share) * generated[0.0]["cpu_s_per_volume"]
        for filters in args.filters or [16, 32]:
            config = SegConfig(data=args.data, filters=filters, batch_size=args.batch_size,
                               views=(args.view,), voxel_size=voxel_size, synth_share=args.synth_share,
                               synth_slices=args.synth_slices, precision=precision)
            stream = SliceStream(synthesizer, args.view, args.synth_slices, args.synth_share, 0)
            constant, fed = measure_step(config, args.view, class_names, stream, precision, args.steps,
                                         args.warmup, voxel_size)
            generator_cpu = mixed * args.batch_size / args.synth_slices
            _line({"what": "ratio", "filters": filters, "voxel_size": voxel_size, "synth_share": share,
                   "generator_cpu_s_per_step": round(generator_cpu, 3),
                   "step_cpu_s": constant["cpu_s_per_step"],
                   "generator_over_step_cpu": round(generator_cpu / constant["cpu_s_per_step"], 3),
                   "pipeline_over_step_cpu": round(fed["cpu_s_per_step"] / constant["cpu_s_per_step"], 3),
                   "pipeline_over_constant_speed": round(fed["slices_per_s"] / constant["slices_per_s"], 3)})


if __name__ == "__main__":
    main()
