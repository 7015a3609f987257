//! Gantry cloud sync: the service robots sync with.
//!
//! Robots' log batches enter over MQTT; they leave as stored MCAP segments and
//! Parquet tables for the data lake, served over HTTP.

use std::time::Duration;

use gantry_config::cli::{Shutdown, StopReason};
use gantry_config::CloudConfig;

/// Runs the service until SIGINT/SIGTERM or `duration`.
pub async fn run(config: CloudConfig, duration: Option<Duration>) -> anyhow::Result<StopReason> {
    let shutdown = Shutdown::install()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %config.service.data_dir,
        broker = ?config.broker.mode,
        http = %config.http.listen,
        "gantry-sync starting"
    );
    std::fs::create_dir_all(&config.service.data_dir)?;
    tracing::info!("gantry-sync running");
    let reason = shutdown.wait(duration).await;
    tracing::info!(?reason, "gantry-sync shutting down");
    Ok(reason)
}
