//! The Gantry edge daemon.
//!
//! Camera and depth frames and the firmware's joint state enter; governed motor
//! commands leave to the firmware, and everything is recorded and synced.

// Nothing here may stop a real-time thread: no unwrap, expect or panic
// outside tests (`clippy.toml` also disallows `f32::clamp`).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod control;
/// The recorder, in its own crate (`edge/recorder/`).
pub use gantry_recorder as record;
pub mod daemon;
pub mod governor;
pub mod health;
/// The policy stage, in its own crate (`edge/policy/`).
pub use gantry_policy::{infer, model, preprocess};
pub mod page;
pub mod pipeline;
#[cfg(feature = "cuda")]
pub use gantry_policy::preprocess_cuda;
pub mod realtime;
pub mod replay;
pub mod rollout;
pub mod sd_notify;
pub mod status;
pub mod status_http;
pub mod tasks;
pub mod uplink;
pub mod upload;
pub mod words;
pub mod zone;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use gantry_config::cli::{Preflight, Shutdown, StopReason};
use gantry_config::{EdgeConfig, Problem};

use crate::pipeline::PipelineStatus;
use crate::sd_notify::SdNotify;

/// How long a stop may take before the daemon exits without waiting for the
/// rest (whatever it committed is safe on disk either way).
const STOP_TIMEOUT: Duration = Duration::from_secs(4);

/// `gantry-edge estop-reset`: the same request the page makes, to the running
/// daemon's status listener, with the operator token from its configuration.
pub fn estop_reset(config: &EdgeConfig) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let path = &config.status_http.operator_token_file;
    anyhow::ensure!(
        !path.is_empty(),
        "status_http.operator_token_file is not set: this robot takes no e-stop reset over HTTP"
    );
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("status_http.operator_token_file: cannot read {path}"))?;
    let url = format!("http://{}/api/estop/reset", config.status_http.listen);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let res = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token.trim())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {url}"))?;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "{status}: {body}");
        Ok(body)
    })
}

/// `check-config`'s look at the files the configuration names, as `run` opens
/// them: a model package that does not load is a warning (`run` falls back to
/// the baseline), a safety model or credentials that do not parse a problem.
pub fn preflight(config: &EdgeConfig) -> Preflight {
    use gantry_config::edge::Backend;
    let mut found = Preflight::default();
    let policy = &config.policy;
    let package = "a model package directory (manifest.toml and model.onnx), or \"builtin:baseline\"";
    for (key, dir, then) in [
        ("policy.model_dir", &policy.model_dir, "run would fall back to the baseline policy"),
        ("policy.baseline_model_dir", &policy.baseline_model_dir, "run would use the baseline built into gantry-edge"),
    ] {
        if let Err(e) = model::ModelPackage::load(dir) {
            found.warnings.push(Problem::new(key, format!("{e}; {then}"), package));
        }
    }
    let ort_library = &policy.ort_library_path;
    if policy.backend != Backend::Tract && !ort_library.is_empty() && !std::path::Path::new(ort_library).is_file() {
        let then = if policy.backend == Backend::Ort { "the baseline on tract" } else { "the model on tract" };
        found.warnings.push(Problem::new(
            "policy.ort_library_path",
            format!("{ort_library:?} is not a file; run would use {then}"),
            "the path of libonnxruntime.so",
        ));
    }
    let safety = &config.governor.safety_model;
    if !safety.is_empty() {
        if let Err(e) = infer::safety::SafetyModel::load(safety, config.firmware.joints) {
            found.problems.push(Problem::new(
                "governor.safety_model",
                e.to_string(),
                "an ONNX model with inputs state and action",
            ));
        }
    }
    match uplink::Credentials::load(&config.uplink.credentials_path) {
        Err(e) => found.problems.push(Problem::new(
            "uplink.credentials_path",
            format!("{e:#}"),
            "a TOML file with username, password, ca_path, client_cert_path, client_key_path",
        )),
        Ok(creds) => {
            for (field, path) in [
                ("ca_path", &creds.ca_path),
                ("client_cert_path", &creds.client_cert_path),
                ("client_key_path", &creds.client_key_path),
            ] {
                if let Some(path) = path.as_deref().filter(|p| std::fs::File::open(p).is_err()) {
                    found.problems.push(Problem::new(
                        "uplink.credentials_path",
                        format!("{field} {path:?} cannot be read"),
                        "a readable PEM file",
                    ));
                }
            }
        }
    }
    found
}

/// Runs the daemon until SIGINT/SIGTERM or `duration`; an error (exit 1) when
/// a real-time thread stalled past `realtime.stall_exit_s`.
pub async fn run(config: EdgeConfig, duration: Option<Duration>) -> anyhow::Result<StopReason> {
    let shutdown = Shutdown::install()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        robot_id = %config.robot.id,
        data_dir = %config.robot.data_dir,
        "gantry-edge starting"
    );
    let notify = SdNotify::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "NOTIFY_SOCKET set but unusable; not notifying systemd");
        None
    });
    let daemon = daemon::Daemon::start(&config, gantry_hal::Pacing::RealTime, pipeline::Options::default()).await?;
    let status = daemon.pipeline().status();
    let notify = notify.map(Arc::new);
    if let Some(n) = &notify {
        let _ = n.send("READY=1\nSTATUS=running");
        if let Some(every) = sd_notify::watchdog_interval() {
            tokio::spawn(feed_watchdog(n.clone(), status.clone(), every));
        }
    }
    let outcome = tokio::select! {
        reason = shutdown.wait(duration) => Ok(reason),
        thread = stalled_for_good(&status) => Err(anyhow::anyhow!(
            "real-time thread {thread} stalled for more than realtime.stall_exit_s = {} s",
            config.realtime.stall_exit_s
        )),
    };
    tracing::info!(outcome = ?outcome.as_ref().map_err(|e| e.to_string()), "gantry-edge shutting down");
    if let Some(n) = &notify {
        let _ = n.send("STOPPING=1");
    }
    if tokio::time::timeout(STOP_TIMEOUT, daemon.stop()).await.is_err() {
        tracing::error!(timeout_s = STOP_TIMEOUT.as_secs(), "shutdown did not finish in time; exiting anyway");
    }
    outcome
}

/// Resolves with the thread's name once the supervisor gives up on it.
async fn stalled_for_good(status: &PipelineStatus) -> &'static str {
    loop {
        if status.fatal.load(Relaxed) {
            return status.stalled_threads().next().map_or("?", |(t, _, _)| t.name());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `WATCHDOG=1` each interval in which the control loop ticked and no
/// real-time thread is stalled; silence lets systemd restart the daemon.
async fn feed_watchdog(notify: Arc<SdNotify>, status: Arc<PipelineStatus>, every: Duration) {
    let mut last = status.ticks.load(Relaxed);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let ticks = status.ticks.load(Relaxed);
        if ticks > last && status.stalled.load(Relaxed) == 0 {
            let _ = notify.send("WATCHDOG=1");
        }
        last = ticks;
    }
}
