//! Faults a test switches on and off while a robot runs: a camera that stops
//! delivering frames, a policy that fails, hangs or lags. They wrap the real
//! parts (`Parts::from_config`) and hand them to `Daemon::start_with_parts`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
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
    /// The next run panics, as a backend bug would.
    pub panic: AtomicBool,
    /// Added to every run.
    pub delay_us: AtomicU64,
    /// `f32` bits written over every value of the action (NaN, infinity, as
    /// bad weights or an fp16 overflow give); 0 for none.
    pub output_bits: AtomicU32,
}

impl PolicyFaults {
    /// Every action becomes `value` (`None`: the policy's own again).
    pub fn corrupt_output(&self, value: Option<f32>) {
        self.output_bits.store(value.map_or(0, f32::to_bits), Relaxed);
    }
}

/// A real policy with switchable faults.
pub struct FaultyPolicy {
    inner: Box<dyn PolicyBackend>,
    faults: Arc<PolicyFaults>,
    out: Vec<f32>,
}

impl FaultyPolicy {
    pub fn new(inner: Box<dyn PolicyBackend>, faults: Arc<PolicyFaults>) -> Self {
        let out = vec![0.0; inner.io().action];
        Self { inner, faults, out }
    }
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
        if self.faults.panic.swap(false, Relaxed) {
            panic!("injected panic in the policy backend");
        }
        while self.faults.hang.load(Relaxed) {
            std::thread::sleep(POLL);
        }
        std::thread::sleep(Duration::from_micros(self.faults.delay_us.load(Relaxed)));
        if self.faults.fail.load(Relaxed) {
            return Err(InferError::Backend { backend: "faulty", reason: "injected failure".into() });
        }
        let bits = self.faults.output_bits.load(Relaxed);
        let action = self.inner.run()?;
        if bits == 0 {
            return Ok(action);
        }
        self.out.clear();
        self.out.extend(action.iter().map(|_| f32::from_bits(bits)));
        Ok(&self.out)
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

/// Whether one of the status page's reasons contains `text` (in any case).
pub fn says(s: &serde_json::Value, text: &str) -> bool {
    let text = text.to_lowercase();
    s["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().to_lowercase().contains(&text))
}

/// The arm moves: within [`LIMIT`], some joint of the simulated arm travels
/// more than a milliradian in 300 ms.
pub async fn arm_moving(sim: &gantry_firmware_bridge::sim::SimHandle, what: &str) {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let before = sim.state().positions_rad;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = sim.state().positions_rad;
        if before.iter().zip(&after).any(|(a, b)| (a - b).abs() > 1e-3) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: the arm is not moving: {after:?}");
    }
}
