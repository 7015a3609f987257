//! A firmware simulator that speaks the real protocol over a serial port, so tests
//! and the default configuration exercise the same path as a real motor controller.
//!
//! The model: each joint tracks its target under a velocity limit; joints stop at
//! their hard limits; motors heat with speed and cool towards ambient; the gripper
//! pressure follows the gripper command; the e-stop button latches until the host
//! sends a reset with the button released; without host traffic the firmware holds
//! position and reports a command timeout.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_utils::atomic::AtomicCell;
use serialport::SerialPort;

use crate::protocol::{
    encode, Decoder, EStopState, Heartbeat, JointState, Joints, Message, Telemetry, MAX_JOINTS, MAX_WIRE_FRAME,
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
    /// Host silence after which the firmware holds and reports `CommandTimeout`.
    pub host_timeout: Duration,
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
            host_timeout: Duration::from_millis(100),
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
    pub commands_received: u64,
    pub last_command_seq: u32,
    pub holding_for_timeout: bool,
}

struct Control {
    stop: AtomicBool,
    button: AtomicBool,
    /// Extra heat (°C/s) added to every motor, to test temperature limits.
    extra_heat_c_s: AtomicCell<f32>,
    /// Garbage bytes to write before the next frame, to test the decoder.
    garbage_due: AtomicU64,
    /// The cable is cut: nothing gets through either way.
    cut: AtomicBool,
    state: AtomicCell<SimState>,
}

/// A running simulator. Dropping it (or [`SimHandle::stop`]) closes its end of the link.
pub struct SimHandle {
    control: Arc<Control>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl SimHandle {
    /// Starts the simulator on `port`.
    pub fn spawn(port: Box<dyn SerialPort>, params: SimParams) -> io::Result<Self> {
        assert!(params.joints <= MAX_JOINTS, "at most {MAX_JOINTS} joints");
        let control = Arc::new(Control {
            stop: AtomicBool::new(false),
            button: AtomicBool::new(false),
            extra_heat_c_s: AtomicCell::new(0.0),
            garbage_due: AtomicU64::new(0),
            cut: AtomicBool::new(false),
            state: AtomicCell::new(SimState::default()),
        });
        let thread = {
            let control = control.clone();
            thread::Builder::new().name("fw-sim".into()).spawn(move || Sim::new(params, control).run(port))?
        };
        Ok(Self { control, thread: Some(thread) })
    }

    pub fn state(&self) -> SimState {
        self.control.state.load()
    }

    pub fn press_estop(&self) {
        self.control.button.store(true, Ordering::Release);
    }

    pub fn release_estop(&self) {
        self.control.button.store(false, Ordering::Release);
    }

    pub fn set_extra_heat(&self, c_per_s: f32) {
        self.control.extra_heat_c_s.store(c_per_s);
    }

    /// Writes `n` bytes of garbage onto the link before the next frame.
    pub fn inject_garbage(&self, n: u64) {
        self.control.garbage_due.fetch_add(n, Ordering::AcqRel);
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
    s: SimState,
    boot: Instant,
    last_host_rx: Instant,
    state_seq: u32,
    heartbeat_seq: u32,
    rng: u64,
}

impl Sim {
    fn new(p: SimParams, control: Arc<Control>) -> Self {
        let mut s = SimState::default();
        s.motor_temp_c[..p.joints].fill(p.ambient_c);
        let now = Instant::now();
        Self { p, control, s, boot: now, last_host_rx: now, state_seq: 0, heartbeat_seq: 0, rng: 0x9E37_79B9_7F4A_7C15 }
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
            self.control.state.store(self.s);

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
        self.last_host_rx = Instant::now();
        match m {
            Message::MotorCommand(cmd) => {
                self.s.commands_received += 1;
                self.s.last_command_seq = cmd.seq;
                // A latched e-stop ignores motion commands entirely.
                if !self.s.estop.latched {
                    let n = cmd.targets_rad.len().min(self.p.joints);
                    self.s.targets_rad[..n].copy_from_slice(&cmd.targets_rad[..n]);
                    self.s.gripper = cmd.gripper.clamp(0.0, 1.0);
                }
            }
            Message::EStopReset if !self.s.estop.pressed => {
                self.s.estop.latched = false;
            }
            _ => {}
        }
    }

    fn integrate(&mut self, dt: f32) {
        let p = self.p;
        let pressed = self.control.button.load(Ordering::Acquire);
        self.s.estop.pressed = pressed;
        if pressed {
            self.s.estop.latched = true;
        }
        let host_silent = self.last_host_rx.elapsed() > p.host_timeout;
        self.s.holding_for_timeout = host_silent;
        let hold = self.s.estop.latched || host_silent;
        let extra_heat = self.control.extra_heat_c_s.load();
        for j in 0..p.joints {
            if hold {
                // Braking: stop where we are and forget the old target.
                self.s.targets_rad[j] = self.s.positions_rad[j];
            }
            let err = self.s.targets_rad[j] - self.s.positions_rad[j];
            let v = (p.position_gain * err).clamp(-p.max_velocity_rad_s, p.max_velocity_rad_s);
            let mut pos = self.s.positions_rad[j] + v * dt;
            pos = pos.clamp(-p.hard_limit_rad, p.hard_limit_rad);
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
        Message::JointState(JointState {
            seq: self.state_seq,
            time_us: self.boot.elapsed().as_micros() as u64,
            positions_rad: joints(&self.s.positions_rad[..n]),
            velocities_rad_s: joints(&self.s.velocities_rad_s[..n]),
            encoder_ok: ((1u16 << n) - 1) as u8,
        })
    }

    fn telemetry(&self) -> Message {
        let n = self.p.joints;
        Message::Telemetry(Telemetry {
            motor_temp_c: joints(&self.s.motor_temp_c[..n]),
            gripper_pressure_kpa: self.s.gripper_pressure_kpa,
            supply_v: self.p.supply_v,
        })
    }
}

fn joints(values: &[f32]) -> Joints {
    Joints::from_slice(values).unwrap_or_default()
}

fn send(port: &mut Box<dyn SerialPort>, tx: &mut [u8; MAX_WIRE_FRAME], msg: &Message) -> io::Result<()> {
    let n = encode(msg, tx).map_err(|_| io::Error::other("frame too large"))?;
    port.write_all(&tx[..n])
}
