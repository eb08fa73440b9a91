#!/usr/bin/env python
"""Speed of occlusion sensitivity: one JSON line per case on stdout.

    python bench/occlusion.py                    # the shipped classifier, DCGAN discriminator, brain model
    python bench/occlusion.py --repeats 5 --batch-size 128

Cases: a Fashion-MNIST test image (28x28) through the shipped classifier and the DCGAN's discriminator at
patch 8 / stride 2 (121 positions); the example brain's middle coronal slice through the shipped brain
model at patch 16 with strides 8 and 16. A line holds the positions, the median and spread of the
occlusion's wall time over ``--repeats`` runs (after one warm-up run that compiles the network), and
positions/s. Loading the model and conforming the scan are not included (their time is printed once).
"""

import argparse
import json
import statistics
import time

import numpy as np

from gan_seg.explain.occlusion import occlusion
from gan_seg.explain.subjects import open_subject, slice_input
from gan_seg.gan.data import load_image_data


def timed(function, repeats):
    """``(result, [seconds of each run])`` after one warm-up call."""
    result = function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def case(name, subject, image, patch, stride, repeats, batch_size):
    def run():
        return occlusion(subject.model, image, None, patch, stride, "mean", subject.class_names, batch_size)

    (found, _), seconds = timed(run, repeats)
    positions = int(found.drops.size)
    median = statistics.median(seconds)
    return {"case": name, "image": list(image.shape), "patch": patch, "stride": stride,
            "positions": positions,
            "batch_size": batch_size or "default", "repeats": repeats, "seconds_median": round(median, 3),
            "seconds_min": round(min(seconds), 3), "seconds_max": round(max(seconds), 3),
            "positions_per_s": round(positions / median, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="[default: 128 for images, 8 for brain slices]")
    args = parser.parse_args()
    image = load_image_data("fashion-mnist", split="test").x[0].astype(np.float32) / 255.0
    for name, model, network in (("classifier", "fashion-mnist-classifier", None),
                                 ("dcgan-discriminator", "dcgan-fashion-mnist", "discriminator")):
        subject = open_subject(model, network)
        print(json.dumps(case(name, subject, image, 8, 2, args.repeats, args.batch_size)), flush=True)
    start = time.perf_counter()
    subject = open_subject("quicknat-brain", view="coronal")
    brain = slice_input(subject, None, example=True)
    print(json.dumps({"case": "brain-setup", "seconds": round(time.perf_counter() - start, 2),
                      "where": brain.where}), flush=True)
    for stride in (8, 16):
        print(json.dumps(case("brain-coronal", subject, brain.batch[0], 16, stride, args.repeats,
                              args.batch_size)), flush=True)


if __name__ == "__main__":
    main()
