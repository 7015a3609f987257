//! The Gantry edge daemon.
//!
//! Camera and depth frames and the firmware's joint state enter; governed motor
//! commands leave to the firmware, and everything is recorded and synced.

pub mod control;
pub mod daemon;
pub mod governor;
pub mod health;
pub mod infer;
pub mod kinematics;
pub mod model;
pub mod pipeline;
pub mod preprocess;
#[cfg(feature = "cuda")]
pub mod preprocess_cuda;
pub mod realtime;
pub mod record;
pub mod rollout;
pub mod status;
pub mod status_http;
pub mod uplink;
pub mod upload;
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
    let daemon = daemon::Daemon::start(&config, gantry_hal::Pacing::RealTime, pipeline::Options::default()).await?;
    let reason = shutdown.wait(duration).await;
    tracing::info!(?reason, "gantry-edge shutting down");
    daemon.stop().await;
    Ok(reason)
}
