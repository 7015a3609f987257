//! Speed and separation monitoring through the real threads: the synthetic
//! depth camera (drawing the person and the arm itself at its measured pose),
//! the zone on the depth thread, the governor on the control thread and the
//! firmware simulator over a pseudo-terminal. A policy that sweeps the base
//! joint back and forth keeps the arm moving at its speed limit, so each test
//! first sees the arm moving fast.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gantry_config::EdgeConfig;
use gantry_edge::governor::Check;
use gantry_edge::infer::tract::TractBackend;
use gantry_edge::infer::{InferError, Inputs, PolicyBackend};
use gantry_edge::model::{IoShape, Manifest, ModelPackage};
use gantry_edge::pipeline::{Options, Parts, Pipeline};
use gantry_edge::zone::ZoneReading;
use gantry_hal::Pacing;

/// Swings joint 0 by up to 0.4 rad ahead of where it is, one second each way.
struct Sweep {
    inner: TractBackend,
    action: [f32; 7],
    runs: u32,
}

impl PolicyBackend for Sweep {
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
        self.runs += 1;
        let way = if (self.runs / 30).is_multiple_of(2) { 1.0 } else { -1.0 };
        self.action = [0.4 * way, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5];
        Ok(&self.action)
    }
}

fn sweep() -> Box<dyn PolicyBackend> {
    let model = ModelPackage::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline")).unwrap();
    Box::new(Sweep { inner: TractBackend::load(&model, 1).unwrap(), action: [0.0; 7], runs: 0 })
}

fn config(dir: &std::path::Path) -> EdgeConfig {
    let mut config = EdgeConfig::default();
    config.robot.data_dir = dir.display().to_string();
    config.realtime.lock_memory = false;
    config.camera.width = 640;
    config.camera.height = 480;
    config
}

fn start(config: &EdgeConfig) -> Pipeline {
    let mut parts = Parts::from_config(config, Pacing::RealTime).unwrap();
    assert!(parts.scene_arm.is_some(), "the synthetic depth camera draws the arm");
    parts.primary = sweep();
    parts.baseline = sweep();
    Pipeline::start(config, parts, Options::default()).unwrap()
}

/// What the test sees at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    zone: ZoneReading,
    /// The last control tick the simulator took, and the targets it holds.
    seq: u32,
    targets: [f32; 8],
    velocities: [f32; 8],
}

fn sample(p: &Pipeline) -> Sample {
    let s = p.simulator().unwrap().state();
    Sample {
        at: Instant::now(),
        zone: p.zone(),
        seq: s.last_command_seq,
        targets: s.targets_rad,
        velocities: s.velocities_rad_s,
    }
}

/// Samples every millisecond for `d`.
fn watch(p: &Pipeline, d: Duration) -> Vec<Sample> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    while Instant::now() < end {
        out.push(sample(p));
        std::thread::sleep(Duration::from_millis(1));
    }
    out
}

fn fastest(samples: &[Sample]) -> f32 {
    samples.iter().flat_map(|s| s.velocities.iter().take(6)).fold(0.0, |m, v| m.max(v.abs()))
}

fn rejects(p: &Pipeline, check: Check) -> u64 {
    p.governor.per_check[check as usize].load(Ordering::Relaxed)
}

/// Waits until the arm sweeps at most of its speed (the policy is running and
/// nothing holds it).
fn wait_moving_fast(p: &Pipeline) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let v = fastest(&watch(p, Duration::from_millis(300)));
        if v > 0.8 {
            return;
        }
        assert!(Instant::now() < end, "the arm never moved fast: {v} rad/s");
    }
}

/// A person in the scene from `enter_s` to `leave_s` (the cameras' time).
fn with_person(config: &mut EdgeConfig, enter_s: f64, leave_s: f64) {
    config.synthetic.person_event = true;
    config.synthetic.person_enter_s = enter_s;
    config.synthetic.person_leave_s = leave_s;
}

