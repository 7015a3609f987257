//! The technician's status page (contract: Edge HTTP). Read-only, except for
//! the e-stop reset, which needs the operator token.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::pipeline::ResetOutcome;
use crate::status::View;

pub fn router(view: Arc<View>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(api_status))
        .route("/api/estop/reset", post(estop_reset))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(view)
}

/// Binds the configured address and serves until `shutdown` completes.
pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("status_http.listen: cannot listen on {listen}"))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    view: Arc<View>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(view)).with_graceful_shutdown(shutdown).await
}

/// The page, rendered here: it reads the same without JavaScript.
async fn page(State(view): State<Arc<View>>) -> impl IntoResponse {
    let html = crate::page::render(&view.api_status(), &view.recent_latency_counts());
    ([(header::CACHE_CONTROL, "no-store")], Html(html))
}

async fn api_status(State(view): State<Arc<View>>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Json(view.api_status()))
}

/// How long a reset waits for the control thread's answer (it answers within
/// one control period while it runs).
const RESET_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `POST /api/estop/reset`: 401 without the right token, 409 while the button
/// is pressed (or not yet reported), 200 once the reset went to the firmware.
async fn estop_reset(State(view): State<Arc<View>>, headers: HeaderMap) -> impl IntoResponse {
    let reply = |code: StatusCode, v: serde_json::Value| (code, [(header::CACHE_CONTROL, "no-store")], Json(v));
    let token = match operator_token(&view.operator_token_file).await {
        Some(t) => t,
        None => {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "no operator token is configured (status_http.operator_token_file): no e-stop reset over HTTP"}),
            )
        }
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
        tracing::warn!("e-stop reset refused: missing or wrong operator token");
        return reply(StatusCode::UNAUTHORIZED, json!({"error": "missing or wrong operator token"}));
    }
    if view.pipeline.estop().pressed {
        view.pipeline.estop_resets_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return reply(StatusCode::CONFLICT, json!({"error": "the e-stop button is still pressed: release it first"}));
    }
    let ticket = view.pipeline.ask_estop_reset();
    let deadline = tokio::time::Instant::now() + RESET_ANSWER_WAIT;
    let outcome = loop {
        if let Some(o) = view.pipeline.reset_answer(ticket) {
            break Some(o);
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        // The control thread must not wait on anyone, so it cannot signal; poll it.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    match outcome {
        Some(ResetOutcome::Sent) => {
            tracing::info!("e-stop reset sent to the firmware; waiting for a fresh policy output before moving");
            reply(StatusCode::OK, json!({"reset": "sent", "estop": {"pressed": false}}))
        }
        Some(ResetOutcome::Pressed) => {
            reply(StatusCode::CONFLICT, json!({"error": "the e-stop button is still pressed: release it first"}))
        }
        Some(ResetOutcome::Unknown) => reply(
            StatusCode::CONFLICT,
            json!({"error": "the firmware has not reported the e-stop state yet: check the firmware link"}),
        ),
        None => {
            reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "the control loop did not answer: is it running?"}))
        }
    }
}

/// The operator token, read fresh each time (so it can be rotated without a
/// restart); `None` without a file or with an empty one.
async fn operator_token(path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let token = tokio::fs::read_to_string(path).await.ok()?.trim().to_string();
    (!token.is_empty()).then_some(token)
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(view): State<Arc<View>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], view.metrics())
}
