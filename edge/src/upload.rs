//! Weekly bulk upload of recorded segments to cloud sync, over HTTP.
//!
//! Runs on its own thread at the bottom of the scheduler (`SCHED_IDLE`) with a
//! bandwidth cap, so it never competes with the control loop. In the window the
//! cloud assigns (`gantry/{robot}/upload-window`, or its daily catch-up slot
//! while segments from before the last weekly slot are still unsynced, or when
//! an operator opens it), it sends every finalized, not-yet-synced segment,
//! oldest first, in chunks that each carry their SHA-256, resuming from the
//! cloud's acknowledged offset after any interruption. A segment is marked
//! synced (and so may be evicted) only after the cloud has verified the whole
//! file's SHA-256 and stored it.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gantry_config::wire::{self, Completion, Progress, UploadWindow, CHUNK_SHA256};
use gantry_config::EdgeConfig;
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::record::catalog::{Catalog, SegmentRow, SegmentState};
use crate::uplink::Credentials;

#[derive(Debug, Default)]
pub struct UploadStats {
    /// The window is open now.
    pub window_open: AtomicBool,
    pub segments: AtomicU64,
    pub bytes: AtomicU64,
    /// Requests that failed (network, refused chunk, failed verification); each is retried.
    pub failures: AtomicU64,
    /// Whole segments the cloud refused at verification (sent again from the start).
    pub verification_failures: AtomicU64,
}

/// Sends segments to cloud sync.
pub struct Uploader {
    http: reqwest::Client,
    base: String,
    robot: String,
    login: Option<(String, String)>,
    data_dir: PathBuf,
    catalog: Catalog,
    chunk: usize,
    /// Bytes per second, at most.
    rate: f64,
    pub stats: Arc<UploadStats>,
}

impl Uploader {
    pub fn new(config: &EdgeConfig, stats: Arc<UploadStats>) -> anyhow::Result<Self> {
        let creds = Credentials::load(&config.uplink.credentials_path)?;
        let data_dir = PathBuf::from(&config.robot.data_dir);
        let catalog = Catalog::open(&data_dir.join("catalog.sqlite")).context("opening the catalog")?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: config.uplink.http_url.trim_end_matches('/').to_string(),
            robot: config.robot.id.clone(),
            login: creds.username.zip(creds.password),
            data_dir,
            catalog,
            chunk: (config.uplink.upload_chunk_kb * 1024) as usize,
            rate: config.uplink.upload_rate_kbps as f64 * 1000.0,
            stats,
        })
    }

    /// Finalized (or recovered) segments the cloud does not have yet, oldest first.
    pub fn pending(&self) -> anyhow::Result<Vec<SegmentRow>> {
        Ok(self
            .catalog
            .on_disk()?
            .into_iter()
            .filter(|s| !s.synced && matches!(s.state, SegmentState::Finalized | SegmentState::Recovered))
            .collect())
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.login {
            Some((user, pass)) => r.basic_auth(user, Some(pass)),
            None => r,
        }
    }

    /// Uploads one segment (resuming where the cloud stands) at up to `rate`
    /// bytes/s, and marks it synced once the cloud has verified it.
    pub async fn upload(&self, seg: &SegmentRow, rate: f64) -> anyhow::Result<()> {
        let url = format!("{}/api/uploads/{}/{}", self.base, self.robot, seg.id);
        let progress: Progress = ok(self.request(reqwest::Method::GET, &url).send().await?).await?.json().await?;
        if !progress.complete {
            self.send_from(seg, &url, progress.offset, rate.min(self.rate)).await?;
            let completion = Completion {
                bytes: seg.bytes,
                sha256: seg.sha256.clone(),
                start_unix_ns: seg.start_unix_ns,
                end_unix_ns: seg.end_unix_ns,
                messages: seg.messages,
            };
            let r = self.request(reqwest::Method::POST, &format!("{url}/complete")).json(&completion).send().await?;
            if r.status() == StatusCode::UNPROCESSABLE_ENTITY {
                // The cloud discarded what it had; the next attempt starts over.
                self.stats.verification_failures.fetch_add(1, Relaxed);
                anyhow::bail!("{}: the cloud refused the segment at verification: {}", seg.id, r.text().await?);
            }
            ok(r).await?;
        }
        self.catalog.mark_synced(&seg.id)?;
        self.stats.segments.fetch_add(1, Relaxed);
        Ok(())
    }

    async fn send_from(&self, seg: &SegmentRow, url: &str, mut offset: u64, rate: f64) -> anyhow::Result<()> {
        let path = seg.path(&self.data_dir);
        let mut file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut buf = vec![0u8; self.chunk];
        let started = Instant::now();
        let mut sent = 0u64;
        while offset < seg.bytes {
            let n = (seg.bytes - offset).min(buf.len() as u64) as usize;
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut buf[..n]).with_context(|| format!("reading {}", path.display()))?;
            // The bandwidth cap, on average since this segment started.
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            let r = self
                .request(reqwest::Method::PUT, url)
                .query(&[("offset", offset)])
                .header(CHUNK_SHA256, wire::sha256_hex(&buf[..n]))
                .body(buf[..n].to_vec())
                .send()
                .await?;
            let status = r.status();
            if status == StatusCode::CONFLICT {
                // The cloud stands elsewhere (a reply was lost): continue from there.
                offset = r.json::<Progress>().await?.offset;
                continue;
            }
            let p: Progress = ok(r).await?.json().await?;
            sent += p.offset.saturating_sub(offset);
            self.stats.bytes.fetch_add(p.offset.saturating_sub(offset), Relaxed);
            offset = p.offset;
        }
        Ok(())
    }
}

