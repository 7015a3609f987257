//! The host side of the firmware link.
//!
//! One thread reads the serial port: it decodes frames, publishes the latest
//! joint state, telemetry and e-stop state into wait-free snapshot cells, and
//! runs the watchdog that declares the link lost. Nothing else writes those
//! cells, and a reader never waits on this thread (`gantry-handoff`).
//!
//! Commands leave through the [`CommandPort`], owned by the control thread,
//! which writes each frame itself: no queue and no lower-priority thread
//! between the governor's verdict and the serial port, so the firmware's
//! command watchdog is fed by exactly what the control loop decides, and a
//! control loop that stops stops the commands.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use gantry_handoff::{snapshot, Publisher, Snapshot};
use serialport::SerialPort;

use crate::protocol::{
    encode, DecodeStats, Decoder, EStopState, Fault, Hold, Message, MotorCommand, MAX_JOINTS, MAX_WIRE_FRAME,
};

/// Timing of the link.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// How often the firmware sends its heartbeat; the reader backs off this
    /// long after an I/O error.
    pub heartbeat_period: Duration,
    /// No frame from the firmware for this long: the link is lost.
    pub timeout: Duration,
    /// `SCHED_FIFO` priority of the reader thread: the joint state the
    /// governor needs comes through it, so a busy host must not starve it
    /// past `timeout`. `None`: normal scheduling.
    pub reader_priority: Option<u8>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self { heartbeat_period: Duration::from_millis(10), timeout: Duration::from_millis(50), reader_priority: None }
    }
}

/// Asks for `SCHED_FIFO` at `priority` for the calling thread; whether it took
/// (not without `CAP_SYS_NICE` or an RT limit).
pub(crate) fn real_time(priority: u8) -> bool {
    let param = libc::sched_param { sched_priority: i32::from(priority) };
    // SAFETY: pthread_self is always valid; param lives across the call.
    unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) == 0 }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open serial port {path} at {baud} baud: {error} (is the motor controller connected and the device readable?)")]
    Open { path: String, baud: u32, error: serialport::Error },
    #[error("cannot use serial port {name}: {error}")]
    Port { name: String, error: serialport::Error },
    #[error("cannot start the firmware link's {0} thread: {1}")]
    Thread(&'static str, io::Error),
}

/// The latest joint state, as received (copyable, fixed size). Values are as
/// the firmware sent them, finite or not: the governor judges them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct JointSnapshot {
    pub seq: u32,
    pub firmware_time_us: u64,
    pub joints: u8,
    pub positions_rad: [f32; MAX_JOINTS],
    pub velocities_rad_s: [f32; MAX_JOINTS],
    pub encoder_ok: u8,
    /// When the host received it, nanoseconds on the link's clock.
    pub received_ns: u64,
}

/// The latest telemetry, as received.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TelemetrySnapshot {
    pub joints: u8,
    pub motor_temp_c: [f32; MAX_JOINTS],
    pub gripper_pressure_kpa: f32,
    pub supply_v: f32,
    pub received_ns: u64,
}

/// The newest fault the firmware reported, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSnapshot {
    pub fault: Fault,
    /// When the host received it, nanoseconds on the link's clock.
    pub received_ns: u64,
}

/// Health of the link, for the governor and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkStatus {
    pub alive: bool,
    /// Time since the last valid frame; `None` before the first.
    pub last_rx_age: Option<Duration>,
    pub losses: u64,
    pub decode: DecodeStats,
    pub commands_sent: u64,
    pub io_errors: u64,
    pub faults: u64,
    pub last_fault: Option<Fault>,
}

/// The watchdog's record of one loss of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLoss {
    /// The last valid frame before the loss, ns on the link's clock.
    pub last_rx_ns: u64,
    /// When the watchdog declared the link lost, ns on the link's clock.
    pub detected_ns: u64,
}

