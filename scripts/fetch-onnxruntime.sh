#!/usr/bin/env bash
# Fetches the CPU build of ONNX Runtime from its PyPI wheel (the only place it can
# come from here) and prints the path of libonnxruntime.so. Idempotent.
#   ORT_DYLIB_PATH=$(scripts/fetch-onnxruntime.sh)
set -euo pipefail
version=1.31.1
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/target/onnxruntime-$version"
lib="$dest/libonnxruntime.so.$version"
if [ ! -f "$lib" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --python-version 3.11 --implementation cp -d "$tmp" "onnxruntime==$version" >&2
    mkdir -p "$dest"
    python3 - "$tmp" "$dest" "$version" <<'PY'
import glob, os, sys, zipfile
tmp, dest, version = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/libonnxruntime.so." + version))
    with z.open(name) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
        out.write(src.read())
PY
fi
echo "$lib"
