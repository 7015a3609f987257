//! The lake's tables, column by column (`docs/LAKE.md` is their dictionary),
//! and a row builder that holds every file of a table to the same schema.
//!
//! Chosen so that Spark, DuckDB, polars and pyarrow read every file with no
//! options: timestamps are microseconds UTC (Spark refuses nanoseconds),
//! integers are signed (Spark turns unsigned ones into decimals), and no
//! column is named after an SQL keyword (`check`, `limit`, `end`).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

/// Bumped when a column changes meaning or type (added columns too); kept
/// in every file's key-value metadata as `gantry.lake.schema_version` and in
/// `GET /api/lake/files`.
pub const SCHEMA_VERSION: u32 = 3;
pub const VERSION_KEY: &str = "gantry.lake.schema_version";
pub const TABLE_KEY: &str = "gantry.lake.table";

/// A column's type as the lake stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    I64,
    F64,
    Bool,
    /// Microseconds since the Unix epoch, UTC.
    Time,
    F32List,
    StrList,
    Bytes,
}

impl Kind {
    pub fn data_type(self) -> DataType {
        match self {
            Kind::Str => DataType::Utf8,
            Kind::I64 => DataType::Int64,
            Kind::F64 => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::F32List => DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            Kind::StrList => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            Kind::Bytes => DataType::Binary,
        }
    }
}

