#!/usr/bin/env python3
"""Generates Gantry's policy model packages (model.onnx + manifest.toml).

Both policies share one I/O contract, so either can run on a robot:

    inputs   rgb     float32 [1, 3, 128, 128]  RGB, normalised per channel (mean/std in the manifest)
             depth   float32 [1, 1, 128, 128]  millimetres / scale_mm, clipped to [0, 1]
             joints  float32 [1, 2*J]          J joint positions (rad) then J velocities (rad/s)
    output   action  float32 [1, J+1]          J joint deltas (rad, |d| <= 0.05) then gripper (0 open .. 1 closed)

    baseline   ~0.1M parameters: the on-robot CPU baseline policy (committed)
    vision-50m ~50M parameters: the stand-in for the GPU vision policy (generated on demand)

Weights are random (seeded): the models exercise the runtime, not a task. So that
a simulated robot moves plausibly instead of drifting into a limit, each policy adds
a pull toward a ready pose (HOME) to its random output: it hovers around HOME,
moved by what it sees.

    python3 models/make_models.py baseline OUT_DIR
    python3 models/make_models.py vision-50m OUT_DIR
    python3 models/make_models.py safety OUT_DIR   # the optional safety model (governor check 6)

The safety model takes the robot state and the policy's action and approves it:

    inputs   state    float32 [1, 2*J]   positions then velocities
             action   float32 [1, J+1]   the policy output
    output   approve  float32 [1, 1]     >= 0.5 approves

This one approves an action whose largest joint delta is below 0.04 rad.
"""

import hashlib
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

JOINTS = 6
SIZE = 128
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
DEPTH_SCALE_MM = 2000.0
DELTA_MAX_RAD = 0.05
# A ready pose above the table for the UR5-like arm of the default configuration.
HOME = [0.0, -1.2, 1.4, -1.77, -1.57, 0.0]
# Fraction of the way back to HOME per inference.
HOME_GAIN = 0.05

# name: (conv1 channels, conv2 channels, pooled side, hidden sizes, latency budget ms, version)
POLICIES = {
    "baseline": (16, 32, 4, [128, 128], 10.0, "baseline-2"),
    "vision-50m": (32, 64, 16, [2560, 2560], 60.0, "vision-50m-2"),
}


def build(name, seed=7):
    c1, c2, pooled, hidden, _, version = POLICIES[name]
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def weight(wname, shape, fan_in):
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
        inits.append(numpy_helper.from_array(w, wname))
        return wname

    def bias(bname, n):
        inits.append(numpy_helper.from_array(np.zeros(n, np.float32), bname))
        return bname

    nodes.append(helper.make_node("Concat", ["rgb", "depth"], ["x0"], axis=1))
    nodes.append(helper.make_node("Conv", ["x0", weight("conv1.w", [c1, 4, 5, 5], 4 * 25), bias("conv1.b", c1)],
                                  ["c1"], strides=[4, 4], pads=[2, 2, 2, 2]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    nodes.append(helper.make_node("Conv", ["r1", weight("conv2.w", [c2, c1, 3, 3], c1 * 9), bias("conv2.b", c2)],
                                  ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    side = SIZE // 8
    if pooled != side:
        k = side // pooled
        nodes.append(helper.make_node("AveragePool", ["r2"], ["p2"], kernel_shape=[k, k], strides=[k, k]))
        last = "p2"
    else:
        last = "r2"
    nodes.append(helper.make_node("Flatten", [last], ["f"], axis=1))
    nodes.append(helper.make_node("Concat", ["f", "joints"], ["h0"], axis=1))
    width = c2 * pooled * pooled + 2 * JOINTS
    h = "h0"
    for i, n in enumerate(hidden):
        nodes.append(helper.make_node("Gemm", [h, weight(f"fc{i}.w", [width, n], width), bias(f"fc{i}.b", n)],
                                      [f"g{i}"]))
        nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i + 1}"]))
        h, width = f"h{i + 1}", n
    nodes.append(helper.make_node("Gemm", [h, weight("head.w", [width, JOINTS + 1], width * 4),
                                           bias("head.b", JOINTS + 1)], ["logits"]))
    nodes.append(helper.make_node("Tanh", ["logits"], ["t"]))
    scale = np.array([[DELTA_MAX_RAD / 2] * JOINTS + [0.5]], np.float32)
    offset = np.array([[0.0] * JOINTS + [0.5]], np.float32)
    inits.append(numpy_helper.from_array(scale, "action.scale"))
    inits.append(numpy_helper.from_array(offset, "action.offset"))
    nodes.append(helper.make_node("Mul", ["t", "action.scale"], ["ts"]))
    nodes.append(helper.make_node("Add", ["ts", "action.offset"], ["raw"]))
    # The pull toward HOME: gain * (HOME - q) on the joints, nothing on the gripper.
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "q.start"))
    inits.append(numpy_helper.from_array(np.array([JOINTS], np.int64), "q.end"))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "q.axis"))
    inits.append(numpy_helper.from_array(np.array([HOME + [0.0]], np.float32), "home"))
    inits.append(numpy_helper.from_array(np.array([[HOME_GAIN] * JOINTS + [0.0]], np.float32), "home.gain"))
    inits.append(numpy_helper.from_array(np.zeros((1, 1), np.float32), "zero"))
    nodes.append(helper.make_node("Slice", ["joints", "q.start", "q.end", "q.axis"], ["q"]))
    nodes.append(helper.make_node("Concat", ["q", "zero"], ["q7"], axis=1))
    nodes.append(helper.make_node("Sub", ["home", "q7"], ["err"]))
    nodes.append(helper.make_node("Mul", ["err", "home.gain"], ["pull"]))
    nodes.append(helper.make_node("Add", ["raw", "pull"], ["pulled"]))
    lo = np.array([[-DELTA_MAX_RAD] * JOINTS + [0.0]], np.float32)
    hi = np.array([[DELTA_MAX_RAD] * JOINTS + [1.0]], np.float32)
    inits.append(numpy_helper.from_array(lo, "action.lo"))
    inits.append(numpy_helper.from_array(hi, "action.hi"))
    nodes.append(helper.make_node("Max", ["pulled", "action.lo"], ["floored"]))
    nodes.append(helper.make_node("Min", ["floored", "action.hi"], ["action"]))

    graph = helper.make_graph(
        nodes, f"gantry-{name}",
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [1, 3, SIZE, SIZE]),
         helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, SIZE, SIZE]),
         helper.make_tensor_value_info("joints", TensorProto.FLOAT, [1, 2 * JOINTS])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, JOINTS + 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gantry")
    model.ir_version = 8
    onnx.checker.check_model(model)
    params = sum(int(np.prod(t.dims)) for t in inits)
    return model, params, version


