//! Model updates on the robot: the cloud assigns a model version (retained
//! `gantry/{robot}/model`); this module downloads the package over HTTP with
//! resume, checks its SHA-256 and its signature against the fleet's public key,
//! loads and warms it up off the real-time threads, and hands it to the
//! inference thread between two frames ([`PolicySlot`]). The replaced policy is
//! kept loaded as the hot backup: if during probation the new model misses its
//! deadlines or has its commands rejected more than configured, the backup
//! goes back in and the robot reports why.
//!
//! Installed packages live in `DATA_DIR/models/VERSION/`; `active` names the
//! one to load at the next start (so a rolled-back model stays rolled back).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gantry_config::edge::Models;
use gantry_config::wire::{self, ModelAssignment, ModelReport};
use gantry_config::EdgeConfig;
use tokio::sync::watch;

use crate::governor::GovernorStats;
use crate::infer::PolicyBackend;
use crate::model::ModelPackage;
use crate::pipeline::{PipelineStatus, PolicySlot};

/// The policy the robot runs, for the status page, health and the uplink.
#[derive(Debug, Default)]
pub struct ModelState {
    pub report: Mutex<ModelReport>,
}

impl ModelState {
    pub fn new(version: &str) -> Self {
        Self {
            report: Mutex::new(ModelReport { version: version.into(), state: "running".into(), ..Default::default() }),
        }
    }

    pub fn report(&self) -> ModelReport {
        self.report.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, r: ModelReport, tx: &watch::Sender<ModelReport>) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = r.clone();
        tx.send_replace(r);
    }
}

/// The package directory to load at start-up: the last installed and not
/// rolled-back model, when there is one.
pub fn active_model_dir(data_dir: &Path) -> Option<PathBuf> {
    let version = std::fs::read_to_string(data_dir.join("models/active")).ok()?;
    let dir = data_dir.join("models").join(version.trim());
    dir.join("manifest.toml").is_file().then_some(dir)
}

fn set_active(data_dir: &Path, version: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir.join("models"))?;
    let tmp = data_dir.join("models/active.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(version.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, data_dir.join("models/active"))
}

/// What the rollout watches and swaps.
pub struct Rollout {
    pub config: EdgeConfig,
    pub slot: Arc<PolicySlot>,
    pub pipeline: Arc<PipelineStatus>,
    pub governor: Arc<GovernorStats>,
    pub state: Arc<ModelState>,
    pub reports: watch::Sender<ModelReport>,
}

/// What happened since the swap.
#[derive(Clone, Copy)]
struct Since {
    inferences: u64,
    misses: u64,
    fallbacks: u64,
    checks: u64,
    rejects: u64,
}

/// Why a probation ended in a rollback, if it did.
fn probation_verdict(m: &Models, s: &Since) -> Option<String> {
    let Since { inferences, misses, fallbacks, checks, rejects } = *s;
    // Misses in a row make the pipeline step down to the baseline, which hides
    // them from the rate below: stepping down is a verdict of its own.
    if fallbacks > 0 {
        return Some(format!(
            "it missed the inference deadline {misses} times and the pipeline fell back to the baseline {fallbacks} times"
        ));
    }
    if inferences >= 20 && misses as f64 > m.max_deadline_miss_rate * inferences as f64 {
        return Some(format!(
            "{misses} of {inferences} frames missed the inference deadline (limit {:.0} %)",
            m.max_deadline_miss_rate * 100.0
        ));
    }
    if checks >= 100 && rejects as f64 > m.max_reject_rate * checks as f64 {
        return Some(format!(
            "the governor rejected {rejects} of its {checks} commands for breaking a limit (limit {:.0} %)",
            m.max_reject_rate * 100.0
        ));
    }
    None
}

impl Rollout {
    fn report(&self, version: &str, state: &str, assigned: Option<&str>, reason: Option<String>) {
        if let Some(r) = &reason {
            tracing::warn!(version, state, assigned, reason = %r, "model rollout");
        } else {
            tracing::info!(version, state, "model rollout");
        }
        let r =
            ModelReport { version: version.into(), state: state.into(), assigned: assigned.map(Into::into), reason };
        self.state.set(r, &self.reports);
    }

