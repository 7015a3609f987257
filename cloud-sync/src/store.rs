//! Where ingested batches go: their bytes into an object store (`object_store`:
//! local files by default, S3-compatible by URL), their facts into a catalog
//! behind [`CloudCatalog`] (SQLite here; Postgres can implement the same trait).

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// One stored segment: an ingested log batch (an MCAP file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredSegment {
    /// Position in the catalog; `/api/segments?since=` pages on it.
    pub cursor: u64,
    /// `ROBOT-SEQ` (sequence zero-padded to 12 digits).
    pub id: String,
    pub robot_id: String,
    pub seq: u64,
    pub kind: String,
    /// The robot's recording segment the batch was cut from.
    pub edge_segment_id: String,
    /// The object holding the body: the batches of one ingest run share one
    /// object, each at its `offset`, `bytes` long.
    pub object_key: String,
    pub object_offset: u64,
    pub bytes: u64,
    pub sha256: String,
    pub messages: u64,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub received_unix_ns: u64,
    /// Data quality flags (`quality.rs`); empty when clean.
    pub flags: Vec<String>,
}

/// A bulk-uploaded segment, as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadedSegment {
    pub robot_id: String,
    pub segment_id: String,
    pub object_key: String,
    pub bytes: u64,
    pub sha256: String,
    pub messages: u64,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub received_unix_ns: u64,
    /// Data quality flags of the whole segment, images included (`quality.rs`).
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RobotRow {
    pub robot_id: String,
    pub last_seen_unix_ns: u64,
    /// The robot's own last word: `online` or `offline` (its will or clean stop).
    pub state: String,
    pub mode: Option<String>,
    pub model_version: Option<String>,
    pub backlog: Option<u64>,
    /// The robot's account of its model rollout (`wire::ModelReport`), as JSON.
    pub model_report: Option<serde_json::Value>,
    /// When the robot last said it is online (each connection, each model
    /// change): whoever publishes its assignments sends them again then.
    pub online_unix_ns: u64,
    /// An operator's "upload now": the window stays open until then.
    pub upload_now_until_unix_ns: u64,
}

/// What became of a batch offered to the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    New,
    /// (robot, seq) was there with the same body.
    Duplicate,
    /// (robot, seq) was there with another body (its SHA-256 here): this one
    /// is kept aside in `conflicts`.
    Conflict {
        stored_sha256: String,
    },
}

/// A batch whose (robot, seq) was already stored with another body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConflictRow {
    pub robot_id: String,
    pub seq: u64,
    /// This batch's body.
    pub sha256: String,
    /// The body stored first under (robot, seq).
    pub stored_sha256: String,
    /// Where this batch's body is kept.
    pub object_key: String,
    pub bytes: u64,
    pub received_unix_ns: u64,
}

/// The cloud catalog's interface.
pub trait CloudCatalog: Send + Sync {
    /// The body SHA-256 stored under (robot, seq), if any.
    fn segment_sha256(&self, robot: &str, seq: u64) -> anyhow::Result<Option<String>>;
    /// Stores a run of rows in one transaction, each robot seen at its
    /// newest row's receipt: each row's fate, in order. A row whose (robot,
    /// seq) is taken by another body is recorded in `conflicts` instead.
    fn insert_segments(&self, rows: &[StoredSegment]) -> anyhow::Result<Vec<Stored>>;
    /// Conflicting batches, newest first.
    fn conflicts(&self, limit: usize) -> anyhow::Result<Vec<ConflictRow>>;
    fn segments_since(&self, cursor: u64, limit: usize) -> anyhow::Result<Vec<StoredSegment>>;
    fn segment(&self, id: &str) -> anyhow::Result<Option<StoredSegment>>;
    fn robot_seqs(&self, robot: &str) -> anyhow::Result<Vec<u64>>;
    fn touch_robot(&self, robot: &str, unix_ns: u64) -> anyhow::Result<()>;
    fn set_robot_state(&self, robot: &str, state: &str, model_version: Option<&str>) -> anyhow::Result<()>;
    fn set_robot_health(&self, robot: &str, mode: &str, backlog: u64) -> anyhow::Result<()>;
    fn set_robot_model_report(&self, robot: &str, report: &serde_json::Value) -> anyhow::Result<()>;
    /// The robot said it is online at `unix_ns`.
    fn robot_online(&self, robot: &str, unix_ns: u64) -> anyhow::Result<()>;
    /// Opens a known robot's upload window until `until_unix_ns`; `false`
    /// for a robot the catalog does not know.
    fn set_upload_now(&self, robot: &str, until_unix_ns: u64) -> anyhow::Result<bool>;
    fn robots(&self) -> anyhow::Result<Vec<RobotRow>>;
    /// A verified bulk upload of `segment`, if there is one.
    fn upload(&self, robot: &str, segment: &str) -> anyhow::Result<Option<UploadedSegment>>;
    /// Records a verified upload; `false` when it was already there.
    fn insert_upload(&self, u: &UploadedSegment) -> anyhow::Result<bool>;
    fn uploads(&self, robot: &str) -> anyhow::Result<Vec<UploadedSegment>>;
    /// Bulk-uploaded recordings stored after `cursor`, oldest first, with their cursors.
    fn recordings_since(&self, cursor: u64, limit: usize) -> anyhow::Result<Vec<(u64, UploadedSegment)>>;
    /// A recording by its segment id (which names its robot).
    fn recording(&self, id: &str) -> anyhow::Result<Option<UploadedSegment>>;
}

