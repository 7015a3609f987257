//! The cloud catalog on PostgreSQL (`catalog.url = "postgres://…"`), which
//! several `gantry-sync` replicas share: the same tables and answers as
//! [`SqliteCatalog`](crate::store::SqliteCatalog).
//!
//! The catalog's interface is synchronous (SQLite answers from the local
//! disk). The blocking `postgres` client runs its own small runtime, which
//! must not nest inside tokio's, so one thread owns the connection and runs
//! each call; a lost connection is made again at the next call.

use std::sync::mpsc;

use anyhow::Context as _;
use postgres::{Client, NoTls, Row};

use gantry_config::task::Priority;

use crate::store::{
    robot_row, CloudCatalog, ConflictRow, RobotRow, Stored, StoredSegment, UploadedSegment, ROBOT_COLUMNS,
    ROBOT_COLUMNS_ADDED,
};
use crate::tasks::{Filter, FinishedCount, NewTask, Outcome, OutcomeCount, Task, TaskCatalog, TaskState};

/// Taken (for one transaction) by every writer of `segments`: cursors then
/// commit in their order, so a reader paging `cursor > N` misses none.
const SEGMENTS_LOCK: i64 = 0x6761_6e74_7279_0001;
/// Taken while creating the schema, which replicas may do at the same time.
const SCHEMA_LOCK: i64 = 0x6761_6e74_7279_0002;
/// As [`SEGMENTS_LOCK`], for `uploads`.
const UPLOADS_LOCK: i64 = 0x6761_6e74_7279_0003;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS segments (
    cursor BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    robot_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    edge_segment_id TEXT NOT NULL,
    object_key TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    messages BIGINT NOT NULL,
    start_unix_ns BIGINT NOT NULL,
    end_unix_ns BIGINT NOT NULL,
    received_unix_ns BIGINT NOT NULL,
    flags TEXT NOT NULL DEFAULT '[]',
    object_offset BIGINT NOT NULL DEFAULT 0,
    UNIQUE (robot_id, seq)
);
CREATE TABLE IF NOT EXISTS conflicts (
    robot_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    stored_sha256 TEXT NOT NULL,
    object_key TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    received_unix_ns BIGINT NOT NULL,
    PRIMARY KEY (robot_id, seq, sha256)
);
CREATE TABLE IF NOT EXISTS uploads (
    cursor BIGSERIAL UNIQUE,
    robot_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    object_key TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    messages BIGINT NOT NULL,
    start_unix_ns BIGINT NOT NULL,
    end_unix_ns BIGINT NOT NULL,
    received_unix_ns BIGINT NOT NULL,
    flags TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (robot_id, segment_id)
);
CREATE TABLE IF NOT EXISTS replicas (
    client_id TEXT PRIMARY KEY,
    beat_unix_ns BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS robots (
    robot_id TEXT PRIMARY KEY,
    last_seen_unix_ns BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'unknown',
    mode TEXT,
    model_version TEXT,
    backlog BIGINT,
    model_report TEXT
);
";

const SEGMENT_COLUMNS: &str = "cursor, id, robot_id, seq, kind, edge_segment_id, object_key, bytes, sha256, \
                               messages, start_unix_ns, end_unix_ns, received_unix_ns, flags, object_offset";
const UPLOAD_COLUMNS: &str =
    "robot_id, segment_id, object_key, bytes, sha256, messages, start_unix_ns, end_unix_ns, received_unix_ns, flags";
const SEGMENT_SHA256: &str = "SELECT sha256 FROM segments WHERE robot_id = $1 AND seq = $2";
const TOUCH_ROBOT: &str = "INSERT INTO robots (robot_id, last_seen_unix_ns) VALUES ($1, $2) \
                           ON CONFLICT (robot_id) DO UPDATE \
                           SET last_seen_unix_ns = GREATEST(robots.last_seen_unix_ns, EXCLUDED.last_seen_unix_ns)";

type Job = Box<dyn FnOnce(anyhow::Result<&mut Client>) + Send>;

pub struct PgCatalog {
    jobs: mpsc::Sender<Job>,
}

/// How the connection is made: plain, or TLS verified against a CA.
type Tls = Option<tokio_postgres_rustls::MakeRustlsConnect>;

/// TLS that trusts only the CA certificates in the PEM file `ca_path`.
fn tls_trusting(ca_path: &str) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let pem = std::fs::read(ca_path).with_context(|| format!("catalog.ca_path: reading {ca_path}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.with_context(|| format!("catalog.ca_path: {ca_path} is not PEM"))?;
        roots.add(cert).with_context(|| format!("catalog.ca_path: a certificate in {ca_path}"))?;
    }
    anyhow::ensure!(!roots.is_empty(), "catalog.ca_path: no certificate in {ca_path}");
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn connect(url: &str, tls: &Tls) -> anyhow::Result<Client> {
    let what = || format!("catalog.url: connecting to {}", redact(url));
    let mut client = match tls {
        None => Client::connect(url, NoTls),
        Some(tls) => {
            let mut config: postgres::Config = url.parse().with_context(what)?;
            // TLS or nothing: never a plain connection when the server declines.
            config.ssl_mode(postgres::config::SslMode::Require);
            config.connect(tls.clone())
        }
    }
    .with_context(what)?;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
    tx.batch_execute(SCHEMA)?;
    tx.batch_execute(TASK_SCHEMA)?;
    for (column, decl) in ROBOT_COLUMNS_ADDED {
        tx.batch_execute(&format!("ALTER TABLE robots ADD COLUMN IF NOT EXISTS {column} {decl}"))?;
    }
    tx.commit()?;
    Ok(client)
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl PgCatalog {
    /// Connects as `catalog` says (over TLS when it names a CA); the first
    /// connection must succeed.
    pub fn open(catalog: &gantry_config::cloud::Catalog) -> anyhow::Result<Self> {
        let tls = match catalog.ca_path.as_str() {
            "" => None,
            ca => Some(tls_trusting(ca)?),
        };
        Self::connect_with(&catalog.url, tls)
    }

    /// Connects without TLS (the first connection must succeed) and creates the tables.
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, None)
    }

    fn connect_with(url: &str, tls: Tls) -> anyhow::Result<Self> {
        let first = std::thread::scope(|s| s.spawn(|| connect(url, &tls)).join())
            .map_err(|_| anyhow::anyhow!("the PostgreSQL connection thread panicked"))??;
        let (jobs, inbox) = mpsc::channel::<Job>();
        let url = url.to_string();
        std::thread::Builder::new().name("gantry-catalog-pg".into()).spawn(move || {
            let mut client = Some(first);
            for job in inbox {
                if client.as_ref().is_none_or(Client::is_closed) {
                    client = match connect(&url, &tls) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            job(Err(e));
                            continue;
                        }
                    };
                }
                match client.as_mut() {
                    Some(c) => job(Ok(c)),
                    None => job(Err(anyhow::anyhow!("no PostgreSQL connection"))),
                }
            }
        })?;
        Ok(Self { jobs })
    }

    /// The database's clock in ns: every replica's beat is timed by the same clock.
    const NOW_NS: &'static str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1e9)::BIGINT";

    /// This replica is alive (see `replicas.rs`).
    pub fn beat(&self, client_id: &str) -> anyhow::Result<()> {
        let id = client_id.to_string();
        self.call(move |c| {
            let sql = format!(
                "INSERT INTO replicas (client_id, beat_unix_ns) VALUES ($1, {now}) \
                 ON CONFLICT (client_id) DO UPDATE SET beat_unix_ns = {now}",
                now = Self::NOW_NS
            );
            c.execute(&sql, &[&id])?;
            Ok(())
        })
    }

    /// The other replicas and how long ago each last beat (ns).
    pub fn peers(&self, client_id: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let id = client_id.to_string();
        self.call(move |c| {
            let sql = format!(
                "SELECT client_id, GREATEST({now} - beat_unix_ns, 0) FROM replicas WHERE client_id <> $1 \
                 ORDER BY client_id",
                now = Self::NOW_NS
            );
            Ok(c.query(&sql, &[&id])?.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64)).collect())
        })
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            let _ = answer.send(client.and_then(f));
        });
        self.jobs.send(job).map_err(|_| anyhow::anyhow!("the catalog's PostgreSQL thread has stopped"))?;
        answered.recv().map_err(|_| anyhow::anyhow!("the catalog's PostgreSQL thread has stopped"))?
    }
}

