//! The Gantry edge daemon.
//!
//! Camera and depth frames and the firmware's joint state enter; governed motor
//! commands leave to the firmware, and everything is recorded and synced.

pub mod control;
pub mod governor;
pub mod infer;
pub mod kinematics;
pub mod model;
pub mod pipeline;
pub mod preprocess;
#[cfg(feature = "cuda")]
pub mod preprocess_cuda;
pub mod realtime;
pub mod zone;

use std::time::Duration;

use gantry_config::cli::{Shutdown, StopReason};
use gantry_config::EdgeConfig;

/// Runs the daemon until SIGINT/SIGTERM or `duration`.
pub async fn run(config: EdgeConfig, duration: Option<Duration>) -> anyhow::Result<StopReason> {
    let shutdown = Shutdown::install()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        robot_id = %config.robot.id,
        data_dir = %config.robot.data_dir,
        "gantry-edge starting"
    );
    std::fs::create_dir_all(&config.robot.data_dir)?;
    let parts = pipeline::Parts::from_config(&config, gantry_hal::Pacing::RealTime)?;
    for failure in &parts.policy_failures {
        tracing::warn!(%failure, "configured policy unavailable; running the baseline");
    }
    let pipeline = pipeline::Pipeline::start(&config, parts, pipeline::Options::default())?;
    let status = pipeline.status();
    tracing::info!(
        model = %pipeline.model_version,
        backend = %pipeline.backend,
        realtime = if status.rt_degraded.load(std::sync::atomic::Ordering::Relaxed) { "degraded" } else { "ok" },
        "pipeline running"
    );
    let reason = shutdown.wait(duration).await;
    tracing::info!(?reason, "gantry-edge shutting down");
    pipeline.stop();
    Ok(reason)
}
