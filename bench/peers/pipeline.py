#!/usr/bin/env python3
"""The peer of gantry-bench's pipeline figures: the same pipeline written the
way a typical user writes it without Gantry.

A camera thread delivers the same 1080p RGB and 848x480 depth frames as
Gantry's synthetic sources at 30 fps (a fresh array per frame, as
cv2.VideoCapture returns them); an inference thread preprocesses the newest
frame with OpenCV and numpy (INTER_AREA resize, per-channel normalisation,
nearest-neighbour depth) and runs the same ONNX model on onnxruntime's CPU
provider; a control thread at 100 Hz sleeps to its next tick, takes the
newest action and "sends" the command. It measures what gantry-bench
measures: frame-to-command latency (capture to the first command steered by
that frame), the model's own run time, and the control thread's wake-up
lateness. Prints one JSON object.

    PEER_PYTHON=$(bench/peers/setup.sh)
    $PEER_PYTHON bench/peers/pipeline.py --rgb F --depth F --model DIR --seconds 20
"""

import argparse
import json
import os
import threading
import time
import tomllib

import cv2
import numpy as np
import onnxruntime as ort

RGB_W, RGB_H, DEPTH_W, DEPTH_H, FPS, RATE_HZ = 1920, 1080, 848, 480, 30, 100


def percentiles(ns, unit=1e6):
    if not ns:
        return {"p50": None, "p99": None, "p999": None, "max": None, "n": 0}
    a = np.sort(np.asarray(ns, dtype=np.float64)) / unit
    q = lambda p: float(a[min(len(a) - 1, int(p * len(a)))])
    return {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": float(a[-1]), "n": len(a)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rgb", required=True)
    ap.add_argument("--depth", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    manifest = tomllib.load(open(os.path.join(args.model, "manifest.toml"), "rb"))
    inputs = {i["kind"]: i for i in manifest["inputs"]}
    size = inputs["rgb"]["shape"][2:]
    mean = np.asarray(inputs["rgb"]["mean"], dtype=np.float32)
    std = np.asarray(inputs["rgb"]["std"], dtype=np.float32)
    scale_mm = float(inputs["depth"]["scale_mm"])
    joints = inputs["joints"]["shape"][1] // 2

    rgb_src = np.fromfile(args.rgb, dtype=np.uint8).reshape(RGB_H, RGB_W, 3)
    depth_src = np.fromfile(args.depth, dtype="<u2").reshape(DEPTH_H, DEPTH_W)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(args.model, "model.onnx"), opts, providers=["CPUExecutionProvider"])
    names = {i["kind"]: i["name"] for i in manifest["inputs"]}
    out_name = manifest["output"]["name"]

    lock = threading.Lock()
    frame = {"seq": 0, "t": 0, "rgb": None, "depth": None}
    action = {"seq": 0, "t": 0, "m": 0, "value": np.zeros(joints + 1, dtype=np.float32)}
    new_frame = threading.Condition(lock)
    stop = threading.Event()
    latency, overhead, model_ns, jitter = [], [], [], []

    def camera():
        period = 1.0 / FPS
        nxt = time.monotonic()
        seq = 0
        while not stop.is_set():
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))
            seq += 1
            rgb, depth = rgb_src.copy(), depth_src.copy()
            with new_frame:
                frame.update(seq=seq, t=time.monotonic_ns(), rgb=rgb, depth=depth)
                new_frame.notify()

    def infer():
        last = 0
        q = np.zeros((1, 2 * joints), dtype=np.float32)
        while not stop.is_set():
            with new_frame:
                new_frame.wait_for(lambda: frame["seq"] != last or stop.is_set(), timeout=0.5)
                if frame["seq"] == last:
                    continue
                last, t, rgb, depth = frame["seq"], frame["t"], frame["rgb"], frame["depth"]
            x = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
            x = ((x - mean) / std).transpose(2, 0, 1)[None]
            d = cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_NEAREST).astype(np.float32)
            d = np.clip(d / scale_mm, 0.0, 1.0)[None, None]
            t0 = time.monotonic_ns()
            out = sess.run([out_name], {names["rgb"]: np.ascontiguousarray(x), names["depth"]: d, names["joints"]: q})
            m = time.monotonic_ns() - t0
            model_ns.append(m)
            with lock:
                action.update(seq=last, t=t, m=m, value=out[0][0])

    def control():
        period = 1_000_000_000 // RATE_HZ
        nxt = time.monotonic_ns() + period
        used = 0
        positions = np.zeros(joints, dtype=np.float32)
        while not stop.is_set():
            time.sleep(max(0, nxt - time.monotonic_ns()) / 1e9)
            now = time.monotonic_ns()
            jitter.append(max(0, now - nxt))
            nxt += period
            if now - nxt > period:
                nxt = now + period
            with lock:
                seq, t, m, a = action["seq"], action["t"], action["m"], action["value"]
            target = np.clip(positions + a[:joints], -3.1, 3.1)
            _command = (target.tolist(), float(a[joints]))
            if seq != used and t:
                used = seq
                ns = time.monotonic_ns() - t
                latency.append(ns)
                overhead.append(ns - m)

    threads = [threading.Thread(target=f, daemon=True) for f in (camera, infer, control)]
    for t in threads:
        t.start()
    # The first second is warm-up, as in gantry-bench.
    time.sleep(1.0)
    with lock:
        latency.clear()
        overhead.clear()
        model_ns.clear()
        jitter.clear()
    time.sleep(args.seconds)
    stop.set()
    with new_frame:
        new_frame.notify_all()
    for t in threads:
        t.join(timeout=5)
    print(
        json.dumps(
            {
                "latency_ms": percentiles(latency),
                "overhead_ms": percentiles(overhead),
                "model_ms": percentiles(model_ns),
                "jitter_us": percentiles(jitter, 1e3),
                "control_rate_hz": len(jitter) / args.seconds,
                "onnxruntime": ort.__version__,
                "opencv": cv2.__version__,
                "numpy": np.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
