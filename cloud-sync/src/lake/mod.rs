//! The data lake export: stored log batches become Parquet tables (zstd),
//! Hive-partitioned as `TABLE/date=YYYY-MM-DD/robot=ID/part-FIRST-LAST.parquet`
//! (contract: Files), written incrementally: each run takes the batches stored
//! since the last one (by catalog cursor) and adds files for them only. A run
//! cut short rewrites the same file names, so re-running never duplicates rows.
//! Past days' partitions are then compacted into one file each.
//!
//! Tables and columns: [`schema`] and `docs/LAKE.md`. Every row carries
//! `robot_id`, `boot_id` (`seq` and `frame_seq` restart with it), `task_id`
//! during a task, and its own quality `flags`.

pub mod recordings;
pub mod review;
pub mod rows;
pub mod schema;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use rusqlite::Connection;
use serde::Serialize;

use crate::quality::{self, Limits, Parsed};
use crate::sql::{Db, Row, Tx, Val};
use crate::store::CloudCatalog;
use crate::vals;
use rows::Partitions;

/// The tables' names, in `docs/LAKE.md`'s order.
pub const TABLES: [&str; 8] =
    ["tasks", "observations", "actions", "frames", "incidents", "health", "samples", "images"];

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
    /// Of the file's bytes, hex.
    pub sha256: String,
    /// The lake schema the file follows ([`schema::SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Files this one holds the rows of (a compaction): a copy should drop them.
    pub replaces: Vec<u64>,
    /// A compaction replaced this file (by that file's id): its object is gone.
    pub superseded_by: Option<u64>,
}

/// What the export follows, each by its own cursor.
#[derive(Clone, Copy)]
enum Source {
    /// The stored log batches.
    Batches,
    /// Bulk-uploaded recordings (samples, images).
    Recordings,
    /// People's labels from the review queue.
    Labels,
}

impl Source {
    fn column(self) -> &'static str {
        match self {
            Source::Batches => "cursor",
            Source::Recordings => "recordings_cursor",
            Source::Labels => "labels_cursor",
        }
    }
}

/// What has been exported: the last catalog cursor and the files written,
/// the review queue, and the analytics' running totals. In the catalog's
/// database: among replicas one leader exports, and after it another
/// carries on where it stopped.
pub struct LakeState {
    db: Db,
}

/// Taken while creating the tables on PostgreSQL, which replicas may do at once.
const SCHEMA_LOCK: i64 = 0x6761_6e74_7279_0010;

/// The tables both engines take alike (SQLite files made before a column
/// existed gain it in [`LakeState::open`]).
const SCHEMA: [&str; 7] = [
    "CREATE TABLE IF NOT EXISTS exported (id BIGINT PRIMARY KEY CHECK (id = 1), cursor BIGINT NOT NULL, \
     recordings_cursor BIGINT NOT NULL DEFAULT 0, labels_cursor BIGINT NOT NULL DEFAULT 0)",
    "INSERT INTO exported (id, cursor) VALUES (1, 0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS episode_stats (robot_id TEXT NOT NULL, task TEXT NOT NULL, success BIGINT NOT NULL, \
     failure_reason TEXT NOT NULL, episodes BIGINT NOT NULL, PRIMARY KEY (robot_id, task, success, failure_reason))",
    "CREATE TABLE IF NOT EXISTS incident_stats (robot_id TEXT NOT NULL, check_name TEXT NOT NULL, \
     incidents BIGINT NOT NULL, PRIMARY KEY (robot_id, check_name))",
    "CREATE TABLE IF NOT EXISTS latency_stats (hour_unix_s BIGINT NOT NULL, robot_id TEXT NOT NULL, \
     sum_ms DOUBLE PRECISION NOT NULL, frames BIGINT NOT NULL, PRIMARY KEY (hour_unix_s, robot_id))",
    review::SCHEMA,
    review::INDEX,
];

/// The files' log on PostgreSQL; SQLite's keys its ids by `AUTOINCREMENT`.
const PG_FILES: &str = "CREATE TABLE IF NOT EXISTS files (id BIGSERIAL PRIMARY KEY, table_name TEXT NOT NULL, \
     partition TEXT NOT NULL, path TEXT NOT NULL UNIQUE, rows BIGINT NOT NULL, bytes BIGINT NOT NULL, \
     sha256 TEXT NOT NULL DEFAULT '', schema_version BIGINT NOT NULL DEFAULT 1, replaces TEXT NOT NULL DEFAULT '', \
     superseded_by BIGINT, removed BIGINT NOT NULL DEFAULT 0)";

