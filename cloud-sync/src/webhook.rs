//! Webhook delivery from a transactional outbox: each event was written in the
//! same transaction as the change it reports, and is POSTed, oldest first,
//! with its `Idempotency-Key`, until the receiver answers 2xx (backoff up to
//! 30 s while it does not), across restarts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection};
use serde_json::Value;
use tokio::sync::watch;

/// One event waiting in an outbox.
#[derive(Debug, Clone)]
pub struct Event {
    pub key: String,
    pub body: Value,
    pub attempts: u32,
}

pub trait Outbox: Send + Sync {
    /// The oldest undelivered events.
    fn pending(&self, limit: usize) -> anyhow::Result<Vec<Event>>;
    /// One more attempt at `key`; `Some(time)` when it was delivered.
    fn attempted(&self, key: &str, delivered: Option<u64>) -> anyhow::Result<()>;
}

/// `pending` of an outbox table (`seq`, `key`, `body`, `delivered_unix_ns`, `attempts`).
pub(crate) fn pending_in(conn: &Connection, table: &str, limit: usize) -> anyhow::Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT key, body, attempts FROM {table} WHERE delivered_unix_ns IS NULL ORDER BY seq LIMIT ?1"
    ))?;
    let rows = stmt
        .query_map([limit as i64], |r| {
            Ok(Event {
                key: r.get(0)?,
                body: serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or(Value::Null),
                attempts: r.get::<_, i64>(2)? as u32,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(crate) fn attempted_in(conn: &Connection, table: &str, key: &str, delivered: Option<u64>) -> anyhow::Result<()> {
    conn.execute(
        &format!("UPDATE {table} SET attempts = attempts + 1, delivered_unix_ns = ?2 WHERE key = ?1"),
        params![key, delivered.map(|v| v as i64)],
    )?;
    Ok(())
}

/// Delivery counts.
#[derive(Debug, Default)]
pub struct Counts {
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
}

/// Delivers `outbox` to `url` until `stopped`, while `leader` holds (among
/// replicas sharing an outbox, one delivers); `name` says which in logs.
pub async fn deliver(
    outbox: Arc<dyn Outbox>,
    counts: Arc<Counts>,
    name: &'static str,
    url: String,
    leader: Arc<std::sync::atomic::AtomicBool>,
    mut stopped: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, webhook = name, "no HTTP client; events stay queued");
            return;
        }
    };
    const BATCH: usize = 32;
    let mut backoff = Duration::from_millis(500);
    loop {
        if !leader.load(Relaxed) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            continue;
        }
        let pending = outbox.pending(BATCH).unwrap_or_else(|e| {
            tracing::error!(error = %format!("{e:#}"), webhook = name, "cannot read the outbox");
            Vec::new()
        });
        let mut failed = false;
        for event in &pending {
            let sent = client
                .post(&url)
                .header("Idempotency-Key", &event.key)
                .header("Content-Type", "application/json")
                .body(event.body.to_string())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    counts.delivered.fetch_add(1, Relaxed);
                    let _ = outbox.attempted(&event.key, Some(crate::unix_now_ns()));
                }
                other => {
                    counts.failures.fetch_add(1, Relaxed);
                    let _ = outbox.attempted(&event.key, None);
                    let why = match other {
                        Ok(r) => r.status().to_string(),
                        Err(e) => e.to_string(),
                    };
                    if event.attempts == 0 {
                        tracing::warn!(webhook = name, %url, key = %event.key, %why, "webhook not accepted; retrying with backoff");
                    }
                    failed = true;
                    break;
                }
            }
        }
        let wait = if failed {
            backoff = (backoff * 2).min(Duration::from_secs(30));
            backoff
        } else {
            backoff = Duration::from_millis(500);
            if pending.len() == BATCH {
                continue;
            }
            Duration::from_millis(500)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
