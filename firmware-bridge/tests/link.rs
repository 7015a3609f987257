//! The host link against the firmware simulator over a real pseudo-terminal pair.

use std::time::{Duration, Instant};

use gantry_firmware_bridge::link::{FirmwareLink, LinkConfig};
use gantry_firmware_bridge::protocol::{Joints, MotorCommand};
use gantry_firmware_bridge::sim::{SimHandle, SimParams};
use serialport::TTYPort;

const CONFIG: LinkConfig = LinkConfig {
    heartbeat_period: Duration::from_millis(10),
    timeout: Duration::from_millis(50),
    reader_priority: None,
};

fn pair() -> (SimHandle, FirmwareLink) {
    let (master, slave) = TTYPort::pair().expect("pseudo-terminal pair");
    let sim = SimHandle::spawn(Box::new(master), SimParams::default()).unwrap();
    let link = FirmwareLink::start(Box::new(slave), CONFIG).unwrap();
    (sim, link)
}

/// Polls `cond` until it holds or `limit` passes: the simulated arm moves in real
/// time, so there is no event to wait on.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

fn command(seq: u32, target: f32, gripper: f32) -> MotorCommand {
    let tick_us = START.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1;
    MotorCommand { seq, tick_us, targets_rad: Joints::from_slice(&[target; 6]).unwrap(), gripper }
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

#[test]
fn commands_reach_the_firmware_and_joint_states_come_back() {
    let (sim, link) = pair();
    assert!(eventually(Duration::from_secs(5), || link.joint_state().is_some()), "no joint state");
    assert!(link.is_alive());

    let mut port = link.command_port().expect("the command port");
    assert!(link.command_port().is_none(), "one writer only");
    let mut seq = 0;
    let reached = eventually(Duration::from_secs(10), || {
        seq += 1;
        assert!(port.send(command(seq, 0.4, 1.0)));
        link.joint_state().is_some_and(|s| s.positions_rad[..6].iter().all(|p| (p - 0.4).abs() < 1e-3))
    });
    assert!(reached, "arm did not reach the target: {:?}", link.joint_state());
    let js = link.joint_state().unwrap();
    assert_eq!(js.joints, 6);
    assert_eq!(js.encoder_ok, 0b11_1111);
    let state = sim.state();
    assert!(state.commands_received >= 1);
    assert!(state.last_command_seq <= seq && state.last_command_seq > 0);
    assert_eq!(state.targets_rad[..6], [0.4; 6]);

    // Telemetry shows the gripper closing and the motors warming from moving.
    assert!(eventually(Duration::from_secs(5), || link.telemetry().is_some_and(|t| t.gripper_pressure_kpa > 400.0)));
    let t = link.telemetry().unwrap();
    assert!(t.motor_temp_c[..6].iter().all(|&c| c > 25.0), "{t:?}");
    let status = link.status();
    assert_eq!(status.decode.rejected(), 0);
    assert!(status.commands_sent >= 1);
    assert_eq!(status.losses, 0);
}

#[test]
fn estop_latches_until_an_explicit_reset() {
    let (sim, link) = pair();
    assert!(eventually(Duration::from_secs(5), || link.estop().is_some()));
    assert!(!link.estop().unwrap().latched);

    sim.press_estop();
    assert!(eventually(Duration::from_secs(5), || link.estop().is_some_and(|e| e.pressed && e.latched)));
    // Motion commands are ignored while latched.
    let mut port = link.command_port().unwrap();
    for seq in 1..20 {
        port.send(command(seq, 1.0, 0.0));
    }
    sim.release_estop();
    assert!(eventually(Duration::from_secs(5), || link.estop().is_some_and(|e| !e.pressed)));
    assert!(link.estop().unwrap().latched, "released button must not clear the latch");
    assert_eq!(sim.state().targets_rad[..6], sim.state().positions_rad[..6]);

    port.request_estop_reset();
    assert!(eventually(Duration::from_secs(5), || link.estop().is_some_and(|e| !e.latched)));
}

#[test]
fn pulling_the_link_is_detected_within_the_timeout() {
    let (sim, link) = pair();
    assert!(eventually(Duration::from_secs(5), || link.is_alive()));
    // Alive throughout a stretch of normal traffic: no false alarm.
    let watch_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < watch_until {
        assert!(link.is_alive(), "false link loss: {:?}", link.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(link.status().losses, 0);

    sim.stop().unwrap();
    let loss = link.wait_for_loss(1, Duration::from_secs(5)).expect("loss not detected");
    let latency = Duration::from_nanos(loss.detected_ns - loss.last_rx_ns);
    // The watchdog runs every 2 ms read timeout; allow a heartbeat period plus
    // scheduling slack on a loaded machine.
    assert!(latency >= CONFIG.timeout, "declared lost early: {latency:?}");
    assert!(latency <= CONFIG.timeout + CONFIG.heartbeat_period + Duration::from_millis(40), "{latency:?}");
    assert!(!link.is_alive());
    let status = link.status();
    assert_eq!(status.losses, 1);
    assert!(status.last_rx_age.unwrap() >= CONFIG.timeout);
}

#[test]
fn garbage_on_the_line_is_counted_and_traffic_continues() {
    let (sim, link) = pair();
    assert!(eventually(Duration::from_secs(5), || link.joint_state().is_some()));
    sim.inject_garbage(5000);
    assert!(eventually(Duration::from_secs(5), || link.status().decode.rejected() > 0), "{:?}", link.status());
    let before = link.joint_state().unwrap().seq;
    assert!(eventually(Duration::from_secs(5), || link.joint_state().unwrap().seq > before + 10));
    assert!(link.is_alive());
}

#[test]
fn opening_a_missing_port_names_it() {
    let err =
        FirmwareLink::open("/dev/does-not-exist-ttyACM9", 1_000_000, CONFIG).err().expect("opened a missing port");
    let msg = err.to_string();
    assert!(msg.contains("/dev/does-not-exist-ttyACM9") && msg.contains("1000000"), "{msg}");
}

/// Commands feed the firmware's watchdog: while they flow the arm follows
/// them; when they stop (heartbeats or not) the firmware stops the arm within
/// its command timeout, and stale or non-finite commands never move it.
#[test]
fn the_firmware_stops_the_arm_when_fresh_commands_stop() {
    let (sim, link) = pair();
    let timeout = SimParams::default().command_timeout;
    let mut port = link.command_port().unwrap();
    assert!(eventually(Duration::from_secs(5), || link.joint_state().is_some()));
    let mut seq = 0;
    let mut target = 0.0f32;
    // Moving: a slow sweep, one command every 10 ms.
    while seq < 100 {
        seq += 1;
        target += 0.004;
        port.send(command(seq, target, 0.0));
        std::thread::sleep(Duration::from_millis(10));
    }
    let moving = sim.state();
    assert!(moving.velocities_rad_s[..6].iter().all(|v| v.abs() > 0.1), "the arm was moving: {moving:?}");
    assert!(!moving.holding_for_timeout);

    // A stale command (older tick) and a non-finite one are dropped.
    let mut stale = command(seq + 1, 2.0, 0.0);
    stale.tick_us = 1;
    port.send(stale);
    let mut nan = command(seq + 2, 2.0, 0.0);
    nan.targets_rad[0] = f32::NAN;
    port.send(nan);
    assert!(eventually(Duration::from_secs(5), || {
        let s = sim.state();
        s.commands_stale >= 1 && s.commands_non_finite >= 1
    }));

    // Commands stop: the firmware begins its stop within the timeout (plus a
    // simulator step) after the last command it took, and the arm stands still.
    assert!(eventually(Duration::from_secs(5), || sim.state().holding_for_timeout));
    let s = sim.state();
    let gap = Duration::from_micros(s.timeout_stop_since_us - s.last_command_us);
    assert!(gap >= timeout, "stopped early: {gap:?}");
    assert!(gap <= timeout + Duration::from_millis(10), "stopped late: {gap:?}");
    assert!(eventually(Duration::from_secs(1), || sim.state().velocities_rad_s.iter().all(|v| *v == 0.0)));
    assert!(s.targets_rad[..6].iter().all(|t| (*t - target).abs() < 0.5), "never took the stale 2.0 target");
    assert!(s.positions_rad.iter().all(|p| p.is_finite()));
}
