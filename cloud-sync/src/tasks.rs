//! The factory's tasks: a queue by priority, allocation to idle green robots,
//! reassignment from robots that went offline, stopped or got stuck, and each
//! task's outcome, exactly once (`docs/PROTOCOL.md`, "Tasks").
//!
//! One task runs on at most one robot at a time. Each attempt is an order with
//! its own id (`TASK#ATTEMPT`); a robot keeps working on an order only while it
//! hears from the broker, for at most `tasks.lease_s`, and the cloud reassigns
//! from a silent robot only after that lease, one state period and a margin
//! have passed. A result is applied when it names the task's current order; a
//! success of an older attempt (a robot that finished while cut off) completes
//! the task too, and the attempt running elsewhere is cancelled.
//!
//! Tasks and the outbox of factory events live in the catalog: a restart loses
//! none and runs none twice (an assigned task stays with its robot).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_config::task::{self as wire, Phase, Priority, RobotState};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::store::SqliteCatalog;

const NS: u64 = 1_000_000_000;
/// The margin on top of a silent robot's lease before its task moves.
const REASSIGN_MARGIN_NS: u64 = 5 * NS;
/// A robot that still says idle this long after an order was sent did not get
/// it: the order is sent again, up to [`MAX_RESENDS`] times.
const ORDER_ACK_NS: u64 = 3 * NS;
const MAX_RESENDS: u32 = 3;
/// A task's params are at most this long (JSON).
const MAX_PARAMS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Assigned,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Assigned => "assigned",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Assigned, Self::Running, Self::Completed, Self::Failed, Self::Canceled]
            .into_iter()
            .find(|t| t.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }

    /// On a robot: assigned or running.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Assigned | Self::Running)
    }
}

/// One attempt of a task on a robot.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Attempt {
    pub order_id: String,
    pub robot_id: String,
    pub assigned_unix_ns: u64,
    pub ended_unix_ns: Option<u64>,
    /// Why it ended, when it did not complete the task.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Position in the change feed: bumped on every change.
    pub rev: u64,
    pub id: String,
    pub kind: String,
    pub priority: Priority,
    pub params: Value,
    pub not_before_unix_ns: u64,
    pub state: TaskState,
    pub robot_id: Option<String>,
    pub order_id: Option<String>,
    pub attempts: u32,
    pub created_unix_ns: u64,
    pub assigned_unix_ns: Option<u64>,
    pub started_unix_ns: Option<u64>,
    pub finished_unix_ns: Option<u64>,
    pub progress: f64,
    /// When progress last advanced (or the attempt began).
    pub progress_unix_ns: u64,
    pub success: Option<bool>,
    pub reason: Option<String>,
    /// Orders sent again to a robot that did not take them.
    pub resends: u32,
    pub history: Vec<Attempt>,
}

impl Task {
    /// The contract's JSON.
    pub fn to_json(&self) -> Value {
        let time = |t: Option<u64>| t.map(wire::rfc3339);
        json!({
            "id": self.id,
            "kind": self.kind,
            "priority": self.priority.as_str(),
            "params": self.params,
            "state": self.state.as_str(),
            "robot_id": self.robot_id,
            "order_id": self.order_id,
            "attempts": self.attempts,
            "progress": self.progress,
            "created_at": wire::rfc3339(self.created_unix_ns),
            "not_before": (self.not_before_unix_ns > 0).then(|| wire::rfc3339(self.not_before_unix_ns)),
            "assigned_at": time(self.assigned_unix_ns),
            "started_at": time(self.started_unix_ns),
            "finished_at": time(self.finished_unix_ns),
            "outcome": self.success.map(|success| json!({"success": success, "reason": self.reason.clone().unwrap_or_default()})),
            "history": self.history.iter().map(|a| json!({
                "order_id": a.order_id,
                "robot_id": a.robot_id,
                "assigned_at": wire::rfc3339(a.assigned_unix_ns),
                "ended_at": a.ended_unix_ns.map(wire::rfc3339),
                "reason": a.reason,
            })).collect::<Vec<_>>(),
            "cursor": self.rev,
        })
    }
}

/// A submission, checked.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub kind: String,
    pub priority: Priority,
    pub params: Value,
    pub not_before_unix_ns: u64,
}

impl NewTask {
    /// The contract's request body; `Err` says what is wrong in a sentence.
    pub fn from_json(body: &Value, now: u64) -> Result<Self, String> {
        let obj = body.as_object().ok_or("the body must be a JSON object")?;
        for key in obj.keys() {
            if !["id", "kind", "priority", "params", "not_before"].contains(&key.as_str()) {
                return Err(format!("unknown field {key:?} (expected id, kind, priority, params, not_before)"));
            }
        }
        let id = match obj.get("id") {
            None | Some(Value::Null) => generated_id(now),
            Some(Value::String(id)) if wire::valid_task_id(id) => id.clone(),
            Some(other) => return Err(format!("id {other}: expected 1-128 of [A-Za-z0-9_.:-]")),
        };
        let kind = match obj.get("kind") {
            Some(Value::String(k)) if wire::valid_kind(k) => k.clone(),
            Some(other) => return Err(format!("kind {other}: expected 1-32 of [a-z0-9_-], e.g. \"pick\"")),
            None => return Err("kind is missing (e.g. \"pick\")".into()),
        };
        let priority = match obj.get("priority") {
            None | Some(Value::Null) => Priority::Normal,
            Some(Value::String(p)) => {
                Priority::parse(p).ok_or_else(|| format!("priority {p:?}: expected urgent, high or normal"))?
            }
            Some(other) => return Err(format!("priority {other}: expected urgent, high or normal")),
        };
        let params = match obj.get("params") {
            None | Some(Value::Null) => json!({}),
            Some(p @ Value::Object(_)) if p.to_string().len() <= MAX_PARAMS => p.clone(),
            Some(Value::Object(_)) => return Err(format!("params: longer than {MAX_PARAMS} bytes")),
            Some(other) => return Err(format!("params {other}: expected a JSON object")),
        };
        let not_before_unix_ns = match obj.get("not_before") {
            None | Some(Value::Null) => 0,
            Some(Value::String(t)) => {
                wire::parse_rfc3339(t).ok_or_else(|| format!("not_before {t:?}: expected an RFC 3339 time"))?
            }
            Some(other) => return Err(format!("not_before {other}: expected an RFC 3339 time")),
        };
        Ok(Self { id, kind, priority, params, not_before_unix_ns })
    }
}

