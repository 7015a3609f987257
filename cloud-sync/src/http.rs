//! Cloud sync's HTTP side (contract: Cloud sync HTTP).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use object_store::ObjectStore;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::front::{FrontStats, RobotCredentials, Role};
use crate::ingest::IngestStats;
use crate::store::CloudCatalog;
use crate::uploads::{Completion, Progress, UploadError, Uploads, CHUNK_SHA256};

pub struct AppState {
    pub fleet: Arc<crate::fleet::Fleet>,
    pub journal: Arc<crate::ops::Journal>,
    pub alert_webhooks: Arc<crate::webhook::Counts>,
    pub tasks: Arc<crate::tasks::Tasks>,
    pub catalog: Arc<dyn CloudCatalog>,
    pub store: Arc<dyn ObjectStore>,
    pub ingest: Arc<IngestStats>,
    pub front: Option<Arc<FrontStats>>,
    pub uploads: Arc<Uploads>,
    pub assignments: Arc<crate::assign::Assignments>,
    pub registry: Arc<crate::models::Registry>,
    pub lake: Arc<crate::lake::LakeState>,
    pub lake_root: object_store::path::Path,
    /// How long an operator's "upload now" keeps a robot's window open.
    pub upload_now_ns: u64,
    /// With a credentials file, uploads need the robot's own HTTP Basic login.
    pub creds: RobotCredentials,
    pub started: std::time::Instant,
    /// Whether this instance runs what must run once (`replicas.rs`).
    pub leader: Arc<std::sync::atomic::AtomicBool>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/fleet", get(fleet))
        .route("/api/alerts", get(alerts))
        .route("/api/incidents", get(incidents))
        .route("/ui/tasks", post(ui_submit_task))
        .route("/ui/tasks/{id}/cancel", post(ui_cancel_task))
        .route("/api/robots", get(robots))
        .route("/api/segments", get(segments))
        .route("/api/segments/{id}", get(segment))
        .route("/api/conflicts", get(conflicts))
        .route("/api/robots/{robot}/upload-now", post(upload_now))
        .route("/api/analytics", get(analytics))
        .route("/api/recordings", get(recordings))
        .route("/api/recordings/{id}", get(recording))
        .route("/api/lake/files", get(lake_files))
        .route("/api/lake/files/{id}", get(lake_file))
        .route("/api/models", get(models))
        .route("/api/models/{version}/package", get(model_package))
        .route("/api/uploads/{robot}/{segment}", get(upload_progress).put(upload_chunk))
        .route("/api/uploads/{robot}/{segment}/complete", post(upload_complete))
        .layer(DefaultBodyLimit::max(UPLOAD_CHUNK_MAX))
        .route("/metrics", get(metrics))
        .route("/api/tasks", get(list_tasks).post(submit_task))
        .route("/api/tasks/{id}", get(get_task))
        .route("/api/tasks/{id}/cancel", post(cancel_task))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::lake::review::router(state.lake.clone()))
        .with_state(state)
}

fn api_error(e: crate::tasks::ApiError) -> Response {
    let code = StatusCode::from_u16(e.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(json!({"error": e.1}))).into_response()
}

async fn submit_task(State(s): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let body: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return api_error(crate::tasks::ApiError(400, format!("the body is not JSON: {e}"))),
    };
    match s.tasks.submit(&body, crate::unix_now_ns()).await {
        Ok((task, true)) => (StatusCode::CREATED, Json(task.to_json())).into_response(),
        Ok((task, false)) => Json(task.to_json()).into_response(),
        Err(e) => api_error(e),
    }
}

