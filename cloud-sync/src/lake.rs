//! The data lake export: stored log batches become Parquet tables (zstd),
//! Hive-partitioned as `TABLE/date=YYYY-MM-DD/robot=ID/part-FIRST-LAST.parquet`
//! (contract: Files), written incrementally: each run takes the batches stored
//! since the last one (by catalog cursor) and adds files for them only. A run
//! cut short rewrites the same file names, so re-running never duplicates rows.
//!
//! Tables: `episodes`, `actions`, `incidents`, `health`, `frames`. A frame row
//! is the inference's metadata plus where its image is: `edge_segment_id`
//! names the robot's recording segment, uploaded in bulk as
//! `segments/robot=ID/date=…/SEGMENT.mcap`, and `image_log_time_ns` the log
//! time of its `/camera/image` message there (when the recorder kept that
//! frame's image). The bulk segments themselves are not turned into rows: the
//! log batches already carry every message they hold except the images. Every
//! row carries its batch's quality `flags`; episodes add their own.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, ListBuilder, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::quality::{self, Limits, Parsed};
use crate::store::{CloudCatalog, StoredSegment};

pub const TABLES: [&str; 5] = ["episodes", "actions", "incidents", "health", "frames"];

/// One exported Parquet file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LakeFile {
    /// Position in the export log; `/api/lake/files?since=` pages on it.
    pub id: u64,
    pub table: String,
    /// `date=YYYY-MM-DD/robot=ID`.
    pub partition: String,
    /// Under the lake root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// What has been exported: the last catalog cursor and the files written.
pub struct LakeState {
    conn: Mutex<Connection>,
}

impl LakeState {
    /// The state kept in the SQLite file `path` (`lake.sqlite` in the data
    /// directory for the service; `_gantry_lake.sqlite` in the target of a
    /// one-off export, so exporting into the same directory again only adds);
    /// `None`: in memory.
    pub fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        let conn = match path {
            Some(p) => Connection::open(p).with_context(|| format!("opening {}", p.display()))?,
            None => Connection::open_in_memory()?,
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS exported (id INTEGER PRIMARY KEY CHECK (id = 1), cursor INTEGER NOT NULL);
             INSERT OR IGNORE INTO exported VALUES (1, 0);
             CREATE TABLE IF NOT EXISTS episode_stats (
                 robot_id TEXT NOT NULL, task TEXT NOT NULL, success INTEGER NOT NULL, failure_reason TEXT NOT NULL,
                 episodes INTEGER NOT NULL, PRIMARY KEY (robot_id, task, success, failure_reason));
             CREATE TABLE IF NOT EXISTS incident_stats (
                 robot_id TEXT NOT NULL, check_name TEXT NOT NULL, incidents INTEGER NOT NULL,
                 PRIMARY KEY (robot_id, check_name));
             CREATE TABLE IF NOT EXISTS latency_stats (
                 hour_unix_s INTEGER NOT NULL, robot_id TEXT NOT NULL, sum_ms REAL NOT NULL, frames INTEGER NOT NULL,
                 PRIMARY KEY (hour_unix_s, robot_id));
             CREATE TABLE IF NOT EXISTS files (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 table_name TEXT NOT NULL,
                 partition TEXT NOT NULL,
                 path TEXT NOT NULL UNIQUE,
                 rows INTEGER NOT NULL,
                 bytes INTEGER NOT NULL
             );",
        )?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cursor(&self) -> anyhow::Result<u64> {
        Ok(self.conn().query_row("SELECT cursor FROM exported WHERE id = 1", [], |r| r.get::<_, i64>(0))? as u64)
    }

