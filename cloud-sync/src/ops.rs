//! The operator's records, kept beside the models they are often about
//! (`registry.sqlite`, or the shared catalog on PostgreSQL among replicas):
//! alerts (firing → resolved), their webhook outbox, and the incident log —
//! every alert, every automatic action and every operator's change (model
//! publish, promotion, rollback, deployment, task submission), with who, what
//! and when. A model change and its log entry commit in one transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rusqlite::Connection;
use serde::Serialize;
use serde_json::{json, Value};

use crate::sql::{Db, Row, Tx};
use crate::vals;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS incident_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unix_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    who TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT NOT NULL,
    alert_id INTEGER
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    robot_id TEXT,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    since_unix_ns INTEGER NOT NULL,
    fired_unix_ns INTEGER NOT NULL,
    resolved_unix_ns INTEGER,
    message TEXT NOT NULL,
    value REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_firing ON alerts (rule, subject) WHERE state = 'firing';
CREATE TABLE IF NOT EXISTS alert_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_unix_ns INTEGER NOT NULL,
    delivered_unix_ns INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ab_tests (
    candidate TEXT PRIMARY KEY,
    production TEXT,
    since_unix_ns INTEGER NOT NULL,
    verdict TEXT,
    decided_unix_ns INTEGER
);
";

/// [`SCHEMA`] on PostgreSQL.
const PG_SCHEMA: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS incident_log (id BIGSERIAL PRIMARY KEY, unix_ns BIGINT NOT NULL, kind TEXT NOT NULL, \
     subject TEXT NOT NULL, who TEXT NOT NULL, message TEXT NOT NULL, details TEXT NOT NULL, alert_id BIGINT)",
    "CREATE TABLE IF NOT EXISTS alerts (id BIGSERIAL PRIMARY KEY, rule TEXT NOT NULL, subject TEXT NOT NULL, \
     robot_id TEXT, severity TEXT NOT NULL, state TEXT NOT NULL, since_unix_ns BIGINT NOT NULL, \
     fired_unix_ns BIGINT NOT NULL, resolved_unix_ns BIGINT, message TEXT NOT NULL, value DOUBLE PRECISION)",
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_firing ON alerts (rule, subject) WHERE state = 'firing'",
    "CREATE TABLE IF NOT EXISTS alert_events (seq BIGSERIAL PRIMARY KEY, key TEXT NOT NULL UNIQUE, body TEXT NOT NULL, \
     created_unix_ns BIGINT NOT NULL, delivered_unix_ns BIGINT, attempts BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS ab_tests (candidate TEXT PRIMARY KEY, production TEXT, since_unix_ns BIGINT NOT NULL, \
     verdict TEXT, decided_unix_ns BIGINT)",
];

/// Taken while creating the tables on PostgreSQL, which replicas may do at once.
const SCHEMA_LOCK: i64 = 0x6761_6e74_7279_0020;

/// One entry of the incident log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub id: u64,
    pub unix_ns: u64,
    /// `alert.fired`, `alert.resolved`, `action.*`, `model.*`, `task.*`, `rollout.*`.
    pub kind: String,
    /// A robot, model, task or `fleet`.
    pub subject: String,
    /// `gantry-sync` for the service itself; else the operator.
    pub who: String,
    pub message: String,
    pub details: Value,
    pub alert_id: Option<u64>,
}

impl Entry {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "at": gantry_config::task::rfc3339(self.unix_ns),
            "kind": self.kind,
            "subject": self.subject,
            "who": self.who,
            "message": self.message,
            "details": self.details,
            "alert_id": self.alert_id,
        })
    }
}

/// The service itself, as the author of automatic entries.
pub const SERVICE: &str = "gantry-sync";

/// What an incident log entry says.
pub struct Note<'a> {
    pub kind: &'a str,
    pub subject: &'a str,
    pub who: &'a str,
    pub message: &'a str,
    pub details: &'a Value,
}

/// Appends an entry inside the caller's transaction.
pub fn log_in(tx: &mut dyn Tx, now: u64, n: &Note<'_>, alert_id: Option<u64>) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO incident_log (unix_ns, kind, subject, who, message, details, alert_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &vals![now, n.kind, n.subject, n.who, n.message, n.details.to_string(), alert_id],
    )?;
    Ok(())
}

/// An alert as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: u64,
    pub rule: String,
    pub subject: String,
    pub robot_id: Option<String>,
    pub severity: String,
    pub state: String,
    /// When the condition began (it fired `for_s` later).
    pub since_unix_ns: u64,
    pub fired_unix_ns: u64,
    pub resolved_unix_ns: Option<u64>,
    pub message: String,
    pub value: Option<f64>,
}