fn segment_row(r: &Row) -> StoredSegment {
    StoredSegment {
        cursor: r.get::<_, i64>(0) as u64,
        id: r.get(1),
        robot_id: r.get(2),
        seq: r.get::<_, i64>(3) as u64,
        kind: r.get(4),
        edge_segment_id: r.get(5),
        object_key: r.get(6),
        bytes: r.get::<_, i64>(7) as u64,
        sha256: r.get(8),
        messages: r.get::<_, i64>(9) as u64,
        start_unix_ns: r.get::<_, i64>(10) as u64,
        end_unix_ns: r.get::<_, i64>(11) as u64,
        received_unix_ns: r.get::<_, i64>(12) as u64,
        flags: serde_json::from_str(r.get(13)).unwrap_or_default(),
        object_offset: r.get::<_, i64>(14) as u64,
    }
}

/// An upload row whose columns start at `at`.
fn upload_row(r: &Row, at: usize) -> UploadedSegment {
    UploadedSegment {
        robot_id: r.get(at),
        segment_id: r.get(at + 1),
        object_key: r.get(at + 2),
        bytes: r.get::<_, i64>(at + 3) as u64,
        sha256: r.get(at + 4),
        messages: r.get::<_, i64>(at + 5) as u64,
        start_unix_ns: r.get::<_, i64>(at + 6) as u64,
        end_unix_ns: r.get::<_, i64>(at + 7) as u64,
        received_unix_ns: r.get::<_, i64>(at + 8) as u64,
        flags: serde_json::from_str(r.get(at + 9)).unwrap_or_default(),
    }
}