/// The first sample whose workspace reading `holds`, within 15 s.
fn first_reading(p: &Pipeline, what: &str, holds: impl Fn(&ZoneReading) -> bool) -> Sample {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let s = sample(p);
        if holds(&s.zone) {
            return s;
        }
        assert!(Instant::now() < end, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A person steps inside the protective separation distance: the commanded
/// motion ends within one control period plus the stopping time, counted in
/// control ticks from the first depth reading that shows the person; motion
/// resumes only after the zone has stayed clear for `resume_after_ms`.
#[test]
fn a_person_inside_the_separation_distance_stops_the_arm() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    with_person(&mut config, 6.0, 8.0);
    // Leaning over the table beside the arm, about half a metre from it.
    config.synthetic.person_position_m = [-0.3, 0.4];
    config.synthetic.person_height_m = 0.7;
    let separation = gantry_edge::governor::separation(&config);
    let stop_m = separation.stop_distance_m();
    let period_s = 1.0 / f64::from(config.control.rate_hz);
    let p = start(&config);
    wait_moving_fast(&p);
    let before = rejects(&p, Check::WorkspaceClear);

    // From the first reading that shows the person near the arm.
    let first = first_reading(&p, "the person never showed up", |z| z.intrusion);
    let nearest_m = f64::from(first.zone.nearest_mm) / 1e3;
    assert!(nearest_m < stop_m, "the person at {nearest_m} m is inside the stop distance {stop_m} m");
    assert!(first.zone.arm_pixels > 0, "the camera sees the arm too: {:?}", first.zone);
    let during = watch(&p, Duration::from_millis(1500));
    // The last tick whose command still moved a target.
    let mut last_move = first.seq;
    for w in during.windows(2) {
        if w[0].targets.iter().zip(&w[1].targets).any(|(a, b)| (a - b).abs() > 1e-6) {
            last_move = w[1].seq;
        }
    }
    let ticks = last_move.wrapping_sub(first.seq);
    let allowed = 1 + (separation.stop_time_s / period_s).ceil() as u32;
    eprintln!("person at {nearest_m} m: commanded motion ended {ticks} ticks after the reading (at most {allowed})");
    assert!(ticks <= allowed, "motion went on for {ticks} ticks after the person was seen; at most {allowed}");
    assert!(rejects(&p, Check::WorkspaceClear) > before, "the governor holds the arm for the zone");
    // Stopped: the arm itself comes to rest in the simulator too.
    let rest = &during[during.len() - 200..];
    assert!(fastest(rest) < 0.05, "the arm still moves at {} rad/s", fastest(rest));

    // The person leaves at 8 s; the zone must stay clear for resume_after
    // before the arm moves again.
    let cleared = first_reading(&p, "the person never left", |z| z.nearest_mm == ZoneReading::NONE && !z.intrusion).at;
    let after = watch(&p, Duration::from_millis(config.governor.resume_after_ms + 1500));
    let resumed = after.windows(2).find(|w| w[0].targets.iter().zip(&w[1].targets).any(|(a, b)| (a - b).abs() > 1e-6));
    let resumed = resumed.expect("the arm never moved again").first().copied().map(|s| s.at);
    let waited = resumed.unwrap().duration_since(cleared);
    assert!(
        waited >= Duration::from_millis(config.governor.resume_after_ms).saturating_sub(Duration::from_millis(70)),
        "moved again {waited:?} after the zone cleared"
    );
    p.stop();
}

/// A person in the slow band (beyond the stop distance): the arm keeps
/// moving, but no faster than the separation allows.
#[test]
fn a_person_in_the_slow_band_slows_the_arm() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    with_person(&mut config, 6.0, 11.0);
    // About 0.7 m from the arm: beyond the stop distance (0.65 m), so near
    // that the arm may use a few per cent of its velocity limits.
    config.synthetic.person_position_m = [0.6, 0.6];
    config.synthetic.person_height_m = 0.8;
    let separation = gantry_edge::governor::separation(&config);
    let p = start(&config);
    wait_moving_fast(&p);
    let fast = fastest(&watch(&p, Duration::from_millis(1000)));
    let first = first_reading(&p, "the person never showed up", |z| z.intrusion);
    let nearest_m = f64::from(first.zone.nearest_mm) / 1e3;
    assert!(nearest_m > separation.stop_distance_m(), "{nearest_m} m is in the slow band, not a stop");
    let stops = rejects(&p, Check::WorkspaceClear);
    // Settle (braking, and the simulated servo's lag), then watch.
    std::thread::sleep(Duration::from_millis(500));
    let slow = watch(&p, Duration::from_millis(2000));
    let speed = fastest(&slow);
    let travelled = slow.first().unwrap().targets[0] - slow.last().unwrap().targets[0];
    assert!(speed < fast / 4.0, "slowed from {fast} to {speed} rad/s");
    // No faster than the share of the limits the nearest reading allowed
    // (the servo tracks the commanded speed within a little).
    let governor = gantry_edge::governor::SafetyGovernor::new(&config);
    let share = slow
        .iter()
        .map(|s| governor.speed_scale(&gantry_edge::governor::RobotState { zone: s.zone, ..Default::default() }))
        .fold(0.0f32, f32::max);
    let limit = config.governor.max_velocity_rad_s[0] as f32 * share;
    eprintln!("person at {nearest_m} m: {fast} rad/s before, {speed} rad/s in the slow band ({limit} allowed)");
    assert!(share < 0.2 && speed <= limit + 0.02, "{speed} rad/s against {limit} rad/s allowed");
    assert!(travelled.abs() > 1e-3 || fastest(&slow) > 1e-3, "slowed, not stopped");
    assert_eq!(rejects(&p, Check::WorkspaceClear), stops, "no stop in the slow band");
    assert!(slow.iter().all(|s| s.zone.intrusion), "the person stays in view");
    p.stop();
}