#[derive(Deserialize)]
struct TaskQuery {
    state: Option<String>,
    robot: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

async fn list_tasks(State(s): State<Arc<AppState>>, Query(q): Query<TaskQuery>) -> Response {
    use crate::tasks::{ApiError, Filter, TaskState};
    let state = match q.state.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match TaskState::parse(v) {
            Some(st) => Some(st),
            None => {
                return api_error(ApiError(
                    400,
                    format!("state {v:?}: expected queued, assigned, running, completed, failed or canceled"),
                ))
            }
        },
    };
    let since = match q.since.as_deref().filter(|v| !v.is_empty()).map(str::parse::<u64>) {
        None => 0,
        Some(Ok(c)) => c,
        Some(Err(_)) => {
            return api_error(ApiError(400, "since: expected a cursor (next_cursor of a previous page)".into()))
        }
    };
    let filter =
        Filter { state, robot: q.robot.filter(|r| !r.is_empty()), since, limit: q.limit.unwrap_or(100).clamp(1, 1000) };
    match s.tasks.catalog().tasks(&filter) {
        Ok(rows) => {
            let next = rows.last().map_or(since, |t| t.rev);
            let tasks: Vec<_> = rows.iter().map(|t| t.to_json()).collect();
            Json(json!({"tasks": tasks, "next_cursor": next.to_string()})).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn get_task(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match s.tasks.catalog().task(&id) {
        Ok(Some(t)) => Json(t.to_json()).into_response(),
        Ok(None) => api_error(crate::tasks::ApiError(404, format!("no task {id:?}"))),
        Err(e) => internal(e),
    }
}

async fn cancel_task(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match s.tasks.cancel(&id, crate::unix_now_ns()).await {
        Ok(t) => Json(t.to_json()).into_response(),
        Err(e) => api_error(e),
    }
}

fn internal(e: anyhow::Error) -> Response {
    tracing::error!(error = %format!("{e:#}"), "HTTP request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}

fn robot_list(s: &AppState) -> anyhow::Result<Vec<serde_json::Value>> {
    let now = crate::unix_now_ns();
    let seen = s.tasks.robots();
    Ok(s.catalog
        .robots()?
        .into_iter()
        .map(|r| {
            let (_, online) = s.fleet.presence(now, &r, seen.get(&r.robot_id));
            let state = seen.get(&r.robot_id).map(|t| &t.state);
            json!({
                "task": state.and_then(|t| (!t.task_id.is_empty()).then(|| t.task_id.clone())),
                "idle": state.is_some_and(|t| t.phase == gantry_config::task::Phase::Idle),
                "health": state.map(|t| t.health.clone()),
                "robot_id": r.robot_id,
                "online": online,
                "last_seen": r.last_seen_unix_ns as f64 / 1e9,
                "last_seen_unix_ns": r.last_seen_unix_ns,
                "mode": r.mode,
                "model_version": r.model_version,
                "backlog": r.backlog,
                "upload_window": s.assignments.window(&r.robot_id),
                "assigned_model": s.assignments.model(&r.robot_id).map(|a| json!({"version": a.version, "status": a.status})),
                "model_rollout": r.model_report,
            })
        })
        .collect())
}

async fn robots(State(s): State<Arc<AppState>>) -> Response {
    match robot_list(&s) {
        Ok(v) => Json(v).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct Since {
    since: Option<String>,
    limit: Option<usize>,
}

/// Batches that reused a stored (robot, seq) with another body, newest first:
/// kept aside for an operator (one of the two is not the robot's).
async fn conflicts(State(s): State<Arc<AppState>>, Query(q): Query<Since>) -> Response {
    match s.catalog.conflicts(q.limit.unwrap_or(100).clamp(1, 1000)) {
        Ok(rows) => Json(json!({"conflicts": rows})).into_response(),
        Err(e) => internal(e),
    }
}

async fn segments(State(s): State<Arc<AppState>>, Query(q): Query<Since>) -> Response {
    let cursor = match q.since.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(c)) => c,
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "since: expected a cursor (an integer from next_cursor)\n")
                .into_response()
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match s.catalog.segments_since(cursor, limit) {
        Ok(rows) => {
            let next = rows.last().map_or(cursor, |r| r.cursor);
            Json(json!({"segments": rows, "next_cursor": next.to_string()})).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn segment(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match s.catalog.segment(&id) {
        Ok(Some(row)) => match crate::store::read_body(&*s.store, &row).await {
            Ok(body) => mcap_response(body, &row.id, &row.sha256),
            Err(e) => internal(e),
        },
        Ok(None) => (StatusCode::NOT_FOUND, "no such segment\n").into_response(),
        Err(e) => internal(e),
    }
}

/// An MCAP file of the object store, named `NAME.mcap`, its SHA-256 as the `ETag`.
async fn mcap_file(s: &AppState, object_key: &str, name: &str, sha256: &str) -> Response {
    match s.store.get(&object_store::path::Path::from(object_key)).await {
        Ok(got) => match got.bytes().await {
            Ok(bytes) => mcap_response(bytes, name, sha256),
            Err(e) => internal(e.into()),
        },
        Err(e) => internal(e.into()),
    }
}

fn mcap_response(bytes: bytes::Bytes, name: &str, sha256: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/x-mcap".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.mcap\"")),
            (header::ETAG, format!("\"{sha256}\"")),
        ],
        bytes,
    )
        .into_response()
}

/// Bulk-uploaded recordings (whole MCAP segments, images included), oldest first.
async fn recordings(State(s): State<Arc<AppState>>, Query(q): Query<Since>) -> Response {
    let Ok(cursor) = q.since.as_deref().map_or(Ok(0), str::parse::<u64>) else {
        return (StatusCode::BAD_REQUEST, "since: expected a cursor (an integer from next_cursor)\n").into_response();
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match s.catalog.recordings_since(cursor, limit) {
        Ok(rows) => {
            let next = rows.last().map_or(cursor, |(c, _)| *c);
            let recordings: Vec<Value> = rows
                .into_iter()
                .map(|(c, u)| {
                    json!({
                        "id": u.segment_id, "robot_id": u.robot_id, "cursor": c, "bytes": u.bytes,
                        "sha256": u.sha256, "messages": u.messages,
                        "start": gantry_config::task::rfc3339(u.start_unix_ns), "end": gantry_config::task::rfc3339(u.end_unix_ns),
                        "received": gantry_config::task::rfc3339(u.received_unix_ns), "flags": u.flags,
                        "url": format!("/api/recordings/{}", u.segment_id),
                    })
                })
                .collect();
            Json(json!({"recordings": recordings, "next_cursor": next.to_string()})).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn recording(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let row = match s.catalog.recording(&id) {
        Ok(Some(r)) => r,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such recording\n").into_response(),
        Err(e) => return internal(e),
    };
    let mut response = mcap_file(&s, &row.object_key, &row.segment_id, &row.sha256).await;
    if response.status().is_success() {
        if let Ok(value) = header::HeaderValue::from_str(&row.sha256) {
            response.headers_mut().insert(header::HeaderName::from_static("x-gantry-sha256"), value);
        }
    }
    response
}

/// The largest upload chunk accepted.
pub const UPLOAD_CHUNK_MAX: usize = 16 << 20;

/// The refusal, unless the robot in the path is logged in as itself (when
/// robots have passwords).
fn refused(s: &AppState, headers: &HeaderMap, robot: &str) -> Option<Response> {
    // No credentials file: robots are not asked to log in.
    s.creds.0.as_ref()?;
    let login = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let ok = login.as_deref().and_then(|l| l.split_once(':')).is_some_and(|(user, pass)| {
        user == robot && s.creds.admits(user, Some(user), Some(pass.as_bytes())) == Some(Role::Robot)
    });
    (!ok).then(|| {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"gantry\"")], "robot login required\n")
            .into_response()
    })
}

fn upload_error(e: UploadError) -> Response {
    let status = match &e {
        UploadError::BadId | UploadError::ChunkChecksum => StatusCode::BAD_REQUEST,
        UploadError::Offset(n) => {
            return (StatusCode::CONFLICT, Json(Progress { offset: *n, complete: false })).into_response();
        }
        UploadError::Mismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        UploadError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "upload failed");
    }
    (status, format!("{e}\n")).into_response()
}

async fn analytics(State(s): State<Arc<AppState>>) -> Response {
    match s.lake.analytics() {
        Ok(v) => Json(v).into_response(),
        Err(e) => internal(e),
    }
}

/// Parquet files exported after a cursor, oldest first, for incremental copies.
async fn lake_files(State(s): State<Arc<AppState>>, Query(q): Query<Since>) -> Response {
    let cursor = q.since.as_deref().map_or(Ok(0), str::parse::<u64>);
    let Ok(cursor) = cursor else {
        return (StatusCode::BAD_REQUEST, "since: expected a cursor from next_cursor\n").into_response();
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    match s.lake.files_since(cursor, limit) {
        Ok(files) => {
            let next = files.last().map_or(cursor, |f| f.id);
            Json(json!({"files": files, "next_cursor": next.to_string(), "schema_version": crate::lake::schema::SCHEMA_VERSION}))
                .into_response()
        }
        Err(e) => internal(e),
    }
}

async fn lake_file(State(s): State<Arc<AppState>>, Path(id): Path<u64>) -> Response {
    let file = match s.lake.file(id) {
        Ok(Some(f)) => f,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
        Err(e) => return internal(e),
    };
    if let Some(by) = file.superseded_by {
        return (StatusCode::GONE, format!("compacted into file {by}\n")).into_response();
    }
    let key = object_store::path::Path::from(format!("{}/{}", s.lake_root, file.path));
    match s.store.get(&key).await {
        Ok(got) => match got.bytes().await {
            Ok(bytes) => ([(header::CONTENT_TYPE, "application/vnd.apache.parquet")], bytes).into_response(),
            Err(e) => internal(e.into()),
        },
        Err(e) => internal(e.into()),
    }
}

/// The registry, the rollout plan and who is assigned what.
async fn models(State(s): State<Arc<AppState>>) -> Response {
    let listed = s.registry.models().and_then(|m| Ok((m, s.registry.plan()?, s.catalog.robots()?)));
    match listed {
        Ok((models, plan, robots)) => {
            let assigned: serde_json::Map<String, serde_json::Value> = robots
                .iter()
                .filter_map(|r| s.assignments.model(&r.robot_id).map(|a| (r.robot_id.clone(), json!(a.version))))
                .collect();
            Json(json!({"plan": plan, "models": models, "assignments": assigned})).into_response()
        }
        Err(e) => internal(e),
    }
}

/// A model package archive; `Range: bytes=N-` resumes a download.
async fn model_package(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(version): Path<String>) -> Response {
    let row = match s.registry.model(&version) {
        Ok(Some(r)) => r,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such model\n").into_response(),
        Err(e) => return internal(e),
    };
    let from = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if from >= row.bytes && row.bytes > 0 {
        return (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{}", row.bytes))])
            .into_response();
    }
    let options = object_store::GetOptions {
        range: (from > 0).then_some(object_store::GetRange::Offset(from)),
        ..Default::default()
    };
    let key = object_store::path::Path::from(row.object_key.as_str());
    let bytes = match s.store.get_opts(&key, options).await {
        Ok(got) => match got.bytes().await {
            Ok(b) => b,
            Err(e) => return internal(e.into()),
        },
        Err(e) => return internal(e.into()),
    };
    let status = if from > 0 { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/x-tar".to_string()), (header::ETAG, format!("\"{}\"", row.sha256))],
        bytes,
    )
        .into_response();
    if from > 0 {
        let range = format!("bytes {from}-{}/{}", row.bytes - 1, row.bytes);
        if let Ok(v) = header::HeaderValue::from_str(&range) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    response
}

/// Operator: open `robot`'s upload window now (it still keeps to its bandwidth).
async fn upload_now(State(s): State<Arc<AppState>>, Path(robot): Path<String>) -> Response {
    if !gantry_config::wire::valid_robot_id(&robot) {
        return (StatusCode::BAD_REQUEST, "not a robot id\n").into_response();
    }
    let until = crate::unix_now_ns() + s.upload_now_ns;
    match s.catalog.set_upload_now(&robot, until) {
        Ok(true) => {
            s.assignments.poke();
            Json(json!({ "robot_id": robot, "now_until_unix_ns": until })).into_response()
        }
        Ok(false) => (StatusCode::NOT_FOUND, format!("no robot {robot:?} has connected yet\n")).into_response(),
        Err(e) => internal(e),
    }
}

async fn upload_progress(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((robot, segment)): Path<(String, String)>,
) -> Response {
    if let Some(r) = refused(&s, &headers, &robot) {
        return r;
    }
    match s.uploads.progress(&robot, &segment).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => upload_error(e),
    }
}

#[derive(Deserialize)]
struct ChunkAt {
    offset: u64,
}

async fn upload_chunk(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((robot, segment)): Path<(String, String)>,
    Query(at): Query<ChunkAt>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = refused(&s, &headers, &robot) {
        return r;
    }
    let Some(sha) = headers.get(CHUNK_SHA256).and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, format!("missing {CHUNK_SHA256}\n")).into_response();
    };
    match s.uploads.append(&robot, &segment, at.offset, &body, sha).await {
        Ok(offset) => Json(Progress { offset, complete: false }).into_response(),
        Err(e) => upload_error(e),
    }
}

async fn upload_complete(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((robot, segment)): Path<(String, String)>,
    Json(c): Json<Completion>,
) -> Response {
    if let Some(r) = refused(&s, &headers, &robot) {
        return r;
    }
    match s.uploads.complete(&robot, &segment, &c).await {
        Ok(row) => Json(row).into_response(),
        Err(e) => upload_error(e),
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let i = &s.ingest;
    let mut out = String::new();
    let put = |out: &mut String, name: &str, kind: &str, help: &str, v: f64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
    };
    // A counter family: one line per value of `label`.
    let counters = |out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, &AtomicU64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (value, v) in values {
            out.push_str(&format!("{name}{{{label}=\"{value}\"}} {}\n", v.load(Relaxed)));
        }
    };
    put(&mut out, "gantry_sync_up", "gauge", "1 while the service runs.", 1.0);
    put(
        &mut out,
        "gantry_sync_leader",
        "gauge",
        "1 while this instance runs the lake export and alerts (the one instance, or the leading replica).",
        f64::from(u8::from(s.leader.load(Relaxed))),
    );
    put(&mut out, "gantry_sync_uptime_seconds", "gauge", "Seconds since start.", s.started.elapsed().as_secs_f64());
    put(
        &mut out,
        "gantry_sync_broker_connected",
        "gauge",
        "1 while ingestion is connected to the broker.",
        f64::from(u8::from(i.connected.load(Relaxed))),
    );
    put(
        &mut out,
        "gantry_sync_messages_received_total",
        "counter",
        "Messages received.",
        i.received.load(Relaxed) as f64,
    );
    put(&mut out, "gantry_sync_batches_stored_total", "counter", "Log batches stored.", i.stored.load(Relaxed) as f64);
    put(&mut out, "gantry_sync_bytes_stored_total", "counter", "Bytes stored.", i.stored_bytes.load(Relaxed) as f64);
    put(
        &mut out,
        "gantry_sync_duplicates_total",
        "counter",
        "Batches received again and not stored twice.",
        i.duplicates.load(Relaxed) as f64,
    );
    put(
        &mut out,
        "gantry_sync_seq_conflicts_total",
        "counter",
        "Batches reusing a stored (robot, seq) with another body: kept aside under conflicts/, not stored.",
        i.conflicts.load(Relaxed) as f64,
    );
    out.push_str(&i.commit_lag.prometheus(
        "gantry_sync_ingest_commit_lag_seconds",
        "From a batch's receipt to its catalog commit; the broker's acknowledgement follows at once.",
    ));
    put(
        &mut out,
        "gantry_sync_ingest_commits_total",
        "counter",
        "Catalog commits of ingested batches (each commits a run of them).",
        i.runs.load(Relaxed) as f64,
    );
    counters(
        &mut out,
        "gantry_sync_rejected_total",
        "Payloads rejected, by reason.",
        "reason",
        &[
            ("topic", &i.rejected_topic),
            ("oversize", &i.rejected_oversize),
            ("malformed", &i.rejected_malformed),
            ("mismatch", &i.rejected_mismatch),
        ],
    );
    put(
        &mut out,
        "gantry_sync_store_errors_total",
        "counter",
        "Storage failures (batch left for redelivery).",
        i.store_errors.load(Relaxed) as f64,
    );
    if let Some(f) = &s.front {
        put(
            &mut out,
            "gantry_sync_broker_connections_total",
            "counter",
            "Robot connections accepted by the broker front.",
            f.connections.load(Relaxed) as f64,
        );
        counters(
            &mut out,
            "gantry_sync_broker_refused_total",
            "Connections the broker front closed, by why: credentials (or will topic), connect_timeout (no \
             whole CONNECT in time), oversize_connect (first packet not a CONNECT, or too large), over_capacity \
             (too many connecting at once), malformed.",
            "reason",
            &[
                ("credentials", &f.refused),
                ("connect_timeout", &f.connect_timeouts),
                ("oversize_connect", &f.oversize_connects),
                ("over_capacity", &f.over_capacity),
                ("malformed", &f.malformed),
            ],
        );
        counters(
            &mut out,
            "gantry_sync_broker_denied_total",
            "Packets outside the client's rights: publishes dropped, subscriptions refused (the connection \
             closed).",
            "packet",
            &[("publish", &f.denied_publishes), ("subscribe", &f.denied_subscribes)],
        );
        put(
            &mut out,
            "gantry_sync_broker_pending_connects",
            "gauge",
            "Connections not yet through their CONNECT.",
            f.pending.load(Relaxed) as f64,
        );
    }
    let t = &s.tasks.stats;
    counters(
        &mut out,
        "gantry_sync_tasks_total",
        "Task events, by what happened.",
        "event",
        &[
            ("submitted", &t.submitted),
            ("assigned", &t.assigned),
            ("reassigned", &t.reassigned),
            ("completed", &t.completed),
            ("failed", &t.failed),
            ("canceled", &t.canceled),
        ],
    );
    put(
        &mut out,
        "gantry_sync_robot_states_rejected_total",
        "counter",
        "Robot state messages refused (malformed or non-finite).",
        t.states_rejected.load(Relaxed) as f64,
    );
    put(
        &mut out,
        "gantry_sync_robot_telemetry_refused_total",
        "counter",
        "Robot state messages whose non-finite or negative telemetry figures were dropped.",
        t.telemetry_refused.load(Relaxed) as f64,
    );
    out.push_str("# HELP gantry_sync_webhooks_total Webhook POSTs, by receiver and result.\n# TYPE gantry_sync_webhooks_total counter\n");
    for (hook, c) in [("factory", &t.webhooks), ("alerts", &s.alert_webhooks)] {
        for (result, v) in [("delivered", &c.delivered), ("failed", &c.failures)] {
            out.push_str(&format!(
                "gantry_sync_webhooks_total{{webhook=\"{hook}\",result=\"{result}\"}} {}\n",
                v.load(Relaxed)
            ));
        }
    }
    if let Ok(firing) = s.journal.firing() {
        put(&mut out, "gantry_sync_alerts_firing", "gauge", "Alerts firing now.", firing.len() as f64);
    }
    if let Ok(robots) = robot_list(&s) {
        let online = robots.iter().filter(|r| r["online"] == true).count();
        put(&mut out, "gantry_sync_robots", "gauge", "Known robots.", robots.len() as f64);
        put(&mut out, "gantry_sync_robots_online", "gauge", "Robots online.", online as f64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

async fn fleet(State(s): State<Arc<AppState>>) -> Response {
    let now = crate::unix_now_ns();
    let found = s.fleet.snapshot(now).and_then(|snap| Ok((snap, s.fleet.trends(now)?, s.journal.firing()?.len())));
    match found {
        Ok((snap, trends, firing)) => {
            ([(header::CACHE_CONTROL, "no-store")], Json(snap.to_json(firing, &trends))).into_response()
        }
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct AlertQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn alerts(State(s): State<Arc<AppState>>, Query(q): Query<AlertQuery>) -> Response {
    let limit = q.limit.unwrap_or(500).clamp(1, 10_000);
    match s.journal.alerts(limit) {
        Ok(rows) => {
            let rows: Vec<_> = rows
                .iter()
                .filter(|a| q.state.as_deref().is_none_or(|st| st.is_empty() || a.state == st))
                .map(|a| a.to_json())
                .collect();
            ([(header::CACHE_CONTROL, "no-store")], Json(json!({ "alerts": rows }))).into_response()
        }
        Err(e) => internal(e),
    }
}

/// The incident log, newest first; `since` (an entry id) gives only newer ones.
async fn incidents(State(s): State<Arc<AppState>>, Query(q): Query<Since>) -> Response {
    let Ok(since) = q.since.as_deref().filter(|v| !v.is_empty()).map_or(Ok(0), str::parse::<u64>) else {
        return (StatusCode::BAD_REQUEST, "since: expected an entry id (next_cursor)\n").into_response();
    };
    let limit = q.limit.unwrap_or(200).clamp(1, 10_000);
    match s.journal.entries(since, limit) {
        Ok(rows) => {
            let next = rows.first().map_or(since, |e| e.id);
            let rows: Vec<_> = rows.iter().map(|e| e.to_json()).collect();
            Json(json!({"incidents": rows, "next_cursor": next.to_string()})).into_response()
        }
        Err(e) => internal(e),
    }
}

/// Back to the page's task section with a sentence saying what happened.
fn back_to_page(note: &str) -> Response {
    let note: String = url::form_urlencoded::byte_serialize(note.as_bytes()).collect();
    (StatusCode::SEE_OTHER, [(header::LOCATION, format!("/?note={note}#tasks"))]).into_response()
}

/// Who an operator says they are, for the incident log.
fn operator(form: &std::collections::HashMap<String, String>) -> Option<String> {
    let name = form.get("operator").map(|v| v.trim()).unwrap_or("");
    (!name.is_empty() && name.len() <= 64 && !name.chars().any(char::is_control))
        .then(|| format!("{name} (fleet page)"))
}

const NAME_NEEDED: &str = "Give your name (up to 64 characters): the incident log records who did what.";

/// The page's task form, onto the task API.
async fn ui_submit_task(
    State(s): State<Arc<AppState>>,
    axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(who) = operator(&form) else { return back_to_page(NAME_NEEDED) };
    let params = form.get("params").map(|v| v.trim()).filter(|v| !v.is_empty()).unwrap_or("{}");
    let params: serde_json::Value = match serde_json::from_str(params) {
        Ok(v) => v,
        Err(e) => return back_to_page(&format!("Params are not JSON ({e}); nothing was submitted.")),
    };
    let body = json!({
        "kind": form.get("kind").map(|v| v.trim()).unwrap_or(""),
        "priority": form.get("priority").map(String::as_str).unwrap_or("normal"),
        "params": params,
    });
    let now = crate::unix_now_ns();
    match s.tasks.submit(&body, now).await {
        Ok((task, _)) => {
            let message = format!("submitted task {} ({}, {})", task.id, task.kind, task.priority.as_str());
            s.journal.log(now, "task.submitted", &task.id, &who, &message, task.to_json());
            back_to_page(&format!("Task {} ({}) is queued.", task.id, task.kind))
        }
        Err(e) => back_to_page(&format!("Not submitted: {}", e.1)),
    }
}

async fn ui_cancel_task(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(who) = operator(&form) else { return back_to_page(NAME_NEEDED) };
    let now = crate::unix_now_ns();
    match s.tasks.cancel(&id, now).await {
        Ok(task) => {
            s.journal.log(now, "task.canceled", &task.id, &who, &format!("canceled task {}", task.id), task.to_json());
            back_to_page(&format!("Task {} is canceled.", task.id))
        }
        Err(e) => back_to_page(&format!("Not canceled: {}", e.1)),
    }
}

async fn page(State(s): State<Arc<AppState>>, Query(query): Query<crate::dashboard::GridQuery>) -> Response {
    let now = crate::unix_now_ns();
    let gathered = s
        .fleet
        .snapshot(now)
        .and_then(|snap| Ok((snap, s.fleet.trends(now)?, s.journal.alerts(200)?, s.journal.entries(0, 100)?)));
    let (snap, trends, alerts, incidents) = match gathered {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    let mut open: Vec<&crate::tasks::Task> = snap.open_tasks.iter().collect();
    open.sort_by_key(|t| (t.priority.rank(), t.created_unix_ns));
    let mut kinds: Vec<String> = s.tasks.robots().into_values().flat_map(|r| r.state.kinds).collect();
    kinds.sort();
    kinds.dedup();
    let html = crate::dashboard::render(&crate::dashboard::Page {
        snap: &snap,
        trends: &trends,
        alerts: &alerts,
        incidents: &incidents,
        open_tasks: &open,
        query: &query,
        kinds,
    });
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}