/// The reader thread's cells, by what they carry.
struct Cells {
    joints: Publisher<JointSnapshot>,
    telemetry: Publisher<TelemetrySnapshot>,
    estop: Publisher<Option<EStopState>>,
    fault: Publisher<Option<FaultSnapshot>>,
    decode: Publisher<DecodeStats>,
}

struct Shared {
    epoch: Instant,
    config: LinkConfig,
    stop: AtomicBool,
    /// ns since `epoch` of the last valid frame, plus one (0 = never).
    last_rx: AtomicU64,
    /// ns since `epoch` the reader thread last went round its loop, plus one.
    reader_progress: AtomicU64,
    faults: AtomicU64,
    commands_sent: AtomicU64,
    io_errors: AtomicU64,
    losses: AtomicU64,
    /// Losses, for threads that wait on them (never the control thread).
    loss_events: Mutex<Vec<LinkLoss>>,
    loss_signal: Condvar,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn last_rx_ns(&self) -> Option<u64> {
        self.last_rx.load(Ordering::Acquire).checked_sub(1)
    }

    fn alive_at(&self, now_ns: u64) -> bool {
        self.last_rx_ns().is_some_and(|t| now_ns.saturating_sub(t) <= self.config.timeout.as_nanos() as u64)
    }
}

/// A running link to the firmware. Dropping it stops the reader thread.
pub struct FirmwareLink {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    commands: Mutex<Option<CommandPort>>,
    joints: Snapshot<JointSnapshot>,
    telemetry: Snapshot<TelemetrySnapshot>,
    estop: Snapshot<Option<EStopState>>,
    fault: Snapshot<Option<FaultSnapshot>>,
    decode: Snapshot<DecodeStats>,
}

impl FirmwareLink {
    /// Opens the serial device at `path`.
    pub fn open(path: &str, baud: u32, config: LinkConfig) -> Result<Self, LinkError> {
        let port = serialport::new(path, baud)
            .timeout(Duration::from_millis(2))
            .open()
            .map_err(|error| LinkError::Open { path: path.to_owned(), baud, error })?;
        Self::start(port, config)
    }

