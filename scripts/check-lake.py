#!/usr/bin/env python3
"""Reads a Gantry lake export back with DuckDB, polars and Spark, every table,
every column, and checks each (table, date, robot) partition's row count
against the exporter's file list (DIR/_gantry_lake.sqlite, live files only).
No reader gets options beyond Hive partitioning.

    GANTRY_LAKE_PYTHON=$(scripts/lake-python.sh)
    ./target/release/gantry-sync lake export --out /tmp/lake
    $GANTRY_LAKE_PYTHON scripts/check-lake.py /tmp/lake [duckdb polars spark]

Prints "ENGINE: every table matches" per engine; exit 0 when all do.
"""

import collections
import os
import sqlite3
import sys

TABLES = ["tasks", "observations", "actions", "frames", "incidents", "health", "samples", "images", "labels"]


def expected_rows(lake):
    want = collections.Counter()
    state = sqlite3.connect(f"file:{lake}/_gantry_lake.sqlite?mode=ro", uri=True)
    query = "SELECT table_name, partition, rows FROM files WHERE superseded_by IS NULL"
    for table, partition, rows in state.execute(query):
        date, robot = (kv.split("=", 1)[1] for kv in partition.split("/"))
        want[(table, date, robot)] += rows
    return want


def with_duckdb(lake, table):
    import duckdb

    glob = f"{lake}/{table}/*/*/*.parquet"
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
    rel.fetchall()  # every column decodes
    rows = duckdb.sql(
        f"SELECT CAST(date AS VARCHAR), robot, count(*) FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY ALL"
    ).fetchall()
    return {(table, d, r): n for d, r, n in rows}


def with_polars(lake, table):
    import polars as pl

    df = pl.scan_parquet(f"{lake}/{table}/**/*.parquet", hive_partitioning=True).collect()
    counts = df.group_by(pl.col("date").cast(pl.Utf8), pl.col("robot").cast(pl.Utf8)).len()
    return {(table, d, r): n for d, r, n in counts.iter_rows()}


_spark = None


def with_spark(lake, table):
    global _spark
    if _spark is None:
        from pyspark.sql import SparkSession

        _spark = (
            SparkSession.builder.master("local[1]")
            .appName("gantry-check-lake")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
        _spark.sparkContext.setLogLevel("ERROR")
    df = _spark.read.parquet(f"{lake}/{table}")
    df.collect()  # every column decodes
    out = {}
    for row in df.groupBy("date", "robot").count().collect():
        out[(table, str(row["date"]), str(row["robot"]))] = row["count"]
    return out


ENGINES = {"duckdb": with_duckdb, "polars": with_polars, "spark": with_spark}

# Every sample with its model-input image and (when it has one) its task:
# keyed by boot, since a boot restarts frame numbers.
JOIN = """
SELECT count(*) FROM samples s
JOIN images i ON i.robot_id = s.robot_id AND i.boot_id = s.boot_id AND i.frame_seq = s.frame_seq
             AND i.kind = 'model_rgb'
LEFT JOIN tasks t ON t.robot_id = s.robot_id AND t.boot_id = s.boot_id AND t.task_id = s.task_id
"""


def join_counts(lake, engine):
    """(samples, rows of JOIN) in DuckDB or Spark SQL."""
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        for t in ("samples", "images", "tasks"):
            con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/*/*/*.parquet', hive_partitioning = true)")
        return con.execute("SELECT count(*) FROM samples").fetchone()[0], con.execute(JOIN).fetchone()[0]
    with_spark(lake, "samples")  # starts the session
    for t in ("samples", "images", "tasks"):
        _spark.read.parquet(f"{lake}/{t}").createOrReplaceTempView(t)
    return _spark.sql("SELECT count(*) FROM samples").collect()[0][0], _spark.sql(JOIN).collect()[0][0]


def main(lake, engines):
    want = expected_rows(lake)
    if not want:
        print("no files in the export's list")
        return 1
    failed = 0
    for engine in engines:
        found = {}
        for table in TABLES:
            if os.path.isdir(os.path.join(lake, table)):
                found.update(ENGINES[engine](lake, table))
        wrong = [(k, found.get(k, 0), want.get(k, 0)) for k in sorted(set(want) | set(found)) if found.get(k, 0) != want.get(k, 0)]
        for key, got, expected in wrong:
            print(f"{engine}: {'/'.join(key)}: {got} rows, the file list says {expected}")
        if wrong:
            failed += 1
        else:
            print(f"{engine}: every table matches ({sum(found.values())} rows in {len(found)} partitions)")
        if engine != "polars" and all(os.path.isdir(os.path.join(lake, t)) for t in ("samples", "images", "tasks")):
            n, joined = join_counts(lake, engine)
            verdict = "one row per sample" if n == joined and n > 0 else "MISMATCH"
            print(f"{engine}: samples ⋈ images ⋈ tasks: {joined} rows for {n} samples: {verdict}")
            failed += verdict != "one row per sample"
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:] or list(ENGINES)))