async fn ok(r: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if r.status().is_success() {
        return Ok(r);
    }
    let (status, path) = (r.status(), r.url().path().to_string());
    anyhow::bail!("{status} {path}: {}", r.text().await.unwrap_or_default().trim())
}

/// Whether some pending segment ended before the last weekly slot began.
fn behind(pending: &[SegmentRow], w: &UploadWindow, now: u64) -> bool {
    let last = w.last_weekly_start(now);
    pending.iter().any(|s| s.end_unix_ns < last)
}

/// The uploader's thread: lowest priority, its own small runtime.
pub fn spawn(
    config: &EdgeConfig,
    window: watch::Receiver<Option<UploadWindow>>,
    stats: Arc<UploadStats>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let uploader = Uploader::new(config, stats)?;
    std::thread::Builder::new()
        .name("gantry-upload".into())
        .spawn(move || {
            if !crate::realtime::lowest_priority() {
                tracing::warn!("uploads: could not take SCHED_IDLE; running at normal priority");
            }
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "uploads disabled: no runtime");
                    return;
                }
            };
            runtime.block_on(run(uploader, window, stopped));
        })
        .context("starting the upload thread")
}

async fn run(
    uploader: Uploader,
    mut window: watch::Receiver<Option<UploadWindow>>,
    mut stopped: watch::Receiver<bool>,
) {
    let stats = uploader.stats.clone();
    let mut pause = Duration::ZERO;
    let mut window_gone = false;
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            changed = window.changed(), if !window_gone => window_gone = changed.is_err(),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = Duration::from_secs(10);
        let Some(w) = window.borrow().clone() else { continue };
        let pending = match uploader.pending() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "uploads: cannot read the catalog");
                continue;
            }
        };
        let now = gantry_hal::clock::unix_ns();
        let open = w.open(now, behind(&pending, &w, now));
        stats.window_open.store(open, Relaxed);
        if !open || pending.is_empty() {
            continue;
        }
        tracing::info!(segments = pending.len(), "upload window open: sending segments");
        for seg in &pending {
            let now = gantry_hal::clock::unix_ns();
            if *stopped.borrow() || !w.open(now, behind(std::slice::from_ref(seg), &w, now)) {
                break;
            }
            let result = tokio::select! {
                r = uploader.upload(seg, w.rate_kbps as f64 * 1000.0) => r,
                _ = stopped.wait_for(|s| *s) => return,
            };
            if let Err(e) = result {
                stats.failures.fetch_add(1, Relaxed);
                tracing::warn!(segment = %seg.id, error = %format!("{e:#}"), "upload interrupted; resuming shortly");
                pause = Duration::from_secs(5);
                break;
            }
            // More segments may follow at once.
            pause = Duration::ZERO;
        }
    }
}
