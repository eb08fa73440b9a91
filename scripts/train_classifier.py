"""Train the Fashion-MNIST classifier that judges the GANs and export it as a preset.

    python scripts/train_classifier.py --epochs 8 --seed 0 --force        # weights/fashion-mnist-classifier
    python scripts/train_classifier.py --epochs 8 --seed 0 --dest /tmp/w  # /tmp/w/fashion-mnist-classifier

Trains ``gan_seg.gan.evaluation.build_classifier`` on the 60,000 Fashion-MNIST training images (Adam 1e-3,
batch 128, the global seeds set from --seed, TensorFlow's op determinism on), measures it on the 10,000 test
images and exports ``classifier.keras`` (without the optimizer state) with ``metadata.json``: sha256, test
accuracy overall and per class, this command, the time it took and the library versions. ``gan-seg
evaluate`` uses the preset (the shipped one took 625 s on 2 CPU cores for 8 epochs, by its card).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from gan_seg.engine.backend import versions  # noqa: E402
from gan_seg.errors import InputError  # noqa: E402
from gan_seg.gan.data import load_image_data  # noqa: E402
from gan_seg.gan.evaluation import (  # noqa: E402
    CLASSIFIER,
    CLASSIFIER_FILE,
    CLASSIFIER_PRESET,
    build_classifier,
    predict_classes,
    train_classifier,
)
from gan_seg.io.presets import export_preset, weights_dir  # noqa: E402
from gan_seg.io.saving import save_model  # noqa: E402

LICENCE = "weights: MIT (as gan-seg); training data Fashion-MNIST: MIT, Zalando SE 2017"


def train_preset(epochs, seed, dest, command):
    """Train, measure and export the classifier preset into ``dest``; returns its folder."""
    train, test = (load_image_data("fashion-mnist", split=split) for split in ("train", "test"))
    names = list(train.class_names or [str(i) for i in range(int(train.y.max()) + 1)])
    start = time.perf_counter()
    model = train_classifier(train.x, train.y, epochs=epochs, seed=seed, num_classes=len(names), verbose=2)
    seconds = time.perf_counter() - start
    hits = predict_classes(model, test.x) == test.y
    accuracy = float(hits.mean())
    per_class = {name: round(float(hits[test.y == k].mean()), 4) for k, name in enumerate(names)}
    extra = {"kind": CLASSIFIER, "class_names": names, "test_accuracy": round(accuracy, 4),
             "per_class_test_accuracy": per_class, "licence": LICENCE,
             "training": {"command": command, "epochs": epochs, "seed": seed, "batch_size": 128,
                          "images": len(train.x), "parameters": model.count_params(),
                          "seconds": round(seconds), "versions": versions()}}
    shipped = build_classifier(model.inputs[0].shape[1:], len(names))
    shipped.set_weights(model.get_weights())  # without the optimizer state, a third of the size
    with tempfile.TemporaryDirectory() as tmp:
        save_model(shipped, Path(tmp) / CLASSIFIER_FILE,
                   {"kind": CLASSIFIER, "class_names": names, "keras": keras.__version__})
        description = ("Fashion-MNIST classifier (3-stage CNN, 128-d `features` layer for the Frechet "
                       f"distance of `gan-seg evaluate`); {accuracy:.2%} on the 10,000 test images")
        return export_preset(tmp, CLASSIFIER_PRESET, description, [CLASSIFIER_FILE], extra, dest=dest)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dest", help="weights folder to write the preset into (default: gan-seg's)")
    parser.add_argument("--force", action="store_true", help="replace an existing preset")
    args = parser.parse_args()
    dest = Path(args.dest) if args.dest else weights_dir()
    if (dest / CLASSIFIER_PRESET).exists() and not args.force:
        fail(f"{dest / CLASSIFIER_PRESET} exists; pass --force to replace it")
    if args.epochs < 1:
        fail("--epochs must be at least 1")
    command = f"python scripts/train_classifier.py --epochs {args.epochs} --seed {args.seed}"
    try:
        folder = train_preset(args.epochs, args.seed, dest, command)
    except InputError as err:
        fail(str(err))
    print(f"wrote {folder}", flush=True)


def fail(message):
    """Bad input: one line on stderr, exit 2."""
    print(f"train_classifier.py: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
