#!/usr/bin/env bash
# Makes the Python environment the lake's and the recordings' reader tests use
# (DuckDB, polars, pyarrow, PySpark on the machine's Java; mcap with protobuf
# decoding, as Foxglove reads MCAP; moto, an S3 API server for the replica
# tests) in target/lake-venv and
# prints its python. Idempotent.
#   GANTRY_LAKE_PYTHON=$(scripts/lake-python.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/lake-venv"
stamp="$venv/.gantry-4"
if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "duckdb==1.*" "polars==1.*" "pyarrow>=17" "pyspark==4.*" "numpy>=1.26" "pytz" \
        "mcap==1.*" "mcap-protobuf-support==0.*" "protobuf>=5" "moto[server]==5.*" >&2
    touch "$stamp"
fi
echo "$venv/bin/python"
