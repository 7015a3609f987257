//! The host side of the firmware link.
//!
//! Two threads own the serial port: the reader decodes frames and publishes the
//! latest joint state, telemetry and e-stop state into lock-free cells; the writer
//! sends motor commands (handed over through a preallocated lock-free queue),
//! heartbeats every `heartbeat_period`, and runs the watchdog. The control thread
//! only pushes commands and reads snapshots: no lock, no allocation, no blocking.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::atomic::AtomicCell;
use serialport::SerialPort;

use crate::protocol::{
    encode, DecodeStats, Decoder, EStopState, Fault, Heartbeat, Message, MotorCommand, MAX_JOINTS, MAX_WIRE_FRAME,
};

/// Timing of the link.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    pub heartbeat_period: Duration,
    /// No frame from the firmware for this long: the link is lost.
    pub timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self { heartbeat_period: Duration::from_millis(10), timeout: Duration::from_millis(50) }
    }
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

/// The latest joint state, as received (copyable, fixed size).
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

/// Health of the link, for the governor and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkStatus {
    pub alive: bool,
    /// Time since the last valid frame; `None` before the first.
    pub last_rx_age: Option<Duration>,
    pub losses: u64,
    pub decode: DecodeStats,
    pub commands_sent: u64,
    pub commands_overwritten: u64,
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

struct Shared {
    epoch: Instant,
    config: LinkConfig,
    stop: AtomicBool,
    /// ns since `epoch` of the last valid frame, plus one (0 = never).
    last_rx: AtomicU64,
    joints: AtomicCell<JointSnapshot>,
    telemetry: AtomicCell<TelemetrySnapshot>,
    estop: AtomicCell<Option<EStopState>>,
    last_fault: AtomicCell<Option<Fault>>,
    faults: AtomicU64,
    decode: AtomicCell<DecodeStats>,
    commands: ArrayQueue<MotorCommand>,
    commands_sent: AtomicU64,
    commands_overwritten: AtomicU64,
    reset_requested: AtomicBool,
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

/// A running link to the firmware. Dropping it stops both threads.
pub struct FirmwareLink {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
    writer_thread: Thread,
}

/// Commands queued between two writer wake-ups; a newer command replaces the oldest.
const COMMAND_QUEUE: usize = 4;

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
            joints: AtomicCell::new(JointSnapshot::default()),
            telemetry: AtomicCell::new(TelemetrySnapshot::default()),
            estop: AtomicCell::new(None),
            last_fault: AtomicCell::new(None),
            faults: AtomicU64::new(0),
            decode: AtomicCell::new(DecodeStats::default()),
            commands: ArrayQueue::new(COMMAND_QUEUE),
            commands_sent: AtomicU64::new(0),
            commands_overwritten: AtomicU64::new(0),
            reset_requested: AtomicBool::new(false),
            io_errors: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            loss_events: Mutex::new(Vec::with_capacity(16)),
            loss_signal: Condvar::new(),
        });
        let reader = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("fw-link-rx".into())
                .spawn(move || read_loop(read_port, &shared))
                .map_err(|e| LinkError::Thread("reader", e))?
        };
        let writer = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("fw-link-tx".into())
                .spawn(move || write_loop(port, &shared))
                .map_err(|e| LinkError::Thread("writer", e))?
        };
        let writer_thread = writer.thread().clone();
        Ok(Self { shared, writer: Some(writer), reader: Some(reader), writer_thread })
    }

    /// Queues a command for the firmware. Real-time safe: a lock-free push and a
    /// wake-up of the writer; if the writer has fallen behind, the oldest queued
    /// command is replaced (and counted), never the newest.
    pub fn send_command(&self, cmd: MotorCommand) {
        if self.shared.commands.force_push(cmd).is_some() {
            self.shared.commands_overwritten.fetch_add(1, Ordering::Relaxed);
        }
        self.writer_thread.unpark();
    }

    /// Asks the firmware to clear its e-stop latch (it refuses while the button is pressed).
    pub fn request_estop_reset(&self) {
        self.shared.reset_requested.store(true, Ordering::Release);
        self.writer_thread.unpark();
    }

    /// The latest joint state, `None` before the first.
    pub fn joint_state(&self) -> Option<JointSnapshot> {
        let s = self.shared.joints.load();
        (s.received_ns != 0).then_some(s)
    }

    pub fn telemetry(&self) -> Option<TelemetrySnapshot> {
        let t = self.shared.telemetry.load();
        (t.received_ns != 0).then_some(t)
    }

    pub fn estop(&self) -> Option<EStopState> {
        self.shared.estop.load()
    }

    /// Nanoseconds on the link's clock, the one snapshots are stamped with.
    pub fn now_ns(&self) -> u64 {
        self.shared.now_ns()
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
            decode: s.decode.load(),
            commands_sent: s.commands_sent.load(Ordering::Relaxed),
            commands_overwritten: s.commands_overwritten.load(Ordering::Relaxed),
            io_errors: s.io_errors.load(Ordering::Relaxed),
            faults: s.faults.load(Ordering::Relaxed),
            last_fault: s.last_fault.load(),
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
        events.get(n - 1).copied()
    }
}

