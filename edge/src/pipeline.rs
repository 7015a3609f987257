//! The running robot: capture, inference and control threads around the firmware
//! link, plus a supervisor that drains their events.
//!
//! ```text
//! cap-rgb ──FrameQueue──► infer ──Snapshot<PolicyOutput>──► control ──CommandPort──► firmware
//! cap-depth ─FrameQueue─┘   ▲                                 ▲   │
//!    └── Snapshot<ZoneReading> ───────────────────────────────┘   └─ incidents (ArrayQueue) ─► supervisor
//!                  FirmwareLink snapshots (joint state, telemetry, e-stop) ─► infer, control
//! ```
//!
//! Hand-offs are wait-free or lock-free and preallocated: a snapshot cell has
//! one writer and readers that never wait on it (`gantry-handoff`). The
//! real-time threads never take a lock, never format text and never allocate —
//! except the policy backend inside the inference thread (tract allocates its
//! intermediate tensors; counted in `edge/policy/tests/infer_alloc.rs`).
//!
//! The supervisor watches every real-time thread's progress: one that stalls
//! or dies (its panic is caught) holds the robot in safe stop, is named on the
//! status page, and after `realtime.stall_exit_s` makes the daemon exit
//! non-zero so the service manager restarts it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Context as _;
use crossbeam_queue::ArrayQueue;
use gantry_config::edge::{DepthSource, FirmwareLink as LinkKind, Preprocess, MAX_JOINTS};
use gantry_config::EdgeConfig;
use gantry_firmware_bridge::link::{CommandPort, FirmwareLink, JointSnapshot, LinkConfig};
use gantry_firmware_bridge::protocol::{FaultCode, Joints, MotorCommand};
use gantry_firmware_bridge::sim::{SimHandle, SimParams};
use gantry_hal::clock::monotonic_ns;
use gantry_hal::synthetic::ArmPose;
use gantry_hal::{Capture, CaptureStats, FrameBuf, FrameQueue, FrameSource, Pacing};
use gantry_handoff::{snapshot, Latest, Publisher, Snapshot};
use hdrhistogram::Histogram;

use crate::control::{ControlLoop, Mode, PolicyOutput};
use crate::governor::{Check, Command, FaultReport, GovernorStats, Incident, RobotState};
use crate::infer::PolicyBackend;
use crate::model::ModelError;
use crate::preprocess::{Preprocessor, RgbHelper};
use crate::realtime::{place_current_thread, sleep_until};
use crate::record::taps::{ControlRecord, FrameRecord, SampleInput, SampleTap, Taps};
use crate::zone::{self, ZoneReading};

/// The real-time threads, for hooks, the supervisor and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RtThread {
    CaptureRgb = 0,
    CaptureDepth,
    Inference,
    Control,
    /// The firmware link's reader: the joint state, telemetry and e-stop come
    /// through it.
    LinkReader,
}

impl RtThread {
    pub const ALL: [RtThread; 5] =
        [RtThread::CaptureRgb, RtThread::CaptureDepth, RtThread::Inference, RtThread::Control, RtThread::LinkReader];

    /// The thread's name, as `ps -L` and the status page show it.
    pub fn name(self) -> &'static str {
        match self {
            RtThread::CaptureRgb => "gantry-cap-rgb",
            RtThread::CaptureDepth => "gantry-cap-depth",
            RtThread::Inference => "gantry-infer",
            RtThread::Control => "gantry-control",
            RtThread::LinkReader => "fw-link-rx",
        }
    }

    pub fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Everything the pipeline runs, so tests can substitute any part.
pub struct Parts {
    pub camera: Box<dyn FrameSource>,
    pub depth: Option<Box<dyn FrameSource>>,
    pub primary: Box<dyn PolicyBackend>,
    /// The baseline policy, used when the primary misses its deadlines.
    pub baseline: Box<dyn PolicyBackend>,
    /// Failures met while loading the configured policy (reported on the status page).
    pub policy_failures: Vec<String>,
    /// What `policy.backend = "auto"` measured at load, one line per backend.
    pub policy_trials: Vec<String>,
    /// The optional safety model that must approve every action.
    pub safety: Option<crate::infer::safety::SafetyModel>,
    /// A synthetic depth camera drawing the arm: the control thread keeps it
    /// fed with the measured joint angles every tick.
    pub scene_arm: Option<Arc<ArmPose>>,
}

impl Parts {
    /// The sources and policies the configuration names.
    pub fn from_config(config: &EdgeConfig, pacing: Pacing) -> anyhow::Result<Self> {
        let scene_arm = (config.depth.source == DepthSource::Synthetic).then(|| Arc::new(ArmPose::default()));
        let (camera, depth) =
            gantry_hal::open_sources(config, pacing, scene_arm.as_ref()).context("opening the cameras")?;
        let mut loaded = crate::infer::load_policy(&config.policy).context("loading the policy")?;
        let mut failures = loaded.failures;
        if config.policy.preprocess == Preprocess::Cuda {
            let info = camera.info();
            if let Err(reason) = loaded.backend.bind_rgb_on_device((info.width, info.height)) {
                failures.push(cpu_preprocessing(&reason));
            }
        }
        let baseline_pkg = crate::infer::load_baseline(&config.policy.baseline_model_dir, &mut failures)?;
        // The baseline's own failure is met twice (as the fallback and here): say it once.
        failures.dedup();
        let baseline = Box::new(crate::infer::tract::TractBackend::load(&baseline_pkg, 1)?);
        let safety = match config.governor.safety_model.as_str() {
            "" => None,
            path => Some(crate::infer::safety::SafetyModel::load(path, config.firmware.joints)?),
        };
        Ok(Self {
            camera,
            depth,
            primary: loaded.backend,
            baseline,
            policy_failures: failures,
            policy_trials: loaded.trials.iter().map(ToString::to_string).collect(),
            safety,
            scene_arm,
        })
    }
}

/// Why `policy.preprocess = "cuda"` fell back to the CPU, as the status page and the log say it.
fn cpu_preprocessing(reason: &str) -> String {
    format!("policy.preprocess = \"cuda\" unavailable, preprocessing on the CPU: {reason}")
}

/// Test and benchmark hooks; the daemon uses the default.
#[derive(Default, Clone, Copy)]
pub struct Options {
    /// Called on each real-time thread once it has run `warmup_iterations`.
    pub after_warmup: Option<fn(RtThread)>,
    pub warmup_iterations: u32,
    /// While set, the control thread stops between two ticks, as a thread
    /// that lost its CPU or deadlocked would (the stall test's hook).
    pub stall_control: Option<&'static AtomicBool>,
    /// The simulated firmware has this many joints instead of the configured
    /// number (the joint-count test's hook).
    pub sim_joints: Option<usize>,
}

