//! A firmware simulator that speaks the real protocol over a serial port, so tests
//! and the default configuration exercise the same path as a real motor controller.
//!
//! The model: each joint tracks its target under a velocity limit; joints stop at
//! their hard limits; motors heat with speed and cool towards ambient; the gripper
//! pressure follows the gripper command; the e-stop button latches until the host
//! sends a reset with the button released. The command watchdog is fed only by
//! fresh motor commands: a command that is not finite, older than the last one
//! taken, or later than `command_timeout` after its tick is dropped and counted;
//! with no fresh command for `command_timeout` the firmware brings the arm to a
//! controlled stop (decelerating at `stop_decel_rad_s2`), holds it and reports
//! `CommandTimeout`. A fresh `Hold` from the host feeds the watchdog and stops
//! the arm the same way. Tests can make it report any other fault.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use gantry_handoff::{snapshot, Publisher, Snapshot};
use serialport::SerialPort;

use crate::protocol::{
    encode, Decoder, EStopState, Fault, FaultCode, Heartbeat, JointState, Joints, Message, Telemetry, MAX_JOINTS,
    MAX_WIRE_FRAME,
};

/// Physical parameters of the simulated arm.
#[derive(Debug, Clone, Copy)]
pub struct SimParams {
    pub joints: usize,
    pub step: Duration,
    /// Joint state is sent every `state_every` steps.
    pub state_every: u32,
    pub telemetry_every: u32,
    pub heartbeat_period: Duration,
    pub max_velocity_rad_s: f32,
    pub position_gain: f32,
    pub hard_limit_rad: f32,
    pub ambient_c: f32,
    /// Degrees per second per rad/s of joint speed.
    pub heating: f32,
    /// Fraction of the excess over ambient shed per second.
    pub cooling: f32,
    pub gripper_max_kpa: f32,
    pub supply_v: f32,
    /// No fresh motor command for this long: controlled stop, `CommandTimeout`.
    pub command_timeout: Duration,
    /// Deceleration of the controlled stop.
    pub stop_decel_rad_s2: f32,
    /// Where the arm is at power-on.
    pub start_rad: [f32; MAX_JOINTS],
    /// `SCHED_FIFO` priority of the simulator's thread: it stands for a
    /// microcontroller of its own, which a busy host cannot starve. `None`:
    /// normal scheduling.
    pub priority: Option<u8>,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            joints: 6,
            step: Duration::from_millis(2),
            state_every: 2,
            telemetry_every: 50,
            heartbeat_period: Duration::from_millis(10),
            max_velocity_rad_s: 2.0,
            position_gain: 10.0,
            hard_limit_rad: 3.1,
            ambient_c: 25.0,
            heating: 4.0,
            cooling: 0.02,
            gripper_max_kpa: 500.0,
            supply_v: 48.0,
            command_timeout: Duration::from_millis(100),
            stop_decel_rad_s2: 50.0,
            // A UR5-like arm folded above the table (tool ~0.35 m up), not
            // stretched out a few centimetres above it as at all zeros.
            start_rad: [0.0, -1.2, 1.2, -1.5, -1.5, 0.0, 0.0, 0.0],
            priority: None,
        }
    }
}

/// The simulator's physical state, readable from tests.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SimState {
    pub positions_rad: [f32; MAX_JOINTS],
    pub velocities_rad_s: [f32; MAX_JOINTS],
    pub targets_rad: [f32; MAX_JOINTS],
    pub motor_temp_c: [f32; MAX_JOINTS],
    pub gripper: f32,
    pub gripper_pressure_kpa: f32,
    pub estop: EStopState,
    /// Motor commands taken (fresh, finite).
    pub commands_received: u64,
    /// Dropped: older than the last taken, or arrived too long after their tick.
    pub commands_stale: u64,
    /// Dropped: a target or the gripper not a finite number.
    pub commands_non_finite: u64,
    pub last_command_seq: u32,
    /// When the last command was taken, µs since the simulator's boot.
    pub last_command_us: u64,
    pub holding_for_timeout: bool,
    /// Fresh holds taken from the host.
    pub holds_received: u64,
    /// The host's last message was a hold: the arm is stopped and held.
    pub holding_for_host: bool,
    /// Faults sent to the host.
    pub faults_sent: u64,
    /// When the current command-timeout stop began, µs since boot; 0 = none.
    pub timeout_stop_since_us: u64,
}

