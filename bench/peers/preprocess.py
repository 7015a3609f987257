#!/usr/bin/env python3
"""The peer of gantry-bench's preprocessing figures: OpenCV on the same 1080p
RGB and 848x480 depth frames, to the same model's input size.

Times, per run: `cv2.resize(INTER_AREA)` alone (to u8, interleaved), and the
whole preprocessing as bench/peers/pipeline.py does it (INTER_AREA, per-channel
normalisation to planar f32, nearest-neighbour depth scaled and clipped).
Prints one JSON object with p50/p99 in milliseconds.

    PEER_PYTHON=$(bench/peers/setup.sh)
    $PEER_PYTHON bench/peers/preprocess.py --rgb F --depth F --model DIR --runs 300
"""

import argparse
import json
import os
import time
import tomllib

import cv2
import numpy as np

RGB_W, RGB_H, DEPTH_W, DEPTH_H = 1920, 1080, 848, 480


def spread(ns):
    a = np.sort(np.asarray(ns, dtype=np.float64)) / 1e6
    return {"p50": float(a[len(a) // 2]), "p99": float(a[min(len(a) - 1, int(0.99 * len(a)))])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rgb", required=True)
    ap.add_argument("--depth", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()

    manifest = tomllib.load(open(os.path.join(args.model, "manifest.toml"), "rb"))
    inputs = {i["kind"]: i for i in manifest["inputs"]}
    h, w = inputs["rgb"]["shape"][2:]
    mean = np.asarray(inputs["rgb"]["mean"], dtype=np.float32)
    std = np.asarray(inputs["rgb"]["std"], dtype=np.float32)
    scale_mm = float(inputs["depth"]["scale_mm"])
    rgb = np.fromfile(args.rgb, dtype=np.uint8).reshape(RGB_H, RGB_W, 3)
    depth = np.fromfile(args.depth, dtype="<u2").reshape(DEPTH_H, DEPTH_W)

    def resize_only():
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)

    def whole():
        x = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        x = np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1)[None])
        d = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float32)
        return x, np.clip(d / scale_mm, 0.0, 1.0)[None, None]

    out = {"opencv": cv2.__version__, "numpy": np.__version__, "threads": cv2.getNumThreads()}
    for name, f in (("resize_ms", resize_only), ("whole_ms", whole)):
        for _ in range(10):
            f()
        ns = []
        for _ in range(args.runs):
            t = time.perf_counter_ns()
            f()
            ns.append(time.perf_counter_ns() - t)
        out[name] = spread(ns)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
