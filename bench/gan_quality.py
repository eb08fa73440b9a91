"""Benchmark: GAN quality measured with the shipped Fashion-MNIST classifier; prints one JSON line.

    python bench/gan_quality.py --model cgan-fashion-mnist -n 10000 --seed 0
    python bench/gan_quality.py --train-classifier --epochs 8     # rebuild weights/fashion-mnist-classifier

Reports the conditional accuracy (CGAN: the share of images the classifier puts in the class they were
drawn for), the predicted-class histogram (missing classes = mode dropping) and FD-FMNIST (Fréchet
distance of the classifier's 128-d features; not FID) against ``n`` real test images, next to the same
distance between ``n`` real train and test images (the floor a perfect generator would reach).
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gan_seg.engine.backend import versions  # noqa: E402
from gan_seg.errors import InputError  # noqa: E402
from gan_seg.gan.data import load_image_data  # noqa: E402
from gan_seg.gan.evaluation import (  # noqa: E402
    build_classifier,
    class_histogram,
    conditional_accuracy,
    features,
    frechet_distance,
    predict_classes,
    train_classifier,
)
from gan_seg.gan.sampling import sample  # noqa: E402
from gan_seg.io.presets import export_preset, list_presets, preset_file, resolve_model_file  # noqa: E402
from gan_seg.io.saving import load_model, save_model  # noqa: E402

CLASSIFIER = "fashion-mnist-classifier"


def train_preset(epochs, seed):
    """Train the classifier on the 60,000 training images and export it as the preset; returns metadata."""
    train, test = (load_image_data("fashion-mnist", split=split) for split in ("train", "test"))
    start = time.perf_counter()
    model = train_classifier(train.x, train.y, epochs=epochs, seed=seed, verbose=2)
    accuracy = float((predict_classes(model, test.x) == test.y).mean())
    names = list(train.class_names)
    extra = {"kind": "classifier", "class_names": names, "test_accuracy": round(accuracy, 4),
             "licence": "weights: MIT (as gan-seg); training data Fashion-MNIST: MIT, Zalando SE 2017",
             "training": {"command": f"python bench/gan_quality.py --train-classifier --epochs {epochs} "
                                     f"--seed {seed}", "epochs": epochs, "seed": seed,
                          "parameters": model.count_params(), "seconds": round(time.perf_counter() - start),
                          "versions": versions()}}
    shipped = build_classifier(model.inputs[0].shape[1:], len(names))
    shipped.set_weights(model.get_weights())  # without the optimizer state, a third of the size
    with tempfile.TemporaryDirectory() as tmp:
        save_model(shipped, os.path.join(tmp, "classifier.keras"),
                   {"kind": "classifier", "class_names": names, "keras": keras.__version__})
        description = ("Fashion-MNIST classifier (3-stage CNN, 128-d `features` layer for FD-FMNIST); "
                       f"{accuracy:.2%} on the 10,000 test images")
        export_preset(tmp, CLASSIFIER, description, ["classifier.keras"], extra)
    return extra


def measure(spec, n, seed):
    """Quality numbers of the generator ``spec`` (preset name, run directory or .keras file)."""
    generator, _ = load_model(resolve_model_file(spec, "generator.keras"), "generator")
    classifier, meta = load_model(preset_file(CLASSIFIER, "classifier.keras"), "classifier")
    if tuple(generator.outputs[0].shape[1:]) != tuple(classifier.inputs[0].shape[1:]):
        raise InputError(f"the generator draws {tuple(generator.outputs[0].shape[1:])} images; the "
                         f"classifier takes {tuple(classifier.inputs[0].shape[1:])} (Fashion-MNIST)")
    train, test = (load_image_data("fashion-mnist", split=split) for split in ("train", "test"))
    if not 1 < n <= len(test.x):
        raise InputError(f"-n must be 2..{len(test.x)} (the test images are the reference), got {n}")
    rng = np.random.default_rng(seed)
    real_test = test.x[rng.permutation(len(test.x))[:n]]
    real_train = train.x[rng.permutation(len(train.x))[:n]]
    start = time.perf_counter()
    images, labels, _ = sample(generator, n, seed=seed)
    names = meta["class_names"]
    fake, real, floor = (features(classifier, x) for x in (images, real_test, real_train))
    result = {"model": str(spec), "n": n, "seed": seed,
              "classifier_test_accuracy": list_presets()[CLASSIFIER].get("test_accuracy")}
    if labels[0] >= 0:
        result["conditional_accuracy"] = round(conditional_accuracy(classifier, images, labels), 4)
    histogram = class_histogram(classifier, images, len(names))
    result["histogram"] = {name: round(float(share), 4) for name, share in zip(names, histogram, strict=True)}
    result["fd_fmnist"] = round(frechet_distance(real, fake), 3)
    result["fd_fmnist_floor"] = round(frechet_distance(real, floor), 3)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="preset name, run directory or generator .keras file")
    parser.add_argument("-n", type=int, default=10000, help="generated and real images (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-classifier", action="store_true", help=f"train and export {CLASSIFIER}")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    if args.train_classifier == bool(args.model):
        parser.error("pass either --model or --train-classifier")
    try:
        result = train_preset(args.epochs, args.seed) if args.train_classifier else measure(
            args.model, args.n, args.seed)
    except InputError as err:
        sys.exit(f"error: {err}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