    fn running(&self) -> String {
        self.state.report().version
    }

    /// Downloads, verifies and unpacks an assigned package into `models/VERSION/`.
    pub async fn fetch(&self, a: &ModelAssignment) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(wire::valid_robot_id(&a.version), "{:?} is not a valid model version", a.version);
        let key = gantry_config::package::parse_public_key(&self.config.models.fleet_public_key)
            .context("models.fleet_public_key")?;
        let data_dir = PathBuf::from(&self.config.robot.data_dir);
        let downloads = data_dir.join("models/downloads");
        std::fs::create_dir_all(&downloads)?;
        let part = downloads.join(format!("{}.tar.part", a.version));
        download(&self.config, a, &part).await?;
        let bytes = tokio::fs::read(&part).await?;
        let sha = wire::sha256_hex(&bytes);
        if !sha.eq_ignore_ascii_case(&a.sha256) {
            let _ = std::fs::remove_file(&part);
            anyhow::bail!("the package's SHA-256 is {sha}, the assignment says {}", a.sha256);
        }
        let unpacked = gantry_config::package::unpack(&bytes, &key)?;
        let dir = data_dir.join("models").join(&a.version);
        let staging = data_dir.join("models").join(format!("{}.staging", a.version));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        std::fs::write(staging.join(gantry_config::package::MANIFEST), &unpacked.manifest)?;
        std::fs::write(staging.join(gantry_config::package::MODEL), &unpacked.model)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir)?;
        let _ = std::fs::remove_file(&part);
        Ok(dir)
    }

    /// Loads the package in `dir` on the configured backend and warms it up.
    pub fn load(&self, dir: &Path) -> anyhow::Result<Box<dyn PolicyBackend>> {
        let package = ModelPackage::load(dir)?;
        let mut backend = crate::infer::load_backend(&package, &self.config.policy)?;
        for _ in 0..self.config.models.warmup_runs {
            let inputs = backend.inputs();
            inputs.rgb.fill(0.0);
            inputs.depth.fill(0.0);
            inputs.joints.fill(0.0);
            backend.run().context("warm-up inference")?;
        }
        Ok(backend)
    }

    /// Hands `backend` to the inference thread and returns the policy it replaced.
    pub async fn swap(&self, backend: Box<dyn PolicyBackend>) -> anyhow::Result<Box<dyn PolicyBackend>> {
        self.slot.stage(backend)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(old) = self.slot.take_retired() {
                return Ok(old);
            }
            anyhow::ensure!(Instant::now() < deadline, "the inference thread did not take the new model (no frames?)");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Runs `version` on probation against `backup`; rolls back when it misbehaves.
    /// Returns the rollback's reason, if there was one.
    pub async fn probation(
        &self,
        version: &str,
        backup: Box<dyn PolicyBackend>,
        mut stopped: watch::Receiver<bool>,
    ) -> anyhow::Result<Option<String>> {
        let m = &self.config.models;
        let (p, g) = (&self.pipeline, &self.governor);
        let now = || Since {
            inferences: p.inferences.load(Relaxed),
            misses: p.deadline_misses.load(Relaxed),
            fallbacks: p.fallbacks.load(Relaxed),
            checks: g.checks.load(Relaxed),
            rejects: g.policy_rejects.load(Relaxed),
        };
        let start = now();
        let until = Instant::now() + Duration::from_secs(m.probation_s);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while Instant::now() < until {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.wait_for(|s| *s) => return Ok(None),
            }
            let n = now();
            let verdict = probation_verdict(
                m,
                &Since {
                    inferences: n.inferences - start.inferences,
                    misses: n.misses - start.misses,
                    fallbacks: n.fallbacks - start.fallbacks,
                    checks: n.checks - start.checks,
                    rejects: n.rejects - start.rejects,
                },
            );
            if let Some(reason) = verdict {
                let previous = backup.manifest().version.clone();
                let rejected = self.swap(backup).await?;
                drop(rejected);
                set_active(Path::new(&self.config.robot.data_dir), &previous)?;
                self.report(&previous, "rolled_back", Some(version), Some(format!("{version}: {reason}")));
                return Ok(Some(reason));
            }
        }
        drop(backup);
        self.report(version, "running", None, None);
        Ok(None)
    }

    /// Takes an assignment through fetch, load, swap and probation.
    async fn apply(&self, a: &ModelAssignment, stopped: watch::Receiver<bool>) -> anyhow::Result<()> {
        let current = self.running();
        let dir = self.fetch(a).await?;
        let backend = tokio::task::block_in_place(|| self.load(&dir))?;
        anyhow::ensure!(
            backend.manifest().version == a.version,
            "the package holds version {}, not the assigned {}",
            backend.manifest().version,
            a.version
        );
        let backup = self.swap(backend).await?;
        set_active(Path::new(&self.config.robot.data_dir), &a.version)?;
        self.report(&a.version, "probation", None, Some(format!("replaced {current}; on probation")));
        self.probation(&a.version, backup, stopped).await?;
        Ok(())
    }
}

