//! The labelling hook: a review queue of tasks for a person to label. As the
//! lake export meets each task, it queues every task whose label the
//! evidence disputes (`label_contradicts_events`) and 1 % of the rest (chosen
//! by a hash of its keys, so a re-export picks the same ones).
//! `GET /api/review` lists the queue; `POST /api/review/{task_id}` records a
//! person's label; the export writes each label to the `labels` table, beside
//! the robot's own outcome.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use super::LakeState;
use crate::sql::{Db, Row, Tx};
use crate::vals;

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

/// The queue, on either engine (booleans and times are integers on both).
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS review_queue (
    robot_id TEXT NOT NULL, boot_id TEXT NOT NULL, task_id TEXT NOT NULL, kind TEXT NOT NULL,
    start_unix_ns BIGINT NOT NULL, auto_success BIGINT NOT NULL, auto_reason TEXT,
    reason TEXT NOT NULL, flags TEXT NOT NULL,
    label_success BIGINT, labelled_by TEXT, labelled_unix_ns BIGINT, note TEXT,
    -- Orders labels for the export; set anew at every label.
    label_seq BIGINT,
    PRIMARY KEY (robot_id, boot_id, task_id))";

pub const INDEX: &str = "CREATE INDEX IF NOT EXISTS review_label_seq ON review_queue (label_seq)";

/// Taken by every label: two replicas labelling at once must not give the same `label_seq`.
const LABEL_LOCK: i64 = 0x6761_6e74_7279_0011;

pub fn enqueue(tx: &mut dyn Tx, item: &ReviewItem) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO review_queue (robot_id, boot_id, task_id, kind, start_unix_ns, auto_success, \
         auto_reason, reason, flags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
        &vals![
            &item.robot_id,
            &item.boot_id,
            &item.task_id,
            &item.kind,
            item.start_unix_ns,
            item.auto_success,
            item.auto_reason.clone(),
            &item.reason,
            serde_json::to_string(&item.flags).unwrap_or_default()
        ],
    )?;
    Ok(())
}

const COLUMNS: &str = "robot_id, boot_id, task_id, kind, start_unix_ns, auto_success, auto_reason, reason, flags, \
                       label_success, labelled_by, labelled_unix_ns, note, label_seq";

fn item(r: &Row) -> anyhow::Result<(ReviewItem, Option<u64>)> {
    let label = match r.opt_bool(9)? {
        Some(success) => Some(Label {
            success,
            by: r.opt_text(10)?.unwrap_or_default(),
            unix_ns: r.opt_int(11)?.unwrap_or(0) as u64,
            note: r.opt_text(12)?,
        }),
        None => None,
    };
    let item = ReviewItem {
        robot_id: r.text(0)?,
        boot_id: r.text(1)?,
        task_id: r.text(2)?,
        kind: r.text(3)?,
        start_unix_ns: r.u64(4)?,
        auto_success: r.bool(5)?,
        auto_reason: r.opt_text(6)?,
        reason: r.text(7)?,
        flags: serde_json::from_str(&r.text(8)?).unwrap_or_default(),
        label,
    };
    Ok((item, r.opt_int(13)?.map(|s| s as u64)))
}

/// The queue, oldest task first: those still to label, or those labelled.
pub fn list(db: &Db, labelled: bool, limit: usize) -> anyhow::Result<Vec<ReviewItem>> {
    let filter = if labelled { "label_success IS NOT NULL" } else { "label_success IS NULL" };
    let rows = db.query_owned(
        format!("SELECT {COLUMNS} FROM review_queue WHERE {filter} ORDER BY start_unix_ns LIMIT ?1"),
        &vals![limit as u64],
    )?;
    rows.iter().map(|r| item(r).map(|(i, _)| i)).collect()
}

/// Why a label was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("no task {0} in the review queue")]
    NotQueued(String),
    #[error("task id {0} is in the queue for more than one robot or boot: give robot_id and boot_id")]
    Ambiguous(String),
    #[error(transparent)]
    Db(#[from] anyhow::Error),
}

/// Records a person's label for a queued task (`robot_id`/`boot_id` narrow
/// it down where a task id is not unique); a later label replaces it.
pub fn label(
    db: &Db,
    task_id: &str,
    robot_id: Option<&str>,
    boot_id: Option<&str>,
    l: &Label,
) -> Result<ReviewItem, LabelError> {
    let (task_id, robot_id, boot_id, l) =
        (task_id.to_string(), robot_id.map(str::to_string), boot_id.map(str::to_string), l.clone());
    db.transaction(move |tx| {
        tx.serialize(LABEL_LOCK)?;
        let keys = tx.query(
            "SELECT robot_id, boot_id FROM review_queue WHERE task_id = ?1 \
             AND (CAST(?2 AS TEXT) IS NULL OR robot_id = ?2) AND (CAST(?3 AS TEXT) IS NULL OR boot_id = ?3)",
            &vals![&task_id, robot_id, boot_id],
        )?;
        let (robot, boot) = match keys.as_slice() {
            [] => return Ok(Err(LabelError::NotQueued(task_id))),
            [one] => (one.text(0)?, one.text(1)?),
            _ => return Ok(Err(LabelError::Ambiguous(task_id))),
        };
        let seq = tx
            .query_one("SELECT CAST(COALESCE(MAX(label_seq), 0) + 1 AS BIGINT) FROM review_queue", &[])?
            .context("no next label_seq")?
            .int(0)?;
        tx.execute(
            "UPDATE review_queue SET label_success = ?1, labelled_by = ?2, labelled_unix_ns = ?3, note = ?4, \
             label_seq = ?5 WHERE robot_id = ?6 AND boot_id = ?7 AND task_id = ?8",
            &vals![l.success, &l.by, l.unix_ns, l.note.clone(), seq, &robot, &boot, &task_id],
        )?;
        let row = tx.query_one(
            &format!("SELECT {COLUMNS} FROM review_queue WHERE robot_id = ?1 AND boot_id = ?2 AND task_id = ?3"),
            &vals![&robot, &boot, &task_id],
        )?;
        Ok(match row {
            Some(r) => Ok(item(&r)?.0),
            None => Err(LabelError::NotQueued(task_id)),
        })
    })?
}

/// Labels given after `cursor` (by label order), with their order.
pub fn labels_since(db: &Db, cursor: u64) -> anyhow::Result<Vec<(u64, ReviewItem)>> {
    let rows = db.query_owned(
        format!("SELECT {COLUMNS} FROM review_queue WHERE label_seq > ?1 ORDER BY label_seq LIMIT 1000"),
        &vals![cursor],
    )?;
    rows.iter().map(|r| item(r).map(|(i, s)| (s.unwrap_or(0), i))).collect()
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