/// Live counters for the status page, health reports and tests.
#[derive(Debug, Default)]
pub struct PipelineStatus {
    pub mode: AtomicU8,
    /// The governor has approved a command: start-up (waiting for the first
    /// frame, joint state, telemetry and e-stop report) is over.
    pub started: AtomicBool,
    pub rt_degraded: AtomicBool,
    pub ticks: AtomicU64,
    /// Control ticks that started more than one period late.
    pub overruns: AtomicU64,
    /// Control ticks taken at once for a new policy output, before their schedule.
    pub early_ticks: AtomicU64,
    /// New policy outputs the governor would have rejected ahead of the
    /// schedule: left to the scheduled tick.
    pub early_deferred: AtomicU64,
    pub inferences: AtomicU64,
    /// When the newest policy output was produced (monotonic ns; 0: none yet).
    pub last_output_ns: AtomicU64,
    pub deadline_misses: AtomicU64,
    pub fallbacks: AtomicU64,
    pub safe_stops: AtomicU64,
    pub on_baseline: AtomicBool,
    pub latency_p50_ns: AtomicU64,
    pub latency_p95_ns: AtomicU64,
    pub latency_mean_ns: AtomicU64,
    pub latency_p99_ns: AtomicU64,
    pub latency_p999_ns: AtomicU64,
    pub latency_max_ns: AtomicU64,
    /// Frame-to-command latency less the model's own run time: what Gantry adds.
    pub overhead_p50_ns: AtomicU64,
    pub overhead_p99_ns: AtomicU64,
    pub overhead_p999_ns: AtomicU64,
    /// Preprocessing plus the model's run, on the inference thread: the floor
    /// under the frame-to-command latency that the hand-offs add to.
    pub floor_p50_ns: AtomicU64,
    pub floor_p99_ns: AtomicU64,
    pub jitter_p50_ns: AtomicU64,
    pub jitter_p99_ns: AtomicU64,
    pub jitter_p999_ns: AtomicU64,
    pub jitter_max_ns: AtomicU64,
    /// Control ticks in the last second, in millihertz (the supervisor's count).
    pub rate_mhz: AtomicU64,
    pub incidents: AtomicU64,
    /// Policy actions that were not finite numbers (rejected).
    pub non_finite_outputs: AtomicU64,
    /// Frames not run through the policy because the joint state was not finite.
    pub skipped_bad_joint_state: AtomicU64,
    /// When each [`RtThread`] last went round its loop (monotonic ns; 0: not yet).
    pub progress_ns: [AtomicU64; RtThread::ALL.len()],
    /// Threads that ended in a panic.
    pub dead: AtomicU8,
    /// Threads the supervisor reports stalled or dead, one bit per [`RtThread`].
    pub stalled: AtomicU8,
    /// Since when each stalled thread has made no progress (monotonic ns).
    pub stalled_since_ns: [AtomicU64; RtThread::ALL.len()],
    /// A thread stalled past `realtime.stall_exit_s`: the daemon must exit.
    pub fatal: AtomicBool,
    /// E-stop resets asked for (page, CLI, tests) and answered by the control
    /// thread, which alone may reset; the outcome of the newest answer.
    pub estop_reset_requests: AtomicU64,
    pub estop_reset_answered: AtomicU64,
    pub estop_reset_outcome: AtomicU8,
    /// Resets sent to the firmware, and refused (button pressed or not reported).
    pub estop_resets: AtomicU64,
    pub estop_resets_refused: AtomicU64,
    /// Presses of the e-stop button seen by the control thread.
    pub estop_presses: AtomicU64,
    /// The e-stop as the control thread last saw it (see [`EStopView`]).
    pub estop_state: AtomicU8,
    /// Frame-to-command latencies by [`LATENCY_BUCKETS_MS`], the last bucket above them all.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
}

/// What became of a request to reset the e-stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ResetOutcome {
    /// Sent to the firmware; the governor's latches are cleared.
    Sent = 1,
    /// Refused: the button is still pressed.
    Pressed = 2,
    /// Refused: the firmware has not reported the e-stop.
    Unknown = 3,
}

/// The e-stop as the control thread last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EStopView {
    /// The firmware has reported it.
    pub known: bool,
    pub pressed: bool,
    /// The firmware's latch or the governor's.
    pub latched: bool,
    /// A latching firmware fault holds the robot until the reset.
    pub fault_latched: bool,
}

impl EStopView {
    fn bits(self) -> u8 {
        u8::from(self.known)
            | u8::from(self.pressed) << 1
            | u8::from(self.latched) << 2
            | u8::from(self.fault_latched) << 3
    }

    fn from_bits(b: u8) -> Self {
        Self { known: b & 1 != 0, pressed: b & 2 != 0, latched: b & 4 != 0, fault_latched: b & 8 != 0 }
    }
}

/// Upper bounds of the live latency histogram's buckets, milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 10] = [2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0];

impl PipelineStatus {
    /// The operating mode; a stalled or dead real-time thread is a safe stop
    /// (unless the e-stop already holds the robot).
    pub fn mode(&self) -> Mode {
        let mode = Mode::from_u8(self.mode.load(Ordering::Relaxed));
        if self.stalled.load(Ordering::Relaxed) != 0 && mode != Mode::EStop {
            Mode::SafeStop
        } else {
            mode
        }
    }

    /// The threads stalled or dead now, each with since when (monotonic ns).
    pub fn stalled_threads(&self) -> impl Iterator<Item = (RtThread, u64, bool)> + '_ {
        let stalled = self.stalled.load(Ordering::Relaxed);
        let dead = self.dead.load(Ordering::Relaxed);
        RtThread::ALL
            .into_iter()
            .filter(move |t| stalled & t.bit() != 0)
            .map(move |t| (t, self.stalled_since_ns[t as usize].load(Ordering::Relaxed), dead & t.bit() != 0))
    }

    pub fn estop(&self) -> EStopView {
        EStopView::from_bits(self.estop_state.load(Ordering::Acquire))
    }

    /// Asks the control thread to reset the e-stop; returns the ticket to
    /// wait on with [`PipelineStatus::reset_answer`].
    pub fn ask_estop_reset(&self) -> u64 {
        self.estop_reset_requests.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The answer to reset request `ticket`, once the control thread gave it.
    pub fn reset_answer(&self, ticket: u64) -> Option<ResetOutcome> {
        if self.estop_reset_answered.load(Ordering::Acquire) < ticket {
            return None;
        }
        Some(match self.estop_reset_outcome.load(Ordering::Acquire) {
            1 => ResetOutcome::Sent,
            2 => ResetOutcome::Pressed,
            _ => ResetOutcome::Unknown,
        })
    }

    fn progress(&self, thread: RtThread) {
        self.progress_ns[thread as usize].store(monotonic_ns(), Ordering::Relaxed);
    }
}

/// A policy loaded and warmed up off the real-time threads, waiting to take over.
pub struct StagedPolicy {
    backend: Box<dyn PolicyBackend>,
    pre: Preprocessor,
}

/// The hand-over point for model swaps. The inference thread takes a staged
/// policy between two inferences — a pointer swap: no lock, no allocation — and
/// hands back the one it replaced, which the caller keeps as the hot backup or
/// drops off the real-time threads.
pub struct PolicySlot {
    incoming: ArrayQueue<Box<StagedPolicy>>,
    retired: ArrayQueue<Box<StagedPolicy>>,
    /// Swaps done by the inference thread.
    pub swaps: AtomicU64,
    rgb: (u32, u32),
    depth: (u32, u32),
    joints: usize,
    /// `policy.preprocess = "cuda"`: a staged policy gets its RGB input on the GPU where it can.
    rgb_on_device: bool,
}

