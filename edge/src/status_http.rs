//! The technician's status page (contract: Edge HTTP). Read-only.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};

use crate::status::View;

const PAGE: &str = include_str!("../assets/status.html");

pub fn router(view: Arc<View>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(api_status))
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

/// The page, with the essentials filled in so it reads right before its script runs.
async fn page(State(view): State<Arc<View>>) -> impl IntoResponse {
    let status = view.api_status();
    let field = |v: &serde_json::Value| escape_html(v.as_str().unwrap_or(""));
    let html = PAGE
        .replace("{{robot_id}}", &escape_html(&view.robot_id))
        .replace("{{mode}}", &field(&status["mode"]))
        .replace("{{state}}", &field(&status["state"]))
        .replace("{{model_version}}", &escape_html(&view.model.report().version))
        .replace("{{backend}}", &escape_html(&view.backend));
    ([(header::CACHE_CONTROL, "no-store")], Html(html))
}

async fn api_status(State(view): State<Arc<View>>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Json(view.api_status()))
}

async fn metrics(State(view): State<Arc<View>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], view.metrics())
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}