/// (name, kind, nullable).
pub type Column = (&'static str, Kind, bool);

pub struct Table {
    pub name: &'static str,
    /// Its event time column: what partitions it by date.
    pub time: &'static str,
    pub columns: &'static [Column],
}

use Kind::*;

pub const TASKS: Table = Table {
    name: "tasks",
    time: "start_time",
    columns: &[
        ("robot_id", Str, false),
        ("boot_id", Str, false),
        ("task_id", Str, true),
        ("episode_id", Str, false),
        ("kind", Str, false),
        ("model_version", Str, false),
        ("start_time", Time, false),
        ("end_time", Time, false),
        ("duration_ms", I64, false),
        ("success", Bool, false),
        ("failure_reason", Str, true),
        ("ticks", I64, false),
        ("rejects", I64, false),
        ("flags", StrList, false),
        ("batch_id", Str, false),
    ],
};

pub const OBSERVATIONS: Table = Table {
    name: "observations",
    time: "time",
    columns: &[
        ("robot_id", Str, false),
        ("boot_id", Str, false),
        ("task_id", Str, true),
        ("time", Time, false),
        ("mono_ns", I64, false),
        ("age_ms", F64, false),
        ("positions_rad", F32List, false),
        ("velocities_rad_s", F32List, false),
        ("flags", StrList, false),
        ("batch_id", Str, false),
    ],
};

pub const ACTIONS: Table = Table {
    name: "actions",
    time: "time",
    columns: &[
        ("robot_id", Str, false),
        ("boot_id", Str, false),
        ("task_id", Str, true),
        ("time", Time, false),
        ("mono_ns", I64, false),
        ("seq", I64, false),
        ("frame_seq", I64, false),
        ("mode", Str, false),
        ("approved", Bool, false),
        ("rejected_by", StrList, false),
        ("from_baseline", Bool, false),
        ("goal_rad", F32List, false),
        ("goal_gripper", F64, false),
        ("command_rad", F32List, false),
        ("command_gripper", F64, false),
        ("flags", StrList, false),
        ("batch_id", Str, false),
    ],
};

pub const FRAMES: Table = Table {
    name: "frames",
    time: "time",
    columns: &[
        ("robot_id", Str, false),
        ("boot_id", Str, false),
        ("task_id", Str, true),
        ("time", Time, false),
        ("frame_seq", I64, false),
        ("capture_time", Time, false),
        ("latency_ms", F64, false),
        ("late", Bool, false),
        ("unsafe_action", Bool, false),
        ("from_baseline", Bool, false),
        ("ok", Bool, false),
        ("image_id", Str, true),
        ("recording_id", Str, false),
        ("flags", StrList, false),
        ("batch_id", Str, false),
    ],
};

pub const INCIDENTS: Table = Table {
    name: "incidents",
    time: "time",
    columns: &[
        ("robot_id", Str, false),
        ("boot_id", Str, false),
        ("task_id", Str, true),
        ("time", Time, false),
        ("mono_ns", I64, false),
        ("check_name", Str, false),
        ("failed", StrList, false),
        ("value", F64, false),
        ("limit_value", F64, false),
        ("unit", Str, false),
        ("joint", I64, true),
        ("frame_seq", I64, false),
        ("rejected_rad", F32List, false),
        ("substituted_rad", F32List, false),
        ("flags", StrList, false),
        ("batch_id", Str, false),
    ],
};

pub const HEALTH: Table = Table {
    name: "health",
    time: "time",
    columns: &[
        ("robot_id", Str, false),
        ("boot_id", Str, false),
        ("task_id", Str, true),
        ("time", Time, false),
        ("mode", Str, true),
        ("cpu_pct", F64, true),
        ("mem_used_bytes", I64, true),
        ("disk_free_bytes", I64, true),
        ("motor_temp_max_c", F64, true),
        ("gripper_pressure_kpa", F64, true),
        ("latency_p99_ms", F64, true),
        ("deadline_misses", I64, true),
        ("governor_rejects", I64, true),
        ("link_alive", Bool, true),
        ("flags", StrList, false),
        ("batch_id", Str, false),
    ],
};

/// Training samples, from bulk-uploaded recordings.
pub const SAMPLES: Table = Table {
    name: "samples",
    time: "time",
    columns: &[
        ("robot_id", Str, false),
        ("boot_id", Str, false),
        ("task_id", Str, true),
        ("time", Time, false),
        ("frame_seq", I64, false),
        ("model_version", Str, false),
        ("has_depth", Bool, false),
        ("depth_unit_mm", F64, false),
        ("rgb_image_id", Str, false),
        ("depth_image_id", Str, true),
        ("joint_positions_rad", F32List, false),
        ("joint_velocities_rad_s", F32List, false),
        ("goal_rad", F32List, false),
        ("goal_gripper", F64, false),
        ("from_baseline", Bool, false),
        ("has_command", Bool, false),
        ("approved", Bool, false),
        ("rejected_by", StrList, false),
        ("command_rad", F32List, false),
        ("command_gripper", F64, false),
        ("reason", Str, false),
        ("flags", StrList, false),
        ("recording_id", Str, false),
    ],
};

/// Camera images and the model's inputs, from bulk-uploaded recordings.
pub const IMAGES: Table = Table {
    name: "images",
    time: "time",
    columns: &[
        ("robot_id", Str, false),
        ("boot_id", Str, false),
        ("task_id", Str, true),
        ("time", Time, false),
        ("frame_seq", I64, true),
        ("image_id", Str, true),
        ("kind", Str, false),
        ("format", Str, false),
        ("width", I64, false),
        ("height", I64, false),
        ("data", Bytes, false),
        ("blur_score", F64, true),
        ("flags", StrList, false),
        ("recording_id", Str, false),
    ],
};

/// People's labels of tasks from the review queue, beside the robot's outcome.
pub const LABELS: Table = Table {
    name: "labels",
    time: "time",
    columns: &[
        ("robot_id", Str, false),
        ("boot_id", Str, false),
        ("task_id", Str, true),
        ("episode_id", Str, false),
        ("time", Time, false),
        ("task_start_time", Time, false),
        ("human_success", Bool, false),
        ("auto_success", Bool, false),
        ("auto_failure_reason", Str, true),
        ("review_reason", Str, false),
        ("labelled_by", Str, false),
        ("note", Str, true),
        ("flags", StrList, false),
    ],
};

pub const ALL: [&Table; 9] =
    [&TASKS, &OBSERVATIONS, &ACTIONS, &FRAMES, &INCIDENTS, &HEALTH, &SAMPLES, &IMAGES, &LABELS];

impl Table {
    pub fn schema(&self) -> Schema {
        let fields: Vec<Field> = self.columns.iter().map(|(n, k, null)| Field::new(*n, k.data_type(), *null)).collect();
        Schema::new(fields)
    }
}

/// One value of a row, in column order.
#[derive(Debug, Clone, Copy)]
pub enum V<'a> {
    S(Option<&'a str>),
    I(Option<i64>),
    F(Option<f64>),
    B(Option<bool>),
    /// Nanoseconds since the Unix epoch; stored as microseconds.
    T(u64),
    L(&'a [f32]),
    SL(&'a [String]),
    Bin(&'a [u8]),
}

enum Builder {
    Str(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Time(TimestampMicrosecondBuilder),
    F32List(ListBuilder<Float32Builder>),
    StrList(ListBuilder<StringBuilder>),
    Bytes(BinaryBuilder),
}

/// Rows of one table, column by column.
pub struct Rows {
    pub table: &'static Table,
    builders: Vec<Builder>,
    pub rows: u64,
}

/// A row that does not fit its table: a bug in the exporter, not bad data.
#[derive(Debug, thiserror::Error)]
#[error("lake table {table}: column {column} cannot hold {value}")]
pub struct Mismatch {
    table: &'static str,
    column: &'static str,
    value: String,
}

impl Rows {
    pub fn new(table: &'static Table) -> Self {
        let builders = table
            .columns
            .iter()
            .map(|(_, k, _)| match k {
                Str => Builder::Str(StringBuilder::new()),
                I64 => Builder::I64(Int64Builder::new()),
                F64 => Builder::F64(Float64Builder::new()),
                Bool => Builder::Bool(BooleanBuilder::new()),
                Time => Builder::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
                F32List => Builder::F32List(ListBuilder::new(Float32Builder::new())),
                StrList => Builder::StrList(ListBuilder::new(StringBuilder::new())),
                Bytes => Builder::Bytes(BinaryBuilder::new()),
            })
            .collect();
        Self { table, builders, rows: 0 }
    }

    /// Appends one row; `values` in the table's column order. Nothing is
    /// appended when a value does not fit its column.
    pub fn push(&mut self, values: &[V<'_>]) -> Result<(), Mismatch> {
        let cols = self.table.columns;
        let fits = values.len() == cols.len()
            && values.iter().zip(cols).all(|(v, (_, k, null))| {
                let is_null = matches!(v, V::S(None) | V::I(None) | V::F(None) | V::B(None));
                (*null || !is_null)
                    && matches!(
                        (v, k),
                        (V::S(_), Str)
                            | (V::I(_), I64)
                            | (V::F(_), F64)
                            | (V::B(_), Bool)
                            | (V::T(_), Time)
                            | (V::L(_), F32List)
                            | (V::SL(_), StrList)
                            | (V::Bin(_), Bytes)
                    )
            });
        if !fits {
            let at = values.len().min(cols.len().saturating_sub(1));
            return Err(Mismatch {
                table: self.table.name,
                column: cols.get(at).map_or("?", |c| c.0),
                value: format!("{} values for {} columns: {values:?}", values.len(), cols.len()),
            });
        }
        for (v, b) in values.iter().zip(&mut self.builders) {
            match (v, b) {
                (V::S(x), Builder::Str(b)) => b.append_option(*x),
                (V::I(x), Builder::I64(b)) => b.append_option(*x),
                (V::F(x), Builder::F64(b)) => b.append_option(*x),
                (V::B(x), Builder::Bool(b)) => b.append_option(*x),
                (V::T(ns), Builder::Time(b)) => b.append_value((*ns / 1000) as i64),
                (V::L(x), Builder::F32List(b)) => {
                    b.values().append_slice(x);
                    b.append(true);
                }
                (V::SL(x), Builder::StrList(b)) => {
                    for s in x.iter() {
                        b.values().append_value(s);
                    }
                    b.append(true);
                }
                (V::Bin(x), Builder::Bytes(b)) => b.append_value(x),
                _ => {}
            }
        }
        self.rows += 1;
        Ok(())
    }

    pub fn finish(mut self) -> anyhow::Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Str(b) => Arc::new(b.finish()),
                    Builder::I64(b) => Arc::new(b.finish()),
                    Builder::F64(b) => Arc::new(b.finish()),
                    Builder::Bool(b) => Arc::new(b.finish()),
                    Builder::Time(b) => Arc::new(b.finish()),
                    Builder::F32List(b) => Arc::new(b.finish()),
                    Builder::StrList(b) => Arc::new(b.finish()),
                    Builder::Bytes(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        Ok(RecordBatch::try_new(Arc::new(self.table.schema()), arrays)?)
    }
}

/// Parquet (zstd) with the table's name and the schema version in the file's
/// key-value metadata.
pub fn parquet_bytes(table: &Table, batches: &[RecordBatch]) -> anyhow::Result<Vec<u8>> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(VERSION_KEY.to_string(), SCHEMA_VERSION.to_string()),
            KeyValue::new(TABLE_KEY.to_string(), table.name.to_string()),
        ]))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, Arc::new(table.schema()), Some(props))?;
    for b in batches {
        writer.write(b)?;
    }
    writer.close()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_column_is_unsigned_nanosecond_or_a_keyword() {
        // SQL keywords that Spark (ANSI), DuckDB or PostgreSQL reserve, among
        // the names a log table would reach for.
        const RESERVED: [&str; 12] =
            ["check", "limit", "end", "start", "order", "group", "select", "user", "from", "to", "table", "default"];
        for t in ALL {
            for (name, kind, _) in t.columns {
                assert!(!RESERVED.contains(name), "{}.{name}", t.name);
                let dt = kind.data_type();
                assert!(!matches!(dt, DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64));
                assert!(!matches!(dt, DataType::Timestamp(TimeUnit::Nanosecond, _)), "{}.{name}", t.name);
            }
            for key in ["robot_id", "boot_id", "flags", t.time] {
                assert!(t.columns.iter().any(|c| c.0 == key), "{} lacks {key}", t.name);
            }
        }
    }

    /// `docs/LAKE.md` is the dictionary data teams read: it must list every
    /// column of every table, in order, with its type and nullability.
    #[test]
    fn the_data_dictionary_matches_the_tables() {
        let doc = include_str!("../../../docs/LAKE.md");
        for t in ALL {
            let head = format!("### `{}`", t.name);
            let at = doc.find(&head).unwrap_or_else(|| panic!("docs/LAKE.md has no section {head}"));
            let section = &doc[at + head.len()..];
            let section = &section[..section.find("\n### ").unwrap_or(section.len())];
            let documented: Vec<(String, String, String)> = section
                .lines()
                .filter(|l| l.starts_with("| `"))
                .map(|l| {
                    let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                    (cells[1].trim_matches('`').to_string(), cells[2].to_string(), cells[3].to_string())
                })
                .collect();
            let code: Vec<(String, String, String)> = t
                .columns
                .iter()
                .map(|(n, k, null)| {
                    let ty = match k {
                        Str => "string",
                        I64 => "int64",
                        F64 => "double",
                        Bool => "bool",
                        Time => "timestamp",
                        F32List => "list<float>",
                        StrList => "list<string>",
                        Bytes => "binary",
                    };
                    (n.to_string(), ty.to_string(), if *null { "yes" } else { "no" }.to_string())
                })
                .collect();
            assert_eq!(documented, code, "docs/LAKE.md, table {}", t.name);
        }
    }

    #[test]
    fn a_row_that_does_not_fit_is_refused_whole() {
        let mut rows = Rows::new(&OBSERVATIONS);
        let short = [V::S(Some("r")), V::S(Some("b"))];
        assert!(rows.push(&short).is_err());
        let null_boot = [
            V::S(Some("r")),
            V::S(None),
            V::S(None),
            V::T(1_000),
            V::I(Some(1)),
            V::F(Some(0.0)),
            V::L(&[]),
            V::L(&[]),
            V::SL(&[]),
            V::S(Some("x")),
        ];
        assert!(rows.push(&null_boot).is_err(), "boot_id is not nullable");
        assert_eq!(rows.rows, 0);
        let mut ok = null_boot;
        ok[1] = V::S(Some("b"));
        rows.push(&ok).unwrap();
        let batch = rows.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        use arrow_array::cast::AsArray;
        let t = batch.column_by_name("time").unwrap().as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        assert_eq!(t.value(0), 1, "nanoseconds stored as microseconds");
    }
}
