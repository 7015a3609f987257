#!/usr/bin/env python3
"""Reads a Gantry lake export back with DuckDB and checks every partition's row
count against what the exporter recorded writing (DIR/_gantry_lake.sqlite).

    python3 -m pip install duckdb
    ./target/release/gantry-sync lake export --out /tmp/lake
    python3 scripts/check-lake.py /tmp/lake

Exit 0 when every (table, date, robot) partition matches; 1 otherwise.
"""

import collections
import sqlite3
import sys

import duckdb

TABLES = ["episodes", "actions", "incidents", "health", "frames"]


def main(lake: str) -> int:
    expected = collections.Counter()
    state = sqlite3.connect(f"file:{lake}/_gantry_lake.sqlite?mode=ro", uri=True)
    for table, partition, rows in state.execute("SELECT table_name, partition, rows FROM files"):
        expected[(table, partition)] += rows

    found = collections.Counter()
    flagged = collections.Counter()
    for table in TABLES:
        if not any(t == table for t, _ in expected):
            continue
        query = f"""
            SELECT date, robot, count(*), count(*) FILTER (WHERE len(flags) > 0)
            FROM read_parquet('{lake}/{table}/*/*/*.parquet', hive_partitioning = true)
            GROUP BY ALL"""
        for date, robot, rows, bad in duckdb.sql(query).fetchall():
            found[(table, f"date={date}/robot={robot}")] += rows
            flagged[(table, f"date={date}/robot={robot}")] += bad

    print(f"{'table':<10} {'partition':<36} {'rows':>8} {'flagged':>8} {'expected':>8}")
    wrong = 0
    for key in sorted(set(expected) | set(found)):
        mark = "" if expected[key] == found[key] else "  MISMATCH"
        wrong += bool(mark)
        print(f"{key[0]:<10} {key[1]:<36} {found[key]:>8} {flagged[key]:>8} {expected[key]:>8}{mark}")
    print(f"{len(expected)} partitions, {sum(found.values())} rows, {wrong} mismatched")
    return 1 if wrong or not expected else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