/// GET with `Range` from where the partial file ends.
async fn download(config: &EdgeConfig, a: &ModelAssignment, part: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.bytes <= gantry_config::package::MAX_PACKAGE_BYTES,
        "the package is {} bytes: too large",
        a.bytes
    );
    let creds = crate::uplink::Credentials::load(&config.uplink.credentials_path)?;
    let url = format!("{}{}", config.uplink.http_url.trim_end_matches('/'), a.path);
    let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
    for _ in 0..20 {
        let have = std::fs::metadata(part).map_or(0, |m| m.len());
        if have == a.bytes {
            return Ok(());
        }
        if have > a.bytes {
            std::fs::remove_file(part)?;
            continue;
        }
        let mut req = http.get(&url).header(reqwest::header::RANGE, format!("bytes={have}-"));
        if let (Some(u), Some(p)) = (&creds.username, &creds.password) {
            req = req.basic_auth(u, Some(p));
        }
        let result: anyhow::Result<()> = async {
            let mut r = req.send().await?;
            let append = match r.status() {
                reqwest::StatusCode::PARTIAL_CONTENT => true,
                s if s.is_success() => false,
                s => anyhow::bail!("{s} {url}"),
            };
            let mut f =
                std::fs::OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(part)?;
            while let Some(chunk) = r.chunk().await? {
                f.write_all(&chunk)?;
            }
            f.sync_data()?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "model download interrupted; resuming");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    anyhow::bail!("gave up downloading {url}")
}

/// Follows assignments until `stopped`, on its own thread (not real-time).
pub fn spawn(
    rollout: Rollout,
    assignments: watch::Receiver<Option<ModelAssignment>>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("gantry-models".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "model updates disabled: no runtime");
                    return;
                }
            };
            runtime.block_on(run(rollout, assignments, stopped));
        })
        .context("starting the model thread")
}

async fn run(
    rollout: Rollout,
    mut assignments: watch::Receiver<Option<ModelAssignment>>,
    mut stopped: watch::Receiver<bool>,
) {
    // Assignments already tried and refused or rolled back: not retried until they change.
    let mut failed: Option<ModelAssignment> = None;
    loop {
        let assignment = assignments.borrow_and_update().clone();
        if let Some(a) = assignment {
            let done = a.version == rollout.running() || failed.as_ref() == Some(&a);
            if !done {
                let running = rollout.running();
                match rollout.apply(&a, stopped.clone()).await {
                    Ok(()) => {
                        if rollout.state.report().state == "rolled_back" {
                            failed = Some(a);
                        }
                    }
                    Err(e) => {
                        rollout.report(&running, "refused", Some(&a.version), Some(format!("{e:#}")));
                        failed = Some(a);
                    }
                }
            }
        }
        tokio::select! {
            changed = assignments.changed() => if changed.is_err() { return },
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