impl Alert {
    /// The contract's shape.
    pub fn to_json(&self) -> Value {
        let time = gantry_config::task::rfc3339;
        json!({
            "id": self.id,
            "rule": self.rule,
            "subject": self.subject,
            "robot_id": self.robot_id,
            "severity": self.severity,
            "state": self.state,
            "since": time(self.since_unix_ns),
            "fired_at": time(self.fired_unix_ns),
            "resolved_at": self.resolved_unix_ns.map(time),
            "message": self.message,
            "value": self.value,
        })
    }
}

const ALERT_COLUMNS: &str =
    "id, rule, subject, robot_id, severity, state, since_unix_ns, fired_unix_ns, resolved_unix_ns, message, value";

fn alert_row(r: &Row) -> anyhow::Result<Alert> {
    Ok(Alert {
        id: r.u64(0)?,
        rule: r.text(1)?,
        subject: r.text(2)?,
        robot_id: r.opt_text(3)?,
        severity: r.text(4)?,
        state: r.text(5)?,
        since_unix_ns: r.u64(6)?,
        fired_unix_ns: r.u64(7)?,
        resolved_unix_ns: r.opt_int(8)?.map(|v| v as u64),
        message: r.text(9)?,
        value: r.opt_real(10)?,
    })
}

/// A new alert, as a rule found it.
pub struct Firing<'a> {
    pub rule: &'a str,
    pub subject: &'a str,
    pub robot_id: Option<&'a str>,
    pub severity: &'a str,
    pub since_unix_ns: u64,
    pub message: &'a str,
    pub value: Option<f64>,
}

pub struct Journal {
    db: Db,
}

/// The operator's database, with its tables (these records and the model
/// registry's) in place: the shared catalog on PostgreSQL when there is one,
/// else `data_dir/registry.sqlite` (the service and the command line share
/// the file: WAL, a busy timeout, every commit synced).
pub fn open_db(data_dir: &Path, shared: Option<Arc<crate::pg::PgCatalog>>) -> anyhow::Result<Db> {
    if let Some(pg) = shared {
        let db = Db::Postgres(pg);
        db.transaction(|tx| {
            tx.serialize(SCHEMA_LOCK)?;
            for statement in PG_SCHEMA.iter().chain(&crate::models::SCHEMA) {
                tx.execute(statement, &[])?;
            }
            Ok(())
        })
        .context("creating the operator's tables on PostgreSQL")?;
        return Ok(db);
    }
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("registry.sqlite");
    let conn = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    for statement in crate::models::SCHEMA {
        conn.execute_batch(statement)?;
    }
    Ok(Db::Sqlite(Arc::new(Mutex::new(conn))))
}

impl Journal {
    /// The records in `db` (see [`open_db`]).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Appends an entry of its own.
    pub fn log(&self, now: u64, kind: &str, subject: &str, who: &str, message: &str, details: Value) {
        let (k, sub, w, m) = (kind.to_string(), subject.to_string(), who.to_string(), message.to_string());
        let written = self.db.transaction(move |tx| {
            let note = Note { kind: &k, subject: &sub, who: &w, message: &m, details: &details };
            log_in(tx, now, &note, None)
        });
        if let Err(e) = written {
            tracing::error!(error = %format!("{e:#}"), kind, subject, "cannot write the incident log");
        }
    }

