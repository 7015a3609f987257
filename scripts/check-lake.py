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
JOIN images i ON i.image_id = s.rgb_image_id
LEFT JOIN tasks t ON t.robot_id = s.robot_id AND t.boot_id = s.boot_id AND t.task_id = s.task_id
"""

# Every frame that says it has an image, with that image.
FRAME_IMAGES = (
    "SELECT count(*) FROM frames WHERE image_id IS NOT NULL",
    "SELECT count(*) FROM frames f JOIN images i ON i.image_id = f.image_id",
)


def sql_counts(lake, engine, tables, queries):
    """The first value of each query, in DuckDB or Spark SQL."""
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        for t in tables:
            con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/*/*/*.parquet', hive_partitioning = true)")
        return [con.execute(q).fetchone()[0] for q in queries]
    with_spark(lake, tables[0])  # starts the session
    for t in tables:
        _spark.read.parquet(f"{lake}/{t}").createOrReplaceTempView(t)
    return [_spark.sql(q).collect()[0][0] for q in queries]


def has(lake, *tables):
    return all(os.path.isdir(os.path.join(lake, t)) for t in tables)


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
        if engine != "polars" and has(lake, "samples", "images", "tasks"):
            n, joined = sql_counts(lake, engine, ["samples", "images", "tasks"], ["SELECT count(*) FROM samples", JOIN])
            verdict = "one row per sample" if n == joined and n > 0 else "MISMATCH"
            print(f"{engine}: samples ⋈ images ⋈ tasks: {joined} rows for {n} samples: {verdict}")
            failed += verdict != "one row per sample"
        if engine != "polars" and has(lake, "frames", "images"):
            n, joined = sql_counts(lake, engine, ["frames", "images"], FRAME_IMAGES)
            verdict = "every reference resolves" if n == joined else "MISMATCH"
            print(f"{engine}: frames ⋈ images: {joined} rows for {n} frames with an image: {verdict}")
            failed += verdict != "every reference resolves"
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:] or list(ENGINES)))