    fn commit(&self, files: &[LakeFile], stats: &Aggregates, cursor: u64) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for ((robot, task, success, reason), n) in &stats.episodes {
            tx.execute(
                "INSERT INTO episode_stats VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO UPDATE SET episodes = episodes + ?5",
                params![robot, task, success, reason, *n as i64],
            )?;
        }
        for ((robot, check), n) in &stats.incidents {
            tx.execute(
                "INSERT INTO incident_stats VALUES (?1, ?2, ?3) ON CONFLICT DO UPDATE SET incidents = incidents + ?3",
                params![robot, check, *n as i64],
            )?;
        }
        for ((hour, robot), (sum, n)) in &stats.latency {
            tx.execute(
                "INSERT INTO latency_stats VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT DO UPDATE SET sum_ms = sum_ms + ?3, frames = frames + ?4",
                params![*hour as i64, robot, sum, *n as i64],
            )?;
        }
        for f in files {
            tx.execute(
                "INSERT OR REPLACE INTO files (table_name, partition, path, rows, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![f.table, f.partition, f.path, f.rows as i64, f.bytes as i64],
            )?;
        }
        tx.execute("UPDATE exported SET cursor = ?1 WHERE id = 1", [cursor as i64])?;
        tx.commit()?;
        Ok(())
    }

    /// Files written after `since`, oldest first.
    pub fn files_since(&self, since: u64, limit: usize) -> anyhow::Result<Vec<LakeFile>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, table_name, partition, path, rows, bytes FROM files WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since as i64, limit as i64], file_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// What the operator wants at a glance: success rate by task and by robot,
    /// the top failure reasons, incidents per check, and the hourly latency trend.
    pub fn analytics(&self) -> anyhow::Result<serde_json::Value> {
        use serde_json::json;
        let conn = self.conn();
        let rate = |group: &str| -> rusqlite::Result<Vec<serde_json::Value>> {
            let mut stmt = conn.prepare(&format!(
                "SELECT {group}, SUM(episodes), SUM(CASE WHEN success THEN episodes ELSE 0 END) \
                 FROM episode_stats GROUP BY {group} ORDER BY {group}"
            ))?;
            let rows = stmt.query_map([], |r| {
                let (n, ok): (i64, i64) = (r.get(1)?, r.get(2)?);
                Ok(json!({"key": r.get::<_, String>(0)?, "episodes": n, "successes": ok,
                          "success_rate": if n > 0 { ok as f64 / n as f64 } else { 0.0 }}))
            })?;
            rows.collect()
        };
        let by_task = rate("task")?;
        let by_robot = rate("robot_id")?;
        let mut stmt = conn.prepare(
            "SELECT failure_reason, SUM(episodes) AS n FROM episode_stats WHERE NOT success \
             GROUP BY failure_reason ORDER BY n DESC, failure_reason LIMIT 10",
        )?;
        let failures: Vec<serde_json::Value> = stmt
            .query_map([], |r| Ok(json!({"reason": r.get::<_, String>(0)?, "episodes": r.get::<_, i64>(1)?})))?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare(
            "SELECT check_name, SUM(incidents) AS n FROM incident_stats GROUP BY check_name ORDER BY n DESC, check_name",
        )?;
        let incidents: Vec<serde_json::Value> = stmt
            .query_map([], |r| Ok(json!({"check": r.get::<_, String>(0)?, "incidents": r.get::<_, i64>(1)?})))?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare(
            "SELECT hour_unix_s, SUM(sum_ms) / SUM(frames), SUM(frames) FROM latency_stats \
             GROUP BY hour_unix_s ORDER BY hour_unix_s DESC LIMIT 168",
        )?;
        let mut latency: Vec<serde_json::Value> = stmt
            .query_map([], |r| {
                Ok(json!({"hour_unix_s": r.get::<_, i64>(0)?, "mean_ms": r.get::<_, f64>(1)?, "frames": r.get::<_, i64>(2)?}))
            })?
            .collect::<Result<_, _>>()?;
        latency.reverse();
        Ok(json!({
            "success_rate_by_task": by_task,
            "success_rate_by_robot": by_robot,
            "top_failure_reasons": failures,
            "incidents_by_check": incidents,
            "latency_trend": latency,
        }))
    }

    pub fn file(&self, id: u64) -> anyhow::Result<Option<LakeFile>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, table_name, partition, path, rows, bytes FROM files WHERE id = ?1",
                [id as i64],
                file_row,
            )
            .optional()?)
    }
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LakeFile> {
    Ok(LakeFile {
        id: r.get::<_, i64>(0)? as u64,
        table: r.get(1)?,
        partition: r.get(2)?,
        path: r.get(3)?,
        rows: r.get::<_, i64>(4)? as u64,
        bytes: r.get::<_, i64>(5)? as u64,
    })
}