struct Control {
    stop: AtomicBool,
    button: AtomicBool,
    /// Extra heat (°C/s, `f32` bits) added to every motor, to test temperature limits.
    extra_heat_c_s: AtomicU32,
    /// Garbage bytes to write before the next frame, to test the decoder.
    garbage_due: AtomicU64,
    /// The cable is cut: nothing gets through either way.
    cut: AtomicBool,
    /// Values (`f32` bits; [`NO_CORRUPTION`] for none) the firmware reports in
    /// place of joint 0's position, every joint's velocity, and its telemetry,
    /// as a firmware with a broken sensor or bad arithmetic would.
    corrupt_position: AtomicU32,
    corrupt_velocity: AtomicU32,
    corrupt_telemetry: AtomicU32,
    /// Encoders reported failed, one bit per joint.
    failed_encoders: AtomicU32,
    /// A fault to report with the next step: code index + 1 in the low byte,
    /// the joint in the next; 0 for none.
    fault_due: AtomicU32,
}

/// No corruption: a NaN whose payload no arithmetic produces.
const NO_CORRUPTION: u32 = 0x7fc0_dead;

/// A running simulator. Dropping it (or [`SimHandle::stop`]) closes its end of the link.
pub struct SimHandle {
    control: Arc<Control>,
    state: Snapshot<SimState>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl SimHandle {
    /// Starts the simulator on `port`.
    pub fn spawn(port: Box<dyn SerialPort>, params: SimParams) -> io::Result<Self> {
        assert!(params.joints <= MAX_JOINTS, "at most {MAX_JOINTS} joints");
        let control = Arc::new(Control {
            stop: AtomicBool::new(false),
            button: AtomicBool::new(false),
            extra_heat_c_s: AtomicU32::new(0f32.to_bits()),
            garbage_due: AtomicU64::new(0),
            cut: AtomicBool::new(false),
            corrupt_position: AtomicU32::new(NO_CORRUPTION),
            corrupt_velocity: AtomicU32::new(NO_CORRUPTION),
            corrupt_telemetry: AtomicU32::new(NO_CORRUPTION),
            failed_encoders: AtomicU32::new(0),
            fault_due: AtomicU32::new(0),
        });
        let (publisher, state) = snapshot(SimState::default());
        let thread = {
            let control = control.clone();
            thread::Builder::new().name("fw-sim".into()).spawn(move || {
                if let Some(p) = params.priority {
                    // Best effort: without it the simulation only gets less faithful.
                    let _ = crate::link::real_time(p);
                }
                Sim::new(params, control, publisher).run(port)
            })?
        };
        Ok(Self { control, state, thread: Some(thread) })
    }

    /// The newest state the simulator published.
    pub fn state(&self) -> SimState {
        self.state.read_wait()
    }

    pub fn press_estop(&self) {
        self.control.button.store(true, Ordering::Release);
    }

    pub fn release_estop(&self) {
        self.control.button.store(false, Ordering::Release);
    }

    pub fn set_extra_heat(&self, c_per_s: f32) {
        self.control.extra_heat_c_s.store(c_per_s.to_bits(), Ordering::Release);
    }

    /// Writes `n` bytes of garbage onto the link before the next frame.
    pub fn inject_garbage(&self, n: u64) {
        self.control.garbage_due.fetch_add(n, Ordering::AcqRel);
    }

    /// Reports `value` (say NaN) as joint 0's position, or the truth again with `None`.
    pub fn corrupt_position(&self, value: Option<f32>) {
        self.control.corrupt_position.store(value.map_or(NO_CORRUPTION, f32::to_bits), Ordering::Release);
    }

    /// Reports `value` (say infinity) as every joint's velocity, or the truth with `None`.
    pub fn corrupt_velocity(&self, value: Option<f32>) {
        self.control.corrupt_velocity.store(value.map_or(NO_CORRUPTION, f32::to_bits), Ordering::Release);
    }

    /// Reports `value` as every motor temperature and the gripper pressure.
    pub fn corrupt_telemetry(&self, value: Option<f32>) {
        self.control.corrupt_telemetry.store(value.map_or(NO_CORRUPTION, f32::to_bits), Ordering::Release);
    }

    /// Reports the encoders in `mask` (bit per joint) failed; 0 for none.
    pub fn fail_encoders(&self, mask: u8) {
        self.control.failed_encoders.store(u32::from(mask), Ordering::Release);
    }

    /// Reports `code` for `joint` (255: none) once, as a firmware that detected it would.
    pub fn report_fault(&self, code: FaultCode, joint: u8) {
        self.control.fault_due.store((u32::from(fault_index(code)) + 1) | (u32::from(joint) << 8), Ordering::Release);
    }

    /// Cuts the cable (`true`) or mends it: while cut, nothing the host sends
    /// arrives (the firmware holds the arm after its host timeout) and the
    /// firmware sends nothing. The port stays open, as with a broken wire.
    pub fn cut_link(&self, cut: bool) {
        self.control.cut.store(cut, Ordering::Release);
    }

    /// Stops the simulator and closes its end of the link, like pulling the cable.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        self.control.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("simulator thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

struct Sim {
    p: SimParams,
    control: Arc<Control>,
    publisher: Publisher<SimState>,
    s: SimState,
    boot: Instant,
    /// When the last fresh command was taken; `None` before the first.
    last_command: Option<Instant>,
    last_tick_us: u64,
    /// Smallest (firmware time − tick time) seen: the clocks' offset plus the
    /// quickest delivery. A command later than that by the timeout is stale.
    min_offset_us: Option<i128>,
    state_seq: u32,
    heartbeat_seq: u32,
    rng: u64,
}

impl Sim {
    fn new(p: SimParams, control: Arc<Control>, publisher: Publisher<SimState>) -> Self {
        let mut s = SimState::default();
        s.motor_temp_c[..p.joints].fill(p.ambient_c);
        s.positions_rad[..p.joints].copy_from_slice(&p.start_rad[..p.joints]);
        s.targets_rad = s.positions_rad;
        Self {
            p,
            control,
            publisher,
            s,
            boot: Instant::now(),
            last_command: None,
            last_tick_us: 0,
            min_offset_us: None,
            state_seq: 0,
            heartbeat_seq: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn run(mut self, mut port: Box<dyn SerialPort>) -> io::Result<()> {
        port.set_timeout(Duration::from_millis(1)).map_err(io::Error::other)?;
        let mut decoder = Decoder::new();
        let mut rx = [0u8; 512];
        let mut tx = [0u8; MAX_WIRE_FRAME];
        let mut next = Instant::now();
        let mut next_heartbeat = next;
        let mut step: u64 = 0;
        let mut last_estop = self.s.estop;
        while !self.control.stop.load(Ordering::Acquire) {
            // Drain whatever the host sent.
            loop {
                match port.read(&mut rx) {
                    Ok(0) => break,
                    Ok(_) if self.control.cut.load(Ordering::Acquire) => {}
                    Ok(n) => {
                        let mut inbox = heapless::Vec::<Message, 16>::new();
                        decoder.push(&rx[..n], |m| {
                            let _ = inbox.push(m);
                        });
                        for m in inbox {
                            self.receive(m);
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }

            let dt = self.p.step.as_secs_f32();
            self.integrate(dt);
            step += 1;

            if !self.control.cut.load(Ordering::Acquire) {
                self.transmit(&mut port, &mut tx, step, &mut last_estop, &mut next_heartbeat)?;
            }
            self.publisher.publish(self.s);

            next += self.p.step;
            let now = Instant::now();
            if next > now {
                thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        Ok(())
    }

    /// What the firmware sends in one step: injected garbage, joint state,
    /// telemetry, the e-stop and the heartbeat when due.
    fn transmit(
        &mut self,
        port: &mut Box<dyn SerialPort>,
        tx: &mut [u8; MAX_WIRE_FRAME],
        step: u64,
        last_estop: &mut EStopState,
        next_heartbeat: &mut Instant,
    ) -> io::Result<()> {
        let garbage = self.control.garbage_due.swap(0, Ordering::AcqRel);
        for _ in 0..garbage {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            port.write_all(&[(self.rng & 0xff) as u8])?;
        }
        let fault = self.control.fault_due.swap(0, Ordering::AcqRel);
        if let Some(code) = (fault & 0xff).checked_sub(1).and_then(|i| FAULT_CODES.get(i as usize)) {
            self.s.faults_sent += 1;
            send(port, tx, &Message::Fault(Fault { code: *code, joint: (fault >> 8) as u8 }))?;
        }
        if step.is_multiple_of(u64::from(self.p.state_every.max(1))) {
            let msg = self.joint_state();
            send(port, tx, &msg)?;
        }
        if step.is_multiple_of(u64::from(self.p.telemetry_every.max(1))) {
            let msg = self.telemetry();
            send(port, tx, &msg)?;
        }
        if self.s.estop != *last_estop || step.is_multiple_of(50) {
            send(port, tx, &Message::EStop(self.s.estop))?;
            *last_estop = self.s.estop;
        }
        let now = Instant::now();
        if now >= *next_heartbeat {
            let hb = Heartbeat { seq: self.heartbeat_seq, uptime_ms: self.boot.elapsed().as_millis() as u32 };
            self.heartbeat_seq = self.heartbeat_seq.wrapping_add(1);
            send(port, tx, &Message::Heartbeat(hb))?;
            *next_heartbeat = now + self.p.heartbeat_period;
        }
        Ok(())
    }

    fn receive(&mut self, m: Message) {
        match m {
            Message::MotorCommand(cmd) => {
                if !cmd.gripper.is_finite() || cmd.targets_rad.iter().any(|t| !t.is_finite()) {
                    self.s.commands_non_finite += 1;
                    return;
                }
                if !self.fresh(cmd.tick_us) {
                    return;
                }
                self.s.holding_for_host = false;
                self.s.commands_received += 1;
                self.s.last_command_seq = cmd.seq;
                // A latched e-stop or a timeout stop ignores motion until the
                // next step has re-armed it.
                if !self.s.estop.latched && !self.s.holding_for_timeout {
                    let n = cmd.targets_rad.len().min(self.p.joints);
                    self.s.targets_rad[..n].copy_from_slice(&cmd.targets_rad[..n]);
                    #[expect(
                        clippy::manual_clamp,
                        reason = "f32::clamp is disallowed here: it can panic, max/min cannot"
                    )]
                    let gripper = cmd.gripper.max(0.0).min(1.0);
                    self.s.gripper = gripper;
                }
            }
            Message::Hold(h) if self.fresh(h.tick_us) => {
                self.s.holds_received += 1;
                self.s.holding_for_host = true;
            }
            Message::EStopReset if !self.s.estop.pressed => {
                self.s.estop.latched = false;
            }
            _ => {}
        }
    }

    /// The watchdog's freshness rule for a command or hold ticked at
    /// `tick_us`; a fresh one feeds the watchdog, a stale one is counted.
    fn fresh(&mut self, tick_us: u64) -> bool {
        let now_us = self.boot.elapsed().as_micros() as i128;
        let offset = now_us - i128::from(tick_us);
        let min_offset = *self.min_offset_us.get_or_insert(offset);
        let late_us = offset - min_offset;
        if tick_us <= self.last_tick_us || late_us > self.p.command_timeout.as_micros() as i128 {
            self.s.commands_stale += 1;
            return false;
        }
        self.min_offset_us = Some(min_offset.min(offset));
        self.last_tick_us = tick_us;
        self.last_command = Some(Instant::now());
        self.s.last_command_us = now_us as u64;
        true
    }

    fn integrate(&mut self, dt: f32) {
        let p = self.p;
        let pressed = self.control.button.load(Ordering::Acquire);
        self.s.estop.pressed = pressed;
        if pressed {
            self.s.estop.latched = true;
        }
        let timed_out = self.last_command.is_none_or(|t| t.elapsed() > p.command_timeout);
        if timed_out && !self.s.holding_for_timeout {
            self.s.timeout_stop_since_us = self.boot.elapsed().as_micros() as u64;
            if self.last_command.is_some() {
                let fault = (u32::from(fault_index(FaultCode::CommandTimeout)) + 1) | (255 << 8);
                let _ = self.control.fault_due.compare_exchange(0, fault, Ordering::AcqRel, Ordering::Acquire);
            }
        }
        self.s.holding_for_timeout = timed_out;
        let hold = self.s.estop.latched || timed_out || self.s.holding_for_host;
        let extra_heat = f32::from_bits(self.control.extra_heat_c_s.load(Ordering::Acquire));
        let dv = p.stop_decel_rad_s2 * dt;
        for j in 0..p.joints {
            let v = if hold {
                // Controlled stop: brake at the stop deceleration, then hold
                // where the arm came to rest, forgetting the old target.
                let v0 = self.s.velocities_rad_s[j];
                let v = within(v0, v0.abs() - dv, 0.0);
                self.s.targets_rad[j] = self.s.positions_rad[j] + v * dt;
                v
            } else {
                let err = self.s.targets_rad[j] - self.s.positions_rad[j];
                within(p.position_gain * err, p.max_velocity_rad_s, 0.0)
            };
            let pos = within(self.s.positions_rad[j] + v * dt, p.hard_limit_rad, 0.0);
            self.s.velocities_rad_s[j] = (pos - self.s.positions_rad[j]) / dt;
            self.s.positions_rad[j] = pos;
            let t = &mut self.s.motor_temp_c[j];
            *t += (p.heating * v.abs() + extra_heat - p.cooling * (*t - p.ambient_c)) * dt;
        }
        let target_kpa = self.s.gripper * p.gripper_max_kpa;
        self.s.gripper_pressure_kpa += (target_kpa - self.s.gripper_pressure_kpa) * (dt * 20.0).min(1.0);
    }

    fn joint_state(&mut self) -> Message {
        let n = self.p.joints;
        self.state_seq = self.state_seq.wrapping_add(1);
        let mut positions = self.s.positions_rad;
        let mut velocities = self.s.velocities_rad_s;
        if let Some(v) = corruption(&self.control.corrupt_position) {
            positions[0] = v;
        }
        if let Some(v) = corruption(&self.control.corrupt_velocity) {
            velocities.fill(v);
        }
        let failed = self.control.failed_encoders.load(Ordering::Acquire) as u8;
        Message::JointState(JointState {
            seq: self.state_seq,
            time_us: self.boot.elapsed().as_micros() as u64,
            positions_rad: joints(&positions[..n]),
            velocities_rad_s: joints(&velocities[..n]),
            encoder_ok: ((1u16 << n) - 1) as u8 & !failed,
        })
    }

    fn telemetry(&self) -> Message {
        let n = self.p.joints;
        let mut temps = self.s.motor_temp_c;
        let mut pressure = self.s.gripper_pressure_kpa;
        if let Some(v) = corruption(&self.control.corrupt_telemetry) {
            temps.fill(v);
            pressure = v;
        }
        Message::Telemetry(Telemetry {
            motor_temp_c: joints(&temps[..n]),
            gripper_pressure_kpa: pressure,
            supply_v: self.p.supply_v,
        })
    }
}

fn corruption(cell: &AtomicU32) -> Option<f32> {
    let bits = cell.load(Ordering::Acquire);
    (bits != NO_CORRUPTION).then(|| f32::from_bits(bits))
}

/// `x` limited to `centre ± half_width` (a negative width gives the centre);
/// never panics, whatever the numbers.
fn within(x: f32, half_width: f32, centre: f32) -> f32 {
    let w = half_width.max(0.0);
    x.max(centre - w).min(centre + w)
}

const FAULT_CODES: [FaultCode; 6] = [
    FaultCode::EncoderError,
    FaultCode::OverCurrent,
    FaultCode::OverTemperature,
    FaultCode::UnderVoltage,
    FaultCode::CommandTimeout,
    FaultCode::JointLimit,
];

fn fault_index(code: FaultCode) -> u8 {
    FAULT_CODES.iter().position(|c| *c == code).unwrap_or(0) as u8
}

fn joints(values: &[f32]) -> Joints {
    Joints::from_slice(values).unwrap_or_default()
}

fn send(port: &mut Box<dyn SerialPort>, tx: &mut [u8; MAX_WIRE_FRAME], msg: &Message) -> io::Result<()> {
    let n = encode(msg, tx).map_err(|_| io::Error::other("frame too large"))?;
    port.write_all(&tx[..n])
}