impl CloudCatalog for PgCatalog {
    fn segment_sha256(&self, robot: &str, seq: u64) -> anyhow::Result<Option<String>> {
        let robot = robot.to_string();
        self.call(move |c| Ok(c.query_opt(SEGMENT_SHA256, &[&robot, &(seq as i64)])?.map(|r| r.get(0))))
    }

    fn insert_segments(&self, rows: &[StoredSegment]) -> anyhow::Result<Vec<Stored>> {
        let rows = rows.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEGMENTS_LOCK])?;
            let insert = tx.prepare(
                "INSERT INTO segments (id, robot_id, seq, kind, edge_segment_id, object_key, bytes, sha256, \
                 messages, start_unix_ns, end_unix_ns, received_unix_ns, flags, object_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING",
            )?;
            let stored = tx.prepare(SEGMENT_SHA256)?;
            let conflict = tx.prepare(
                "INSERT INTO conflicts (robot_id, seq, sha256, stored_sha256, object_key, bytes, received_unix_ns) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )?;
            let touch = tx.prepare(TOUCH_ROBOT)?;
            let mut out = Vec::with_capacity(rows.len());
            for s in &rows {
                tx.execute(&touch, &[&s.robot_id, &(s.received_unix_ns as i64)])?;
                let n = tx.execute(
                    &insert,
                    &[
                        &s.id,
                        &s.robot_id,
                        &(s.seq as i64),
                        &s.kind,
                        &s.edge_segment_id,
                        &s.object_key,
                        &(s.bytes as i64),
                        &s.sha256,
                        &(s.messages as i64),
                        &(s.start_unix_ns as i64),
                        &(s.end_unix_ns as i64),
                        &(s.received_unix_ns as i64),
                        &serde_json::to_string(&s.flags)?,
                        &(s.object_offset as i64),
                    ],
                )?;
                if n == 1 {
                    out.push(Stored::New);
                    continue;
                }
                let first: String = tx.query_one(&stored, &[&s.robot_id, &(s.seq as i64)])?.get(0);
                if first == s.sha256 {
                    out.push(Stored::Duplicate);
                } else {
                    tx.execute(
                        &conflict,
                        &[
                            &s.robot_id,
                            &(s.seq as i64),
                            &s.sha256,
                            &first,
                            &s.object_key,
                            &(s.bytes as i64),
                            &(s.received_unix_ns as i64),
                        ],
                    )?;
                    out.push(Stored::Conflict { stored_sha256: first });
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn conflicts(&self, limit: usize) -> anyhow::Result<Vec<ConflictRow>> {
        self.call(move |c| {
            let rows = c.query(
                "SELECT robot_id, seq, sha256, stored_sha256, object_key, bytes, received_unix_ns FROM conflicts \
                 ORDER BY received_unix_ns DESC LIMIT $1",
                &[&(limit as i64)],
            )?;
            Ok(rows
                .iter()
                .map(|r| ConflictRow {
                    robot_id: r.get(0),
                    seq: r.get::<_, i64>(1) as u64,
                    sha256: r.get(2),
                    stored_sha256: r.get(3),
                    object_key: r.get(4),
                    bytes: r.get::<_, i64>(5) as u64,
                    received_unix_ns: r.get::<_, i64>(6) as u64,
                })
                .collect())
        })
    }

    fn segments_since(&self, cursor: u64, limit: usize) -> anyhow::Result<Vec<StoredSegment>> {
        self.call(move |c| {
            let sql = format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE cursor > $1 ORDER BY cursor LIMIT $2");
            Ok(c.query(&sql, &[&(cursor as i64), &(limit as i64)])?.iter().map(segment_row).collect())
        })
    }

    fn segment(&self, id: &str) -> anyhow::Result<Option<StoredSegment>> {
        let id = id.to_string();
        self.call(move |c| {
            let sql = format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = $1");
            Ok(c.query_opt(&sql, &[&id])?.as_ref().map(segment_row))
        })
    }

    fn robot_seqs(&self, robot: &str) -> anyhow::Result<Vec<u64>> {
        let robot = robot.to_string();
        self.call(move |c| {
            let rows = c.query("SELECT seq FROM segments WHERE robot_id = $1 ORDER BY seq", &[&robot])?;
            Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
        })
    }

    fn touch_robot(&self, robot: &str, unix_ns: u64) -> anyhow::Result<()> {
        let robot = robot.to_string();
        self.call(move |c| Ok(c.execute(TOUCH_ROBOT, &[&robot, &(unix_ns as i64)]).map(drop)?))
    }

    fn set_robot_state(&self, robot: &str, state: &str, model_version: Option<&str>) -> anyhow::Result<()> {
        let (robot, state, model_version) = (robot.to_string(), state.to_string(), model_version.map(str::to_string));
        self.call(move |c| {
            c.execute(
                "INSERT INTO robots (robot_id, state, model_version) VALUES ($1, $2, $3) \
                 ON CONFLICT (robot_id) DO UPDATE SET state = $2, model_version = COALESCE($3, robots.model_version)",
                &[&robot, &state, &model_version],
            )?;
            Ok(())
        })
    }

    fn set_robot_health(&self, robot: &str, mode: &str, backlog: u64) -> anyhow::Result<()> {
        let (robot, mode) = (robot.to_string(), mode.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO robots (robot_id, mode, backlog) VALUES ($1, $2, $3) \
                 ON CONFLICT (robot_id) DO UPDATE SET mode = $2, backlog = $3",
                &[&robot, &mode, &(backlog as i64)],
            )?;
            Ok(())
        })
    }

    fn set_robot_model_report(&self, robot: &str, report: &serde_json::Value) -> anyhow::Result<()> {
        let (robot, report) = (robot.to_string(), report.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO robots (robot_id, model_report) VALUES ($1, $2) \
                 ON CONFLICT (robot_id) DO UPDATE SET model_report = $2",
                &[&robot, &report],
            )?;
            Ok(())
        })
    }

    fn robot_online(&self, robot: &str, unix_ns: u64) -> anyhow::Result<()> {
        let robot = robot.to_string();
        self.call(move |c| {
            c.execute(
                "INSERT INTO robots (robot_id, online_unix_ns) VALUES ($1, $2) \
                 ON CONFLICT (robot_id) DO UPDATE SET online_unix_ns = $2",
                &[&robot, &(unix_ns as i64)],
            )?;
            Ok(())
        })
    }

    fn set_upload_now(&self, robot: &str, until_unix_ns: u64) -> anyhow::Result<bool> {
        let robot = robot.to_string();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE robots SET upload_now_until_unix_ns = $2 WHERE robot_id = $1",
                &[&robot, &(until_unix_ns as i64)],
            )?;
            Ok(n > 0)
        })
    }

    fn robots(&self) -> anyhow::Result<Vec<RobotRow>> {
        self.call(|c| {
            let rows = c.query(&format!("SELECT {ROBOT_COLUMNS} FROM robots ORDER BY robot_id"), &[])?;
            Ok(rows
                .iter()
                .map(|r| {
                    robot_row(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8))
                })
                .collect())
        })
    }

    fn upload(&self, robot: &str, segment: &str) -> anyhow::Result<Option<UploadedSegment>> {
        let (robot, segment) = (robot.to_string(), segment.to_string());
        self.call(move |c| {
            let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE robot_id = $1 AND segment_id = $2");
            Ok(c.query_opt(&sql, &[&robot, &segment])?.map(|r| upload_row(&r, 0)))
        })
    }

    fn insert_upload(&self, u: &UploadedSegment) -> anyhow::Result<bool> {
        let u = u.clone();
        self.call(move |c| {
            let sql = format!(
                "INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT DO NOTHING"
            );
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&UPLOADS_LOCK])?;
            let n = tx.execute(
                &sql,
                &[
                    &u.robot_id,
                    &u.segment_id,
                    &u.object_key,
                    &(u.bytes as i64),
                    &u.sha256,
                    &(u.messages as i64),
                    &(u.start_unix_ns as i64),
                    &(u.end_unix_ns as i64),
                    &(u.received_unix_ns as i64),
                    &serde_json::to_string(&u.flags)?,
                ],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn uploads(&self, robot: &str) -> anyhow::Result<Vec<UploadedSegment>> {
        let robot = robot.to_string();
        self.call(move |c| {
            let sql =
                format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE robot_id = $1 ORDER BY start_unix_ns, segment_id");
            Ok(c.query(&sql, &[&robot])?.iter().map(|r| upload_row(r, 0)).collect())
        })
    }

    fn recordings_since(&self, cursor: u64, limit: usize) -> anyhow::Result<Vec<(u64, UploadedSegment)>> {
        self.call(move |c| {
            let sql =
                format!("SELECT cursor, {UPLOAD_COLUMNS} FROM uploads WHERE cursor > $1 ORDER BY cursor LIMIT $2");
            let rows = c.query(&sql, &[&(cursor as i64), &(limit as i64)])?;
            Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, upload_row(r, 1))).collect())
        })
    }

    fn recording(&self, id: &str) -> anyhow::Result<Option<UploadedSegment>> {
        let id = id.to_string();
        self.call(move |c| {
            let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE segment_id = $1 ORDER BY cursor LIMIT 1");
            Ok(c.query_opt(&sql, &[&id])?.map(|r| upload_row(&r, 0)))
        })
    }
}