fn generated_id(now: u64) -> String {
    let mut bytes = [0u8; 6];
    // Uniqueness comes from the time; the random part only separates tasks
    // submitted in the same millisecond.
    let _ = getrandom::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("t-{}-{hex}", now / 1_000_000)
}

/// `GET /api/tasks` filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub state: Option<TaskState>,
    pub robot: Option<String>,
    /// Tasks changed after this cursor.
    pub since: u64,
    pub limit: usize,
}

/// How one attempt ended, as its robot reported it, with the model that ran
/// it: what the A/B comparison of models and the per-model success rate read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub order_id: String,
    pub task_id: String,
    pub robot_id: String,
    pub kind: String,
    pub model_version: String,
    pub success: bool,
    pub reason: String,
    pub finished_unix_ns: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    rev INTEGER NOT NULL,
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    params TEXT NOT NULL,
    not_before_unix_ns INTEGER NOT NULL,
    state TEXT NOT NULL,
    robot_id TEXT,
    order_id TEXT,
    attempts INTEGER NOT NULL,
    created_unix_ns INTEGER NOT NULL,
    assigned_unix_ns INTEGER,
    started_unix_ns INTEGER,
    finished_unix_ns INTEGER,
    progress REAL NOT NULL,
    progress_unix_ns INTEGER NOT NULL,
    success INTEGER,
    reason TEXT,
    resends INTEGER NOT NULL,
    history TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_rev ON tasks (rev);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks (state) WHERE state IN ('queued', 'assigned', 'running');
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_unix_ns) WHERE finished_unix_ns IS NOT NULL;
CREATE TABLE IF NOT EXISTS outcomes (
    order_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    robot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    model_version TEXT NOT NULL,
    success INTEGER NOT NULL,
    reason TEXT NOT NULL,
    finished_unix_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_finished ON outcomes (finished_unix_ns);
CREATE TABLE IF NOT EXISTS task_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_unix_ns INTEGER NOT NULL,
    delivered_unix_ns INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0
);
";

const TASK_COLUMNS: &str = "rev, id, kind, priority, params, not_before_unix_ns, state, robot_id, order_id, attempts, \
    created_unix_ns, assigned_unix_ns, started_unix_ns, finished_unix_ns, progress, progress_unix_ns, success, \
    reason, resends, history";

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    let opt = |i| r.get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64));
    let priority = match r.get::<_, i64>(3)? {
        0 => Priority::Urgent,
        1 => Priority::High,
        _ => Priority::Normal,
    };
    Ok(Task {
        rev: r.get::<_, i64>(0)? as u64,
        id: r.get(1)?,
        kind: r.get(2)?,
        priority,
        params: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or(Value::Null),
        not_before_unix_ns: r.get::<_, i64>(5)? as u64,
        state: TaskState::parse(&r.get::<_, String>(6)?).unwrap_or(TaskState::Failed),
        robot_id: r.get(7)?,
        order_id: r.get(8)?,
        attempts: r.get::<_, i64>(9)? as u32,
        created_unix_ns: r.get::<_, i64>(10)? as u64,
        assigned_unix_ns: opt(11)?,
        started_unix_ns: opt(12)?,
        finished_unix_ns: opt(13)?,
        progress: r.get(14)?,
        progress_unix_ns: r.get::<_, i64>(15)? as u64,
        success: r.get::<_, Option<bool>>(16)?,
        reason: r.get(17)?,
        resends: r.get::<_, i64>(18)? as u32,
        history: serde_json::from_str(&r.get::<_, String>(19)?).unwrap_or_default(),
    })
}

/// Where tasks persist: the catalog's database (SQLite here; the PostgreSQL
/// catalog implements the same).
pub trait TaskCatalog: Send + Sync {
    /// Inserts the task; the existing one (and `false`) when its id is known.
    fn insert_task(&self, t: &NewTask, now: u64) -> anyhow::Result<(Task, bool)>;
    fn task(&self, id: &str) -> anyhow::Result<Option<Task>>;
    fn tasks(&self, f: &Filter) -> anyhow::Result<Vec<Task>>;
    /// Queued, assigned and running tasks.
    fn open_tasks(&self) -> anyhow::Result<Vec<Task>>;
    /// Writes `t` (a new rev) if its rev is still `t.rev`, with `events` in the
    /// same transaction; `false` when someone else changed it first.
    fn save_task(&self, t: &mut Task, events: &[(String, Value)], now: u64) -> anyhow::Result<bool>;
    fn pending_events(&self, limit: usize) -> anyhow::Result<Vec<crate::webhook::Event>>;
    fn event_attempted(&self, key: &str, delivered: Option<u64>) -> anyhow::Result<()>;
    /// Keeps a robot's report of an attempt (once per order).
    fn record_outcome(&self, o: &Outcome) -> anyhow::Result<()>;
    /// Attempts reported at or after `since`, counted by model, kind, success
    /// and reason (counted in the database: a day of a large fleet is many rows).
    fn outcome_counts(&self, since: u64) -> anyhow::Result<Vec<OutcomeCount>>;
    /// Tasks completed or failed at or after `since`, counted by robot, state and reason.
    fn finished_counts(&self, since: u64) -> anyhow::Result<Vec<FinishedCount>>;
}

