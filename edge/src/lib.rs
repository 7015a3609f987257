//! The Gantry edge daemon.
//!
//! Camera and depth frames and the firmware's joint state enter; governed motor
//! commands leave to the firmware, and everything is recorded and synced.

pub mod control;
pub mod governor;
pub mod infer;
pub mod kinematics;
pub mod model;
pub mod preprocess;
#[cfg(feature = "cuda")]
pub mod preprocess_cuda;
pub mod zone;

use std::time::Duration;

use gantry_config::cli::{shutdown_signal, StopReason};
use gantry_config::EdgeConfig;

/// Runs the daemon until SIGINT/SIGTERM or `duration`.
pub async fn run(config: EdgeConfig, duration: Option<Duration>) -> anyhow::Result<StopReason> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        robot_id = %config.robot.id,
        data_dir = %config.robot.data_dir,
        "gantry-edge starting"
    );
    std::fs::create_dir_all(&config.robot.data_dir)?;
    let reason = shutdown_signal(duration).await?;
    tracing::info!(?reason, "gantry-edge shutting down");
    Ok(reason)
}