pub struct SqliteCatalog {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS segments (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    robot_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    edge_segment_id TEXT NOT NULL,
    object_key TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    messages INTEGER NOT NULL,
    start_unix_ns INTEGER NOT NULL,
    end_unix_ns INTEGER NOT NULL,
    received_unix_ns INTEGER NOT NULL,
    flags TEXT NOT NULL DEFAULT '[]',
    object_offset INTEGER NOT NULL DEFAULT 0,
    UNIQUE (robot_id, seq)
);
CREATE TABLE IF NOT EXISTS conflicts (
    robot_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    stored_sha256 TEXT NOT NULL,
    object_key TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    received_unix_ns INTEGER NOT NULL,
    PRIMARY KEY (robot_id, seq, sha256)
);
CREATE TABLE IF NOT EXISTS uploads (
    robot_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    object_key TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    messages INTEGER NOT NULL,
    start_unix_ns INTEGER NOT NULL,
    end_unix_ns INTEGER NOT NULL,
    received_unix_ns INTEGER NOT NULL,
    flags TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (robot_id, segment_id)
);
CREATE TABLE IF NOT EXISTS robots (
    robot_id TEXT PRIMARY KEY,
    last_seen_unix_ns INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'unknown',
    mode TEXT,
    model_version TEXT,
    backlog INTEGER
);
";

/// Columns added to `robots` after the first release, and how older catalogs gain them.
pub(crate) const ROBOT_COLUMNS_ADDED: [(&str, &str); 3] = [
    ("model_report", "TEXT"),
    ("online_unix_ns", "BIGINT NOT NULL DEFAULT 0"),
    ("upload_now_until_unix_ns", "BIGINT NOT NULL DEFAULT 0"),
];

/// The `robots` columns a [`RobotRow`] is read from, in [`robot_row`]'s order.
pub(crate) const ROBOT_COLUMNS: &str = "robot_id, last_seen_unix_ns, state, mode, model_version, backlog, \
                                        model_report, online_unix_ns, upload_now_until_unix_ns";

impl SqliteCatalog {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open(path).with_context(|| format!("opening the catalog {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        crate::tasks::create_tables(&conn)?;
        // Added after the first release: older catalogs gain the columns.
        for (column, decl) in ROBOT_COLUMNS_ADDED {
            if !conn.prepare("SELECT 1 FROM pragma_table_info('robots') WHERE name = ?1")?.exists([column])? {
                conn.execute_batch(&format!("ALTER TABLE robots ADD COLUMN {column} {decl}"))?;
            }
        }
        let has_flags: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('segments') WHERE name = 'flags'")?.exists([])?;
        if !has_flags {
            conn.execute_batch("ALTER TABLE segments ADD COLUMN flags TEXT NOT NULL DEFAULT '[]'")?;
        }
        let has_offset: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('segments') WHERE name = 'object_offset'")?.exists([])?;
        if !has_offset {
            conn.execute_batch("ALTER TABLE segments ADD COLUMN object_offset INTEGER NOT NULL DEFAULT 0")?;
        }
        let uploads_flags: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('uploads') WHERE name = 'flags'")?.exists([])?;
        if !uploads_flags {
            conn.execute_batch("ALTER TABLE uploads ADD COLUMN flags TEXT NOT NULL DEFAULT '[]'")?;
        }
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    /// The same connection, for the statements both engines run.
    pub(crate) fn db(&self) -> crate::sql::Db {
        crate::sql::Db::Sqlite(self.conn.clone())
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The body SHA-256 stored under (robot, seq).
const SEGMENT_SHA256: &str = "SELECT sha256 FROM segments WHERE robot_id = ?1 AND seq = ?2";
/// A robot heard from at ?2 (never moving its last-seen time back).
const TOUCH_ROBOT: &str = "INSERT INTO robots (robot_id, last_seen_unix_ns) VALUES (?1, ?2) \
                           ON CONFLICT(robot_id) DO UPDATE SET last_seen_unix_ns = MAX(last_seen_unix_ns, ?2)";

const COLUMNS: &str = "cursor, id, robot_id, seq, kind, edge_segment_id, object_key, bytes, sha256, messages, \
                       start_unix_ns, end_unix_ns, received_unix_ns, flags, object_offset";

fn segment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSegment> {
    Ok(StoredSegment {
        cursor: r.get::<_, i64>(0)? as u64,
        id: r.get(1)?,
        robot_id: r.get(2)?,
        seq: r.get::<_, i64>(3)? as u64,
        kind: r.get(4)?,
        edge_segment_id: r.get(5)?,
        object_key: r.get(6)?,
        bytes: r.get::<_, i64>(7)? as u64,
        sha256: r.get(8)?,
        messages: r.get::<_, i64>(9)? as u64,
        start_unix_ns: r.get::<_, i64>(10)? as u64,
        end_unix_ns: r.get::<_, i64>(11)? as u64,
        received_unix_ns: r.get::<_, i64>(12)? as u64,
        flags: serde_json::from_str(&r.get::<_, String>(13)?).unwrap_or_default(),
        object_offset: r.get::<_, i64>(14)? as u64,
    })
}

/// A stored batch's body: its range of its object.
pub async fn read_body(store: &dyn ObjectStore, s: &StoredSegment) -> anyhow::Result<bytes::Bytes> {
    let key = ObjectPath::from(s.object_key.as_str());
    let body = store
        .get_range(&key, s.object_offset..s.object_offset + s.bytes)
        .await
        .with_context(|| format!("reading {key} at {} ({} bytes)", s.object_offset, s.bytes))?;
    Ok(body)
}

impl CloudCatalog for SqliteCatalog {
    fn segment_sha256(&self, robot: &str, seq: u64) -> anyhow::Result<Option<String>> {
        Ok(self.conn().query_row(SEGMENT_SHA256, params![robot, seq as i64], |r| r.get(0)).optional()?)
    }

    fn insert_segments(&self, rows: &[StoredSegment]) -> anyhow::Result<Vec<Stored>> {
        let mut conn = self.conn();
        // One commit (one fsync) for the run: what makes group commit pay.
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(rows.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO segments (id, robot_id, seq, kind, edge_segment_id, object_key, bytes, sha256, \
                 messages, start_unix_ns, end_unix_ns, received_unix_ns, flags, object_offset) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            let mut stored = tx.prepare_cached(SEGMENT_SHA256)?;
            let mut conflict = tx.prepare_cached(
                "INSERT OR IGNORE INTO conflicts (robot_id, seq, sha256, stored_sha256, object_key, bytes, \
                 received_unix_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut touch = tx.prepare_cached(TOUCH_ROBOT)?;
            for s in rows {
                touch.execute(params![s.robot_id, s.received_unix_ns as i64])?;
                let n = insert.execute(params![
                    s.id,
                    s.robot_id,
                    s.seq as i64,
                    s.kind,
                    s.edge_segment_id,
                    s.object_key,
                    s.bytes as i64,
                    s.sha256,
                    s.messages as i64,
                    s.start_unix_ns as i64,
                    s.end_unix_ns as i64,
                    s.received_unix_ns as i64,
                    serde_json::to_string(&s.flags)?,
                    s.object_offset as i64
                ])?;
                if n == 1 {
                    out.push(Stored::New);
                    continue;
                }
                let first: String = stored.query_row(params![s.robot_id, s.seq as i64], |r| r.get(0))?;
                if first == s.sha256 {
                    out.push(Stored::Duplicate);
                } else {
                    conflict.execute(params![
                        s.robot_id,
                        s.seq as i64,
                        s.sha256,
                        first,
                        s.object_key,
                        s.bytes as i64,
                        s.received_unix_ns as i64
                    ])?;
                    out.push(Stored::Conflict { stored_sha256: first });
                }
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn conflicts(&self, limit: usize) -> anyhow::Result<Vec<ConflictRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT robot_id, seq, sha256, stored_sha256, object_key, bytes, received_unix_ns FROM conflicts \
             ORDER BY received_unix_ns DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(ConflictRow {
                    robot_id: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    sha256: r.get(2)?,
                    stored_sha256: r.get(3)?,
                    object_key: r.get(4)?,
                    bytes: r.get::<_, i64>(5)? as u64,
                    received_unix_ns: r.get::<_, i64>(6)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn segments_since(&self, cursor: u64, limit: usize) -> anyhow::Result<Vec<StoredSegment>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM segments WHERE cursor > ?1 ORDER BY cursor LIMIT ?2"))?;
        let rows = stmt.query_map(params![cursor as i64, limit as i64], segment_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn segment(&self, id: &str) -> anyhow::Result<Option<StoredSegment>> {
        Ok(self
            .conn()
            .query_row(&format!("SELECT {COLUMNS} FROM segments WHERE id = ?1"), [id], segment_row)
            .optional()?)
    }

    fn robot_seqs(&self, robot: &str) -> anyhow::Result<Vec<u64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT seq FROM segments WHERE robot_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([robot], |r| Ok(r.get::<_, i64>(0)? as u64))?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn touch_robot(&self, robot: &str, unix_ns: u64) -> anyhow::Result<()> {
        self.conn().execute(TOUCH_ROBOT, params![robot, unix_ns as i64])?;
        Ok(())
    }

    fn set_robot_state(&self, robot: &str, state: &str, model_version: Option<&str>) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO robots (robot_id, state, model_version) VALUES (?1, ?2, ?3) \
             ON CONFLICT(robot_id) DO UPDATE SET state = ?2, model_version = COALESCE(?3, model_version)",
            params![robot, state, model_version],
        )?;
        Ok(())
    }

    fn set_robot_health(&self, robot: &str, mode: &str, backlog: u64) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO robots (robot_id, mode, backlog) VALUES (?1, ?2, ?3) \
             ON CONFLICT(robot_id) DO UPDATE SET mode = ?2, backlog = ?3",
            params![robot, mode, backlog as i64],
        )?;
        Ok(())
    }

    fn set_robot_model_report(&self, robot: &str, report: &serde_json::Value) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO robots (robot_id, model_report) VALUES (?1, ?2) \
             ON CONFLICT(robot_id) DO UPDATE SET model_report = ?2",
            params![robot, report.to_string()],
        )?;
        Ok(())
    }

    fn robot_online(&self, robot: &str, unix_ns: u64) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO robots (robot_id, online_unix_ns) VALUES (?1, ?2) \
             ON CONFLICT(robot_id) DO UPDATE SET online_unix_ns = ?2",
            params![robot, unix_ns as i64],
        )?;
        Ok(())
    }

    fn set_upload_now(&self, robot: &str, until_unix_ns: u64) -> anyhow::Result<bool> {
        let n = self.conn().execute(
            "UPDATE robots SET upload_now_until_unix_ns = ?2 WHERE robot_id = ?1",
            params![robot, until_unix_ns as i64],
        )?;
        Ok(n > 0)
    }

    fn robots(&self) -> anyhow::Result<Vec<RobotRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT {ROBOT_COLUMNS} FROM robots ORDER BY robot_id"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(robot_row(
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn upload(&self, robot: &str, segment: &str) -> anyhow::Result<Option<UploadedSegment>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE robot_id = ?1 AND segment_id = ?2"),
                [robot, segment],
                upload_row,
            )
            .optional()?)
    }

