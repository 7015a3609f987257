//! Scenarios on the synthetic source and the firmware simulator: a person in the
//! workspace, an e-stop press, a policy too slow for its deadline.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gantry_config::edge::{Synthetic, MAX_JOINTS};
use gantry_config::EdgeConfig;
use gantry_edge::control::{ControlLoop, Mode, PolicyOutput};
use gantry_edge::governor::{Check, RobotState};
use gantry_edge::infer::tract::TractBackend;
use gantry_edge::infer::{InferError, Inputs, PolicyBackend};
use gantry_edge::model::{IoShape, Manifest, ModelPackage};
use gantry_edge::pipeline::{Options, Parts, Pipeline};
use gantry_firmware_bridge::link::{FirmwareLink, LinkConfig};
use gantry_firmware_bridge::sim::{SimHandle, SimParams};
use gantry_hal::synthetic::{Scene, SyntheticCamera, SyntheticDepth};
use gantry_hal::{FrameSource, Pacing};

const MS: u64 = 1_000_000;

fn home() -> [f32; MAX_JOINTS] {
    let mut p = [0f32; MAX_JOINTS];
    p[..6].copy_from_slice(&[0.0, -1.2, 1.2, -1.5, -1.5, 0.0]);
    p
}

/// A healthy robot at `home`, with a fresh policy output that wants to stay put.
fn healthy(now: u64) -> (RobotState, PolicyOutput) {
    let state = RobotState {
        now_ns: now,
        joints: 6,
        positions_rad: home(),
        encoder_ok: 0xff,
        joint_state_ns: now - MS,
        reported_joints: 6,
        motor_temp_c: [30.0; MAX_JOINTS],
        gripper_pressure_kpa: 100.0,
        telemetry_ns: now - 10 * MS,
        estop_known: true,
        link_alive: true,
        policy_frame_ns: now - 20 * MS,
        policy_frame_seq: 1,
        ..RobotState::default()
    };
    let policy = PolicyOutput {
        frame_ns: now - 20 * MS,
        frame_seq: 1,
        done_ns: now,
        goal_rad: home(),
        gripper: 0.5,
        ..PolicyOutput::default()
    };
    (state, policy)
}

/// Mock clock: depth frames at 30 fps, control at 100 Hz. The tick that follows
/// the first depth frame showing the person must already hold the robot.
#[test]
fn a_person_entering_stops_motion_within_one_control_period() {
    let config = EdgeConfig::default();
    let scene = Synthetic { person_event: true, person_enter_s: 1.0, person_leave_s: 3.0, ..Synthetic::default() };
    let mut depth = SyntheticDepth::new(Scene::new(scene), 848, 480, 30, Pacing::Max);
    let info = depth.info();
    let zone = gantry_edge::zone::configured(&config, &info);
    let arm = gantry_edge::governor::arm(&config).outline(&home()[..6]);
    let mut frame = vec![0u8; info.frame_bytes()];
    let mut control = ControlLoop::new(&config);
    let period = 10 * MS;
    let start = 1_000_000 * MS;
    let mut reading = Default::default();
    let mut next_frame = 0u64;
    let mut person_frame_ns = None;
    let mut stopped_at = None;
    let mut approved_before = 0;
    for tick in 0..400u64 {
        let now = start + tick * period;
        // Depth frames due by now are captured and read, in order.
        while start + next_frame * 1_000_000_000 / 30 <= now {
            let capture_ns = start + next_frame * 1_000_000_000 / 30;
            let meta = depth.next_frame(Some(&mut frame)).unwrap();
            let d: Vec<u16> = frame.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
            reading = zone.read(&d, &arm, capture_ns, meta.seq);
            if !reading.clear() && person_frame_ns.is_none() {
                person_frame_ns = Some(capture_ns);
            }
            next_frame += 1;
        }
        let (mut state, policy) = healthy(now);
        state.zone = reading;
        let verdict = control.tick(&state, &policy);
        if verdict.approved && person_frame_ns.is_none() {
            approved_before += 1;
        }
        if !verdict.approved && verdict.failed & (1 << Check::WorkspaceClear as u8) != 0 && stopped_at.is_none() {
            stopped_at = Some(now);
        }
    }
    let seen = person_frame_ns.expect("the person never showed up in the depth frames");
    let stopped = stopped_at.expect("the governor never stopped for the person");
    assert_eq!(seen, start + 30 * 1_000_000_000 / 30, "the person appears in the frame at t = 1.0 s");
    assert!(stopped >= seen && stopped - seen <= period, "stopped {} ms after the frame", (stopped - seen) / MS);
    assert!(approved_before > 90, "the robot ran normally before: {approved_before} approved ticks");
}