def manifest(name, version, sha256, params):
    budget = POLICIES[name][4]
    return f'''# Gantry model package manifest (format 1). Generated by models/make_models.py.
format_version = 1
name = "{name}"
version = "{version}"
parameters = {params}
# sha256 of model.onnx; loading refuses a package whose model does not match.
sha256 = "{sha256}"
# Expected inference time on the target; a guide for the deadline, not a limit.
latency_budget_ms = {budget}

[[inputs]]
name = "rgb"
kind = "rgb"
shape = [1, 3, {SIZE}, {SIZE}]
mean = {MEAN}
std = {STD}

[[inputs]]
name = "depth"
kind = "depth"
shape = [1, 1, {SIZE}, {SIZE}]
scale_mm = {DEPTH_SCALE_MM}

[[inputs]]
name = "joints"
kind = "joints"
shape = [1, {2 * JOINTS}]

[output]
name = "action"
shape = [1, {JOINTS + 1}]
# Joint deltas in radians, then the gripper from 0.0 (open) to 1.0 (closed).
semantics = "joint_deltas_then_gripper"
max_delta_rad = {DELTA_MAX_RAD}
'''


def build_safety():
    limit = np.array([0.04], np.float32)
    gain = np.array([400.0], np.float32)
    nodes = [
        helper.make_node("Slice", ["action", "starts", "ends", "axes"], ["deltas"]),
        helper.make_node("Abs", ["deltas"], ["abs"]),
        helper.make_node("ReduceMax", ["abs"], ["largest"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["limit", "largest"], ["margin"]),
        helper.make_node("Mul", ["margin", "gain"], ["score"]),
        helper.make_node("Sigmoid", ["score"], ["approve"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([JOINTS], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(limit, "limit"),
        numpy_helper.from_array(gain, "gain"),
    ]
    graph = helper.make_graph(
        nodes, "gantry-safety",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 2 * JOINTS]),
         helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, JOINTS + 1])],
        [helper.make_tensor_value_info("approve", TensorProto.FLOAT, [1, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gantry")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "safety":
        os.makedirs(sys.argv[2], exist_ok=True)
        path = os.path.join(sys.argv[2], "safety.onnx")
        onnx.save(build_safety(), path)
        print(f"{path}: safety model, approves joint deltas below 0.04 rad")
        return
    if len(sys.argv) != 3 or sys.argv[1] not in POLICIES:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(POLICIES)}|safety}} OUT_DIR")
    name, out = sys.argv[1], sys.argv[2]
    model, params, version = build(name)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    onnx.save(model, path)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(out, "manifest.toml"), "w") as f:
        f.write(manifest(name, version, sha, params))
    print(f"{out}: {name} {version}, {params:,} parameters, {os.path.getsize(path):,} bytes, sha256 {sha}")


if __name__ == "__main__":
    main()