impl Drop for FirmwareLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.writer_thread.unpark();
        for handle in [self.writer.take(), self.reader.take()].into_iter().flatten() {
            let _ = handle.join();
        }
    }
}

fn read_loop(mut port: Box<dyn SerialPort>, shared: &Shared) {
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 512];
    while !shared.stop.load(Ordering::Acquire) {
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
        decoder.push(&buf[..n], |msg| publish(shared, msg));
        shared.decode.store(decoder.stats());
    }
}

fn publish(shared: &Shared, msg: Message) {
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
            s.positions_rad[..js.positions_rad.len()].copy_from_slice(&js.positions_rad);
            let nv = js.velocities_rad_s.len();
            s.velocities_rad_s[..nv].copy_from_slice(&js.velocities_rad_s);
            shared.joints.store(s);
        }
        Message::Telemetry(t) => {
            let mut s = TelemetrySnapshot {
                joints: t.motor_temp_c.len() as u8,
                gripper_pressure_kpa: t.gripper_pressure_kpa,
                supply_v: t.supply_v,
                received_ns: now.max(1),
                ..TelemetrySnapshot::default()
            };
            s.motor_temp_c[..t.motor_temp_c.len()].copy_from_slice(&t.motor_temp_c);
            shared.telemetry.store(s);
        }
        Message::EStop(e) => shared.estop.store(Some(e)),
        Message::Fault(f) => {
            shared.faults.fetch_add(1, Ordering::Relaxed);
            shared.last_fault.store(Some(f));
        }
        // Heartbeats only keep the link alive; the host never receives its own messages.
        Message::Heartbeat(_) | Message::MotorCommand(_) | Message::EStopReset => {}
    }
    shared.last_rx.store(now + 1, Ordering::Release);
}

fn write_loop(mut port: Box<dyn SerialPort>, shared: &Shared) {
    let period = shared.config.heartbeat_period;
    let mut frame = [0u8; MAX_WIRE_FRAME];
    let mut next_heartbeat = Instant::now();
    let mut heartbeat_seq = 0u32;
    let mut was_alive = false;
    let mut send = |port: &mut Box<dyn SerialPort>, msg: &Message| -> bool {
        match encode(msg, &mut frame) {
            Ok(n) => {
                if port.write_all(&frame[..n]).is_err() {
                    shared.io_errors.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                true
            }
            Err(_) => false,
        }
    };
    while !shared.stop.load(Ordering::Acquire) {
        while let Some(cmd) = shared.commands.pop() {
            if send(&mut port, &Message::MotorCommand(cmd)) {
                shared.commands_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        if shared.reset_requested.swap(false, Ordering::AcqRel) {
            send(&mut port, &Message::EStopReset);
        }
        let now = Instant::now();
        if now >= next_heartbeat {
            let uptime_ms = shared.epoch.elapsed().as_millis() as u32;
            send(&mut port, &Message::Heartbeat(Heartbeat { seq: heartbeat_seq, uptime_ms }));
            heartbeat_seq = heartbeat_seq.wrapping_add(1);
            next_heartbeat += period;
            if next_heartbeat < now {
                next_heartbeat = now + period;
            }
        }
        was_alive = watchdog(shared, was_alive);
        let wait = next_heartbeat.saturating_duration_since(Instant::now());
        thread::park_timeout(wait.min(period));
    }
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