/// No person: the camera sees the arm sweep through the zone, and its own
/// links never make an intrusion or a stop.
#[test]
fn the_arm_never_triggers_the_zone() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let p = start(&config);
    wait_moving_fast(&p);
    let (stops, slows) = (rejects(&p, Check::WorkspaceClear), rejects(&p, Check::SeparationDistance));
    let seen = watch(&p, Duration::from_secs(3));
    assert!(fastest(&seen) > 0.8, "the arm kept sweeping");
    assert!(seen.iter().all(|s| s.zone.arm_pixels > 1000), "the camera sees the arm in every frame");
    assert!(seen.iter().all(|s| !s.zone.intrusion && s.zone.occupied_pixels == 0), "{:?}", seen.last());
    assert_eq!((rejects(&p, Check::WorkspaceClear), rejects(&p, Check::SeparationDistance)), (stops, slows));
    p.stop();
}

/// A person the depth camera gets no reading from (dark clothing): the
/// pixels over the zone without a reading make it blind, and the arm holds.
#[test]
fn invalid_depth_over_the_zone_holds_the_arm() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    with_person(&mut config, 6.0, 30.0);
    config.synthetic.person_reads_invalid = true;
    let p = start(&config);
    wait_moving_fast(&p);
    let first = first_reading(&p, "the camera never went blind", |z| z.blind);
    assert!(!first.zone.intrusion, "nothing it can see is in the zone: {:?}", first.zone);
    std::thread::sleep(Duration::from_millis(600));
    let held = watch(&p, Duration::from_millis(500));
    assert!(held.windows(2).all(|w| w[0].targets == w[1].targets), "the arm holds still");
    assert!(fastest(&held) < 0.05, "{}", fastest(&held));
    assert!(rejects(&p, Check::WorkspaceClear) > 0);
    p.stop();
}