fn date_of(unix_ns: u64) -> String {
    let (y, m, d) = gantry_config::wire::civil_from_days((unix_ns / gantry_config::wire::DAY_NS) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Rows of one table in one partition, column by column.
#[derive(Default)]
struct Columns {
    rows: u64,
    robot: StringBuilder,
    batch: StringBuilder,
    flags: ListBuilder<StringBuilder>,
    time: TimestampNanosecondBuilder,
    strings: BTreeMap<&'static str, StringBuilder>,
    u64s: BTreeMap<&'static str, UInt64Builder>,
    f64s: BTreeMap<&'static str, Float64Builder>,
    bools: BTreeMap<&'static str, BooleanBuilder>,
    lists: BTreeMap<&'static str, ListBuilder<Float32Builder>>,
    string_lists: BTreeMap<&'static str, ListBuilder<StringBuilder>>,
    u32s: BTreeMap<&'static str, UInt32Builder>,
    i32s: BTreeMap<&'static str, Int32Builder>,
}

impl Columns {
    fn row(&mut self, b: &StoredSegment, unix_ns: u64, flags: &[String]) -> &mut Self {
        self.rows += 1;
        self.robot.append_value(&b.robot_id);
        self.batch.append_value(&b.id);
        self.time.append_value(unix_ns as i64);
        for f in flags {
            self.flags.values().append_value(f);
        }
        self.flags.append(true);
        self
    }
    fn s(&mut self, k: &'static str, v: Option<&str>) -> &mut Self {
        self.strings.entry(k).or_default().append_option(v);
        self
    }
    fn u(&mut self, k: &'static str, v: Option<u64>) -> &mut Self {
        self.u64s.entry(k).or_default().append_option(v);
        self
    }
    fn u32(&mut self, k: &'static str, v: u32) -> &mut Self {
        self.u32s.entry(k).or_default().append_value(v);
        self
    }
    fn i32(&mut self, k: &'static str, v: Option<i32>) -> &mut Self {
        self.i32s.entry(k).or_default().append_option(v);
        self
    }
    fn f(&mut self, k: &'static str, v: Option<f64>) -> &mut Self {
        self.f64s.entry(k).or_default().append_option(v);
        self
    }
    fn b(&mut self, k: &'static str, v: bool) -> &mut Self {
        self.bools.entry(k).or_default().append_value(v);
        self
    }
    fn l(&mut self, k: &'static str, v: &[f32]) -> &mut Self {
        let l = self.lists.entry(k).or_default();
        l.values().append_slice(v);
        l.append(true);
        self
    }
    fn sl(&mut self, k: &'static str, v: &[String]) -> &mut Self {
        let l = self.string_lists.entry(k).or_default();
        for s in v {
            l.values().append_value(s);
        }
        l.append(true);
        self
    }

    fn finish(mut self, time_name: &str) -> anyhow::Result<RecordBatch> {
        let mut cols: Vec<(String, ArrayRef)> = vec![
            ("robot_id".into(), Arc::new(self.robot.finish())),
            (time_name.into(), Arc::new(self.time.finish().with_timezone("UTC"))),
        ];
        cols.extend(self.strings.iter_mut().map(|(k, v)| (k.to_string(), Arc::new(v.finish()) as ArrayRef)));
        cols.extend(self.u64s.iter_mut().map(|(k, v)| (k.to_string(), Arc::new(v.finish()) as ArrayRef)));
        cols.extend(self.u32s.iter_mut().map(|(k, v)| (k.to_string(), Arc::new(v.finish()) as ArrayRef)));
        cols.extend(self.i32s.iter_mut().map(|(k, v)| (k.to_string(), Arc::new(v.finish()) as ArrayRef)));
        cols.extend(self.f64s.iter_mut().map(|(k, v)| (k.to_string(), Arc::new(v.finish()) as ArrayRef)));
        cols.extend(self.bools.iter_mut().map(|(k, v)| (k.to_string(), Arc::new(v.finish()) as ArrayRef)));
        cols.extend(self.lists.iter_mut().map(|(k, v)| (k.to_string(), Arc::new(v.finish()) as ArrayRef)));
        cols.extend(self.string_lists.iter_mut().map(|(k, v)| (k.to_string(), Arc::new(v.finish()) as ArrayRef)));
        cols.push(("flags".into(), Arc::new(self.flags.finish())));
        cols.push(("batch_id".into(), Arc::new(self.batch.finish())));
        Ok(RecordBatch::try_from_iter(cols)?)
    }
}

/// Rows of every table, by (table, date, robot).
type Partitions = BTreeMap<(&'static str, String, String), Columns>;

/// Running totals for the analytics, added in the same transaction as the files.
#[derive(Default)]
struct Aggregates {
    /// (robot, task, success, failure reason) → episodes.
    episodes: BTreeMap<(String, String, bool, String), u64>,
    /// (robot, check) → incidents.
    incidents: BTreeMap<(String, String), u64>,
    /// (hour, robot) → (sum of frame-to-action latency, frames).
    latency: BTreeMap<(u64, String), (f64, u64)>,
}

/// The kind of task an episode was: its id without a trailing episode number.
pub fn task_of(task_id: &str) -> &str {
    match task_id.rsplit_once('-') {
        Some((head, tail)) if !head.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => task_id,
    }
}

impl Aggregates {
    fn add(&mut self, robot: &str, p: &Parsed) {
        for e in &p.episodes {
            let reason = e.failure_reason.clone().unwrap_or_default();
            let task = if e.kind.is_empty() { task_of(&e.task_id) } else { &e.kind };
            *self.episodes.entry((robot.into(), task.into(), e.success, reason)).or_default() += 1;
        }
        for i in &p.incidents {
            *self.incidents.entry((robot.into(), i.check.clone())).or_default() += 1;
        }
        for f in &p.frames {
            let slot = self.latency.entry((f.unix_ns / 3_600_000_000_000 * 3600, robot.into())).or_default();
            slot.0 += f.latency_ms;
            slot.1 += 1;
        }
    }
}

fn columns<'a>(parts: &'a mut Partitions, table: &'static str, unix_ns: u64, robot: &str) -> &'a mut Columns {
    parts.entry((table, date_of(unix_ns), robot.to_string())).or_default()
}

fn add_batch(parts: &mut Partitions, b: &StoredSegment, p: &Parsed, flags: &[String], limits: &Limits) {
    let robot = b.robot_id.as_str();
    for e in &p.episodes {
        let mut f = flags.to_vec();
        f.retain(|x| x != quality::LABEL);
        f.extend(quality::episode_flags(e, &p.incidents).into_iter().map(String::from));
        columns(parts, "episodes", e.start_unix_ns, robot)
            .row(b, e.start_unix_ns, &f)
            .s("boot_id", Some(&e.boot_id))
            .s("task_id", Some(&e.task_id))
            .s("kind", Some(&e.kind))
            .s("model_version", Some(&e.model_version))
            .u("end_unix_ns", Some(e.end_unix_ns))
            .u("duration_ms", Some(e.end_unix_ns.saturating_sub(e.start_unix_ns) / 1_000_000))
            .b("success", e.success)
            .s("failure_reason", e.failure_reason.as_deref())
            .u("ticks", Some(e.ticks))
            .u("rejects", Some(e.rejects));
    }
    for c in &p.control {
        let mut f = flags.to_vec();
        if !quality::action_in_bounds(c, limits) && !f.iter().any(|x| x == quality::BOUNDS) {
            f.push(quality::BOUNDS.into());
        }
        columns(parts, "actions", c.unix_ns, robot)
            .row(b, c.unix_ns, &f)
            .s("boot_id", Some(&c.boot_id))
            .s("task_id", c.task_id.as_deref())
            .u32("seq", c.seq)
            .s("mode", Some(&c.mode))
            .b("approved", c.approved)
            .sl("rejected_by", &c.rejected_by)
            .b("from_baseline", c.from_baseline)
            .u("frame_seq", Some(c.frame_seq))
            .l("goal_rad", &c.goal_rad)
            .f("goal_gripper", Some(f64::from(c.goal_gripper)))
            .l("command_rad", &c.command_rad)
            .f("command_gripper", Some(f64::from(c.command_gripper)));
    }
    for i in &p.incidents {
        columns(parts, "incidents", i.unix_ns, robot)
            .row(b, i.unix_ns, flags)
            .s("boot_id", Some(&i.boot_id))
            .s("task_id", i.task_id.as_deref())
            .s("check", Some(&i.check))
            .sl("failed", &i.failed)
            .f("value", Some(i.value))
            .f("limit", Some(i.limit))
            .i32("joint", i.joint.map(i32::from))
            .u("frame_seq", Some(i.frame_seq));
    }
    for h in &p.health {
        let unix_ns = h["unix_ns"].as_u64().unwrap_or(b.start_unix_ns);
        let temps = h["motor_temp_c"].as_array().map(|t| t.iter().filter_map(|v| v.as_f64()).fold(f64::NAN, f64::max));
        columns(parts, "health", unix_ns, robot)
            .row(b, unix_ns, flags)
            .s("boot_id", Some(h["boot_id"].as_str().unwrap_or_default()))
            .s("task_id", h["task_id"].as_str())
            .s("mode", h["mode"].as_str())
            .f("cpu_pct", h["cpu_pct"].as_f64())
            .u("mem_used_bytes", h["mem_used_bytes"].as_u64())
            .u("disk_free_bytes", h["disk_free_bytes"].as_u64())
            .f("motor_temp_max_c", temps.filter(|t| !t.is_nan()))
            .f("gripper_pressure_kpa", h["gripper_pressure_kpa"].as_f64())
            .f("latency_p99_ms", h["latency_p99_ms"].as_f64())
            .u("deadline_misses", h["deadline_misses"].as_u64())
            .u("governor_rejects", h["governor_rejects"].as_u64())
            .b("link_alive", h["link_alive"].as_bool().unwrap_or(false));
    }
    for fr in &p.frames {
        let capture = fr.unix_ns.saturating_sub(fr.done_mono_ns.saturating_sub(fr.capture_mono_ns));
        columns(parts, "frames", fr.unix_ns, robot)
            .row(b, fr.unix_ns, flags)
            .s("boot_id", Some(&fr.boot_id))
            .s("task_id", fr.task_id.as_deref())
            .u("frame_seq", Some(fr.frame_seq))
            .f("latency_ms", Some(fr.latency_ms))
            .b("late", fr.late)
            .b("unsafe_action", fr.unsafe_action)
            .b("from_baseline", fr.from_baseline)
            .b("ok", fr.ok)
            .s("edge_segment_id", Some(&b.edge_segment_id))
            .u("image_log_time_ns", Some(capture));
    }
}

fn parquet_bytes(batch: &RecordBatch) -> anyhow::Result<Vec<u8>> {
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?)).build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(out)
}

/// `lake/` under the object store's prefix.
pub fn lake_root(prefix: &ObjectPath) -> ObjectPath {
    if prefix.as_ref().is_empty() {
        ObjectPath::from("lake")
    } else {
        ObjectPath::from(format!("{prefix}/lake"))
    }
}

/// Where the lake goes and what it reads.
pub struct Exporter<'a> {
    pub catalog: &'a dyn CloudCatalog,
    /// Where the stored batches are.
    pub source: &'a dyn ObjectStore,
    /// Where the Parquet files go, under `root`.
    pub dest: &'a dyn ObjectStore,
    pub root: ObjectPath,
    pub state: &'a LakeState,
    pub limits: Limits,
}

