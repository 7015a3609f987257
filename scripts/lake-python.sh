#!/usr/bin/env bash
# Makes the Python environment the lake's reader tests use (DuckDB, polars,
# pyarrow, PySpark; Spark runs on the machine's Java) in target/lake-venv and
# prints its python. Idempotent.
#   GANTRY_LAKE_PYTHON=$(scripts/lake-python.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/lake-venv"
stamp="$venv/.gantry-2"
if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "duckdb==1.*" "polars==1.*" "pyarrow>=17" "pyspark==4.*" "numpy>=1.26" "pytz" >&2
    touch "$stamp"
fi
echo "$venv/bin/python"