impl PolicySlot {
    /// Queues `backend` to replace the primary policy at the next frame.
    /// Refused while an earlier swap is pending or its replaced policy has not
    /// been taken back, and when the policy does not fit this robot.
    pub fn stage(&self, mut backend: Box<dyn PolicyBackend>) -> anyhow::Result<()> {
        anyhow::ensure!(self.incoming.is_empty() && self.retired.is_empty(), "a model swap is already under way");
        if self.rgb_on_device {
            if let Err(reason) = backend.bind_rgb_on_device(self.rgb) {
                tracing::warn!("{}", cpu_preprocessing(&reason));
            }
        }
        let io = backend.io();
        anyhow::ensure!(
            io.joints >= self.joints && io.action > self.joints,
            "the policy takes {} joint values and gives {} outputs; this robot has {} joints",
            io.joints,
            io.action,
            self.joints
        );
        let pkg = crate::model::ModelPackage::from_manifest(backend.manifest().clone());
        let pre = Preprocessor::new(&pkg, self.rgb, self.depth)?;
        self.incoming
            .push(Box::new(StagedPolicy { backend, pre }))
            .map_err(|_| anyhow::anyhow!("a model swap is already under way"))
    }

    /// The policy a swap replaced, once the swap has happened.
    pub fn take_retired(&self) -> Option<Box<dyn PolicyBackend>> {
        self.retired.pop().map(|s| s.backend)
    }

    /// Whether a staged policy still waits for the inference thread.
    pub fn pending(&self) -> bool {
        !self.incoming.is_empty()
    }
}

/// Shared between the threads.
struct Shared {
    stop: AtomicBool,
    slot: Arc<PolicySlot>,
    zone: Snapshot<ZoneReading>,
    policy: Snapshot<PolicyOutput>,
    status: Arc<PipelineStatus>,
    link: Arc<FirmwareLink>,
    incidents: Arc<ArrayQueue<Incident>>,
    taps: Arc<Taps>,
    options: Options,
    scene_arm: Option<Arc<ArmPose>>,
}

/// The last incidents, newest last, for the status page.
pub type RecentIncidents = Arc<Mutex<std::collections::VecDeque<Incident>>>;

pub struct Pipeline {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    sim: Option<SimHandle>,
    pub governor: Arc<GovernorStats>,
    pub rgb: Arc<CaptureStats>,
    pub depth: Option<Arc<CaptureStats>>,
    pub recent_incidents: RecentIncidents,
    pub model_version: String,
    pub backend: String,
    pub policy_failures: Vec<String>,
    pub policy_trials: Vec<String>,
}

const RECENT_INCIDENTS: usize = 50;
/// How long `stop` waits for the threads before leaving a stuck one behind.
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Thumbnails in flight to the recorder: a quarter second at 30 fps.
const THUMB_POOL: usize = 8;
/// Seconds of records the taps hold if the recorder stalls (a segment being hashed).
const TAP_SLACK_S: u32 = 4;

/// The training samples' tap: buffers for the largest of the models' inputs,
/// enough for the recorder's pre-roll at the camera's rate; none when the
/// recorder keeps no samples.
fn sample_tap(config: &EdgeConfig, fps: u32, models: &[crate::model::IoShape]) -> SampleTap {
    let r = &config.recorder;
    let preroll_frames = (r.incident_preroll_s * f64::from(fps.max(1))).ceil() as usize;
    let pool = if r.sample_hz > 0.0 || r.incident_preroll_s > 0.0 { preroll_frames + SAMPLE_SLACK } else { 0 };
    let rgb = models.iter().map(|io| io.rgb.0 * io.rgb.1 * 3).max().unwrap_or(0);
    let depth = models.iter().map(|io| io.depth.0 * io.depth.1).max().unwrap_or(0);
    SampleTap::new(rgb, depth, pool)
}

/// Sample buffers beyond the pre-roll: those on their way to the recorder.
const SAMPLE_SLACK: usize = 8;

impl Pipeline {
    /// Opens the firmware link (starting the simulator when configured) and runs
    /// the pipeline on `parts`.
    pub fn start(config: &EdgeConfig, parts: Parts, options: Options) -> anyhow::Result<Self> {
        let link_config = LinkConfig {
            heartbeat_period: Duration::from_millis(config.firmware.heartbeat_period_ms),
            timeout: Duration::from_millis(config.firmware.link_timeout_ms),
            reader_priority: Some(config.realtime.link_priority),
        };
        let (link, sim) = match config.firmware.link {
            LinkKind::Simulated => {
                let (master, slave) =
                    serialport::TTYPort::pair().context("creating the simulator's pseudo-terminal")?;
                let sim = SimHandle::spawn(
                    Box::new(master),
                    SimParams {
                        joints: options.sim_joints.unwrap_or(config.firmware.joints),
                        command_timeout: Duration::from_millis(config.firmware.command_timeout_ms),
                        // A microcontroller of its own: above every host thread.
                        priority: Some(config.realtime.control_priority.saturating_add(1).min(99)),
                        ..SimParams::default()
                    },
                )?;
                (FirmwareLink::start(Box::new(slave), link_config)?, Some(sim))
            }
            LinkKind::Serial => (FirmwareLink::open(&config.firmware.port, config.firmware.baud, link_config)?, None),
        };
        Self::start_with_link(config, parts, Arc::new(link), sim, options)
    }

