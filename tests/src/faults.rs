//! Faults a test switches on and off while a robot runs: a camera that stops
//! delivering frames, a policy that fails, hangs or lags. They wrap the real
//! parts (`Parts::from_config`) and hand them to `Daemon::start_with_parts`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use gantry_edge::infer::{ExecutionPath, InferError, Inputs, PolicyBackend};
use gantry_edge::model::{IoShape, Manifest};
use gantry_hal::{FrameMeta, FrameSource, HalError, StreamInfo};

/// How often a held fault looks whether it has been cleared.
const POLL: Duration = Duration::from_millis(2);

/// A camera whose frames stop while `stalled` is set: the read blocks, as a
/// V4L2 read does when the device delivers nothing.
pub struct StallingSource {
    pub inner: Box<dyn FrameSource>,
    pub stalled: Arc<AtomicBool>,
}

impl FrameSource for StallingSource {
    fn info(&self) -> StreamInfo {
        self.inner.info()
    }

    fn next_frame(&mut self, dst: Option<&mut [u8]>) -> Result<FrameMeta, HalError> {
        while self.stalled.load(Relaxed) {
            std::thread::sleep(POLL);
        }
        self.inner.next_frame(dst)
    }
}

/// What is wrong with a [`FaultyPolicy`] right now.
#[derive(Debug, Default)]
pub struct PolicyFaults {
    /// Every run returns an error.
    pub fail: AtomicBool,
    /// Every run blocks until cleared.
    pub hang: AtomicBool,
    /// Added to every run.
    pub delay_us: AtomicU64,
}

/// A real policy with switchable faults.
pub struct FaultyPolicy {
    pub inner: Box<dyn PolicyBackend>,
    pub faults: Arc<PolicyFaults>,
}

impl PolicyBackend for FaultyPolicy {
    fn execution_path(&self) -> ExecutionPath {
        self.inner.execution_path()
    }

    fn manifest(&self) -> &Manifest {
        self.inner.manifest()
    }

    fn io(&self) -> IoShape {
        self.inner.io()
    }

    fn inputs(&mut self) -> Inputs<'_> {
        self.inner.inputs()
    }

    fn run(&mut self) -> Result<&[f32], InferError> {
        while self.faults.hang.load(Relaxed) {
            std::thread::sleep(POLL);
        }
        std::thread::sleep(Duration::from_micros(self.faults.delay_us.load(Relaxed)));
        if self.faults.fail.load(Relaxed) {
            return Err(InferError::Backend { backend: "faulty", reason: "injected failure".into() });
        }
        self.inner.run()
    }
}

/// How long a fault test waits for anything it expects.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A robot's status page as a field technician's tools read it: over HTTP.
pub struct StatusPage {
    http: reqwest::Client,
    url: String,
}

impl StatusPage {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self { http: reqwest::Client::new(), url: format!("http://{addr}/api/status") }
    }

    pub async fn status(&self) -> serde_json::Value {
        let r = self.http.get(&self.url).send().await.expect("the status page answers");
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Polls the status page until `cond` holds; fails with the last status.
    pub async fn until(&self, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let s = self.status().await;
            if cond(&s) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {s:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Normal again: running the configured policy, link up, cloud connected,
    /// and none of the faults' reasons left.
    pub async fn healthy(&self, after: &str) -> serde_json::Value {
        self.until(&format!("recovery after {after}"), |s| {
            s["mode"] == "running"
                && s["firmware"]["link_alive"] == true
                && s["sync"]["connected"] == true
                && !["camera", "policy output", "firmware link", "cloud unreachable", "degraded", "disk"]
                    .iter()
                    .any(|k| says(s, k))
        })
        .await
    }
}

/// Whether one of the status page's reasons contains `text`.
pub fn says(s: &serde_json::Value, text: &str) -> bool {
    s["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains(text))
}