/// The real link and simulator; the control tick runs on this thread.
#[test]
fn an_estop_press_is_honoured_on_the_next_tick_and_stays_latched() {
    let config = EdgeConfig::default();
    let (master, slave) = serialport::TTYPort::pair().unwrap();
    let sim = SimHandle::spawn(Box::new(master), SimParams::default()).unwrap();
    let link = FirmwareLink::start(Box::new(slave), LinkConfig::default()).unwrap();
    let mut control = ControlLoop::new(&config);
    let wait_until = |cond: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < end, "timed out");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_until(&|| link.estop().is_some() && link.joint_state().is_some());
    let tick = |control: &mut ControlLoop| {
        let now = gantry_hal::clock::monotonic_ns();
        let (mut state, policy) = healthy(now);
        let e = link.estop().unwrap();
        state.estop_pressed = e.pressed;
        state.estop_latched = e.latched;
        state.zone = gantry_edge::zone::ZoneReading { capture_ns: now - MS, frame_seq: 1, ..Default::default() };
        let v = control.tick(&state, &policy);
        (e.pressed || e.latched, v.approved)
    };
    for _ in 0..20 {
        assert_eq!(tick(&mut control), (false, true), "healthy ticks are approved");
    }
    sim.press_estop();
    // Ticks until the link reports the press, then the very same tick must hold.
    let mut ticks = 0;
    loop {
        let (estop, approved) = tick(&mut control);
        ticks += 1;
        assert!(ticks < 500, "the press never arrived");
        if estop {
            assert!(!approved, "the tick that sees the e-stop must not move the robot");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sim.release_estop();
    wait_until(&|| link.estop().is_some_and(|e| !e.pressed));
    for _ in 0..20 {
        assert!(!tick(&mut control).1, "latched until an explicit reset");
        std::thread::sleep(Duration::from_millis(1));
    }
    control.reset(1);
    link.command_port().expect("the command port").request_estop_reset();
    wait_until(&|| link.estop().is_some_and(|e| !e.latched));
    assert_eq!(tick(&mut control), (false, true), "moves again after the reset");
}

/// A policy that sleeps before every run: a model too slow for its deadline.
struct Slow {
    inner: TractBackend,
    delay: Duration,
}

impl PolicyBackend for Slow {
    fn execution_path(&self) -> gantry_edge::infer::ExecutionPath {
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
        std::thread::sleep(self.delay);
        self.inner.run()
    }
}

#[test]
fn a_slow_policy_falls_back_to_the_baseline_then_to_safe_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EdgeConfig::default();
    config.robot.data_dir = dir.path().display().to_string();
    config.realtime.lock_memory = false;
    config.control.inference_deadline_ms = 50;
    config.control.max_consecutive_misses = 3;
    let model = ModelPackage::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline")).unwrap();
    let slow = |ms| Slow { inner: TractBackend::load(&model, 1).unwrap(), delay: Duration::from_millis(ms) };
    let scene = Scene::new(Synthetic::default());
    let parts = Parts {
        camera: Box::new(SyntheticCamera::new(scene.clone(), 1920, 1080, 30, Pacing::RealTime)),
        depth: Some(Box::new(SyntheticDepth::new(scene, 848, 480, 30, Pacing::RealTime))),
        primary: Box::new(slow(80)),
        baseline: Box::new(slow(80)),
        policy_failures: Vec::new(),
        policy_trials: Vec::new(),
        safety: None,
        scene_arm: None,
    };
    let pipeline = Pipeline::start(&config, parts, Options::default()).unwrap();
    let status = pipeline.status();
    let end = Instant::now() + Duration::from_secs(20);
    while status.safe_stops.load(Ordering::Relaxed) == 0
        || pipeline.governor.per_check[Check::InferenceDeadline as usize].load(Ordering::Relaxed) == 0
    {
        assert!(Instant::now() < end, "no safe stop: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status.fallbacks.load(Ordering::Relaxed), 1, "exactly one fall back to the baseline");
    assert_eq!(status.mode(), Mode::SafeStop);
    assert!(status.deadline_misses.load(Ordering::Relaxed) >= 6, "{status:?}");
    assert!(pipeline.governor.rejects.load(Ordering::Relaxed) > 0);
    pipeline.stop();
}

/// Governor check 6: the safety model from `models/safety` refuses actions whose
/// largest joint delta is 0.04 rad or more.
#[test]
fn the_safety_model_must_approve_each_action() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/safety/safety.onnx");
    let mut model = gantry_edge::infer::safety::SafetyModel::load(path, 6).unwrap();
    let still = [0.0f32; 6];
    assert!(model.approves(&home()[..6], &still, &[0.01, -0.02, 0.0, 0.03, 0.0, 0.0, 0.5]).unwrap());
    assert!(!model.approves(&home()[..6], &still, &[0.0, 0.0, -0.045, 0.0, 0.0, 0.0, 0.5]).unwrap());

    let config = EdgeConfig::default();
    let mut control = ControlLoop::new(&config);
    let now = 1_000_000 * MS;
    let (mut state, policy) = healthy(now);
    state.zone = gantry_edge::zone::ZoneReading { capture_ns: now - MS, frame_seq: 1, ..Default::default() };
    assert!(control.tick(&state, &policy).approved);
    state.now_ns += 10 * MS;
    state.policy_unsafe = true;
    let v = control.tick(&state, &policy);
    assert!(!v.approved);
    assert_eq!(v.failed, 1 << Check::SafetyModel as u8);

    let err = gantry_edge::infer::safety::SafetyModel::load(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline/model.onnx"),
        6,
    )
    .err()
    .expect("a policy is not a safety model")
    .to_string();
    assert!(err.contains("expected [\"state\", \"action\"]"), "{err}");
}

/// The simulated firmware has 5 joints, the configuration 6: the pipeline
/// refuses to start rather than judge one arm by another's limits.
#[test]
fn a_joint_count_mismatch_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EdgeConfig::default();
    config.robot.data_dir = dir.path().display().to_string();
    config.realtime.lock_memory = false;
    let model = ModelPackage::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline")).unwrap();
    let scene = Scene::new(Synthetic::default());
    let parts = Parts {
        camera: Box::new(SyntheticCamera::new(scene.clone(), 640, 480, 30, Pacing::RealTime)),
        depth: Some(Box::new(SyntheticDepth::new(scene, 848, 480, 30, Pacing::RealTime))),
        primary: Box::new(TractBackend::load(&model, 1).unwrap()),
        baseline: Box::new(TractBackend::load(&model, 1).unwrap()),
        policy_failures: Vec::new(),
        policy_trials: Vec::new(),
        safety: None,
        scene_arm: None,
    };
    let err = Pipeline::start(&config, parts, Options { sim_joints: Some(5), ..Options::default() })
        .err()
        .expect("started with the wrong arm");
    let err = format!("{err:#}");
    assert!(err.contains("reports 5 joints") && err.contains("firmware.joints = 6"), "{err}");
}

