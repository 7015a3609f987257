#!/usr/bin/env bash
# The GPU checks and the GPU pipeline bench, on a machine with an NVIDIA GPU.
#
#   bench/gpu.sh build   here: builds the release binaries (features ort, cuda)
#                        into target/gpu/, small enough to carry to a GPU machine
#   bench/gpu.sh run     there: checks the driver, runs the GPU checks, then
#                        `gantry-bench --gpu` (inference and pipeline) and
#                        prints the figures
#   bench/gpu.sh         both, on a GPU machine with the toolchain
#
# What the run needs on the GPU machine (none of it is downloaded: such
# machines often have no network):
#   - the NVIDIA driver (libcuda) and NVRTC (libnvrtc, from the CUDA toolkit or
#     the nvidia-cuda-nvrtc wheel) for the preprocessing kernel;
#   - ORT_DYLIB_PATH: a GPU build of ONNX Runtime (libonnxruntime.so from the
#     onnxruntime-gpu wheel), with its CUDA and cuDNN libraries (and TensorRT's
#     for the TensorRT provider) on LD_LIBRARY_PATH.
# A part that is missing is named and its figures are left out; the script
# fails only when there is no GPU at all or a check finds wrong values.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/gpu"
step=${1:-all}

build() {
    cd "$root"
    cargo build --release -p gantry-bench --features ort,cuda --bin gantry-bench
    # The GPU checks: CUDA preprocessing against the CPU path, bit for bit.
    local test
    test=$(cargo test --release -p gantry-policy --features ort,cuda --test preprocess_cuda --no-run \
        --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "preprocess_cuda":
        print(m["executable"])')
    mkdir -p "$out"
    cp target/release/gantry-bench "$out/"
    cp "$test" "$out/preprocess_cuda"
    echo "built: $(du -sh "$out" | cut -f1) in $out (carry target/gpu and models/)"
}

run() {
    cd "$root"
    if ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; then
        echo "no NVIDIA GPU here (nvidia-smi failed): nothing to measure" >&2
        exit 1
    fi
    [ -x "$out/gantry-bench" ] || { echo "no $out/gantry-bench: run 'bench/gpu.sh build' first" >&2; exit 1; }
    if [ -z "${ORT_DYLIB_PATH:-}" ]; then
        echo "ORT_DYLIB_PATH is not set: the ONNX Runtime GPU figures will be left out" >&2
    fi
    # The binaries were built elsewhere: the model packages are the ones here.
    export GANTRY_MODELS="$root/models"
    echo "## GPU check: CUDA preprocessing against the CPU path"
    "$out/preprocess_cuda" --nocapture
    echo
    echo "## gantry-bench --gpu (inference, pipeline)"
    "$out/gantry-bench" --gpu --only inference,pipeline ${GANTRY_BENCH_QUICK:+--quick} --json "$out/figures.json"
    echo "figures also in $out/figures.json"
}

case "$step" in
    build) build ;;
    run) run ;;
    all) build && run ;;
    *) echo "usage: bench/gpu.sh [build|run]" >&2; exit 2 ;;
esac