/// Reported attempts of one model, kind, success and reason.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeCount {
    pub model_version: String,
    pub kind: String,
    pub success: bool,
    pub reason: String,
    pub attempts: u64,
}

/// Finished tasks of one robot, outcome and reason.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedCount {
    pub robot_id: String,
    pub success: bool,
    pub reason: String,
    pub tasks: u64,
}

/// Creates the task tables in a SQLite catalog.
pub(crate) fn create_tables(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

fn next_rev(tx: &rusqlite::Connection) -> rusqlite::Result<i64> {
    tx.query_row("SELECT COALESCE(MAX(rev), 0) + 1 FROM tasks", [], |r| r.get(0))
}

fn insert_events(tx: &rusqlite::Connection, events: &[(String, Value)], now: u64) -> rusqlite::Result<()> {
    for (key, body) in events {
        tx.execute(
            "INSERT OR IGNORE INTO task_events (key, body, created_unix_ns) VALUES (?1, ?2, ?3)",
            params![key, body.to_string(), now as i64],
        )?;
    }
    Ok(())
}

impl TaskCatalog for SqliteCatalog {
    fn insert_task(&self, t: &NewTask, now: u64) -> anyhow::Result<(Task, bool)> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some(existing) =
            tx.query_row(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"), [&t.id], task_row).optional()?
        {
            return Ok((existing, false));
        }
        let rev = next_rev(&tx)?;
        tx.execute(
            "INSERT INTO tasks (rev, id, kind, priority, params, not_before_unix_ns, state, attempts, created_unix_ns, \
             progress, progress_unix_ns, resends, history) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', 0, ?7, 0, ?7, 0, '[]')",
            params![rev, t.id, t.kind, t.priority.rank() as i64, t.params.to_string(), t.not_before_unix_ns as i64, now as i64],
        )?;
        let task = tx.query_row(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"), [&t.id], task_row)?;
        tx.commit()?;
        Ok((task, true))
    }

    fn task(&self, id: &str) -> anyhow::Result<Option<Task>> {
        Ok(self
            .conn()
            .query_row(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"), [id], task_row)
            .optional()?)
    }

    fn tasks(&self, f: &Filter) -> anyhow::Result<Vec<Task>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE rev > ?1 AND (?2 IS NULL OR state = ?2) \
             AND (?3 IS NULL OR robot_id = ?3) ORDER BY rev LIMIT ?4"
        ))?;
        let rows = stmt
            .query_map(params![f.since as i64, f.state.map(TaskState::as_str), f.robot, f.limit as i64], task_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn open_tasks(&self) -> anyhow::Result<Vec<Task>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ('queued', 'assigned', 'running') ORDER BY rev"
        ))?;
        let rows = stmt.query_map([], task_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn save_task(&self, t: &mut Task, events: &[(String, Value)], now: u64) -> anyhow::Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let rev = next_rev(&tx)?;
        let n = tx.execute(
            "UPDATE tasks SET rev = ?1, state = ?2, robot_id = ?3, order_id = ?4, attempts = ?5, \
             assigned_unix_ns = ?6, started_unix_ns = ?7, finished_unix_ns = ?8, progress = ?9, \
             progress_unix_ns = ?10, success = ?11, reason = ?12, resends = ?13, history = ?14 \
             WHERE id = ?15 AND rev = ?16",
            params![
                rev,
                t.state.as_str(),
                t.robot_id,
                t.order_id,
                t.attempts as i64,
                t.assigned_unix_ns.map(|v| v as i64),
                t.started_unix_ns.map(|v| v as i64),
                t.finished_unix_ns.map(|v| v as i64),
                t.progress,
                t.progress_unix_ns as i64,
                t.success,
                t.reason,
                t.resends as i64,
                serde_json::to_string(&t.history)?,
                t.id,
                t.rev as i64,
            ],
        )?;
        if n != 1 {
            return Ok(false);
        }
        insert_events(&tx, events, now)?;
        tx.commit()?;
        t.rev = rev as u64;
        Ok(true)
    }

    fn pending_events(&self, limit: usize) -> anyhow::Result<Vec<crate::webhook::Event>> {
        crate::webhook::pending_in(&self.conn(), "task_events", limit)
    }

    fn event_attempted(&self, key: &str, delivered: Option<u64>) -> anyhow::Result<()> {
        crate::webhook::attempted_in(&self.conn(), "task_events", key, delivered)
    }

    fn record_outcome(&self, o: &Outcome) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO outcomes (order_id, task_id, robot_id, kind, model_version, success, reason, \
             finished_unix_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                o.order_id,
                o.task_id,
                o.robot_id,
                o.kind,
                o.model_version,
                o.success,
                o.reason,
                o.finished_unix_ns as i64
            ],
        )?;
        Ok(())
    }

    fn outcome_counts(&self, since: u64) -> anyhow::Result<Vec<OutcomeCount>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT model_version, kind, success, reason, COUNT(*) FROM outcomes WHERE finished_unix_ns >= ?1 \
             GROUP BY model_version, kind, success, reason",
        )?;
        let rows = stmt
            .query_map([since as i64], |r| {
                Ok(OutcomeCount {
                    model_version: r.get(0)?,
                    kind: r.get(1)?,
                    success: r.get(2)?,
                    reason: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn finished_counts(&self, since: u64) -> anyhow::Result<Vec<FinishedCount>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT COALESCE(robot_id, ''), state = 'completed', COALESCE(reason, ''), COUNT(*) FROM tasks \
             WHERE finished_unix_ns >= ?1 AND state IN ('completed', 'failed') GROUP BY 1, 2, 3",
        )?;
        let rows = stmt
            .query_map([since as i64], |r| {
                Ok(FinishedCount {
                    robot_id: r.get(0)?,
                    success: r.get(1)?,
                    reason: r.get(2)?,
                    tasks: r.get::<_, i64>(3)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

/// Why an attempt ended, for the reasons the cloud itself decides.
pub mod reason {
    pub const ROBOT_OFFLINE: &str = "robot_offline";
    pub const ROBOT_ESTOP: &str = "robot_estop";
    pub const ROBOT_SAFE_STOP: &str = "robot_safe_stop";
    pub const STUCK: &str = "stuck";
    pub const ORDER_LOST: &str = "order_lost";
    pub const CANCELED: &str = "canceled";
    /// A robot reports an order of the task that is no longer current.
    pub const SUPERSEDED: &str = "superseded";
    /// Another attempt of the task completed it.
    pub const DONE_ELSEWHERE: &str = "completed_by_another_attempt";
}

/// Robot-reported reasons after which another robot should not try.
fn final_reason(reason: &str) -> bool {
    matches!(reason, "invalid_params" | "unsupported_kind")
}

#[derive(Debug, Default)]
pub struct TaskStats {
    pub submitted: AtomicU64,
    pub assigned: AtomicU64,
    pub reassigned: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub canceled: AtomicU64,
    pub duplicates_canceled: AtomicU64,
    pub states_received: AtomicU64,
    pub states_rejected: AtomicU64,
    /// State messages whose telemetry had non-finite or negative figures (dropped).
    pub telemetry_refused: AtomicU64,
    pub webhooks: Arc<crate::webhook::Counts>,
}

/// What the cloud knows of a robot from its `state` messages.
#[derive(Debug, Clone)]
pub struct Seen {
    pub state: RobotState,
    pub received_unix_ns: u64,
    /// Since when the robot has reported its current mode.
    pub mode_since_unix_ns: u64,
    /// Whether its last word on `status` was `offline`.
    pub offline: bool,
}

pub struct Settings {
    pub stuck_after_ns: u64,
    pub lease_s: u64,
    pub max_attempts: u32,
    pub safe_stop_grace_ns: u64,
}

impl From<&gantry_config::cloud::Tasks> for Settings {
    fn from(t: &gantry_config::cloud::Tasks) -> Self {
        Self {
            stuck_after_ns: t.stuck_after_s * NS,
            lease_s: t.lease_s,
            max_attempts: t.max_attempts,
            safe_stop_grace_ns: t.safe_stop_grace_s * NS,
        }
    }
}

/// A message for a robot.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The task service: API calls, robot states and the scheduler's rounds, one at
/// a time (the lock), each change committed before its message goes out.
pub struct Tasks {
    catalog: Arc<dyn TaskCatalog>,
    settings: Settings,
    robots: Mutex<HashMap<String, Seen>>,
    /// Serialises changes; the scheduler's messages queue behind it.
    lock: tokio::sync::Mutex<Vec<Outgoing>>,
    header_id: AtomicU64,
    started_unix_ns: u64,
    pub changed: Notify,
    pub stats: TaskStats,
    /// The incident log, for the automatic actions taken here.
    pub journal: std::sync::OnceLock<Arc<crate::ops::Journal>>,
}

/// An API error: status code and sentence.
#[derive(Debug)]
pub struct ApiError(pub u16, pub String);

impl Tasks {
    pub fn new(catalog: Arc<dyn TaskCatalog>, settings: Settings, now: u64) -> Self {
        Self {
            catalog,
            settings,
            robots: Mutex::new(HashMap::new()),
            lock: tokio::sync::Mutex::new(Vec::new()),
            header_id: AtomicU64::new(0),
            started_unix_ns: now,
            changed: Notify::new(),
            stats: TaskStats::default(),
            journal: std::sync::OnceLock::new(),
        }
    }

    pub fn catalog(&self) -> &dyn TaskCatalog {
        &*self.catalog
    }

    fn header(&self, now: u64) -> wire::Header {
        wire::Header::new(self.header_id.fetch_add(1, Relaxed) + 1, now)
    }

    /// What the cloud last heard from each robot.
    pub fn robots(&self) -> HashMap<String, Seen> {
        self.robots.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `POST /api/tasks`: the task and whether it is new.
    pub async fn submit(&self, body: &Value, now: u64) -> Result<(Task, bool), ApiError> {
        let new = NewTask::from_json(body, now).map_err(|e| ApiError(400, e))?;
        let _guard = self.lock.lock().await;
        // Times are taken under the lock, so they order as the changes do.
        let now = now.max(crate::unix_now_ns());
        let (task, created) = self.catalog.insert_task(&new, now).map_err(internal)?;
        if created {
            self.stats.submitted.fetch_add(1, Relaxed);
            tracing::info!(task = %task.id, kind = %task.kind, priority = task.priority.as_str(), "task queued");
            self.changed.notify_one();
        }
        Ok((task, created))
    }

    /// `POST /api/tasks/{id}/cancel`.
    pub async fn cancel(&self, id: &str, now: u64) -> Result<Task, ApiError> {
        let mut out = self.lock.lock().await;
        let mut task =
            self.catalog.task(id).map_err(internal)?.ok_or_else(|| ApiError(404, format!("no task {id:?}")))?;
        if task.state.is_terminal() {
            return Err(ApiError(409, format!("task {id:?} is already {}", task.state.as_str())));
        }
        if let (Some(robot), Some(order)) = (task.robot_id.clone(), task.order_id.clone()) {
            out.push(self.cancel_message(&robot, &order, reason::CANCELED, now));
            end_attempt(&mut task, now, reason::CANCELED);
        }
        finish(&mut task, TaskState::Canceled, false, reason::CANCELED, now);
        if !self.catalog.save_task(&mut task, &[], now).map_err(internal)? {
            return Err(ApiError(409, format!("task {id:?} changed meanwhile; try again")));
        }
        self.stats.canceled.fetch_add(1, Relaxed);
        tracing::info!(task = %task.id, "task canceled on request");
        self.changed.notify_one();
        Ok(task)
    }

    fn cancel_message(&self, robot: &str, order_id: &str, why: &str, now: u64) -> Outgoing {
        let msg = wire::InstantActions {
            header: self.header(now),
            actions: vec![wire::InstantAction {
                action_id: format!("cancel-{order_id}"),
                action_type: wire::ActionType::Cancel,
                order_id: order_id.to_string(),
                reason: why.to_string(),
            }],
        };
        Outgoing { topic: gantry_config::wire::topic(robot, wire::INSTANT_ACTIONS), payload: to_vec(&msg) }
    }

    fn order_message(&self, task: &Task, robot: &str, now: u64) -> Outgoing {
        let order = wire::Order {
            header: self.header(now),
            order_id: task.order_id.clone().unwrap_or_default(),
            order_update_id: 0,
            task_id: task.id.clone(),
            kind: task.kind.clone(),
            params: task.params.clone(),
            lease_s: self.settings.lease_s,
        };
        Outgoing { topic: gantry_config::wire::topic(robot, wire::ORDER), payload: to_vec(&order) }
    }

    /// A robot's `status` (`online`/`offline`).
    pub fn on_status(&self, robot: &str, online: bool) {
        if let Some(seen) = self.robots.lock().unwrap_or_else(|e| e.into_inner()).get_mut(robot) {
            seen.offline = !online;
        }
        self.changed.notify_one();
    }

    /// A robot's `state`: results applied, progress noted. `Err` for a
    /// malformed message (counted; the caller logs it).
    pub async fn on_state(&self, robot: &str, payload: &[u8], now: u64) -> anyhow::Result<()> {
        self.stats.states_received.fetch_add(1, Relaxed);
        let mut state: RobotState = match serde_json::from_slice(payload) {
            Ok(s) => s,
            Err(e) => {
                self.stats.states_rejected.fetch_add(1, Relaxed);
                anyhow::bail!("state from {robot}: {e}");
            }
        };
        if state.robot_id != robot || !state.progress.is_finite() {
            self.stats.states_rejected.fetch_add(1, Relaxed);
            anyhow::bail!(
                "state from {robot}: robot_id {:?} or progress {} does not fit",
                state.robot_id,
                state.progress
            );
        }
        if !state.telemetry.is_valid() {
            // The task part still counts; the bad figures are dropped, not shown.
            self.stats.telemetry_refused.fetch_add(1, Relaxed);
            tracing::warn!(%robot, telemetry = ?state.telemetry, "dropped non-finite or negative telemetry figures");
            state.telemetry = state.telemetry.sanitized();
        }
        let mut out = self.lock.lock().await;
        {
            let mut robots = self.robots.lock().unwrap_or_else(|e| e.into_inner());
            let mode_since = match robots.get(robot) {
                Some(prev) if prev.state.mode == state.mode => prev.mode_since_unix_ns,
                _ => now,
            };
            robots.insert(
                robot.to_string(),
                Seen { state: state.clone(), received_unix_ns: now, mode_since_unix_ns: mode_since, offline: false },
            );
        }
        for result in &state.results {
            self.apply_result(robot, result, now, &mut out)?;
        }
        // Progress of the current order.
        if !state.order_id.is_empty() {
            if let Some((task_id, _)) = wire::parse_order_id(&state.order_id) {
                if let Some(mut task) = self.catalog.task(task_id)? {
                    if task.order_id.as_deref() == Some(state.order_id.as_str()) && task.state.is_active() {
                        let mut changed = false;
                        if task.state == TaskState::Assigned {
                            task.state = TaskState::Running;
                            task.started_unix_ns.get_or_insert(now);
                            changed = true;
                        }
                        if state.progress > task.progress + 1e-9 {
                            task.progress = state.progress.clamp(0.0, 1.0);
                            task.progress_unix_ns = now;
                            changed = true;
                        }
                        if changed {
                            self.catalog.save_task(&mut task, &[], now)?;
                        }
                    } else {
                        // An order this robot should not be on (canceled,
                        // finished or moved while it was away): tell it again.
                        out.push(self.cancel_message(robot, &state.order_id, reason::SUPERSEDED, now));
                    }
                }
            }
        }
        drop(out);
        self.changed.notify_one();
        Ok(())
    }

    fn apply_result(
        &self,
        robot: &str,
        result: &wire::OrderResult,
        now: u64,
        out: &mut Vec<Outgoing>,
    ) -> anyhow::Result<()> {
        let Some((task_id, _)) = wire::parse_order_id(&result.order_id) else { return Ok(()) };
        let Some(mut task) = self.catalog.task(task_id)? else { return Ok(()) };
        if task.state.is_terminal() {
            return Ok(());
        }
        let current = task.order_id.as_deref() == Some(result.order_id.as_str());
        let ours = task.history.iter().any(|a| a.order_id == result.order_id && a.robot_id == robot);
        if !ours {
            return Ok(());
        }
        self.catalog.record_outcome(&Outcome {
            order_id: result.order_id.clone(),
            task_id: task.id.clone(),
            robot_id: robot.to_string(),
            kind: task.kind.clone(),
            model_version: result.model_version.clone(),
            success: result.success,
            reason: result.reason.clone(),
            finished_unix_ns: now,
        })?;
        let mut events = Vec::new();
        if result.success {
            if !current {
                // Finished while cut off, after the task moved on: the attempt
                // running now is the duplicate.
                if let (Some(other), Some(order)) = (task.robot_id.clone(), task.order_id.clone()) {
                    out.push(self.cancel_message(&other, &order, reason::DONE_ELSEWHERE, now));
                    end_attempt(&mut task, now, reason::DONE_ELSEWHERE);
                    self.stats.duplicates_canceled.fetch_add(1, Relaxed);
                }
                task.robot_id = Some(robot.to_string());
                task.order_id = Some(result.order_id.clone());
            }
            if let Some(a) = task.history.iter_mut().find(|a| a.order_id == result.order_id) {
                a.ended_unix_ns.get_or_insert(now);
            }
            task.progress = 1.0;
            task.started_unix_ns.get_or_insert(now);
            finish(&mut task, TaskState::Completed, true, "", now);
            events.push(task_event("task.completed", &task));
            self.stats.completed.fetch_add(1, Relaxed);
            tracing::info!(task = %task.id, %robot, attempts = task.attempts, "task completed");
        } else if current {
            end_attempt(&mut task, now, &result.reason);
            if final_reason(&result.reason) || task.attempts >= self.settings.max_attempts {
                finish(&mut task, TaskState::Failed, false, &result.reason, now);
                events.push(task_event("task.failed", &task));
                self.stats.failed.fetch_add(1, Relaxed);
                tracing::info!(task = %task.id, %robot, reason = %result.reason, "task failed");
            } else {
                requeue(&mut task);
                self.stats.reassigned.fetch_add(1, Relaxed);
                tracing::info!(task = %task.id, %robot, reason = %result.reason, "attempt failed; task queued again");
            }
        } else {
            return Ok(());
        }
        self.catalog.save_task(&mut task, &events, now)?;
        Ok(())
    }

    /// One scheduler round: reassign from robots that cannot go on, then
    /// allocate queued tasks. Returns the messages to send, in order.
    pub async fn schedule(&self, now: u64) -> anyhow::Result<Vec<Outgoing>> {
        let mut out = self.lock.lock().await;
        let now = now.max(crate::unix_now_ns());
        let robots = self.robots();
        let open = self.catalog.open_tasks()?;
        let silent_after = (self.settings.lease_s + wire::STATE_PERIOD_S) * NS + REASSIGN_MARGIN_NS;
        let mut busy: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut queued = Vec::new();
        for mut task in open {
            if task.state == TaskState::Queued {
                queued.push(task);
                continue;
            }
            let (Some(robot), Some(order)) = (task.robot_id.clone(), task.order_id.clone()) else {
                requeue(&mut task);
                self.catalog.save_task(&mut task, &[], now)?;
                queued.push(task);
                continue;
            };
            let seen = robots.get(&robot);
            let heard = seen.map_or(self.started_unix_ns, |s| s.received_unix_ns).max(self.started_unix_ns);
            let assigned = task.assigned_unix_ns.unwrap_or(now);
            let mode = seen.map(|s| s.state.mode.as_str());
            let lost = if now.saturating_sub(heard) > silent_after {
                Some(reason::ROBOT_OFFLINE)
            } else if mode == Some("estop") && seen.is_some_and(|s| s.received_unix_ns > assigned) {
                Some(reason::ROBOT_ESTOP)
            } else if mode == Some("safe_stop")
                && seen.is_some_and(|s| now.saturating_sub(s.mode_since_unix_ns) >= self.settings.safe_stop_grace_ns)
            {
                Some(reason::ROBOT_SAFE_STOP)
            } else if now.saturating_sub(task.progress_unix_ns) > self.settings.stuck_after_ns {
                Some(reason::STUCK)
            } else {
                None
            };
            if let Some(why) = lost {
                out.push(self.cancel_message(&robot, &order, why, now));
                end_attempt(&mut task, now, why);
                let mut events = Vec::new();
                if task.attempts >= self.settings.max_attempts {
                    finish(&mut task, TaskState::Failed, false, why, now);
                    events.push(task_event("task.failed", &task));
                    self.stats.failed.fetch_add(1, Relaxed);
                } else {
                    requeue(&mut task);
                    self.stats.reassigned.fetch_add(1, Relaxed);
                }
                if why != reason::STUCK {
                    events.push(robot_event(&robot, why, now));
                }
                tracing::warn!(task = %task.id, %robot, reason = why, "took the task from its robot");
                if let Some(journal) = self.journal.get() {
                    let next = if task.state == TaskState::Failed {
                        "failed it (no attempts left)"
                    } else {
                        "queued it for another robot"
                    };
                    journal.log(
                        now,
                        "action.task_reassigned",
                        &robot,
                        crate::ops::SERVICE,
                        &format!("took task {} from {robot} ({why}) and {next}", task.id),
                        json!({"task_id": task.id, "reason": why, "attempts": task.attempts, "state": task.state.as_str()}),
                    );
                }
                if self.catalog.save_task(&mut task, &events, now)? && task.state == TaskState::Queued {
                    queued.push(task);
                }
                continue;
            }
            busy.insert(robot.clone());
            // The robot says idle well after the order went out and has no
            // result for it: it never got the order (or restarted).
            if let Some(s) = seen {
                let idle_after_order = s.state.phase == Phase::Idle
                    && s.received_unix_ns > task.assigned_unix_ns.unwrap_or(now) + ORDER_ACK_NS
                    && !s.state.results.iter().any(|r| r.order_id == order);
                if idle_after_order && task.state == TaskState::Assigned {
                    if task.resends < MAX_RESENDS {
                        task.resends += 1;
                        task.assigned_unix_ns = Some(now);
                        out.push(self.order_message(&task, &robot, now));
                    } else {
                        end_attempt(&mut task, now, reason::ORDER_LOST);
                        requeue(&mut task);
                        busy.remove(&robot);
                    }
                    self.catalog.save_task(&mut task, &[], now)?;
                    if task.state == TaskState::Queued {
                        queued.push(task);
                    }
                }
            }
        }
        // Allocation: urgent before high before normal, then the earliest
        // start, then first come.
        queued.sort_by_key(|t| (t.priority.rank(), t.not_before_unix_ns, t.created_unix_ns, t.rev));
        let mut idle: Vec<(&String, &Seen)> = robots
            .iter()
            .filter(|(id, s)| {
                !s.offline
                    && !busy.contains(*id)
                    && now.saturating_sub(s.received_unix_ns) <= (wire::STATE_PERIOD_S * 2 + 5) * NS
                    && s.state.phase == Phase::Idle
                    && s.state.health == "green"
                    && matches!(s.state.mode.as_str(), "running")
            })
            .collect();
        // The robot idle longest first.
        idle.sort_by_key(|(id, s)| (s.mode_since_unix_ns.min(s.received_unix_ns), (*id).clone()));
        for mut task in queued {
            if task.not_before_unix_ns > now {
                continue;
            }
            let Some(pos) = idle.iter().position(|(_, s)| s.state.kinds.contains(&task.kind)) else {
                continue;
            };
            let (robot, _) = idle.remove(pos);
            task.attempts += 1;
            let order = wire::order_id(&task.id, task.attempts);
            task.state = TaskState::Assigned;
            task.robot_id = Some(robot.clone());
            task.order_id = Some(order.clone());
            task.assigned_unix_ns = Some(now);
            task.progress = 0.0;
            task.progress_unix_ns = now;
            task.resends = 0;
            task.history.push(Attempt {
                order_id: order,
                robot_id: robot.clone(),
                assigned_unix_ns: now,
                ended_unix_ns: None,
                reason: None,
            });
            if self.catalog.save_task(&mut task, &[], now)? {
                self.stats.assigned.fetch_add(1, Relaxed);
                tracing::info!(task = %task.id, %robot, attempt = task.attempts, priority = task.priority.as_str(), "task assigned");
                out.push(self.order_message(&task, robot, now));
            }
        }
        Ok(std::mem::take(&mut *out))
    }
}

fn internal(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %format!("{e:#}"), "task catalog");
    ApiError(500, "the task catalog failed; try again".into())
}

fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn end_attempt(task: &mut Task, now: u64, why: &str) {
    if let Some(a) = task.history.iter_mut().rev().find(|a| Some(&a.order_id) == task.order_id.as_ref()) {
        if a.ended_unix_ns.is_none() {
            a.ended_unix_ns = Some(now);
            a.reason = Some(why.to_string());
        }
    }
}

fn requeue(task: &mut Task) {
    task.state = TaskState::Queued;
    task.robot_id = None;
    task.order_id = None;
    task.assigned_unix_ns = None;
    task.progress = 0.0;
}

fn finish(task: &mut Task, state: TaskState, success: bool, why: &str, now: u64) {
    task.state = state;
    task.finished_unix_ns = Some(now);
    task.success = Some(success);
    task.reason = (!why.is_empty()).then(|| why.to_string());
}

/// `task.completed` / `task.failed`, keyed so a receiver applies each once.
fn task_event(kind: &str, task: &Task) -> (String, Value) {
    let key = format!("{kind}:{}", task.id);
    (key.clone(), json!({"event": kind, "idempotency_key": key, "task": task.to_json()}))
}

fn robot_event(robot: &str, why: &str, now: u64) -> (String, Value) {
    let key = format!("robot.failure:{robot}:{why}:{}", now / NS);
    (
        key.clone(),
        json!({"event": "robot.failure", "idempotency_key": key, "robot_id": robot, "reason": why, "at": wire::rfc3339(now)}),
    )
}

/// Subscribes to the robots' states and `status`, and runs the scheduler
/// every half second and on every change, sending orders and instant actions
/// (QoS 1). The event loop is polled by this task alone and never cancelled
/// by a timer (a poll cancelled while connecting drops the connection); the
/// scheduler runs beside it and hands messages to the client without waiting.
pub async fn run(tasks: Arc<Tasks>, options: MqttOptions, mut stopped: watch::Receiver<bool>) {
    let (client, mut events) = AsyncClient::new(options, 1024);
    let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scheduler = tokio::spawn(schedule_rounds(tasks.clone(), client.clone(), connected.clone(), stopped.clone()));
    let mut was_connected = false;
    loop {
        let event = tokio::select! {
            e = events.poll() => e,
            _ = stopped.wait_for(|s| *s) => break,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                was_connected = true;
                connected.store(true, Relaxed);
                for leaf in [wire::STATE, gantry_config::wire::STATUS] {
                    let _ = client.try_subscribe(format!("gantry/+/{leaf}"), QoS::AtLeastOnce);
                }
                tasks.changed.notify_one();
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let now = crate::unix_now_ns();
                match gantry_config::wire::parse_topic(&p.topic) {
                    Some((robot, wire::STATE)) => {
                        if let Err(e) = tasks.on_state(robot, &p.payload, now).await {
                            tracing::warn!(error = %format!("{e:#}"), "rejected a robot state");
                        }
                    }
                    Some((robot, gantry_config::wire::STATUS)) => {
                        tasks.on_status(robot, !p.payload.starts_with(b"offline"));
                    }
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(e) => {
                if was_connected {
                    tracing::warn!(error = %e, "tasks: lost the broker; reconnecting");
                }
                was_connected = false;
                connected.store(false, Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
            }
        }
    }
    let _ = scheduler.await;
    let _ = client.try_disconnect();
}

async fn schedule_rounds(
    tasks: Arc<Tasks>,
    client: AsyncClient,
    connected: Arc<std::sync::atomic::AtomicBool>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // Messages the client could not queue yet; they go first next round.
    let mut pending: std::collections::VecDeque<Outgoing> = std::collections::VecDeque::new();
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
            _ = tasks.changed.notified() => {}
        }
        if !connected.load(Relaxed) {
            continue;
        }
        match tasks.schedule(crate::unix_now_ns()).await {
            Ok(messages) => pending.extend(messages),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "task scheduler round failed"),
        }
        while let Some(m) = pending.pop_front() {
            if client.try_publish(m.topic.clone(), QoS::AtLeastOnce, false, m.payload.clone()).is_err() {
                pending.push_front(m);
                break;
            }
        }
    }
}

impl crate::webhook::Outbox for Tasks {
    fn pending(&self, limit: usize) -> anyhow::Result<Vec<crate::webhook::Event>> {
        self.catalog.pending_events(limit)
    }

    fn attempted(&self, key: &str, delivered: Option<u64>) -> anyhow::Result<()> {
        self.catalog.event_attempted(key, delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS;

    fn state(robot: &str, order: &str, phase: Phase, progress: f64, mode: &str) -> Vec<u8> {
        let task_id = wire::parse_order_id(order).map_or(String::new(), |(t, _)| t.to_string());
        serde_json::to_vec(&RobotState {
            header: wire::Header::new(1, 0),
            robot_id: robot.into(),
            order_id: order.into(),
            order_update_id: 0,
            task_id,
            phase,
            progress,
            operating_mode: "automatic".into(),
            mode: mode.into(),
            health: "green".into(),
            kinds: vec!["pick".into()],
            errors: vec![],
            results: vec![],
            telemetry: Default::default(),
        })
        .unwrap()
    }

    fn sent(out: &[Outgoing]) -> Vec<(String, String)> {
        out.iter()
            .map(|m| {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                let what = v["order_id"].as_str().map_or_else(
                    || format!("{}:{}", v["actions"][0]["action_type"], v["actions"][0]["order_id"]),
                    str::to_string,
                );
                (m.topic.clone(), what)
            })
            .collect()
    }

    #[tokio::test]
    async fn bad_telemetry_figures_are_dropped_and_the_state_still_counts() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(SqliteCatalog::open(&dir.path().join("c.sqlite")).unwrap());
        let settings = Settings { stuck_after_ns: 60 * S, lease_s: 60, max_attempts: 2, safe_stop_grace_ns: 10 * S };
        let t0 = crate::unix_now_ns();
        let tasks = Tasks::new(catalog, settings, t0);
        let mut msg: Value = serde_json::from_slice(&state("r1", "", Phase::Idle, 0.0, "running")).unwrap();
        msg["telemetry"] = json!({"latency_p95_ms": -3.0, "disk_free_pct": 42.0});
        tasks.on_state("r1", &serde_json::to_vec(&msg).unwrap(), t0).await.unwrap();
        let seen = tasks.robots();
        let t = &seen["r1"].state.telemetry;
        assert_eq!((t.latency_p95_ms, t.disk_free_pct), (None, Some(42.0)));
        assert_eq!(tasks.stats.telemetry_refused.load(Relaxed), 1);
        assert_eq!(tasks.stats.states_rejected.load(Relaxed), 0);
    }

    /// An e-stop takes the task from its robot at once; no progress for
    /// `stuck_after_s` takes it too; the last allowed attempt then fails the
    /// task with that reason and tells the factory.
    #[tokio::test]
    async fn an_estop_and_a_stuck_robot_lose_their_task_then_attempts_run_out() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(SqliteCatalog::open(&dir.path().join("c.sqlite")).unwrap());
        let settings = Settings { stuck_after_ns: 60 * S, lease_s: 60, max_attempts: 2, safe_stop_grace_ns: 10 * S };
        let t0 = crate::unix_now_ns();
        let tasks = Tasks::new(catalog.clone(), settings, t0);
        tasks.on_state("r1", &state("r1", "", Phase::Idle, 0.0, "running"), t0).await.unwrap();
        tasks.submit(&json!({"id": "t", "kind": "pick"}), t0).await.unwrap();
        let out = tasks.schedule(t0).await.unwrap();
        assert_eq!(sent(&out), [("gantry/r1/order".to_string(), "t#1".to_string())]);

        // Working, then the e-stop.
        tasks.on_state("r1", &state("r1", "t#1", Phase::Running, 0.2, "running"), t0 + S).await.unwrap();
        assert_eq!(catalog.task("t").unwrap().unwrap().state, TaskState::Running);
        tasks.on_state("r1", &state("r1", "t#1", Phase::Running, 0.2, "estop"), t0 + 2 * S).await.unwrap();
        tasks.on_state("r2", &state("r2", "", Phase::Idle, 0.0, "running"), t0 + 2 * S).await.unwrap();
        let out = tasks.schedule(t0 + 2 * S).await.unwrap();
        assert_eq!(
            sent(&out),
            [
                ("gantry/r1/instant-actions".to_string(), "\"cancel\":\"t#1\"".to_string()),
                ("gantry/r2/order".to_string(), "t#2".to_string())
            ]
        );
        let t = catalog.task("t").unwrap().unwrap();
        assert_eq!(t.history[0].reason.as_deref(), Some(reason::ROBOT_ESTOP));

        // The second robot reports progress once, then nothing moves for the
        // stuck limit: the last attempt is used up and the task fails.
        let later = crate::unix_now_ns().max(t0 + 3 * S);
        tasks.on_state("r2", &state("r2", "t#2", Phase::Running, 0.1, "running"), later).await.unwrap();
        let out = tasks.schedule(later + 30 * S).await.unwrap();
        assert!(out.is_empty(), "not stuck yet: {:?}", sent(&out));
        let out = tasks.schedule(later + 61 * S).await.unwrap();
        assert_eq!(sent(&out), [("gantry/r2/instant-actions".to_string(), "\"cancel\":\"t#2\"".to_string())]);
        let t = catalog.task("t").unwrap().unwrap();
        assert_eq!((t.state, t.reason.as_deref(), t.attempts), (TaskState::Failed, Some(reason::STUCK), 2));
        let events: Vec<String> = catalog.pending_events(10).unwrap().into_iter().map(|e| e.key).collect();
        assert!(events.contains(&"task.failed:t".to_string()), "{events:?}");
        assert!(events.iter().any(|k| k.starts_with("robot.failure:r1:robot_estop")), "{events:?}");
    }
}