impl Exporter<'_> {
    /// Exports every batch stored since the last run; returns the new files.
    pub async fn run(&self) -> anyhow::Result<Vec<LakeFile>> {
        let mut written = Vec::new();
        loop {
            let since = self.state.cursor()?;
            let batches = self.catalog.segments_since(since, 500)?;
            let Some(last) = batches.last().map(|b| b.cursor) else { break };
            let mut parts = Partitions::new();
            let mut stats = Aggregates::default();
            for b in &batches {
                let key = ObjectPath::from(b.object_key.as_str());
                let body = self.source.get(&key).await.with_context(|| format!("reading {key}"))?.bytes().await?;
                let parsed = quality::parse(&body).with_context(|| format!("parsing {key}"))?;
                add_batch(&mut parts, b, &parsed, &b.flags, &self.limits);
                stats.add(&b.robot_id, &parsed);
            }
            let mut files = Vec::new();
            for ((table, date, robot), cols) in parts {
                let rows = cols.rows;
                let time = if table == "episodes" { "start" } else { "time" };
                let bytes = parquet_bytes(&cols.finish(time)?)?;
                let partition = format!("date={date}/robot={robot}");
                let path = format!("{table}/{partition}/part-{:012}-{last:012}.parquet", since + 1);
                let key = if self.root.as_ref().is_empty() {
                    ObjectPath::from(path.as_str())
                } else {
                    ObjectPath::from(format!("{}/{path}", self.root))
                };
                let n = bytes.len() as u64;
                self.dest.put(&key, bytes.into()).await.with_context(|| format!("writing {key}"))?;
                files.push(LakeFile { id: 0, table: table.into(), partition, path, rows, bytes: n });
            }
            // The cursor moves only once every file is written: a crash before
            // this point rewrites the same files next time.
            self.state.commit(&files, &stats, last)?;
            written.extend(files);
        }
        Ok(written)
    }
}
