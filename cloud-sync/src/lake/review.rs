//! The labelling hook: a review queue of tasks for a person to label. As the
//! lake export meets each task, it queues every task whose label the
//! evidence disputes (`label_contradicts_events`) and 1 % of the rest (chosen
//! by a hash of its keys, so a re-export picks the same ones).
//! `GET /api/review` lists the queue; `POST /api/review/{task_id}` records a
//! person's label; the export writes each label to the `labels` table, beside
//! the robot's own outcome.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::json;

use super::LakeState;

/// One task in the queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewItem {
    pub robot_id: String,
    pub boot_id: String,
    /// The task's id (a fixed stretch's own id when it is no task).
    pub task_id: String,
    pub kind: String,
    pub start_unix_ns: u64,
    /// The robot's outcome.
    pub auto_success: bool,
    pub auto_reason: Option<String>,
    /// `disputed` or `sampled`.
    pub reason: String,
    pub flags: Vec<String>,
    pub label: Option<Label>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    pub success: bool,
    pub by: String,
    pub unix_ns: u64,
    pub note: Option<String>,
}

/// `GET /api/review` and `POST /api/review/{task_id}` on the lake's state.
pub fn router<S: Clone + Send + Sync + 'static>(lake: Arc<LakeState>) -> Router<S> {
    Router::new()
        .route("/api/review", get(review_queue))
        .route("/api/review/{task_id}", post(review_label))
        .with_state(lake)
}

#[derive(serde::Deserialize)]
struct ReviewQuery {
    /// `pending` (default) or `labelled`.
    state: Option<String>,
    limit: Option<usize>,
}

/// The review queue: tasks for a person to label.
async fn review_queue(State(lake): State<Arc<LakeState>>, Query(q): Query<ReviewQuery>) -> Response {
    let labelled = match q.state.as_deref() {
        None | Some("pending") => false,
        Some("labelled") => true,
        Some(other) => {
            return (StatusCode::BAD_REQUEST, format!("state: {other:?} is not pending or labelled\n")).into_response()
        }
    };
    match lake.review_queue(labelled, q.limit.unwrap_or(100).clamp(1, 1000)) {
        Ok(items) => Json(json!({"tasks": items})).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelBody {
    /// `success` or `failure`.
    label: String,
    /// Who labels: kept with the label.
    by: String,
    note: Option<String>,
    robot_id: Option<String>,
    boot_id: Option<String>,
}

/// A person's label for a queued task.
async fn review_label(
    State(lake): State<Arc<LakeState>>,
    Path(task_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let b: LabelBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("body: {e}\n")).into_response(),
    };
    let success = match b.label.as_str() {
        "success" => true,
        "failure" => false,
        other => {
            return (StatusCode::BAD_REQUEST, format!("label: {other:?} is not success or failure\n")).into_response()
        }
    };
    if b.by.trim().is_empty() {
        return (StatusCode::BAD_REQUEST, "by: who labels is required\n").into_response();
    }
    let label = Label { success, by: b.by, unix_ns: crate::unix_now_ns(), note: b.note };
    match lake.label(&task_id, b.robot_id.as_deref(), b.boot_id.as_deref(), &label) {
        Ok(item) => Json(item).into_response(),
        Err(e @ LabelError::NotQueued(_)) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
        Err(e @ LabelError::Ambiguous(_)) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
        Err(e) => internal(e.into()),
    }
}

fn internal(e: anyhow::Error) -> Response {
    tracing::error!(error = %format!("{e:#}"), "review request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}

/// Share of undisputed tasks sampled into the queue: 1 in this many.
const SAMPLE_ONE_IN: u64 = 100;

/// Whether an undisputed task is in the 1 % sample: a hash of its keys.
pub fn sampled(robot_id: &str, boot_id: &str, task_id: &str) -> bool {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{robot_id}\n{boot_id}\n{task_id}"));
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first).is_multiple_of(SAMPLE_ONE_IN)
}

pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS review_queue (
    robot_id TEXT NOT NULL, boot_id TEXT NOT NULL, task_id TEXT NOT NULL, kind TEXT NOT NULL,
    start_unix_ns INTEGER NOT NULL, auto_success INTEGER NOT NULL, auto_reason TEXT,
    reason TEXT NOT NULL, flags TEXT NOT NULL,
    label_success INTEGER, labelled_by TEXT, labelled_unix_ns INTEGER, note TEXT,
    -- Orders labels for the export; set anew at every label.
    label_seq INTEGER,
    PRIMARY KEY (robot_id, boot_id, task_id));
    CREATE INDEX IF NOT EXISTS review_label_seq ON review_queue (label_seq);";

pub fn enqueue(tx: &rusqlite::Transaction<'_>, item: &ReviewItem) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO review_queue (robot_id, boot_id, task_id, kind, start_unix_ns, auto_success, \
         auto_reason, reason, flags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            item.robot_id,
            item.boot_id,
            item.task_id,
            item.kind,
            item.start_unix_ns as i64,
            item.auto_success,
            item.auto_reason,
            item.reason,
            serde_json::to_string(&item.flags).unwrap_or_default()
        ],
    )?;
    Ok(())
}

