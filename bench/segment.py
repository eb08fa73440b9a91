#!/usr/bin/env python
"""Speed and memory of ``segment``: one JSON line per run on stdout.

    python bench/segment.py                         # Colin27 (mricron-data) or the example brain
    python bench/segment.py --scan t1.nii.gz --threads 4 --precision mixed_bfloat16

Runs, each in a fresh child process (so that its peak RSS, from ``os.wait4``'s resource usage, is its own):
the shipped demo model (``quicknat-brain``) and a full-width QuickNAT (64 filters, 5x5 kernels, scSE, random
weights: speed does not depend on them) at ``--full-voxel-size`` mm, each with all three views and with
the axial view only. A line holds the wall time of the child, its peak RSS, the time of each stage
(model loading, conform, the networks, mapping back to the input grid, writing) and slices/s of the
networks.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras

from gan_seg.io.presets import resolve_run_dir
from gan_seg.io.saving import save_model
from gan_seg.seg.config import DEFAULT_PRESET, MODEL_FILE
from gan_seg.seg.models import build_quicknat
from gan_seg.seg.scans import example_scan
from gan_seg.seg.views import VIEWS, lr_merge

ROOT = Path(__file__).resolve().parents[1]
COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
args = json.loads(sys.argv[1])
from gan_seg.engine.backend import limit_threads
limit_threads(args["threads"])
import numpy as np
from gan_seg.seg.inference import Segmenter
from gan_seg.seg.preprocessing import InputGrid, conform
from gan_seg.seg.volumes import load_volume, save_like
from gan_seg.io.presets import resolve_run_dir
stages, mark = {}, time.perf_counter()
def stage(name):
    global mark
    now = time.perf_counter()
    stages[name] = round(now - mark, 2)
    mark = now
segmenter = Segmenter(resolve_run_dir(args["model"]), args["views"], precision=args["precision"])
stage("load_model")
image = load_volume(args["scan"])
conformed = conform(image, segmenter.voxel_size)
slices = segmenter.slice_count(conformed.data)
stage("conform")
result = segmenter.segment(conformed.data, args["batch_size"])
stage("networks")
labels = InputGrid(conformed, image).labels(result.probabilities, result.labels)
stage("map_back")
save_like(labels, image, args["out"], np.uint8)
stage("write")
print(json.dumps({"stages_s": stages, "slices": slices, "conformed_shape": list(conformed.data.shape),
                  "precision": segmenter.precision, "in_process_s": round(time.perf_counter() - t0, 2)}))
"""


def full_width_model(folder, voxel_size):
    """A run directory with random-weight 64-filter QuickNATs for the shipped model's classes."""
    names = json.loads((resolve_run_dir(DEFAULT_PRESET) / "config.json").read_text())["class_names"]
    keras.utils.set_random_seed(0)
    for view in VIEWS:
        classes = lr_merge(names)[0] if view == "sagittal" else names
        model = build_quicknat((None, None, 1), len(classes), filters=64, kernel_size=5, se="scse")
        save_model(model, folder / view / MODEL_FILE, {"kind": "segmentation", "architecture": "quicknat",
                                                       "view": view, "class_names": classes})
    (folder / "config.json").write_text(json.dumps({"model": "quicknat", "class_names": names,
                                                    "voxel_size": voxel_size, "filters": 64}))
    return folder


def run_child(settings, folder):
    """Run one segmentation in a child process; returns its JSON report plus wall time and peak RSS."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out, err = folder / "child.out", folder / "child.err"
    start = time.perf_counter()
    with out.open("w") as stdout, err.open("w") as stderr:
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(settings)], stdout=stdout,
                                 stderr=stderr, env=env, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"bench/segment.py: a run failed ({settings['model']}, {settings['views']}):\n"
                         f"{err.read_text()}")
    report = json.loads(out.read_text().strip().splitlines()[-1])
    networks = report["stages_s"]["networks"]
    return {**report, "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "slices_per_s": round(report["slices"] / networks, 1) if networks else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=Path, help="scan [default: Colin27, else the example brain]")
    parser.add_argument("--threads", type=int, help="--threads of segment [default: all cores]")
    parser.add_argument("--precision", default="float32", help="auto, float32 or mixed_bfloat16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--full-voxel-size", type=float, default=1.0,
                        help="voxel size (mm) of the 64-filter model's conformed grid")
    parser.add_argument("--models", default="shipped,full64", help="which of shipped,full64 to run")
    parser.add_argument("--views", default="axial,coronal,sagittal;axial",
                        help="view sets to run, separated by ';'")
    args = parser.parse_args()
    scan = args.scan or (COLIN27 if COLIN27.is_file() else None)
    if scan is None:
        scan = example_scan()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = {"shipped": "quicknat-brain"}
        if "full64" in args.models.split(","):
            models["full64"] = str(full_width_model(tmp / "full64", args.full_voxel_size))
        for name, model in models.items():
            if name not in args.models.split(","):
                continue
            for views in args.views.split(";"):
                settings = {"model": model, "views": views, "scan": str(scan), "threads": args.threads,
                            "precision": args.precision, "batch_size": args.batch_size,
                            "out": str(tmp / "seg.nii.gz")}
                report = run_child(settings, tmp)
                print(json.dumps({"model": name, "views": views, "scan": str(scan), "threads": args.threads,
                                  "cores": len(os.sched_getaffinity(0)), **report}), flush=True)


if __name__ == "__main__":
    main()
