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