const COLUMNS: &str = "robot_id, boot_id, task_id, kind, start_unix_ns, auto_success, auto_reason, reason, flags, \
                       label_success, labelled_by, labelled_unix_ns, note, label_seq";

fn item(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ReviewItem, Option<u64>)> {
    let label = match r.get::<_, Option<bool>>(9)? {
        Some(success) => Some(Label {
            success,
            by: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
            unix_ns: r.get::<_, Option<i64>>(11)?.unwrap_or(0) as u64,
            note: r.get(12)?,
        }),
        None => None,
    };
    let item = ReviewItem {
        robot_id: r.get(0)?,
        boot_id: r.get(1)?,
        task_id: r.get(2)?,
        kind: r.get(3)?,
        start_unix_ns: r.get::<_, i64>(4)? as u64,
        auto_success: r.get(5)?,
        auto_reason: r.get(6)?,
        reason: r.get(7)?,
        flags: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
        label,
    };
    Ok((item, r.get::<_, Option<i64>>(13)?.map(|s| s as u64)))
}

/// The queue, oldest task first: those still to label, or those labelled.
pub fn list(conn: &Connection, labelled: bool, limit: usize) -> rusqlite::Result<Vec<ReviewItem>> {
    let filter = if labelled { "label_success IS NOT NULL" } else { "label_success IS NULL" };
    let mut stmt =
        conn.prepare(&format!("SELECT {COLUMNS} FROM review_queue WHERE {filter} ORDER BY start_unix_ns LIMIT ?1"))?;
    let rows = stmt.query_map([limit as i64], item)?.map(|r| r.map(|(i, _)| i)).collect();
    rows
}

/// Why a label was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("no task {0} in the review queue")]
    NotQueued(String),
    #[error("task id {0} is in the queue for more than one robot or boot: give robot_id and boot_id")]
    Ambiguous(String),
    #[error(transparent)]
    Db(#[from] rusqlite::Error),
}

/// Records a person's label for a queued task (`robot_id`/`boot_id` narrow
/// it down where a task id is not unique); a later label replaces it.
pub fn label(
    conn: &mut Connection,
    task_id: &str,
    robot_id: Option<&str>,
    boot_id: Option<&str>,
    l: &Label,
) -> Result<ReviewItem, LabelError> {
    let tx = conn.transaction()?;
    let keys: Vec<(String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT robot_id, boot_id FROM review_queue WHERE task_id = ?1 \
             AND (?2 IS NULL OR robot_id = ?2) AND (?3 IS NULL OR boot_id = ?3)",
        )?;
        let rows = stmt.query_map(params![task_id, robot_id, boot_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let (robot, boot) = match keys.as_slice() {
        [] => return Err(LabelError::NotQueued(task_id.to_string())),
        [one] => one.clone(),
        _ => return Err(LabelError::Ambiguous(task_id.to_string())),
    };
    let seq: i64 = tx.query_row("SELECT COALESCE(MAX(label_seq), 0) + 1 FROM review_queue", [], |r| r.get(0))?;
    tx.execute(
        "UPDATE review_queue SET label_success = ?1, labelled_by = ?2, labelled_unix_ns = ?3, note = ?4, label_seq = ?5 \
         WHERE robot_id = ?6 AND boot_id = ?7 AND task_id = ?8",
        params![l.success, l.by, l.unix_ns as i64, l.note, seq, robot, boot, task_id],
    )?;
    let row = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM review_queue WHERE robot_id = ?1 AND boot_id = ?2 AND task_id = ?3"),
            params![robot, boot, task_id],
            item,
        )
        .optional()?;
    tx.commit()?;
    row.map(|(i, _)| i).ok_or_else(|| LabelError::NotQueued(task_id.to_string()))
}

/// Labels given after `cursor` (by label order), with their order.
pub fn labels_since(conn: &Connection, cursor: u64) -> rusqlite::Result<Vec<(u64, ReviewItem)>> {
    let mut stmt = conn
        .prepare(&format!("SELECT {COLUMNS} FROM review_queue WHERE label_seq > ?1 ORDER BY label_seq LIMIT 1000"))?;
    let rows = stmt.query_map([cursor as i64], item)?.map(|r| r.map(|(i, s)| (s.unwrap_or(0), i))).collect();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_one_task_in_a_hundred_is_sampled() {
        let n = (0..20_000).filter(|i| sampled("robot-1", "b007", &format!("task-{i}"))).count();
        assert!((140..=260).contains(&n), "{n} of 20000");
        assert_eq!(sampled("r", "b", "t"), sampled("r", "b", "t"), "the same task, the same answer");
    }
}