impl LakeState {
    /// The state kept in the SQLite file `path` (`lake.sqlite` in the data
    /// directory for one instance; `_gantry_lake.sqlite` in the target of a
    /// one-off export, so exporting into the same directory again only adds);
    /// `None`: in memory.
    pub fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        let conn = match path {
            Some(p) => Connection::open(p).with_context(|| format!("opening {}", p.display()))?,
            None => Connection::open_in_memory()?,
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        for statement in SCHEMA {
            conn.execute_batch(statement)?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS files (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 table_name TEXT NOT NULL,
                 partition TEXT NOT NULL,
                 path TEXT NOT NULL UNIQUE,
                 rows INTEGER NOT NULL,
                 bytes INTEGER NOT NULL
             );",
        )?;
        let has_recordings: bool = conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('exported') WHERE name = 'recordings_cursor'",
            [],
            |r| r.get(0),
        )?;
        if !has_recordings {
            conn.execute_batch(
                "ALTER TABLE exported ADD COLUMN recordings_cursor INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE exported ADD COLUMN labels_cursor INTEGER NOT NULL DEFAULT 0;",
            )?;
        }
        // Columns added with schema version 2; files written before them are
        // version 1 (nanosecond, unsigned) and never compacted with newer ones.
        for (column, decl) in [
            ("sha256", "TEXT NOT NULL DEFAULT ''"),
            ("schema_version", "INTEGER NOT NULL DEFAULT 1"),
            ("replaces", "TEXT NOT NULL DEFAULT ''"),
            ("superseded_by", "INTEGER"),
            ("removed", "INTEGER NOT NULL DEFAULT 0"),
        ] {
            let exists: bool =
                conn.query_row("SELECT count(*) > 0 FROM pragma_table_info('files') WHERE name = ?1", [column], |r| {
                    r.get(0)
                })?;
            if !exists {
                conn.execute_batch(&format!("ALTER TABLE files ADD COLUMN {column} {decl}"))?;
            }
        }
        Ok(Self { db: Db::Sqlite(std::sync::Arc::new(Mutex::new(conn))) })
    }

    /// The state in the shared catalog on PostgreSQL.
    pub fn on_postgres(pg: std::sync::Arc<crate::pg::PgCatalog>) -> anyhow::Result<Self> {
        let db = Db::Postgres(pg);
        db.transaction(|tx| {
            tx.serialize(SCHEMA_LOCK)?;
            for statement in SCHEMA.iter().chain([&PG_FILES]) {
                tx.execute(statement, &[])?;
            }
            Ok(())
        })
        .context("creating the lake's tables on PostgreSQL")?;
        Ok(Self { db })
    }

    pub fn cursor(&self) -> anyhow::Result<u64> {
        self.source_cursor(Source::Batches)
    }

    /// Where the export stands in a source.
    fn source_cursor(&self, source: Source) -> anyhow::Result<u64> {
        let rows = self.db.query_owned(format!("SELECT {} FROM exported WHERE id = 1", source.column()), &[])?;
        rows.first().context("the lake's progress row is missing")?.u64(0)
    }

    /// Records the files made from a source's items after `since` up to
    /// `cursor`, with what else they give, and moves the source's cursor,
    /// at once; `false` (and nothing recorded) when the cursor is no longer
    /// `since`: another replica exported those items first.
    fn commit(
        &self,
        source: Source,
        files: &[LakeFile],
        also: Option<(&Aggregates, &[review::ReviewItem])>,
        since: u64,
        cursor: u64,
    ) -> anyhow::Result<bool> {
        let files = files.to_vec();
        let stats = also.map(|(stats, reviews)| (stats.rows(), reviews.to_vec()));
        self.db.transaction(move |tx| {
            let moved = format!("UPDATE exported SET {c} = ?1 WHERE id = 1 AND {c} = ?2", c = source.column());
            if tx.execute(&moved, &vals![cursor, since])? == 0 {
                return Ok(false);
            }
            if let Some((stats, reviews)) = &stats {
                for r in reviews {
                    review::enqueue(tx, r)?;
                }
                for (sql, params) in stats {
                    tx.execute(sql, params)?;
                }
            }
            for f in &files {
                insert_file(tx, f)?;
            }
            Ok(true)
        })
    }

    /// The review queue, oldest task first.
    pub fn review_queue(&self, labelled: bool, limit: usize) -> anyhow::Result<Vec<review::ReviewItem>> {
        review::list(&self.db, labelled, limit)
    }

    /// A person's label for a queued task.
    pub fn label(
        &self,
        task_id: &str,
        robot_id: Option<&str>,
        boot_id: Option<&str>,
        l: &review::Label,
    ) -> Result<review::ReviewItem, review::LabelError> {
        review::label(&self.db, task_id, robot_id, boot_id, l)
    }

    fn labels_since(&self, cursor: u64) -> anyhow::Result<Vec<(u64, review::ReviewItem)>> {
        review::labels_since(&self.db, cursor)
    }

    /// Files written after `since`, oldest first.
    pub fn files_since(&self, since: u64, limit: usize) -> anyhow::Result<Vec<LakeFile>> {
        let rows = self.db.query_owned(
            format!("SELECT {FILE_COLUMNS} FROM files WHERE id > ?1 ORDER BY id LIMIT ?2"),
            &vals![since, limit as u64],
        )?;
        rows.iter().map(file_row).collect()
    }

    /// Whether a file of this path is recorded.
    fn recorded(&self, path: &str) -> anyhow::Result<bool> {
        Ok(!self.db.query("SELECT 1 FROM files WHERE path = ?1", &vals![path])?.is_empty())
    }

    /// What the operator wants at a glance: success rate by task and by robot,
    /// the top failure reasons, incidents per check, and the hourly latency trend.
    pub fn analytics(&self) -> anyhow::Result<serde_json::Value> {
        use serde_json::json;
        let rate = |group: &str| -> anyhow::Result<Vec<serde_json::Value>> {
            let rows = self.db.query_owned(
                format!(
                    "SELECT {group}, CAST(SUM(episodes) AS BIGINT), \
                     CAST(SUM(CASE WHEN success <> 0 THEN episodes ELSE 0 END) AS BIGINT) \
                     FROM episode_stats GROUP BY {group} ORDER BY {group}"
                ),
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    let (n, ok) = (r.int(1)?, r.int(2)?);
                    Ok(json!({"key": r.text(0)?, "episodes": n, "successes": ok,
                              "success_rate": if n > 0 { ok as f64 / n as f64 } else { 0.0 }}))
                })
                .collect()
        };
        let by_task = rate("task")?;
        let by_robot = rate("robot_id")?;
        let failures: Vec<serde_json::Value> = self
            .db
            .query(
                "SELECT failure_reason, CAST(SUM(episodes) AS BIGINT) AS n FROM episode_stats WHERE success = 0 \
                 GROUP BY failure_reason ORDER BY n DESC, failure_reason LIMIT 10",
                &[],
            )?
            .iter()
            .map(|r| Ok(json!({"reason": r.text(0)?, "episodes": r.int(1)?})))
            .collect::<anyhow::Result<_>>()?;
        let incidents: Vec<serde_json::Value> = self
            .db
            .query(
                "SELECT check_name, CAST(SUM(incidents) AS BIGINT) AS n FROM incident_stats \
                 GROUP BY check_name ORDER BY n DESC, check_name",
                &[],
            )?
            .iter()
            .map(|r| Ok(json!({"check": r.text(0)?, "incidents": r.int(1)?})))
            .collect::<anyhow::Result<_>>()?;
        let mut latency: Vec<serde_json::Value> = self
            .db
            .query(
                "SELECT hour_unix_s, SUM(sum_ms) / CAST(SUM(frames) AS DOUBLE PRECISION), CAST(SUM(frames) AS BIGINT) \
                 FROM latency_stats GROUP BY hour_unix_s ORDER BY hour_unix_s DESC LIMIT 168",
                &[],
            )?
            .iter()
            .map(|r| Ok(json!({"hour_unix_s": r.int(0)?, "mean_ms": r.real(1)?, "frames": r.int(2)?})))
            .collect::<anyhow::Result<_>>()?;
        latency.reverse();
        Ok(json!({
            "success_rate_by_task": by_task,
            "success_rate_by_robot": by_robot,
            "top_failure_reasons": failures,
            "incidents_by_check": incidents,
            "latency_trend": latency,
        }))
    }

    /// (table, partition, live files oldest first) of every partition of a
    /// day before `before_date` with more than one live file of this schema.
    fn compactable(&self, before_date: &str) -> anyhow::Result<Vec<(String, String, Vec<LakeFile>)>> {
        let live = self.db.query_owned(
            format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE superseded_by IS NULL AND schema_version = ?1 \
                 AND substr(partition, 6, 10) < ?2 ORDER BY table_name, partition, id"
            ),
            &vals![schema::SCHEMA_VERSION, before_date],
        )?;
        let mut groups: BTreeMap<(String, String), Vec<LakeFile>> = BTreeMap::new();
        for r in &live {
            let f = file_row(r)?;
            groups.entry((f.table.clone(), f.partition.clone())).or_default().push(f);
        }
        Ok(groups.into_iter().filter(|(_, v)| v.len() > 1).map(|((t, p), v)| (t, p, v)).collect())
    }

    /// Records a compacted file and marks the files it replaces; returns its id.
    fn replace(&self, file: &LakeFile) -> anyhow::Result<u64> {
        let file = file.clone();
        self.db.transaction(move |tx| {
            let id = insert_file(tx, &file)?;
            for old in &file.replaces {
                tx.execute("UPDATE files SET superseded_by = ?1 WHERE id = ?2", &vals![id, *old])?;
            }
            Ok(id)
        })
    }

    /// Replaced files whose objects may still be there.
    fn superseded_on_disk(&self) -> anyhow::Result<Vec<LakeFile>> {
        let rows = self.db.query_owned(
            format!("SELECT {FILE_COLUMNS} FROM files WHERE superseded_by IS NOT NULL AND removed = 0 ORDER BY id"),
            &[],
        )?;
        rows.iter().map(file_row).collect()
    }

    /// A replaced file's object is gone.
    fn deleted(&self, id: u64) -> anyhow::Result<()> {
        self.db.transaction(move |tx| tx.execute("UPDATE files SET removed = 1 WHERE id = ?1", &vals![id]).map(drop))
    }

    pub fn file(&self, id: u64) -> anyhow::Result<Option<LakeFile>> {
        let rows = self.db.query_owned(format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"), &vals![id])?;
        rows.first().map(file_row).transpose()
    }
}

