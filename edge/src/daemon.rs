//! The whole robot daemon assembled: pipeline, recorder, health and status page.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gantry_config::EdgeConfig;
use tokio::sync::watch;

use crate::health::{self, SystemSampler};
use crate::pipeline::{Options, Parts, Pipeline};
use crate::record::{self, Recorder, RecorderThread};
use crate::status::{SyncStatus, View};

pub struct Daemon {
    pipeline: Pipeline,
    recorder: RecorderThread,
    view: Arc<View>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The uploader's and the model rollout's threads.
    helpers: Vec<std::thread::JoinHandle<()>>,
    /// Where the status page listens (the configured port may be 0 in tests).
    pub status_addr: std::net::SocketAddr,
}

impl Daemon {
    /// Starts everything; must run inside a Tokio runtime.
    pub async fn start(config: &EdgeConfig, pacing: gantry_hal::Pacing, options: Options) -> anyhow::Result<Self> {
        // A model installed by a rollout replaces the configured one.
        let mut config = config.clone();
        if let Some(dir) = crate::rollout::active_model_dir(std::path::Path::new(&config.robot.data_dir)) {
            tracing::info!(dir = %dir.display(), "running the model installed by the last rollout");
            config.policy.model_dir = dir.display().to_string();
        }
        let parts = Parts::from_config(&config, pacing)?;
        Self::start_with_parts(&config, parts, options).await
    }

    /// Starts on sources and policies already opened: what `start` does after
    /// opening them from the configuration. Tests put fault-injecting
    /// wrappers around the parts here.
    pub async fn start_with_parts(config: &EdgeConfig, parts: Parts, options: Options) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.robot.data_dir)
            .with_context(|| format!("robot.data_dir: cannot create {}", config.robot.data_dir))?;
        let listener = crate::status_http::bind(&config.status_http.listen).await?;
        let status_addr = listener.local_addr()?;
        for failure in &parts.policy_failures {
            tracing::warn!(%failure, "configured policy unavailable; running the baseline");
        }
        if !parts.policy_trials.is_empty() {
            let backend = parts.primary.execution_path();
            tracing::info!(%backend, trials = ?parts.policy_trials, "policy backend chosen by timing each at load");
        }
        let settings = record::Settings::from_config(config, &parts.primary.manifest().version)
            .with_streams(parts.camera.info(), parts.depth.as_ref().map(|d| d.info()));
        let (recorder, report) = Recorder::open(settings).context("opening the recorder")?;
        tracing::info!(
            recovered = report.recovered.len(),
            quarantined = report.quarantined.len(),
            adopted = report.adopted.len(),
            missing = report.missing.len(),
            "recorder ready"
        );
        let pipeline = Pipeline::start(config, parts, options)?;
        let model_state = Arc::new(crate::rollout::ModelState::new(&pipeline.model_version));
        let recorder = RecorderThread::spawn(recorder, pipeline.taps())?;
        let view = Arc::new(View {
            robot_id: config.robot.id.clone(),
            started: Instant::now(),
            joints: config.firmware.joints.min(gantry_config::edge::MAX_JOINTS),
            model: model_state.clone(),
            backend: pipeline.backend.clone(),
            policy_failures: pipeline.policy_failures.clone(),
            policy_trials: pipeline.policy_trials.clone(),
            pipeline: pipeline.status(),
            governor: pipeline.governor.clone(),
            rgb: pipeline.rgb.clone(),
            depth: pipeline.depth.clone(),
            link: pipeline.link(),
            recorder: recorder.stats(),
            taps: pipeline.taps(),
            sync: Arc::new(SyncStatus::default()),
            uploads: Default::default(),
            recent_incidents: pipeline.recent_incidents.clone(),
            zone: pipeline.zone_reader(),
            separation: crate::governor::separation(config),
            operator_token_file: config.status_http.operator_token_file.clone(),
            health: Mutex::new(Default::default()),
            task: Mutex::new(None),
            latency_window: Mutex::new(Default::default()),
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        {
            let mut stopped = stopped.clone();
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let view = view.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::status_http::serve(listener, view, shutdown).await {
                    tracing::error!(error = %e, "status page stopped");
                }
            }));
        }
        tasks.push(tokio::spawn(health_task(
            view.clone(),
            SystemSampler::new(std::path::Path::new(&config.robot.data_dir)),
            Duration::from_secs(config.health.period_s),
            recorder.sender(),
            stopped.clone(),
        )));
        let (upload_window, window_rx) = watch::channel(None);
        let uploader = crate::upload::spawn(config, window_rx, view.uploads.clone(), stopped.clone())?;
        let (reports, model_reports) = watch::channel(model_state.report());
        let (assignment, assignments) = watch::channel(None);
        let rollout = crate::rollout::Rollout {
            config: config.clone(),
            slot: pipeline.policy_slot(),
            pipeline: pipeline.status(),
            governor: pipeline.governor.clone(),
            state: model_state.clone(),
            reports,
        };
        let models = crate::rollout::spawn(rollout, assignments, stopped.clone())?;
        let uplink = crate::uplink::Context {
            upload_window,
            sync: view.sync.clone(),
            pipeline: view.pipeline.clone(),
            model: model_reports,
            assignment,
            tasks: Some(crate::uplink::TaskLink { view: view.clone(), recorder: recorder.sender() }),
        };
        tasks.push(tokio::spawn(crate::uplink::run(config.clone(), uplink, stopped)));
        tracing::info!(
            model = %pipeline.model_version,
            backend = %pipeline.backend,
            status_page = %format!("http://{status_addr}/"),
            realtime = if view.pipeline.rt_degraded.load(Relaxed) { "degraded" } else { "ok" },
            "gantry-edge running"
        );
        Ok(Self { pipeline, recorder, view, stop, tasks, helpers: vec![uploader, models], status_addr })
    }

    pub fn view(&self) -> Arc<View> {
        self.view.clone()
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Clean shutdown: the status page and health stop, the real-time threads
    /// stop, then the recorder drains what they left and closes its segment.
    pub async fn stop(self) -> Option<crate::record::catalog::SegmentRow> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        for h in self.helpers {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.pipeline.stop();
        let closed = tokio::task::spawn_blocking(move || self.recorder.stop()).await.ok().flatten();
        if let Some(row) = &closed {
            tracing::info!(segment = %row.id, bytes = row.bytes, "closed the open segment");
        }
        closed
    }
}