    /// The newest `limit` entries after `since` (an id), newest first.
    pub fn entries(&self, since: u64, limit: usize) -> anyhow::Result<Vec<Entry>> {
        let rows = self.db.query(
            "SELECT id, unix_ns, kind, subject, who, message, details, alert_id FROM incident_log \
             WHERE id > ?1 ORDER BY id DESC LIMIT ?2",
            &vals![since, limit as u64],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Entry {
                    id: r.u64(0)?,
                    unix_ns: r.u64(1)?,
                    kind: r.text(2)?,
                    subject: r.text(3)?,
                    who: r.text(4)?,
                    message: r.text(5)?,
                    details: serde_json::from_str(&r.text(6)?).unwrap_or(Value::Null),
                    alert_id: r.opt_int(7)?.map(|v| v as u64),
                })
            })
            .collect()
    }

    /// Alerts firing now, then the newest resolved, at most `limit` in all.
    pub fn alerts(&self, limit: usize) -> anyhow::Result<Vec<Alert>> {
        let rows = self.db.query_owned(
            format!(
                "SELECT {ALERT_COLUMNS} FROM alerts \
                 ORDER BY CASE WHEN state = 'firing' THEN 0 ELSE 1 END, fired_unix_ns DESC, id DESC LIMIT ?1"
            ),
            &vals![limit as u64],
        )?;
        rows.iter().map(alert_row).collect()
    }

    pub fn firing(&self) -> anyhow::Result<Vec<Alert>> {
        let rows = self.db.query_owned(format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'firing'"), &[])?;
        rows.iter().map(alert_row).collect()
    }

    /// Records a new firing alert, its log entry and its webhook event, in one
    /// transaction; `None` when one already fires for this rule and subject.
    pub fn fire(&self, f: &Firing<'_>, now: u64) -> anyhow::Result<Option<Alert>> {
        let params = vals![f.rule, f.subject, f.robot_id, f.severity, f.since_unix_ns, now, f.message, f.value];
        let (subject, message) = (f.subject.to_string(), f.message.to_string());
        self.db.transaction(move |tx| {
            let inserted = tx.query_one(
                "INSERT INTO alerts (rule, subject, robot_id, severity, state, since_unix_ns, fired_unix_ns, message, value) \
                 VALUES (?1, ?2, ?3, ?4, 'firing', ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING RETURNING id",
                &params,
            )?;
            let Some(id) = inserted.map(|r| r.u64(0)).transpose()? else { return Ok(None) };
            let alert = alert_by_id(tx, id)?;
            let details = alert.to_json();
            let note =
                Note { kind: "alert.fired", subject: &subject, who: SERVICE, message: &message, details: &details };
            log_in(tx, now, &note, Some(id))?;
            queue_in(tx, &format!("alert-{id}-firing"), &json!({"event": "alert.firing", "alert": alert.to_json()}), now)?;
            Ok(Some(alert))
        })
    }

    /// Resolves a firing alert (with its log entry and webhook event).
    pub fn resolve(&self, id: u64, now: u64, why: &str) -> anyhow::Result<Option<Alert>> {
        let why = why.to_string();
        self.db.transaction(move |tx| {
            let changed = tx.execute(
                "UPDATE alerts SET state = 'resolved', resolved_unix_ns = ?2 WHERE id = ?1 AND state = 'firing'",
                &vals![id, now],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            let alert = alert_by_id(tx, id)?;
            let message = format!("{} — cleared: {why}", alert.message);
            let details = alert.to_json();
            let note = Note {
                kind: "alert.resolved",
                subject: &alert.subject,
                who: SERVICE,
                message: &message,
                details: &details,
            };
            log_in(tx, now, &note, Some(id))?;
            queue_in(
                tx,
                &format!("alert-{id}-resolved"),
                &json!({"event": "alert.resolved", "alert": alert.to_json()}),
                now,
            )?;
            Ok(Some(alert))
        })
    }

    /// The A/B test of `candidate`: when it began, and its verdict once given.
    pub fn ab_test(&self, candidate: &str, production: Option<&str>, now: u64) -> anyhow::Result<AbTest> {
        let (candidate, production) = (candidate.to_string(), production.map(str::to_string));
        self.db.transaction(move |tx| {
            tx.execute(
                "INSERT INTO ab_tests (candidate, production, since_unix_ns) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                &vals![&candidate, production, now],
            )?;
            let row = tx
                .query_one("SELECT since_unix_ns, verdict FROM ab_tests WHERE candidate = ?1", &vals![&candidate])?
                .context("the A/B test's row is missing")?;
            Ok(AbTest { since_unix_ns: row.u64(0)?, verdict: row.opt_text(1)? })
        })
    }

    pub fn set_verdict(&self, candidate: &str, verdict: &str, now: u64) -> anyhow::Result<()> {
        let params = vals![candidate, verdict, now];
        self.db.transaction(move |tx| {
            tx.execute("UPDATE ab_tests SET verdict = ?2, decided_unix_ns = ?3 WHERE candidate = ?1", &params)?;
            Ok(())
        })
    }
}

fn alert_by_id(tx: &mut dyn Tx, id: u64) -> anyhow::Result<Alert> {
    let row = tx
        .query_one(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"), &vals![id])?
        .with_context(|| format!("alert {id} is missing"))?;
    alert_row(&row)
}

pub struct AbTest {
    pub since_unix_ns: u64,
    pub verdict: Option<String>,
}

fn queue_in(tx: &mut dyn Tx, key: &str, body: &Value, now: u64) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO alert_events (key, body, created_unix_ns) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        &vals![key, body.to_string(), now],
    )?;
    Ok(())
}

impl crate::webhook::Outbox for Journal {
    fn pending(&self, limit: usize) -> anyhow::Result<Vec<crate::webhook::Event>> {
        let rows = self.db.query(
            "SELECT key, body, attempts FROM alert_events WHERE delivered_unix_ns IS NULL ORDER BY seq LIMIT ?1",
            &vals![limit as u64],
        )?;
        rows.iter()
            .map(|r| {
                Ok(crate::webhook::Event {
                    key: r.text(0)?,
                    body: serde_json::from_str(&r.text(1)?).unwrap_or(Value::Null),
                    attempts: u32::try_from(r.int(2)?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    fn attempted(&self, key: &str, delivered: Option<u64>) -> anyhow::Result<()> {
        let params = vals![key, delivered];
        self.db.transaction(move |tx| {
            tx.execute(
                "UPDATE alert_events SET attempts = attempts + 1, delivered_unix_ns = ?2 WHERE key = ?1",
                &params,
            )?;
            Ok(())
        })
    }
}
