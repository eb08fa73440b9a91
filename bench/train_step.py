"""Benchmark: steady-state img/s of the GAN train step (real images consumed per second).

    python bench/train_step.py --model dcgan --precision float32 --precision mixed_bfloat16
    python bench/train_step.py --devices cpu:2      # 2 logical CPU replicas (MirroredStrategy)

Random uint8 images of the data's shape stand in for Fashion-MNIST (the step does not care); the first
``--warmup`` steps (tracing, oneDNN set-up) are excluded.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from gan_seg.engine.distribute import make_strategy  # noqa: E402
from gan_seg.gan.config import GanConfig  # noqa: E402
from gan_seg.gan.trainer import GanTrainer  # noqa: E402


def measure(model, precision, batch_size, steps, warmup, strategy_name, devices):
    strategy, _ = make_strategy(strategy_name, devices)
    config = GanConfig(model=model, batch_size=batch_size, precision=precision, steps=steps + warmup)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6000, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 6000).astype(np.int32)
    classes = 10 if model == "cgan" else None
    trainer = GanTrainer(config, x, y if classes else None, classes, strategy, precision)
    iterator = iter(trainer.dataset(0, steps + warmup))
    for _ in range(warmup):
        trainer.step(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(iterator)
    seconds = time.perf_counter() - start
    return {"model": model, "precision": precision, "batch_size": batch_size,
            "replicas": strategy.num_replicas_in_sync, "ms_per_step": round(1000 * seconds / steps, 1),
            "img_per_s": round(steps * batch_size * config.d_steps / seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dcgan", choices=["dcgan", "cgan"])
    parser.add_argument("--precision", action="append", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--devices")
    args = parser.parse_args()
    for precision in args.precision or ["float32", "mixed_bfloat16"]:
        print(json.dumps(measure(args.model, precision, args.batch_size, args.steps, args.warmup,
                                 args.strategy, args.devices)), flush=True)


if __name__ == "__main__":
    main()