/// The task tables, as `tasks.rs` keeps them in SQLite.
const TASK_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    rev BIGINT NOT NULL UNIQUE,
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    priority BIGINT NOT NULL,
    params TEXT NOT NULL,
    not_before_unix_ns BIGINT NOT NULL,
    state TEXT NOT NULL,
    robot_id TEXT,
    order_id TEXT,
    attempts BIGINT NOT NULL,
    created_unix_ns BIGINT NOT NULL,
    assigned_unix_ns BIGINT,
    started_unix_ns BIGINT,
    finished_unix_ns BIGINT,
    progress DOUBLE PRECISION NOT NULL,
    progress_unix_ns BIGINT NOT NULL,
    success BOOLEAN,
    reason TEXT,
    resends BIGINT NOT NULL,
    history TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks (state) WHERE state IN ('queued', 'assigned', 'running');
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_unix_ns) WHERE finished_unix_ns IS NOT NULL;
CREATE TABLE IF NOT EXISTS outcomes (
    order_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    robot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    model_version TEXT NOT NULL,
    success BOOLEAN NOT NULL,
    reason TEXT NOT NULL,
    finished_unix_ns BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_finished ON outcomes (finished_unix_ns);
CREATE TABLE IF NOT EXISTS task_events (
    seq BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_unix_ns BIGINT NOT NULL,
    delivered_unix_ns BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0
);
";

/// Taken by every change of `tasks`: revisions are handed out, and
/// committed, one at a time across replicas.
const TASKS_LOCK: i64 = 0x6761_6e74_7279_0004;

const TASK_COLUMNS: &str = "rev, id, kind, priority, params, not_before_unix_ns, state, robot_id, order_id, attempts, \
    created_unix_ns, assigned_unix_ns, started_unix_ns, finished_unix_ns, progress, progress_unix_ns, success, \
    reason, resends, history";

fn task_row(r: &Row) -> Task {
    let opt = |i| r.get::<_, Option<i64>>(i).map(|v| v as u64);
    Task {
        rev: r.get::<_, i64>(0) as u64,
        id: r.get(1),
        kind: r.get(2),
        priority: match r.get::<_, i64>(3) {
            0 => Priority::Urgent,
            1 => Priority::High,
            _ => Priority::Normal,
        },
        params: serde_json::from_str(r.get(4)).unwrap_or(serde_json::Value::Null),
        not_before_unix_ns: r.get::<_, i64>(5) as u64,
        state: TaskState::parse(r.get(6)).unwrap_or(TaskState::Failed),
        robot_id: r.get(7),
        order_id: r.get(8),
        attempts: r.get::<_, i64>(9) as u32,
        created_unix_ns: r.get::<_, i64>(10) as u64,
        assigned_unix_ns: opt(11),
        started_unix_ns: opt(12),
        finished_unix_ns: opt(13),
        progress: r.get(14),
        progress_unix_ns: r.get::<_, i64>(15) as u64,
        success: r.get(16),
        reason: r.get(17),
        resends: r.get::<_, i64>(18) as u32,
        history: serde_json::from_str(r.get(19)).unwrap_or_default(),
    }
}

/// The next revision, under [`TASKS_LOCK`].
fn next_rev(tx: &mut postgres::Transaction<'_>) -> anyhow::Result<i64> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&TASKS_LOCK])?;
    Ok(tx.query_one("SELECT COALESCE(MAX(rev), 0) + 1 FROM tasks", &[])?.get(0))
}

impl TaskCatalog for PgCatalog {
    fn insert_task(&self, t: &NewTask, now: u64) -> anyhow::Result<(Task, bool)> {
        let t = t.clone();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let rev = next_rev(&mut tx)?;
            let select = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
            if let Some(existing) = tx.query_opt(&select, &[&t.id])? {
                return Ok((task_row(&existing), false));
            }
            tx.execute(
                "INSERT INTO tasks (rev, id, kind, priority, params, not_before_unix_ns, state, attempts, \
                 created_unix_ns, progress, progress_unix_ns, resends, history) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, 0, $7, 0, '[]')",
                &[
                    &rev,
                    &t.id,
                    &t.kind,
                    &(t.priority.rank() as i64),
                    &t.params.to_string(),
                    &(t.not_before_unix_ns as i64),
                    &(now as i64),
                ],
            )?;
            let task = task_row(&tx.query_one(&select, &[&t.id])?);
            tx.commit()?;
            Ok((task, true))
        })
    }

    fn task(&self, id: &str) -> anyhow::Result<Option<Task>> {
        let id = id.to_string();
        self.call(move |c| {
            let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
            Ok(c.query_opt(&sql, &[&id])?.as_ref().map(task_row))
        })
    }

    fn tasks(&self, f: &Filter) -> anyhow::Result<Vec<Task>> {
        let (state, robot) = (f.state.map(|s| s.as_str().to_string()), f.robot.clone());
        let (since, limit) = (f.since as i64, f.limit as i64);
        self.call(move |c| {
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE rev > $1 AND ($2::TEXT IS NULL OR state = $2) \
                 AND ($3::TEXT IS NULL OR robot_id = $3) ORDER BY rev LIMIT $4"
            );
            Ok(c.query(&sql, &[&since, &state, &robot, &limit])?.iter().map(task_row).collect())
        })
    }

    fn open_tasks(&self) -> anyhow::Result<Vec<Task>> {
        self.call(|c| {
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ('queued', 'assigned', 'running') ORDER BY rev"
            );
            Ok(c.query(&sql, &[])?.iter().map(task_row).collect())
        })
    }

    fn save_task(&self, t: &mut Task, events: &[(String, serde_json::Value)], now: u64) -> anyhow::Result<bool> {
        let (task, events) = (t.clone(), events.to_vec());
        let saved = self.call(move |c| {
            let t = task;
            let mut tx = c.transaction()?;
            let rev = next_rev(&mut tx)?;
            let n = tx.execute(
                "UPDATE tasks SET rev = $1, state = $2, robot_id = $3, order_id = $4, attempts = $5, \
                 assigned_unix_ns = $6, started_unix_ns = $7, finished_unix_ns = $8, progress = $9, \
                 progress_unix_ns = $10, success = $11, reason = $12, resends = $13, history = $14 \
                 WHERE id = $15 AND rev = $16",
                &[
                    &rev,
                    &t.state.as_str(),
                    &t.robot_id,
                    &t.order_id,
                    &(t.attempts as i64),
                    &t.assigned_unix_ns.map(|v| v as i64),
                    &t.started_unix_ns.map(|v| v as i64),
                    &t.finished_unix_ns.map(|v| v as i64),
                    &t.progress,
                    &(t.progress_unix_ns as i64),
                    &t.success,
                    &t.reason,
                    &(t.resends as i64),
                    &serde_json::to_string(&t.history)?,
                    &t.id,
                    &(t.rev as i64),
                ],
            )?;
            if n != 1 {
                return Ok(None);
            }
            for (key, body) in &events {
                tx.execute(
                    "INSERT INTO task_events (key, body, created_unix_ns) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[key, &body.to_string(), &(now as i64)],
                )?;
            }
            tx.commit()?;
            Ok(Some(rev as u64))
        })?;
        Ok(saved.map(|rev| t.rev = rev).is_some())
    }

    fn pending_events(&self, limit: usize) -> anyhow::Result<Vec<crate::webhook::Event>> {
        self.call(move |c| {
            let rows = c.query(
                "SELECT key, body, attempts FROM task_events WHERE delivered_unix_ns IS NULL ORDER BY seq LIMIT $1",
                &[&(limit as i64)],
            )?;
            Ok(rows
                .iter()
                .map(|r| crate::webhook::Event {
                    key: r.get(0),
                    body: serde_json::from_str(r.get(1)).unwrap_or(serde_json::Value::Null),
                    attempts: r.get::<_, i64>(2) as u32,
                })
                .collect())
        })
    }

    fn event_attempted(&self, key: &str, delivered: Option<u64>) -> anyhow::Result<()> {
        let key = key.to_string();
        self.call(move |c| {
            c.execute(
                "UPDATE task_events SET attempts = attempts + 1, delivered_unix_ns = $2 WHERE key = $1",
                &[&key, &delivered.map(|v| v as i64)],
            )?;
            Ok(())
        })
    }

    fn record_outcome(&self, o: &Outcome) -> anyhow::Result<()> {
        let o = o.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO outcomes (order_id, task_id, robot_id, kind, model_version, success, reason, \
                 finished_unix_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    &o.order_id,
                    &o.task_id,
                    &o.robot_id,
                    &o.kind,
                    &o.model_version,
                    &o.success,
                    &o.reason,
                    &(o.finished_unix_ns as i64),
                ],
            )?;
            Ok(())
        })
    }

    fn outcome_counts(&self, since: u64) -> anyhow::Result<Vec<OutcomeCount>> {
        self.call(move |c| {
            let rows = c.query(
                "SELECT model_version, kind, success, reason, COUNT(*) FROM outcomes WHERE finished_unix_ns >= $1 \
                 GROUP BY model_version, kind, success, reason",
                &[&(since as i64)],
            )?;
            Ok(rows
                .iter()
                .map(|r| OutcomeCount {
                    model_version: r.get(0),
                    kind: r.get(1),
                    success: r.get(2),
                    reason: r.get(3),
                    attempts: r.get::<_, i64>(4) as u64,
                })
                .collect())
        })
    }

    fn finished_counts(&self, since: u64) -> anyhow::Result<Vec<FinishedCount>> {
        self.call(move |c| {
            let rows = c.query(
                "SELECT COALESCE(robot_id, ''), state = 'completed', COALESCE(reason, ''), COUNT(*) FROM tasks \
                 WHERE finished_unix_ns >= $1 AND state IN ('completed', 'failed') GROUP BY 1, 2, 3",
                &[&(since as i64)],
            )?;
            Ok(rows
                .iter()
                .map(|r| FinishedCount {
                    robot_id: r.get(0),
                    success: r.get(1),
                    reason: r.get(2),
                    tasks: r.get::<_, i64>(3) as u64,
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(super::redact("postgres://gantry:s3cret@db:5432/gantry"), "postgres://gantry@db:5432/gantry");
        assert_eq!(super::redact("postgres://gantry@db/gantry"), "postgres://gantry@db/gantry");
        assert_eq!(super::redact("postgres://db/gantry"), "postgres://db/gantry");
    }
}