/// Samples the machine every second for the page; every `period` records a
/// snapshot (and, with the uplink, publishes it).
async fn health_task(
    view: Arc<View>,
    mut sampler: SystemSampler,
    period: Duration,
    recorder: std::sync::mpsc::Sender<record::Command>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_report: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let snap = health::snapshot(&view, sampler.sample());
        *view.health.lock().unwrap_or_else(|e| e.into_inner()) = snap.clone();
        view.note_latency_histogram();
        // The first sample has no CPU delta yet; report from the second on.
        if last_report.is_none_or(|t| t.elapsed() >= period) && snap.uptime_s >= 1.0 {
            last_report = Some(Instant::now());
            let _ = recorder.send(record::Command::Health(Box::new(snap.to_record())));
        }
    }
}

/// `mqtt://host:port` (or `mqtts://`) to `host:port`.
pub fn broker_addr(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme {
        "mqtt" | "tcp" => 1883,
        "mqtts" | "ssl" => 8883,
        _ => return None,
    };
    let host_port = rest.split('/').next()?;
    Some(if host_port.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    })
}

#[cfg(test)]
mod tests {
    use super::broker_addr;

    #[test]
    fn broker_urls_give_host_and_port() {
        assert_eq!(broker_addr("mqtt://127.0.0.1:1883").as_deref(), Some("127.0.0.1:1883"));
        assert_eq!(broker_addr("mqtt://broker.site").as_deref(), Some("broker.site:1883"));
        assert_eq!(broker_addr("mqtts://broker.site/").as_deref(), Some("broker.site:8883"));
        assert_eq!(broker_addr("http://x"), None);
    }
}
