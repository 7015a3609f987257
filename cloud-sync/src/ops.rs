//! The operator's records, kept in `registry.sqlite` beside the models they
//! are often about: alerts (firing → resolved), their webhook outbox, and the
//! incident log — every alert, every automatic action and every operator's
//! change (model publish, promotion, rollback, deployment, task submission),
//! with who, what and when. A model change and its log entry commit in one
//! transaction.

use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::{json, Value};

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
pub fn log_in(tx: &Connection, now: u64, n: &Note<'_>, alert_id: Option<u64>) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO incident_log (unix_ns, kind, subject, who, message, details, alert_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![now as i64, n.kind, n.subject, n.who, n.message, n.details.to_string(), alert_id.map(|v| v as i64)],
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

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    Ok(Alert {
        id: r.get::<_, i64>(0)? as u64,
        rule: r.get(1)?,
        subject: r.get(2)?,
        robot_id: r.get(3)?,
        severity: r.get(4)?,
        state: r.get(5)?,
        since_unix_ns: r.get::<_, i64>(6)? as u64,
        fired_unix_ns: r.get::<_, i64>(7)? as u64,
        resolved_unix_ns: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        message: r.get(9)?,
        value: r.get(10)?,
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
    conn: Mutex<Connection>,
}

/// A connection to `data_dir/registry.sqlite` (the service and the command
/// line share the file: WAL, a busy timeout, every commit synced), with the
/// operator's tables in place.
pub(crate) fn open_registry_db(data_dir: &Path) -> anyhow::Result<Connection> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("registry.sqlite");
    let conn = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

impl Journal {
    /// The records in `data_dir/registry.sqlite`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        Ok(Self { conn: Mutex::new(open_registry_db(data_dir)?) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an entry of its own.
    pub fn log(&self, now: u64, kind: &str, subject: &str, who: &str, message: &str, details: Value) {
        let note = Note { kind, subject, who, message, details: &details };
        if let Err(e) = log_in(&self.conn(), now, &note, None) {
            tracing::error!(error = %e, kind, subject, "cannot write the incident log");
        }
    }

    /// The newest `limit` entries after `since` (an id), newest first.
    pub fn entries(&self, since: u64, limit: usize) -> anyhow::Result<Vec<Entry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, unix_ns, kind, subject, who, message, details, alert_id FROM incident_log \
             WHERE id > ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![since as i64, limit as i64], |r| {
                Ok(Entry {
                    id: r.get::<_, i64>(0)? as u64,
                    unix_ns: r.get::<_, i64>(1)? as u64,
                    kind: r.get(2)?,
                    subject: r.get(3)?,
                    who: r.get(4)?,
                    message: r.get(5)?,
                    details: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or(Value::Null),
                    alert_id: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Alerts firing now, then the newest resolved, at most `limit` in all.
    pub fn alerts(&self, limit: usize) -> anyhow::Result<Vec<Alert>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts ORDER BY state = 'firing' DESC, fired_unix_ns DESC, id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], alert_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn firing(&self) -> anyhow::Result<Vec<Alert>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'firing'"))?;
        let rows = stmt.query_map([], alert_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Records a new firing alert, its log entry and its webhook event, in one
    /// transaction; `None` when one already fires for this rule and subject.
    pub fn fire(&self, f: &Firing<'_>, now: u64) -> anyhow::Result<Option<Alert>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO alerts (rule, subject, robot_id, severity, state, since_unix_ns, fired_unix_ns, message, value) \
             VALUES (?1, ?2, ?3, ?4, 'firing', ?5, ?6, ?7, ?8)",
            params![f.rule, f.subject, f.robot_id, f.severity, f.since_unix_ns as i64, now as i64, f.message, f.value],
        )?;
        if inserted == 0 {
            return Ok(None);
        }
        let id = tx.last_insert_rowid() as u64;
        let alert =
            tx.query_row(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"), [id as i64], alert_row)?;
        let details = alert.to_json();
        let note =
            Note { kind: "alert.fired", subject: f.subject, who: SERVICE, message: f.message, details: &details };
        log_in(&tx, now, &note, Some(id))?;
        queue_in(&tx, &format!("alert-{id}-firing"), &json!({"event": "alert.firing", "alert": alert.to_json()}), now)?;
        tx.commit()?;
        Ok(Some(alert))
    }

    /// Resolves a firing alert (with its log entry and webhook event).
    pub fn resolve(&self, id: u64, now: u64, why: &str) -> anyhow::Result<Option<Alert>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE alerts SET state = 'resolved', resolved_unix_ns = ?2 WHERE id = ?1 AND state = 'firing'",
            params![id as i64, now as i64],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        let alert =
            tx.query_row(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"), [id as i64], alert_row)?;
        let message = format!("{} — cleared: {why}", alert.message);
        let details = alert.to_json();
        let note = Note {
            kind: "alert.resolved",
            subject: &alert.subject,
            who: SERVICE,
            message: &message,
            details: &details,
        };
        log_in(&tx, now, &note, Some(id))?;
        queue_in(
            &tx,
            &format!("alert-{id}-resolved"),
            &json!({"event": "alert.resolved", "alert": alert.to_json()}),
            now,
        )?;
        tx.commit()?;
        Ok(Some(alert))
    }

    /// The A/B test of `candidate`: when it began, and its verdict once given.
    pub fn ab_test(&self, candidate: &str, production: Option<&str>, now: u64) -> anyhow::Result<AbTest> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO ab_tests (candidate, production, since_unix_ns) VALUES (?1, ?2, ?3)",
            params![candidate, production, now as i64],
        )?;
        Ok(conn.query_row("SELECT since_unix_ns, verdict FROM ab_tests WHERE candidate = ?1", [candidate], |r| {
            Ok(AbTest { since_unix_ns: r.get::<_, i64>(0)? as u64, verdict: r.get(1)? })
        })?)
    }

    pub fn set_verdict(&self, candidate: &str, verdict: &str, now: u64) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE ab_tests SET verdict = ?2, decided_unix_ns = ?3 WHERE candidate = ?1",
            params![candidate, verdict, now as i64],
        )?;
        Ok(())
    }
}

pub struct AbTest {
    pub since_unix_ns: u64,
    pub verdict: Option<String>,
}

fn queue_in(tx: &Connection, key: &str, body: &Value, now: u64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO alert_events (key, body, created_unix_ns) VALUES (?1, ?2, ?3)",
        params![key, body.to_string(), now as i64],
    )?;
    Ok(())
}

impl crate::webhook::Outbox for Journal {
    fn pending(&self, limit: usize) -> anyhow::Result<Vec<crate::webhook::Event>> {
        crate::webhook::pending_in(&self.conn(), "alert_events", limit)
    }

    fn attempted(&self, key: &str, delivered: Option<u64>) -> anyhow::Result<()> {
        crate::webhook::attempted_in(&self.conn(), "alert_events", key, delivered)
    }
}