    fn start_with_link(
        config: &EdgeConfig,
        parts: Parts,
        link: Arc<FirmwareLink>,
        sim: Option<SimHandle>,
        options: Options,
    ) -> anyhow::Result<Self> {
        check_joint_count(&link, config.firmware.joints, Duration::from_millis(config.firmware.link_timeout_ms * 4))?;
        let rt_ok = !config.realtime.lock_memory || crate::realtime::lock_memory().is_ok();
        let control = ControlLoop::new(config);
        let status = Arc::new(PipelineStatus::default());
        status.rt_degraded.store(!rt_ok, Ordering::Relaxed);
        let depth_dims = parts.depth.as_ref().map_or((1, 1), |d| (d.info().width, d.info().height));
        let slot = Arc::new(PolicySlot {
            incoming: ArrayQueue::new(1),
            retired: ArrayQueue::new(1),
            swaps: AtomicU64::new(0),
            rgb: (parts.camera.info().width, parts.camera.info().height),
            depth: depth_dims,
            joints: config.firmware.joints.min(MAX_JOINTS),
            rgb_on_device: config.policy.preprocess == Preprocess::Cuda,
        });
        let rgb_info = parts.camera.info();
        let depth_info = parts.depth.as_ref().map(|d| d.info());
        let depth_src = depth_info.map_or((1, 1), |i| (i.width, i.height));
        let preprocess = |p: &dyn PolicyBackend| -> Result<Preprocessor, ModelError> {
            let pkg = crate::model::ModelPackage::from_manifest(p.manifest().clone());
            Preprocessor::new(&pkg, (rgb_info.width, rgb_info.height), depth_src)
        };
        let primary_pre = preprocess(&*parts.primary)?;
        let baseline_pre = preprocess(&*parts.baseline)?;
        let samples = sample_tap(config, rgb_info.fps, &[primary_pre.io(), baseline_pre.io()]);
        let command_port = link.command_port().context("the firmware link's command port is already in use")?;
        let (zone_out, zone) = snapshot(ZoneReading::default());
        let (policy_out, policy) = snapshot(PolicyOutput::default());
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            slot,
            zone,
            policy,
            status,
            link,
            incidents: control.governor().incidents(),
            taps: Arc::new(Taps::new(
                config.control.rate_hz,
                parts.camera.info(),
                config.recorder.image_width,
                THUMB_POOL,
                samples,
                TAP_SLACK_S,
            )),
            options,
            scene_arm: parts.scene_arm.clone(),
        });
        let governor = control.governor().stats();
        let model_version = parts.primary.manifest().version.clone();
        let backend = parts.primary.execution_path().to_string();

        let mut rgb_capture = Capture::new(parts.camera, config.camera.pool_frames);
        let rgb_queue = rgb_capture.queue();
        let rgb_stats = rgb_capture.stats();
        let mut depth_capture = parts.depth.map(|d| Capture::new(d, config.depth.pool_frames));
        let depth_queue = depth_capture.as_ref().map(|c| c.queue());
        let depth_stats = depth_capture.as_ref().map(|c| c.stats());
        // Half of every RGB frame's rows on a second core at the inference
        // thread's priority (`gantry_policy::split`), where there is one.
        let rgb_helper = if thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            let s = shared.clone();
            let rt = &config.realtime;
            let core = rt.capture_core.filter(|c| rt.inference_core != Some(*c));
            let priority = rt.inference_priority;
            let helper = RgbHelper::spawn(rgb_info.width as usize * 3, move || {
                placed(&s, RtThread::Inference, core, priority);
                // It allocates nothing from here on; counted as the inference thread.
                if let Some(hook) = s.options.after_warmup {
                    hook(RtThread::Inference);
                }
            });
            Some(helper.context("starting the inference thread's RGB helper")?)
        } else {
            None
        };
        let inference = Inference {
            rgb_helper,
            primary_pre,
            baseline_pre,
            primary: parts.primary,
            baseline: parts.baseline,
            safety: parts.safety,
            rgb_queue: rgb_queue.clone(),
            depth_queue,
            depth_unit_mm: depth_info.map_or(1.0, |i| i.depth_unit_mm),
            deadline_ns: config.control.inference_deadline_ms * 1_000_000,
            max_misses: config.control.max_consecutive_misses,
            recover_ns: (config.control.recover_after_s * 1e9) as u64,
            joints: config.firmware.joints.min(MAX_JOINTS),
        };

        let mut threads = Vec::new();
        let rt = config.realtime.clone();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| -> anyhow::Result<JoinHandle<()>> {
            thread::Builder::new().name(name.into()).spawn(f).with_context(|| format!("starting thread {name}"))
        };
        // A real-time thread's panic is caught and reported to the supervisor,
        // which holds the robot and names the thread; the others run on.
        let spawn_rt = |thread: RtThread, shared: &Arc<Shared>, f: Box<dyn FnOnce() + Send>| {
            let status = shared.status.clone();
            spawn(
                thread.name(),
                Box::new(move || {
                    if catch_unwind(AssertUnwindSafe(f)).is_err() {
                        status.dead.fetch_or(thread.bit(), Ordering::AcqRel);
                    }
                }),
            )
        };
        {
            let shared = shared.clone();
            let (core, prio) = (rt.capture_core, rt.capture_priority);
            let infer_handle = {
                let s = shared.clone();
                let (core, prio) = (rt.inference_core, rt.inference_priority);
                spawn_rt(
                    RtThread::Inference,
                    &shared,
                    Box::new(move || inference_loop(inference, policy_out, &s, core, prio)),
                )?
            };
            let infer = infer_handle.thread().clone();
            threads.push(infer_handle);
            let s = shared.clone();
            threads.push(spawn_rt(
                RtThread::CaptureRgb,
                &s,
                Box::new(move || {
                    placed(&shared, RtThread::CaptureRgb, core, prio);
                    let mut n = 0u32;
                    while !shared.stop.load(Ordering::Acquire) {
                        shared.status.progress(RtThread::CaptureRgb);
                        warmup(&shared, RtThread::CaptureRgb, &mut n);
                        match rgb_capture.step() {
                            Ok(true) => infer.unpark(),
                            Ok(false) => {}
                            // A camera that stops delivering: the policy output goes stale
                            // and the governor holds the robot; retry without spinning.
                            Err(_) => thread::sleep(Duration::from_millis(10)),
                        }
                    }
                }),
            )?);
        }
        if let (Some(mut capture), Some(info)) = (depth_capture.take(), depth_info) {
            let shared = shared.clone();
            let zone = zone::configured(config, &info);
            let arm = crate::governor::arm(config);
            let joints = config.firmware.joints.min(MAX_JOINTS);
            let (core, prio) = (rt.capture_core, rt.capture_priority);
            let mut zone_out = zone_out;
            let s = shared.clone();
            threads.push(spawn_rt(
                RtThread::CaptureDepth,
                &s,
                Box::new(move || {
                    placed(&shared, RtThread::CaptureDepth, core, prio);
                    let mut n = 0u32;
                    while !shared.stop.load(Ordering::Acquire) {
                        shared.status.progress(RtThread::CaptureDepth);
                        warmup(&shared, RtThread::CaptureDepth, &mut n);
                        let result = capture.step_inspect(|frame: &FrameBuf| {
                            let m = frame.meta();
                            // The arm where the firmware measured it as the frame
                            // came in: its own links are not an intrusion. Without
                            // a finite pose nothing is filtered (fail closed).
                            let outline = match shared.link.joint_state() {
                                Some(js) if js.positions_rad.iter().take(joints).all(|p| p.is_finite()) => {
                                    arm.outline(js.positions_rad.get(..joints).unwrap_or(&[]))
                                }
                                _ => Default::default(),
                            };
                            zone_out.publish(zone.read(frame.as_u16(), &outline, m.capture_ns, m.seq));
                        });
                        if result.is_err() {
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }),
            )?);
        }
        {
            let shared = shared.clone();
            let rate_hz = config.control.rate_hz;
            let joints = config.firmware.joints.min(MAX_JOINTS);
            let (core, prio) = (rt.control_core, rt.control_priority);
            let s = shared.clone();
            threads.push(spawn_rt(
                RtThread::Control,
                &s,
                Box::new(move || control_loop(control, command_port, &shared, rate_hz, joints, core, prio)),
            )?);
        }
        let recent_incidents: RecentIncidents =
            Arc::new(Mutex::new(std::collections::VecDeque::with_capacity(RECENT_INCIDENTS)));
        {
            let shared = shared.clone();
            let recent = recent_incidents.clone();
            let watch = Watch::new(config, depth_info.is_some());
            threads.push(spawn("gantry-supervisor", Box::new(move || supervisor(&shared, &recent, watch)))?);
        }
        Ok(Self {
            shared,
            threads,
            sim,
            governor,
            rgb: rgb_stats,
            depth: depth_stats,
            recent_incidents,
            model_version,
            backend,
            policy_failures: parts.policy_failures,
            policy_trials: parts.policy_trials,
        })
    }

    pub fn status(&self) -> Arc<PipelineStatus> {
        self.shared.status.clone()
    }

    /// Where a new policy is handed to the inference thread.
    pub fn policy_slot(&self) -> Arc<PolicySlot> {
        self.shared.slot.clone()
    }

    /// What the real-time threads hand to the recorder.
    pub fn taps(&self) -> Arc<Taps> {
        self.shared.taps.clone()
    }

    pub fn link(&self) -> Arc<FirmwareLink> {
        self.shared.link.clone()
    }

    /// The simulated firmware, when the configuration runs one.
    pub fn simulator(&self) -> Option<&SimHandle> {
        self.sim.as_ref()
    }

    /// The newest policy output and workspace reading.
    pub fn policy_output(&self) -> PolicyOutput {
        self.shared.policy.read_wait()
    }

    pub fn zone(&self) -> ZoneReading {
        self.shared.zone.read_wait()
    }

    /// A reader of the workspace readings, for the status page.
    pub fn zone_reader(&self) -> Snapshot<ZoneReading> {
        self.shared.zone.clone()
    }

    /// The explicit local e-stop reset: once the control thread has taken it
    /// (refused while the button is pressed), the governor's latches are
    /// cleared and the firmware is asked to clear its own. Returns the ticket
    /// of [`PipelineStatus::reset_answer`].
    pub fn request_estop_reset(&self) -> u64 {
        self.shared.status.ask_estop_reset()
    }

    /// Stops every thread and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stops the threads; one that does not finish within [`JOIN_TIMEOUT`]
    /// (stuck in a camera read or a hung model) is left behind and named, so a
    /// stop always completes.
    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in &self.threads {
            t.thread().unpark();
        }
        let deadline = std::time::Instant::now() + JOIN_TIMEOUT;
        for t in self.threads.drain(..) {
            while !t.is_finished() && std::time::Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::error!(thread = t.thread().name().unwrap_or("?"), "thread did not stop; leaving it behind");
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Waits up to `wait` for the firmware's first joint state and refuses to
/// start if it has a different number of joints than configured: every limit
/// and the kinematics would then be another arm's. Without a report in time
/// the pipeline starts and the governor holds the arm until one comes (and
/// still refuses a mismatch, as `joint_count`).
fn check_joint_count(link: &FirmwareLink, configured: usize, wait: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Some(js) = link.joint_state() {
            anyhow::ensure!(
                usize::from(js.joints) == configured,
                "the firmware reports {} joints but firmware.joints = {configured}: \
                 the configuration is for another arm (firmware.joints, governor limits, arm.dh)",
                js.joints
            );
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(wait_ms = wait.as_millis() as u64, "no joint state from the firmware yet; holding the arm");
            return Ok(());
        }
        thread::sleep(Duration::from_millis(2));
    }
}

fn placed(shared: &Shared, _thread: RtThread, core: Option<usize>, priority: u8) {
    let p = place_current_thread(core, priority);
    if !(p.pinned && p.fifo) {
        shared.status.rt_degraded.store(true, Ordering::Relaxed);
    }
}

fn warmup(shared: &Shared, thread: RtThread, n: &mut u32) {
    if *n == shared.options.warmup_iterations {
        if let Some(hook) = shared.options.after_warmup {
            hook(thread);
        }
    }
    *n = n.saturating_add(1);
}

struct Inference {
    /// Takes half of each RGB frame's rows (none on a single core).
    rgb_helper: Option<RgbHelper>,
    safety: Option<crate::infer::safety::SafetyModel>,
    primary: Box<dyn PolicyBackend>,
    baseline: Box<dyn PolicyBackend>,
    primary_pre: Preprocessor,
    baseline_pre: Preprocessor,
    rgb_queue: Arc<FrameQueue>,
    depth_queue: Option<Arc<FrameQueue>>,
    depth_unit_mm: f32,
    deadline_ns: u64,
    max_misses: u32,
    recover_ns: u64,
    joints: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Active {
    Primary,
    Baseline,
    /// Both missed: outputs are marked late so the governor holds the robot,
    /// while the baseline keeps running to notice recovery.
    SafeStop,
}

fn inference_loop(
    mut inf: Inference,
    mut out: Publisher<PolicyOutput>,
    shared: &Shared,
    core: Option<usize>,
    priority: u8,
) {
    placed(shared, RtThread::Inference, core, priority);
    let mut joint_state = JointSnapshot::default();
    let mut depth: Option<FrameBuf> = None;
    let mut active = Active::Primary;
    let mut misses = 0u32;
    let mut on_time_since = 0u64;
    let mut n = 0u32;
    let status = &shared.status;
    // Allocated once, like the control thread's histograms.
    let Some(mut floor) = histogram() else {
        return;
    };
    while !shared.stop.load(Ordering::Acquire) {
        status.progress(RtThread::Inference);
        let Some((frame, _)) = inf.rgb_queue.latest() else {
            thread::park_timeout(Duration::from_millis(50));
            continue;
        };
        warmup(shared, RtThread::Inference, &mut n);
        if let Some(mut staged) = shared.slot.incoming.pop() {
            std::mem::swap(&mut inf.primary, &mut staged.backend);
            std::mem::swap(&mut inf.primary_pre, &mut staged.pre);
            // The new policy gets its chance even if the old one had stepped down.
            active = Active::Primary;
            misses = 0;
            on_time_since = 0;
            shared.slot.swaps.fetch_add(1, Ordering::Relaxed);
            // Room is guaranteed by `stage`; the old policy is dropped by its taker.
            let _ = shared.slot.retired.push(staged);
        }
        if let Some((d, _)) = inf.depth_queue.as_ref().and_then(|q| q.latest()) {
            depth = Some(d);
        }
        if let Some(js) = shared.link.joint_state() {
            joint_state = js;
        }
        let js = joint_state;
        let j = inf.joints;
        let finite = |v: &[f32; MAX_JOINTS]| v.iter().take(j).all(|x| x.is_finite());
        if !(finite(&js.positions_rad) && finite(&js.velocities_rad_s)) {
            // Nothing to compute a goal from: the governor rejects the joint
            // state itself, and the policy is not blamed for it.
            status.skipped_bad_joint_state.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (backend, pre) = match active {
            Active::Primary => (&mut inf.primary, &mut inf.primary_pre),
            Active::Baseline | Active::SafeStop => (&mut inf.baseline, &mut inf.baseline_pre),
        };
        let pre_start = monotonic_ns();
        // On the GPU, straight into the session's input, where it is bound there.
        let on_device = backend.rgb_on_device(&frame, pre.model_rgb_mut()).map(|r| r.is_ok());
        let inputs = backend.inputs();
        let rgb_ok = match (on_device, inf.rgb_helper.as_mut()) {
            (Some(ok), _) => ok,
            (None, Some(helper)) => pre.rgb_split(&frame, inputs.rgb, helper).is_ok(),
            (None, None) => pre.rgb(&frame, inputs.rgb).is_ok(),
        };
        let ok = rgb_ok
            && match &depth {
                Some(d) => pre.depth(d, inf.depth_unit_mm, inputs.depth).is_ok(),
                None => {
                    inputs.depth.fill(0.0);
                    true
                }
            }
            && pre.joints(&js.positions_rad, &js.velocities_rad_s, inputs.joints).is_ok();
        let meta = frame.meta();
        let run_start = monotonic_ns();
        let action = if ok { backend.run().ok() } else { None };
        let done = monotonic_ns();
        floor.saturating_record(done.saturating_sub(pre_start).max(1_000));
        let inferences = status.inferences.fetch_add(1, Ordering::Relaxed) + 1;
        if inferences.is_multiple_of(30) {
            status.floor_p50_ns.store(floor.value_at_quantile(0.5), Ordering::Relaxed);
            status.floor_p99_ns.store(floor.value_at_quantile(0.99), Ordering::Relaxed);
        }
        // An action that is not a number is a failed inference: rejected by the
        // governor under its own check, and a miss for the deadline logic.
        let non_finite = action.is_some_and(|a| a.iter().any(|x| !x.is_finite()));
        if non_finite {
            status.non_finite_outputs.fetch_add(1, Ordering::Relaxed);
        }
        let late = action.is_none() || non_finite || done.saturating_sub(meta.capture_ns) > inf.deadline_ns;
        let mut record = FrameRecord {
            frame_seq: meta.seq,
            capture_ns: meta.capture_ns,
            done_ns: done,
            late,
            from_baseline: active != Active::Primary,
            ok: action.is_some() && !non_finite,
            ..FrameRecord::default()
        };
        if let Some(action) = action {
            // No verdict (the model failed, or gave no number) counts as a refusal.
            let unsafe_action = match inf.safety.as_mut() {
                Some(_) if non_finite => true,
                Some(model) => !model.approves(&js.positions_rad, &js.velocities_rad_s, action).unwrap_or(false),
                None => false,
            };
            let (goal, gripper, _) = crate::infer::goal_of(&js.positions_rad, action, inf.joints);
            record.unsafe_action = unsafe_action;
            status.last_output_ns.store(done, Ordering::Relaxed);
            let (ih, iw) = pre.io().rgb;
            let (dh, dw) = if depth.is_some() { pre.io().depth } else { (0, 0) };
            shared.taps.samples.offer(&SampleInput {
                frame_seq: meta.seq,
                capture_ns: meta.capture_ns,
                rgb_size: (iw as u32, ih as u32),
                rgb: pre.model_rgb(),
                depth_size: (dw as u32, dh as u32),
                depth: if depth.is_some() { pre.model_depth() } else { &[] },
                depth_unit_mm: inf.depth_unit_mm,
                joints: inf.joints,
                positions_rad: &js.positions_rad,
                velocities_rad_s: &js.velocities_rad_s,
                goal_rad: &goal,
                goal_gripper: gripper,
                from_baseline: active != Active::Primary,
            });
            out.publish(PolicyOutput {
                frame_ns: meta.capture_ns,
                frame_seq: meta.seq,
                done_ns: done,
                model_ns: done.saturating_sub(run_start),
                late: late || active == Active::SafeStop,
                unsafe_action,
                non_finite,
                goal_rad: goal,
                gripper,
                baseline: active != Active::Primary,
            });
        }
        shared.taps.push_frame(record);
        // The recorder's thumbnail, once the output is out: off the capture
        // thread and off the frame-to-command path.
        shared.taps.thumbs.offer(&frame);
        drop(frame);
        // Deadline bookkeeping: N misses in a row step down, a long enough run on
        // time steps back up.
        if late {
            status.deadline_misses.fetch_add(1, Ordering::Relaxed);
            misses += 1;
            on_time_since = 0;
            if misses >= inf.max_misses {
                misses = 0;
                match active {
                    Active::Primary => {
                        active = Active::Baseline;
                        status.fallbacks.fetch_add(1, Ordering::Relaxed);
                    }
                    Active::Baseline => {
                        active = Active::SafeStop;
                        status.safe_stops.fetch_add(1, Ordering::Relaxed);
                    }
                    Active::SafeStop => {}
                }
            }
        } else {
            misses = 0;
            if on_time_since == 0 {
                on_time_since = done;
            } else if done - on_time_since >= inf.recover_ns {
                on_time_since = 0;
                active = match active {
                    Active::SafeStop => Active::Baseline,
                    Active::Baseline | Active::Primary => Active::Primary,
                };
            }
        }
        status.on_baseline.store(active != Active::Primary, Ordering::Relaxed);
        let mode = match active {
            Active::Primary => Mode::Running,
            Active::Baseline => Mode::Degraded,
            Active::SafeStop => Mode::SafeStop,
        };
        // E-stop outranks the policy's modes; the control thread owns that one.
        let _ = status.mode.fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| {
            (Mode::from_u8(m) != Mode::EStop).then_some(mode as u8)
        });
    }
}

fn control_loop(
    mut control: ControlLoop,
    mut port: CommandPort,
    shared: &Shared,
    rate_hz: u32,
    joints: usize,
    core: Option<usize>,
    priority: u8,
) {
    placed(shared, RtThread::Control, core, priority);
    let status = &shared.status;
    let link = &shared.link;
    let period_ns = 1_000_000_000 / u64::from(rate_hz.max(1));
    // Allocated once; `record` never grows them (values are saturated to the bounds).
    let (Some(mut latency), Some(mut jitter), Some(mut overhead)) = (histogram(), histogram(), histogram()) else {
        return;
    };
    let policy_cell = shared.policy.clone();
    let mut policy_in = Latest::new(policy_cell.clone(), PolicyOutput::default());
    // Policy outputs already looked at: a new one wakes the loop early.
    let mut seen = policy_cell.version();
    let mut zone_in = Latest::new(shared.zone.clone(), ZoneReading::default());
    // The last snapshots read; kept when the link's reader is mid-store, and
    // judged by their age like any other.
    let (mut js, mut tm, mut estop, mut fault) = (None, None, None, None);
    // A fault's receive time on this thread's clock, fixed when first seen.
    let (mut fault_link_ns, mut fault_ns) = (0u64, 0u64);
    let mut resets_answered = status.estop_reset_answered.load(Ordering::Acquire);
    let mut was_pressed = false;
    let mut last_frame_seq = u64::MAX;
    let mut seq = 0u32;
    let mut n = 0u32;
    let mut next = monotonic_ns() + period_ns;
    let mut last_tick = 0u64;
    while !shared.stop.load(Ordering::Acquire) {
        // Until the next tick, or sooner when the policy publishes: the first
        // command steered by a new output goes out at once instead of on the
        // next tick, and the cadence goes on from there (ARCHITECTURE.md,
        // "Control cadence"). The wait never outlasts the tick's deadline.
        let woke = policy_cell.wait_newer(seen, next);
        seen = policy_cell.version();
        let early = woke && monotonic_ns() < next;
        if early {
            if policy_in.get().frame_seq == last_frame_seq {
                // Nothing new to answer (an output already followed, or one
                // published while the last tick read it): wait on.
                continue;
            }
            // Never two commands closer than this: over a shorter interval
            // f32 rounding of the targets would read as acceleration.
            sleep_until(last_tick.saturating_add(MIN_TICK_SPACING_NS));
        }
        while shared.options.stall_control.is_some_and(|s| s.load(Ordering::Acquire)) {
            sleep_until(monotonic_ns() + period_ns);
        }
        let now = monotonic_ns();
        status.progress(RtThread::Control);
        if !early {
            // Jitter is the scheduled ticks' lateness; an early tick has no schedule.
            let late_by = now.saturating_sub(next);
            jitter.saturating_record(late_by.max(1_000));
            if late_by > period_ns {
                status.overruns.fetch_add(1, Ordering::Relaxed);
                next = now;
            }
            next += period_ns;
        }
        warmup(shared, RtThread::Control, &mut n);

        js = link.joint_state().or(js);
        tm = link.telemetry().or(tm);
        estop = link.estop().or(estop);
        fault = link.fault().or(fault);
        let policy = policy_in.get();
        // The local reset, only ever taken here: with the button released.
        let requested = status.estop_reset_requests.load(Ordering::Acquire);
        if requested != resets_answered {
            let outcome = match estop {
                None => ResetOutcome::Unknown,
                Some(e) if e.pressed => ResetOutcome::Pressed,
                Some(_) => {
                    control.reset(policy.frame_seq);
                    port.request_estop_reset();
                    ResetOutcome::Sent
                }
            };
            let counter =
                if outcome == ResetOutcome::Sent { &status.estop_resets } else { &status.estop_resets_refused };
            counter.fetch_add(1, Ordering::Relaxed);
            status.estop_reset_outcome.store(outcome as u8, Ordering::Release);
            status.estop_reset_answered.store(requested, Ordering::Release);
            resets_answered = requested;
        }
        let pressed = estop.is_some_and(|e| e.pressed);
        if pressed && !was_pressed {
            status.estop_presses.fetch_add(1, Ordering::Relaxed);
        }
        was_pressed = pressed;
        let mut state = RobotState {
            now_ns: now,
            joints,
            link_alive: link.is_alive(),
            estop_known: estop.is_some(),
            estop_pressed: pressed,
            estop_latched: estop.is_some_and(|e| e.latched),
            zone: zone_in.get(),
            policy_frame_ns: policy.frame_ns,
            policy_frame_seq: policy.frame_seq,
            policy_late: policy.late,
            policy_unsafe: policy.unsafe_action,
            policy_non_finite: policy.non_finite,
            threads_stalled: status.stalled.load(Ordering::Relaxed),
            ..RobotState::default()
        };
        // Snapshots are stamped on the link's clock; convert their age.
        let on_our_clock = |received_ns: u64| now.saturating_sub(link.now_ns().saturating_sub(received_ns)).max(1);
        if let (Some(pose), Some(js)) = (&shared.scene_arm, js) {
            pose.store(&js.positions_rad);
        }
        if let Some(js) = js {
            state.positions_rad = js.positions_rad;
            state.velocities_rad_s = js.velocities_rad_s;
            state.encoder_ok = js.encoder_ok;
            state.reported_joints = js.joints;
            state.joint_state_ns = on_our_clock(js.received_ns);
        }
        if let Some(tm) = tm {
            state.motor_temp_c = tm.motor_temp_c;
            state.gripper_pressure_kpa = tm.gripper_pressure_kpa;
            state.telemetry_ns = on_our_clock(tm.received_ns);
        }
        if let Some(f) = fault {
            state.fault = FaultReport {
                // Stamped once when first seen, so a fault stays one fault.
                received_ns: if f.received_ns == fault_link_ns {
                    fault_ns
                } else {
                    fault_link_ns = f.received_ns;
                    fault_ns = on_our_clock(f.received_ns);
                    fault_ns
                },
                code: f.fault.code as u8,
                joint: (f.fault.joint != 255).then_some(f.fault.joint),
                latches: f.fault.code != FaultCode::CommandTimeout,
            };
        }
        let memory = control.memory();
        let verdict = if early {
            // Sent only if approved; a rejection waits for the scheduled tick,
            // which keeps the controlled stop on the period it was checked over.
            let Some(verdict) = control.tick_ahead(&state, &policy) else {
                status.early_deferred.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            status.early_ticks.fetch_add(1, Ordering::Relaxed);
            next = now + period_ns;
            verdict
        } else {
            control.tick(&state, &policy)
        };
        last_tick = now;
        seq = seq.wrapping_add(1);
        let targets = Joints::from_slice(verdict.command.targets_rad.get(..joints).unwrap_or(&[])).unwrap_or_default();
        // The control thread writes the frame itself: the firmware's watchdog is
        // fed only while this loop runs, and the latency is stamped when the
        // bytes are out.
        if verdict.hold {
            port.hold(seq, now / 1_000);
        } else {
            port.send(MotorCommand {
                seq,
                tick_us: now / 1_000,
                targets_rad: targets,
                gripper: verdict.command.gripper,
            });
        }
        let sent = monotonic_ns();
        if !verdict.approved {
            status.incidents.fetch_add(1, Ordering::Relaxed);
        } else if !status.started.load(Ordering::Relaxed) {
            status.started.store(true, Ordering::Release);
        }
        if policy.frame_seq != last_frame_seq && policy.frame_ns != 0 {
            // Frame to command: the first command steered by this frame's output.
            last_frame_seq = policy.frame_seq;
            let ns = sent.saturating_sub(policy.frame_ns).max(1_000);
            latency.saturating_record(ns);
            overhead.saturating_record(ns.saturating_sub(policy.model_ns).max(1_000));
            let ms = ns as f64 / 1e6;
            let bucket = LATENCY_BUCKETS_MS.iter().position(|le| ms <= *le).unwrap_or(LATENCY_BUCKETS_MS.len());
            if let Some(b) = status.latency_buckets.get(bucket) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut record = ControlRecord {
            t_ns: now,
            seq,
            mode: status.mode.load(Ordering::Relaxed),
            joints: joints as u8,
            approved: verdict.approved,
            failed: verdict.failed,
            from_baseline: policy.baseline,
            frame_seq: policy.frame_seq,
            goal_rad: policy.goal_rad,
            goal_gripper: policy.gripper,
            command_rad: verdict.command.targets_rad,
            command_gripper: verdict.command.gripper,
            state,
            policy,
            memory,
            hold: verdict.hold,
            ahead: early,
            ..ControlRecord::default()
        };
        if let Some(js) = js {
            record.joint_state_ns = state.joint_state_ns;
            record.positions_rad = js.positions_rad;
            record.velocities_rad_s = js.velocities_rad_s;
        }
        shared.taps.push_control(record);
        let fault_latched = control.governor().fault_latched().is_some();
        let latched = control.governor().estop_latched() || state.estop_latched;
        let view = EStopView { known: state.estop_known, pressed, latched, fault_latched };
        status.estop_state.store(view.bits(), Ordering::Release);
        let in_estop = pressed || latched || fault_latched;
        let _ = status.mode.fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| {
            let m = Mode::from_u8(m);
            Some(if in_estop {
                Mode::EStop as u8
            } else if m == Mode::EStop {
                Mode::Running as u8
            } else {
                m as u8
            })
        });
        let ticks = status.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if ticks.is_multiple_of(100) {
            status.latency_p50_ns.store(latency.value_at_quantile(0.5), Ordering::Relaxed);
            status.latency_p95_ns.store(latency.value_at_quantile(0.95), Ordering::Relaxed);
            status.latency_mean_ns.store(latency.mean() as u64, Ordering::Relaxed);
            status.latency_p99_ns.store(latency.value_at_quantile(0.99), Ordering::Relaxed);
            status.latency_p999_ns.store(latency.value_at_quantile(0.999), Ordering::Relaxed);
            status.latency_max_ns.store(latency.max(), Ordering::Relaxed);
            status.overhead_p50_ns.store(overhead.value_at_quantile(0.5), Ordering::Relaxed);
            status.overhead_p99_ns.store(overhead.value_at_quantile(0.99), Ordering::Relaxed);
            status.overhead_p999_ns.store(overhead.value_at_quantile(0.999), Ordering::Relaxed);
            status.jitter_p50_ns.store(jitter.value_at_quantile(0.5), Ordering::Relaxed);
            status.jitter_p99_ns.store(jitter.value_at_quantile(0.99), Ordering::Relaxed);
            status.jitter_p999_ns.store(jitter.value_at_quantile(0.999), Ordering::Relaxed);
            status.jitter_max_ns.store(jitter.max(), Ordering::Relaxed);
        }
    }
}

/// A latency histogram from 1 µs to 10 s at 3 significant digits.
fn histogram() -> Option<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1_000, 10_000_000_000, 3).ok()
}

/// What the supervisor watches, from the configuration.
struct Watch {
    control_stall_ns: u64,
    stall_ns: u64,
    exit_after_ns: u64,
    has_depth: bool,
}

impl Watch {
    fn new(config: &EdgeConfig, has_depth: bool) -> Self {
        let rt = &config.realtime;
        Self {
            control_stall_ns: rt.control_stall_ms * 1_000_000,
            stall_ns: rt.stall_ms * 1_000_000,
            exit_after_ns: (rt.stall_exit_s * 1e9) as u64,
            has_depth,
        }
    }
}

/// The shortest interval between two control commands (an early tick waits
/// out the rest): at 1 ms, rounding of f32 joint targets (about 2.4e-7 rad near
/// the limits) reads as under 0.5 rad/s² of acceleration, well inside the
/// shaper's headroom under the governor's limit.
const MIN_TICK_SPACING_NS: u64 = 1_000_000;

/// How often the supervisor looks at the threads.
const SUPERVISE_EVERY: Duration = Duration::from_millis(10);

/// Off the real-time threads: watches each real-time thread's progress,
/// counts the control rate over the last second, drains the incident queue
/// (logging each kind once per burst) and keeps the recent incidents for the
/// status page.
fn supervisor(shared: &Shared, recent: &RecentIncidents, watch: Watch) {
    let status = &shared.status;
    let started = monotonic_ns();
    let mut last_logged = [0u64; Check::ALL.len()];
    // (time, ticks) every 100 ms over the last second, for the rate.
    let mut rate_window = std::collections::VecDeque::with_capacity(12);
    let mut next_rate_sample = started;
    let mut fatal_logged = false;
    // E-stop events, logged once each (the control thread only counts them).
    let (mut presses, mut resets, mut refused) = (0u64, 0u64, 0u64);
    let keep = |incident: Incident| {
        shared.taps.push_incident(incident);
        let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_INCIDENTS {
            recent.pop_front();
        }
        recent.push_back(incident);
    };
    while !shared.stop.load(Ordering::Acquire) {
        thread::sleep(SUPERVISE_EVERY);
        let now = monotonic_ns();
        let dead = status.dead.load(Ordering::Acquire);
        for t in RtThread::ALL {
            let (last, now_t, limit) = match t {
                RtThread::CaptureDepth if !watch.has_depth => continue,
                RtThread::LinkReader => {
                    (shared.link.reader_progress_ns().unwrap_or(0), shared.link.now_ns(), watch.stall_ns)
                }
                RtThread::Control => {
                    (status.progress_ns[t as usize].load(Ordering::Relaxed), now, watch.control_stall_ns)
                }
                _ => (status.progress_ns[t as usize].load(Ordering::Relaxed), now, watch.stall_ns),
            };
            // Before its first round a thread is measured from start-up.
            let last = if last == 0 && t != RtThread::LinkReader { started } else { last };
            let silent = now_t.saturating_sub(last);
            let is_dead = dead & t.bit() != 0;
            let stalled = is_dead || silent > limit;
            let was = status.stalled.load(Ordering::Relaxed) & t.bit() != 0;
            if stalled && !was {
                let since = now.saturating_sub(silent);
                status.stalled_since_ns[t as usize].store(since, Ordering::Relaxed);
                status.stalled.fetch_or(t.bit(), Ordering::AcqRel);
                tracing::error!(
                    thread = t.name(),
                    silent_ms = silent / 1_000_000,
                    dead = is_dead,
                    "real-time thread stalled; holding the robot in safe stop"
                );
                let hold = Command::default();
                keep(Incident {
                    time_ns: now,
                    check: Check::RealtimeThreads,
                    failed: Check::RealtimeThreads.bit(),
                    value: silent as f64 / 1e6,
                    limit: limit as f64 / 1e6,
                    measure: crate::governor::Measure::AgeMs,
                    joint: Some(t as u8),
                    rejected: hold,
                    substituted: hold,
                    frame_seq: 0,
                });
            } else if !stalled && was {
                status.stalled.fetch_and(!t.bit(), Ordering::AcqRel);
                tracing::info!(thread = t.name(), "real-time thread running again");
            }
            if stalled
                && now.saturating_sub(status.stalled_since_ns[t as usize].load(Ordering::Relaxed)) > watch.exit_after_ns
            {
                status.fatal.store(true, Ordering::Release);
                if !fatal_logged {
                    fatal_logged = true;
                    tracing::error!(thread = t.name(), "real-time thread stalled past realtime.stall_exit_s; exiting");
                }
            }
        }
        let (p, r, f) = (
            status.estop_presses.load(Ordering::Relaxed),
            status.estop_resets.load(Ordering::Relaxed),
            status.estop_resets_refused.load(Ordering::Relaxed),
        );
        if p != presses {
            tracing::warn!(presses = p, "e-stop pressed; holding the robot until a local reset");
        }
        if r != resets {
            tracing::info!(resets = r, "e-stop reset sent to the firmware; the robot waits for a fresh policy output");
        }
        if f != refused {
            tracing::warn!(refused = f, "e-stop reset refused: the button is pressed or not yet reported");
        }
        (presses, resets, refused) = (p, r, f);
        if now >= next_rate_sample {
            next_rate_sample = now + 100_000_000;
            rate_window.push_back((now, status.ticks.load(Ordering::Relaxed)));
            while rate_window.len() > 11 {
                rate_window.pop_front();
            }
            if let (Some(&(t0, n0)), Some(&(t1, n1))) = (rate_window.front(), rate_window.back()) {
                let rate = if t1 > t0 { (n1 - n0) * 1_000_000_000_000 / (t1 - t0) } else { 0 };
                status.rate_mhz.store(rate, Ordering::Relaxed);
            }
        }
        while let Some(incident) = shared.incidents.pop() {
            let slot = incident.check as usize;
            if !status.started.load(Ordering::Acquire) {
                // Before the first approved command, holding is the normal
                // start-up (no frame, joint state or e-stop report yet).
                tracing::debug!(check = incident.check.name(), "holding until the first command is safe to send");
            } else if incident.time_ns.saturating_sub(last_logged[slot]) > 5_000_000_000 {
                last_logged[slot] = incident.time_ns;
                tracing::warn!(
                    check = incident.check.name(),
                    value = incident.value,
                    limit = incident.limit,
                    joint = incident.joint,
                    frame_seq = incident.frame_seq,
                    "governor rejected a command; holding position"
                );
            }
            keep(incident);
        }
    }
}