/// The real link and simulator: an over-current fault on joint 2 stops the arm
/// and keeps it stopped (after the firmware stops repeating it) until the
/// local reset; a command timeout stops it for one tick only.
#[test]
fn a_firmware_fault_holds_until_the_reset() {
    use gantry_edge::governor::FaultReport;
    use gantry_firmware_bridge::protocol::FaultCode;
    let config = EdgeConfig::default();
    let (master, slave) = serialport::TTYPort::pair().unwrap();
    let sim = SimHandle::spawn(Box::new(master), SimParams::default()).unwrap();
    let link = FirmwareLink::start(Box::new(slave), LinkConfig::default()).unwrap();
    let mut control = ControlLoop::new(&config);
    let end = Instant::now() + Duration::from_secs(5);
    while link.joint_state().is_none() {
        assert!(Instant::now() < end, "no joint state");
        std::thread::sleep(Duration::from_millis(2));
    }
    let tick = |control: &mut ControlLoop| {
        let now = gantry_hal::clock::monotonic_ns();
        let (mut state, policy) = healthy(now);
        state.zone = gantry_edge::zone::ZoneReading { capture_ns: now - MS, frame_seq: 1, ..Default::default() };
        if let Some(f) = link.fault() {
            state.fault = FaultReport {
                received_ns: f.received_ns,
                code: f.fault.code as u8,
                joint: Some(f.fault.joint),
                latches: f.fault.code != FaultCode::CommandTimeout,
            };
        }
        control.tick(&state, &policy)
    };
    let fault_bit = Check::FirmwareFault.bit();
    for _ in 0..10 {
        assert!(tick(&mut control).approved, "healthy ticks are approved");
    }
    sim.report_fault(FaultCode::OverCurrent, 2);
    while link.fault().is_none() {
        assert!(Instant::now() < end, "the fault never arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    let incidents = control.governor().incidents();
    while incidents.pop().is_some() {}
    for _ in 0..50 {
        let v = tick(&mut control);
        assert!(!v.approved && v.failed & fault_bit != 0, "a latched fault holds the arm");
    }
    let i = incidents.pop().expect("the fault's incident");
    assert_eq!((i.check, i.joint), (Check::FirmwareFault, Some(2)));
    assert!(incidents.pop().is_none(), "one incident for the whole hold");
    control.reset(0);
    assert!(tick(&mut control).approved, "moves again after the reset");

    sim.report_fault(FaultCode::CommandTimeout, 255);
    let seen = link.fault().unwrap().received_ns;
    while link.fault().unwrap().received_ns == seen {
        assert!(Instant::now() < end, "the second fault never arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!tick(&mut control).approved, "a command timeout stops the tick it arrives");
    assert!(tick(&mut control).approved, "and does not latch");
}

/// After an e-stop reset the arm does not move on the policy output it had
/// before: it holds the measured pose until an output from a newer frame
/// arrives, and then starts from rest.
#[test]
fn after_a_reset_the_arm_waits_for_a_fresh_output() {
    let config = EdgeConfig::default();
    let mut control = ControlLoop::new(&config);
    let mut now = 1_000_000 * MS;
    // A healthy tick `now` with the arm measured at `at`, on `policy` (fresh).
    let tick = |control: &mut ControlLoop, now: u64, at: [f32; MAX_JOINTS], policy: &mut PolicyOutput| {
        let (mut state, _) = healthy(now);
        state.positions_rad = at;
        state.zone = gantry_edge::zone::ZoneReading { capture_ns: now - MS, frame_seq: 1, ..Default::default() };
        policy.frame_ns = now - 20 * MS;
        state.policy_frame_ns = policy.frame_ns;
        state.policy_frame_seq = policy.frame_seq;
        (control.tick(&state, policy), state)
    };
    let (_, mut policy) = healthy(now);
    policy.goal_rad[0] += 0.5;
    // Moving towards the goal first.
    let mut last = home();
    let mut moving = None;
    for _ in 0..30 {
        now += 10 * MS;
        let (v, state) = tick(&mut control, now, last, &mut policy);
        assert!(v.approved);
        last = v.command.targets_rad;
        moving = Some(state);
    }
    assert!(last[0] - home()[0] > 0.05, "the arm was moving: {last:?}");
    // A press and a release: held, latched.
    let mut state = moving.unwrap();
    now += 10 * MS;
    state.now_ns = now;
    state.estop_pressed = true;
    assert!(!control.tick(&state, &policy).approved);
    // The reset, with the newest output the one from before the press.
    control.reset(policy.frame_seq);
    let rest = last;
    for _ in 0..50 {
        now += 10 * MS;
        let (v, _) = tick(&mut control, now, rest, &mut policy);
        assert_eq!(v.command.targets_rad, rest, "moved on an output from before the reset");
    }
    // A fresh frame's output: motion starts again, from rest.
    policy.frame_seq += 1;
    let mut moved = false;
    for i in 0..30 {
        now += 10 * MS;
        let (v, _) = tick(&mut control, now, rest, &mut policy);
        assert!(v.approved, "tick {i} after the fresh output: {:#x}", v.failed);
        moved |= v.command.targets_rad[0] > rest[0] + 1e-4;
    }
    assert!(moved, "the fresh output moves the arm");
}