    /// Runs the link over an already open port (a pseudo-terminal in tests and in
    /// the simulated configuration).
    pub fn start(mut port: Box<dyn SerialPort>, config: LinkConfig) -> Result<Self, LinkError> {
        let name = port.name().unwrap_or_else(|| "<unnamed>".into());
        let port_err = |error| LinkError::Port { name: name.clone(), error };
        port.set_timeout(Duration::from_millis(2)).map_err(port_err)?;
        let read_port = port.try_clone().map_err(port_err)?;
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            config,
            stop: AtomicBool::new(false),
            last_rx: AtomicU64::new(0),
            reader_progress: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            commands_sent: AtomicU64::new(0),
            io_errors: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            loss_events: Mutex::new(Vec::with_capacity(16)),
            loss_signal: Condvar::new(),
        });
        let (joints_w, joints) = snapshot(JointSnapshot::default());
        let (telemetry_w, telemetry) = snapshot(TelemetrySnapshot::default());
        let (estop_w, estop) = snapshot(None);
        let (fault_w, fault) = snapshot(None);
        let (decode_w, decode) = snapshot(DecodeStats::default());
        let cells =
            Cells { joints: joints_w, telemetry: telemetry_w, estop: estop_w, fault: fault_w, decode: decode_w };
        let reader = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("fw-link-rx".into())
                .spawn(move || {
                    if let Some(p) = shared.config.reader_priority {
                        if !real_time(p) {
                            tracing::debug!(priority = p, "firmware link reader runs without real-time scheduling");
                        }
                    }
                    read_loop(read_port, &shared, cells)
                })
                .map_err(|e| LinkError::Thread("reader", e))?
        };
        let commands = CommandPort { port, shared: shared.clone(), frame: [0; MAX_WIRE_FRAME] };
        Ok(Self {
            shared,
            reader: Some(reader),
            commands: Mutex::new(Some(commands)),
            joints,
            telemetry,
            estop,
            fault,
            decode,
        })
    }

    /// The write side of the port, for the one thread that sends commands.
    /// `None` once taken.
    pub fn command_port(&self) -> Option<CommandPort> {
        self.commands.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The latest joint state, `None` before the first or while the reader is
    /// in the middle of publishing one (the caller keeps its last).
    pub fn joint_state(&self) -> Option<JointSnapshot> {
        self.joints.read().filter(|s| s.received_ns != 0)
    }

    pub fn telemetry(&self) -> Option<TelemetrySnapshot> {
        self.telemetry.read().filter(|t| t.received_ns != 0)
    }

    /// The newest fault, or `None` if the firmware never reported one (or
    /// the reader is mid-store).
    pub fn fault(&self) -> Option<FaultSnapshot> {
        self.fault.read().flatten()
    }

    pub fn estop(&self) -> Option<EStopState> {
        self.estop.read().flatten()
    }

    /// Nanoseconds on the link's clock, the one snapshots are stamped with.
    pub fn now_ns(&self) -> u64 {
        self.shared.now_ns()
    }

    /// When the reader thread last went round its loop, ns on the link's clock;
    /// `None` before it first did. For the supervisor.
    pub fn reader_progress_ns(&self) -> Option<u64> {
        self.shared.reader_progress.load(Ordering::Acquire).checked_sub(1)
    }

    /// Whether a valid frame arrived within the timeout. Computed from timestamps,
    /// so the answer is right the moment the timeout passes.
    pub fn is_alive(&self) -> bool {
        self.shared.alive_at(self.shared.now_ns())
    }

    pub fn status(&self) -> LinkStatus {
        let s = &self.shared;
        let now = s.now_ns();
        LinkStatus {
            alive: s.alive_at(now),
            last_rx_age: s.last_rx_ns().map(|t| Duration::from_nanos(now.saturating_sub(t))),
            losses: s.losses.load(Ordering::Relaxed),
            decode: self.decode.read().unwrap_or_default(),
            commands_sent: s.commands_sent.load(Ordering::Relaxed),
            io_errors: s.io_errors.load(Ordering::Relaxed),
            faults: s.faults.load(Ordering::Relaxed),
            last_fault: self.fault.read().flatten().map(|f| f.fault),
        }
    }

    /// Waits up to `timeout` for the watchdog to record loss number `n` (1-based,
    /// among the last 16).
    /// For supervising threads and tests; never call it on a real-time thread.
    pub fn wait_for_loss(&self, n: usize, timeout: Duration) -> Option<LinkLoss> {
        let events = self.shared.loss_events.lock().unwrap_or_else(|e| e.into_inner());
        let (events, _) = self
            .shared
            .loss_signal
            .wait_timeout_while(events, timeout, |e| e.len() < n)
            .unwrap_or_else(|e| e.into_inner());
        events.get(n.wrapping_sub(1)).copied()
    }
}

impl Drop for FirmwareLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(handle) = self.reader.take() {
            let _ = handle.join();
        }
    }
}

/// The write side of the link. Its owner (the control thread) writes each
/// frame itself: encoding uses a buffer owned here, the write is one syscall on
/// the port (bounded by the port's 2 ms timeout), nothing allocates on success.
pub struct CommandPort {
    port: Box<dyn SerialPort>,
    shared: Arc<Shared>,
    frame: [u8; MAX_WIRE_FRAME],
}