    fn insert_upload(&self, u: &UploadedSegment) -> anyhow::Result<bool> {
        let n = self.conn().execute(
            &format!(
                "INSERT OR IGNORE INTO uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            params![
                u.robot_id,
                u.segment_id,
                u.object_key,
                u.bytes as i64,
                u.sha256,
                u.messages as i64,
                u.start_unix_ns as i64,
                u.end_unix_ns as i64,
                u.received_unix_ns as i64,
                serde_json::to_string(&u.flags)?
            ],
        )?;
        Ok(n == 1)
    }

    fn recordings_since(&self, cursor: u64, limit: usize) -> anyhow::Result<Vec<(u64, UploadedSegment)>> {
        self.recordings_query("WHERE rowid > ?1 ORDER BY rowid LIMIT ?2", &[&(cursor as i64), &(limit as i64)])
    }

    fn recording(&self, id: &str) -> anyhow::Result<Option<UploadedSegment>> {
        Ok(self.recordings_query("WHERE segment_id = ?1 ORDER BY rowid LIMIT 1", &[&id])?.pop().map(|(_, u)| u))
    }

    fn uploads(&self, robot: &str) -> anyhow::Result<Vec<UploadedSegment>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE robot_id = ?1 ORDER BY start_unix_ns, segment_id"
        ))?;
        let rows = stmt.query_map([robot], upload_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

impl SqliteCatalog {
    fn recordings_query(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> anyhow::Result<Vec<(u64, UploadedSegment)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT rowid, {UPLOAD_COLUMNS} FROM uploads {filter}"))?;
        let rows = stmt
            .query_map(args, |r| Ok((r.get::<_, i64>(0)? as u64, upload_row_from(r, 1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

const UPLOAD_COLUMNS: &str =
    "robot_id, segment_id, object_key, bytes, sha256, messages, start_unix_ns, end_unix_ns, received_unix_ns, flags";

/// A [`RobotRow`] from its [`ROBOT_COLUMNS`], as both engines read them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn robot_row(
    robot_id: String,
    last_seen_unix_ns: i64,
    state: String,
    mode: Option<String>,
    model_version: Option<String>,
    backlog: Option<i64>,
    model_report: Option<String>,
    online_unix_ns: i64,
    upload_now_until_unix_ns: i64,
) -> RobotRow {
    RobotRow {
        robot_id,
        last_seen_unix_ns: last_seen_unix_ns as u64,
        state,
        mode,
        model_version,
        backlog: backlog.map(|v| v as u64),
        model_report: model_report.and_then(|t| serde_json::from_str(&t).ok()),
        online_unix_ns: online_unix_ns as u64,
        upload_now_until_unix_ns: upload_now_until_unix_ns as u64,
    }
}

fn upload_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadedSegment> {
    upload_row_from(r, 0)
}

/// An upload row whose columns start at `at`.
fn upload_row_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<UploadedSegment> {
    Ok(UploadedSegment {
        robot_id: r.get(at)?,
        segment_id: r.get(at + 1)?,
        object_key: r.get(at + 2)?,
        bytes: r.get::<_, i64>(at + 3)? as u64,
        sha256: r.get(at + 4)?,
        messages: r.get::<_, i64>(at + 5)? as u64,
        start_unix_ns: r.get::<_, i64>(at + 6)? as u64,
        end_unix_ns: r.get::<_, i64>(at + 7)? as u64,
        received_unix_ns: r.get::<_, i64>(at + 8)? as u64,
        flags: serde_json::from_str(&r.get::<_, String>(at + 9)?).unwrap_or_default(),
    })
}

/// The object store named by `storage.object_store_url`: `file://PATH`
/// (relative to the data directory) or any URL `object_store` understands
/// (`s3://BUCKET/PREFIX`, with credentials from the usual `AWS_*` variables).
pub fn open_object_store(url: &str, data_dir: &Path) -> anyhow::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    if let Some(path) = url.strip_prefix("file://") {
        let dir = if Path::new(path).is_absolute() { Path::new(path).to_path_buf() } else { data_dir.join(path) };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("storage.object_store_url: creating {}", dir.display()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
        return Ok((Arc::new(store), ObjectPath::default()));
    }
    let parsed = url::Url::parse(url).with_context(|| format!("storage.object_store_url: {url:?} is not a URL"))?;
    // object_store's configuration keys are the variables' names in lower case.
    let options: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    let (store, prefix) = object_store::parse_url_opts(&parsed, options)
        .with_context(|| format!("storage.object_store_url: cannot open {url}"))?;
    Ok((Arc::from(store), prefix))
}

/// `TABLE/robot=ID/date=YYYY-MM-DD/ID.mcap`: `segments` for bulk-uploaded
/// recording segments, `conflicts` for a batch kept aside (`ID` = `ROBOT-SEQ-SHA`).
pub fn object_key(prefix: &ObjectPath, table: &str, robot: &str, start_unix_ns: u64, id: &str) -> ObjectPath {
    under(prefix, format!("{table}/robot={robot}/date={}/{id}.mcap", date(start_unix_ns)))
}

/// `logs/date=YYYY-MM-DD/ID.batches`: the bodies of one ingest run (several
/// robots' batches, each an MCAP file), one after another; each catalog row
/// names its range.
pub fn run_object_key(prefix: &ObjectPath, received_unix_ns: u64, id: &str) -> ObjectPath {
    under(prefix, format!("logs/date={}/{id}.batches", date(received_unix_ns)))
}

fn date(unix_ns: u64) -> String {
    let (y, m, d) = gantry_config::wire::civil_from_days((unix_ns / 86_400_000_000_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

fn under(prefix: &ObjectPath, key: String) -> ObjectPath {
    if prefix.as_ref().is_empty() {
        ObjectPath::from(key)
    } else {
        ObjectPath::from(format!("{prefix}/{key}"))
    }
}