const FILE_COLUMNS: &str =
    "id, table_name, partition, path, rows, bytes, sha256, schema_version, replaces, superseded_by";

fn file_row(r: &Row) -> anyhow::Result<LakeFile> {
    Ok(LakeFile {
        id: r.u64(0)?,
        table: r.text(1)?,
        partition: r.text(2)?,
        path: r.text(3)?,
        rows: r.u64(4)?,
        bytes: r.u64(5)?,
        sha256: r.text(6)?,
        schema_version: u32::try_from(r.int(7)?)?,
        replaces: r.text(8)?.split(',').filter_map(|x| x.parse().ok()).collect(),
        superseded_by: r.opt_int(9)?.map(|x| x as u64),
    })
}

/// Records a file (replacing the row of a file written again after a
/// crash, which gets a new id); returns its id.
fn insert_file(tx: &mut dyn Tx, f: &LakeFile) -> anyhow::Result<u64> {
    let replaces: Vec<String> = f.replaces.iter().map(u64::to_string).collect();
    tx.execute("DELETE FROM files WHERE path = ?1", &vals![&f.path])?;
    let row = tx
        .query_one(
            "INSERT INTO files (table_name, partition, path, rows, bytes, sha256, schema_version, replaces) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            &vals![&f.table, &f.partition, &f.path, f.rows, f.bytes, &f.sha256, f.schema_version, replaces.join(",")],
        )?
        .context("INSERT … RETURNING gave no id")?;
    row.u64(0)
}

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
    /// The statements that add these totals to the stored ones.
    fn rows(&self) -> Vec<(&'static str, Vec<Val>)> {
        let episodes = self.episodes.iter().map(|((robot, task, success, reason), n)| {
            (
                "INSERT INTO episode_stats (robot_id, task, success, failure_reason, episodes) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (robot_id, task, success, failure_reason) \
                 DO UPDATE SET episodes = episode_stats.episodes + excluded.episodes",
                vals![robot, task, *success, reason, *n].to_vec(),
            )
        });
        let incidents = self.incidents.iter().map(|((robot, check), n)| {
            (
                "INSERT INTO incident_stats (robot_id, check_name, incidents) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (robot_id, check_name) DO UPDATE SET incidents = incident_stats.incidents + excluded.incidents",
                vals![robot, check, *n].to_vec(),
            )
        });
        let latency = self.latency.iter().map(|((hour, robot), (sum, n))| {
            (
                "INSERT INTO latency_stats (hour_unix_s, robot_id, sum_ms, frames) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (hour_unix_s, robot_id) \
                 DO UPDATE SET sum_ms = latency_stats.sum_ms + excluded.sum_ms, frames = latency_stats.frames + excluded.frames",
                vals![*hour, robot, *sum, *n].to_vec(),
            )
        });
        episodes.chain(incidents).chain(latency).collect()
    }

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
    fn key(&self, path: &str) -> ObjectPath {
        if self.root.as_ref().is_empty() {
            ObjectPath::from(path)
        } else {
            ObjectPath::from(format!("{}/{path}", self.root))
        }
    }

    async fn put(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<(u64, String)> {
        let key = self.key(path);
        let (n, sha256) = (bytes.len() as u64, gantry_config::wire::sha256_hex(&bytes));
        self.dest.put(&key, bytes.into()).await.with_context(|| format!("writing {key}"))?;
        Ok((n, sha256))
    }

    /// Exports every batch stored since the last run; returns the new files.
    pub async fn run(&self) -> anyhow::Result<Vec<LakeFile>> {
        let mut written = Vec::new();
        loop {
            let since = self.state.cursor()?;
            let batches = self.catalog.segments_since(since, 500)?;
            let Some(last) = batches.last().map(|b| b.cursor) else { break };
            let mut parts = Partitions::new();
            let mut stats = Aggregates::default();
            let mut reviews = Vec::new();
            // A run's batches are stored together, in one object, and follow
            // one another here: one read per run, not one per batch.
            let mut run: Option<(String, bytes::Bytes)> = None;
            for b in &batches {
                if run.as_ref().is_none_or(|(key, _)| *key != b.object_key) {
                    let key = ObjectPath::from(b.object_key.as_str());
                    let object = self.source.get(&key).await.with_context(|| format!("reading {key}"))?.bytes().await?;
                    run = Some((b.object_key.clone(), object));
                }
                let object = run.as_ref().map(|(_, o)| o.clone()).unwrap_or_default();
                let (start, end) = (b.object_offset as usize, (b.object_offset + b.bytes) as usize);
                anyhow::ensure!(
                    end <= object.len(),
                    "batch {}: {} holds {} bytes, not {end}",
                    b.id,
                    b.object_key,
                    object.len()
                );
                let body = object.slice(start..end);
                let parsed = quality::parse(&body).with_context(|| format!("parsing batch {}", b.id))?;
                rows::add_batch(&mut parts, b, &parsed, &self.limits, &mut reviews)?;
                stats.add(&b.robot_id, &parsed);
            }
            let files = self.write_parts(parts, &format!("part-{:012}-{last:012}", since + 1)).await?;
            // The cursor moves only once every file is written: a crash before
            // this point rewrites the same files next time.
            self.settle(self.state.commit(Source::Batches, &files, Some((&stats, &reviews)), since, last)?, &files)
                .await?;
            written.extend(files);
        }
        // Bulk-uploaded recordings: the samples and images.
        loop {
            let since = self.state.source_cursor(Source::Recordings)?;
            let uploads = self.catalog.recordings_since(since, 20)?;
            let Some(last) = uploads.last().map(|(c, _)| *c) else { break };
            let mut parts = Partitions::new();
            for (_, u) in &uploads {
                let key = ObjectPath::from(u.object_key.as_str());
                let body = self.source.get(&key).await.with_context(|| format!("reading {key}"))?.bytes().await?;
                recordings::add_recording(&mut parts, u, &body, &self.limits)?;
            }
            let files = self.write_parts(parts, &format!("rec-{:012}-{last:012}", since + 1)).await?;
            self.settle(self.state.commit(Source::Recordings, &files, None, since, last)?, &files).await?;
            written.extend(files);
        }
        // People's labels from the review queue.
        loop {
            let since = self.state.source_cursor(Source::Labels)?;
            let labels = self.state.labels_since(since)?;
            let Some(last) = labels.last().map(|(c, _)| *c) else { break };
            let mut parts = Partitions::new();
            for (_, item) in &labels {
                rows::add_label(&mut parts, item)?;
            }
            let files = self.write_parts(parts, &format!("labels-{:012}-{last:012}", since + 1)).await?;
            self.settle(self.state.commit(Source::Labels, &files, None, since, last)?, &files).await?;
            written.extend(files);
        }
        Ok(written)
    }

    /// After a commit: when another replica had exported the same items
    /// first (`committed` false), removes the files written here that it did
    /// not record, so no reader of the lake's directories finds their rows
    /// twice, and stops this run.
    async fn settle(&self, committed: bool, files: &[LakeFile]) -> anyhow::Result<()> {
        if committed {
            return Ok(());
        }
        for f in files {
            if !self.state.recorded(&f.path)? {
                let key = self.key(&f.path);
                self.dest.delete(&key).await.with_context(|| format!("deleting {key}"))?;
            }
        }
        anyhow::bail!("another replica exported the same items first; this run's files are withdrawn")
    }

    /// Writes each partition's rows as `TABLE/date=…/robot=…/NAME.parquet`.
    async fn write_parts(&self, parts: Partitions, name: &str) -> anyhow::Result<Vec<LakeFile>> {
        let mut files = Vec::new();
        for ((table, date, robot), cols) in parts {
            let (spec, rows) = (cols.table, cols.rows);
            let bytes = schema::parquet_bytes(spec, &[cols.finish()?])?;
            let partition = format!("date={date}/robot={robot}");
            let path = format!("{table}/{partition}/{name}.parquet");
            let (bytes, sha256) = self.put(&path, bytes).await?;
            files.push(LakeFile {
                id: 0,
                table: table.into(),
                partition,
                path,
                rows,
                bytes,
                sha256,
                schema_version: schema::SCHEMA_VERSION,
                replaces: Vec::new(),
                superseded_by: None,
            });
        }
        Ok(files)
    }

    /// Merges each partition of a day before `before_date` (`YYYY-MM-DD`)
    /// that holds several files into one, then deletes the merged files;
    /// returns the new files. Each step can be cut short: the merged file's
    /// name is fixed by what it merges, and deletion is retried every run.
    pub async fn compact(&self, before_date: &str) -> anyhow::Result<Vec<LakeFile>> {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let mut written = Vec::new();
        for (table, partition, files) in self.state.compactable(before_date)? {
            let Some(spec) = schema::ALL.iter().find(|t| t.name == table) else { continue };
            let mut batches = Vec::new();
            for f in &files {
                let key = self.key(&f.path);
                let body = self.dest.get(&key).await.with_context(|| format!("reading {key}"))?.bytes().await?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(body)?.build()?;
                for b in reader {
                    batches.push(b?);
                }
            }
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            let bytes = schema::parquet_bytes(spec, &batches)?;
            let (first, last) = (files[0].id, files[files.len() - 1].id);
            let path = format!("{table}/{partition}/compact-{first:012}-{last:012}.parquet");
            let (bytes, sha256) = self.put(&path, bytes).await?;
            let file = LakeFile {
                id: 0,
                table: table.clone(),
                partition,
                path,
                rows,
                bytes,
                sha256,
                schema_version: schema::SCHEMA_VERSION,
                replaces: files.iter().map(|f| f.id).collect(),
                superseded_by: None,
            };
            let id = self.state.replace(&file)?;
            written.push(LakeFile { id, ..file });
        }
        for f in self.state.superseded_on_disk()? {
            let key = self.key(&f.path);
            match self.dest.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => self.state.deleted(f.id)?,
                Err(e) => return Err(anyhow::Error::from(e).context(format!("deleting {key}"))),
            }
        }
        Ok(written)
    }
}