impl CommandPort {
    /// Writes `cmd` now; returns whether every byte went out (a failure is counted).
    pub fn send(&mut self, cmd: MotorCommand) -> bool {
        let ok = self.write(&Message::MotorCommand(cmd));
        if ok {
            self.shared.commands_sent.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Tells the firmware to stay where it is (feeds its watchdog); for ticks
    /// with no position to command.
    pub fn hold(&mut self, seq: u32, tick_us: u64) -> bool {
        self.write(&Message::Hold(Hold { seq, tick_us }))
    }

    /// Asks the firmware to clear its e-stop latch (it refuses while the button is pressed).
    pub fn request_estop_reset(&mut self) -> bool {
        self.write(&Message::EStopReset)
    }

    /// Nanoseconds on the link's clock.
    pub fn now_ns(&self) -> u64 {
        self.shared.now_ns()
    }

    fn write(&mut self, msg: &Message) -> bool {
        let ok = match encode(msg, &mut self.frame) {
            Ok(n) => self.frame.get(..n).is_some_and(|bytes| self.port.write_all(bytes).is_ok()),
            Err(_) => false,
        };
        if !ok {
            self.shared.io_errors.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

fn read_loop(mut port: Box<dyn SerialPort>, shared: &Shared, mut cells: Cells) {
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 512];
    let mut was_alive = false;
    while !shared.stop.load(Ordering::Acquire) {
        shared.reader_progress.store(shared.now_ns() + 1, Ordering::Release);
        // The port's read timeout (2 ms) paces the watchdog.
        was_alive = watchdog(shared, was_alive);
        let n = match port.read(&mut buf) {
            Ok(0) => continue,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => {
                // A vanished device (USB unplugged, simulator closed): count it and
                // let the watchdog declare the loss; don't spin.
                shared.io_errors.fetch_add(1, Ordering::Relaxed);
                thread::sleep(shared.config.heartbeat_period);
                continue;
            }
        };
        decoder.push(buf.get(..n).unwrap_or(&[]), |msg| publish(shared, &mut cells, msg));
        cells.decode.publish(decoder.stats());
    }
}

fn publish(shared: &Shared, cells: &mut Cells, msg: Message) {
    let now = shared.now_ns();
    match msg {
        Message::JointState(js) => {
            let mut s = JointSnapshot {
                seq: js.seq,
                firmware_time_us: js.time_us,
                joints: js.positions_rad.len() as u8,
                encoder_ok: js.encoder_ok,
                received_ns: now.max(1),
                ..JointSnapshot::default()
            };
            for (d, v) in s.positions_rad.iter_mut().zip(&js.positions_rad) {
                *d = *v;
            }
            for (d, v) in s.velocities_rad_s.iter_mut().zip(&js.velocities_rad_s) {
                *d = *v;
            }
            cells.joints.publish(s);
        }
        Message::Telemetry(t) => {
            let mut s = TelemetrySnapshot {
                joints: t.motor_temp_c.len() as u8,
                gripper_pressure_kpa: t.gripper_pressure_kpa,
                supply_v: t.supply_v,
                received_ns: now.max(1),
                ..TelemetrySnapshot::default()
            };
            for (d, v) in s.motor_temp_c.iter_mut().zip(&t.motor_temp_c) {
                *d = *v;
            }
            cells.telemetry.publish(s);
        }
        Message::EStop(e) => cells.estop.publish(Some(e)),
        Message::Fault(f) => {
            shared.faults.fetch_add(1, Ordering::Relaxed);
            cells.fault.publish(Some(FaultSnapshot { fault: f, received_ns: now.max(1) }));
        }
        // Heartbeats only keep the link alive; the host never receives its own messages.
        Message::Heartbeat(_) | Message::MotorCommand(_) | Message::EStopReset | Message::Hold(_) => {}
    }
    shared.last_rx.store(now + 1, Ordering::Release);
}

/// Records a loss when the link goes from alive to lost; returns the new state.
fn watchdog(shared: &Shared, was_alive: bool) -> bool {
    let now = shared.now_ns();
    let alive = shared.alive_at(now);
    if was_alive && !alive {
        shared.losses.fetch_add(1, Ordering::Relaxed);
        let last_rx_ns = shared.last_rx_ns().unwrap_or(0);
        let mut events = shared.loss_events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == events.capacity() {
            events.remove(0);
        }
        events.push(LinkLoss { last_rx_ns, detected_ns: now });
        shared.loss_signal.notify_all();
    }
    alive
}
