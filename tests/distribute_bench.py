"""Throughput of the default DCGAN step: 1 replica vs the CPU split into N logical devices (MirroredStrategy).

Not a test. ``python tests/distribute_bench.py`` runs every configuration in its own subprocess (logical
devices are fixed when TensorFlow starts) and prints a table of real images per second (global batch x
d_steps per step, the library's own ``img_per_s`` definition) over ``--steps`` steps after ``--warmup``,
with the process CPU time per step (less sensitive than wall time to other jobs on the machine) and the
1-minute load average when the configuration finished.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = Path(__file__).resolve().parents[1]


def measure(devices, precision, steps, warmup, batch_size, data):
    """Images per second of ``steps`` GanTrainer steps (one process, one configuration)."""
    sys.path.insert(0, str(ROOT))
    from gan_seg.training.distribute import make_strategy

    strategy, _ = make_strategy("mirrored" if devices else "none", devices)
    import numpy as np
    import tensorflow as tf

    from gan_seg.data.images import load_image_data
    from gan_seg.training.gan import GanConfig, GanTrainer

    tf.get_logger().setLevel("ERROR")
    if data:
        x = load_image_data(data).x
    else:
        x = np.random.default_rng(0).integers(0, 256, (6400, 28, 28, 1), dtype=np.uint8)
    config = GanConfig(model="dcgan", batch_size=batch_size, latent_dim=100, precision=precision,
                       strategy="mirrored" if devices else "none", devices=devices)
    trainer = GanTrainer(config, x, None, None, strategy, precision)
    iterator = iter(trainer.dataset(0, warmup + steps))
    for _ in range(warmup):
        trainer.step(iterator)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.step(iterator)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"devices": devices or "-", "replicas": strategy.num_replicas_in_sync, "precision": precision,
            "img_per_s": batch_size * config.d_steps * steps / seconds, "s_per_step": seconds / steps,
            "cpu_s_per_step": cpu_seconds / steps}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="measure each configuration this often")
    parser.add_argument("--data", default="", help="e.g. fashion-mnist (default: random 28x28x1 images)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: "DEVICES,PRECISION" in this process
    args = parser.parse_args()
    if args.one:
        devices, precision = args.one.split(",")
        print(json.dumps(measure(devices or None, precision, args.steps, args.warmup, args.batch_size,
                                 args.data)))
        return
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, {os.cpu_count()} CPUs, "
          f"batch {args.batch_size}, {args.steps} steps after {args.warmup} warm-up")
    print(f"{'precision':<16}{'devices':<9}{'replicas':>9}{'img/s':>10}{'s/step':>9}{'cpu-s/step':>12}"
          f"{'load':>6}")
    for _ in range(args.repeat):
        for precision in ("float32", "mixed_bfloat16"):
            for devices in ("", f"cpu:{args.replicas}"):
                cmd = [sys.executable, __file__, "--one", f"{devices},{precision}",
                       "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--batch-size", str(args.batch_size), "--data", args.data]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{r['precision']:<16}{r['devices']:<9}{r['replicas']:>9}{r['img_per_s']:>10.1f}"
                      f"{r['s_per_step']:>9.3f}{r['cpu_s_per_step']:>12.3f}{os.getloadavg()[0]:>6.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
