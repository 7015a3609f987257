#!/usr/bin/env bash
# Creates the peers' Python environment (target/peers-venv) from the pinned
# requirements and prints its python's path. Idempotent.
#   PEER_PYTHON=$(bench/peers/setup.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/target/peers-venv"
req="$root/bench/peers/requirements.txt"
if ! cmp -s "$req" "$venv/requirements.txt" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -r "$req" >&2
    cp "$req" "$venv/requirements.txt"
fi
echo "$venv/bin/python"
