//! The real-time core under bad numbers and stalls, through the real threads:
//! one robot on the simulated firmware, no cloud.
//!
//! - Each input that enters the real-time path is made non-finite (or, for the
//!   encoders, reported failed) for 1 s and for 10 s: the control loop keeps
//!   ticking, the governor rejects the input under its own check, the page says
//!   what is wrong in words, no thread dies, nothing non-finite reaches the
//!   firmware, and the robot moves again once the input is good.
//! - The control thread is stopped (a test hook): the firmware brings the arm to
//!   a controlled stop within its command timeout plus a control period, the
//!   supervisor reports the stall within 100 ms and names the thread, and after
//!   `realtime.stall_exit_s` it asks the daemon to exit.
//! - A policy that panics: the panic is caught, the inference thread is
//!   reported dead, the robot is held.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_edge::daemon::Daemon;
use gantry_edge::pipeline::{Options, Parts, RtThread};
use gantry_firmware_bridge::sim::SimHandle;
use gantry_tests::faults::{arm_moving, says, FaultyPolicy, PolicyFaults, StatusPage, LIMIT};
use gantry_tests::{free_port, robot_config};
use serde_json::Value;

/// The robot tests here each run real-time threads; on 2 cores they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rejects(s: &Value, check: &str) -> u64 {
    s["governor"]["rejects_by_check"][check].as_u64().unwrap_or_else(|| panic!("no check {check} in {s:#}"))
}

fn no_thread_died(s: &Value) {
    for t in s["loop"]["threads"].as_array().unwrap() {
        assert_eq!(t["dead"], false, "a thread died: {s:#}");
    }
}

async fn start(options: Options, tweak: impl FnOnce(&mut gantry_config::EdgeConfig)) -> Robot {
    let tmp = tempfile::tempdir().unwrap();
    // No cloud: the broker port is closed, the robot buffers.
    let mut config = robot_config("robot-rt", tmp.path(), &format!("mqtt://127.0.0.1:{}", free_port()));
    config.control.recover_after_s = 1.0;
    tweak(&mut config);
    let mut parts = Parts::from_config(&config, gantry_hal::Pacing::RealTime).unwrap();
    let faults = Arc::new(PolicyFaults::default());
    parts.primary = Box::new(FaultyPolicy::new(parts.primary, faults.clone()));
    let daemon = Daemon::start_with_parts(&config, parts, options).await.unwrap();
    let page = StatusPage::new(daemon.status_addr);
    Robot { daemon, page, faults, config, _tmp: tmp }
}

struct Robot {
    daemon: Daemon,
    page: StatusPage,
    faults: Arc<PolicyFaults>,
    config: gantry_config::EdgeConfig,
    _tmp: tempfile::TempDir,
}

impl Robot {
    fn sim(&self) -> &SimHandle {
        self.daemon.pipeline().simulator().expect("the simulated firmware")
    }

    /// Running on the configured policy, the governor letting commands through
    /// again, and the arm moving.
    async fn working(&self, after: &str) -> Value {
        let s = self
            .page
            .until(&format!("running again after {after}"), |s| {
                s["mode"] == "running" && s["firmware"]["link_alive"] == true
            })
            .await;
        // The last rejections of the fault may still be counted while the
        // page already says running: wait for a window of 300 ms with none.
        let counts =
            |s: &Value| (s["governor"]["checks"].as_u64().unwrap(), s["governor"]["rejects"].as_u64().unwrap());
        let mut before = counts(&s);
        let deadline = Instant::now() + LIMIT;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.page.status().await;
            let (checks, rejects) = counts(&now);
            if checks > before.0 + 10 && rejects == before.1 {
                break;
            }
            assert!(Instant::now() < deadline, "{after}: still rejecting: {now:#}");
            before = (checks, rejects);
        }
        arm_moving(self.sim(), after).await;
        s
    }
}

struct BadInput {
    what: &'static str,
    check: &'static str,
    words: &'static str,
    /// The governor holds the arm for it (a policy fault steps down to the
    /// baseline instead, which keeps working).
    holds: bool,
    set: fn(&Robot, bool),
}

const BAD_INPUTS: [BadInput; 6] = [
    BadInput {
        what: "policy output NaN",
        check: "policy_output_finite",
        words: "policy produced an action that is not a number",
        holds: false,
        set: |r, on| r.faults.corrupt_output(on.then_some(f32::NAN)),
    },
    BadInput {
        what: "policy output infinite",
        check: "policy_output_finite",
        words: "policy produced an action that is not a number",
        holds: false,
        set: |r, on| r.faults.corrupt_output(on.then_some(f32::INFINITY)),
    },
    BadInput {
        what: "firmware joint position NaN",
        check: "joint_positions_finite",
        words: "joint positions that are not numbers",
        holds: true,
        set: |r, on| r.sim().corrupt_position(on.then_some(f32::NAN)),
    },
    BadInput {
        what: "firmware joint velocities infinite",
        check: "joint_velocities_finite",
        words: "joint velocities that are not numbers",
        holds: true,
        set: |r, on| r.sim().corrupt_velocity(on.then_some(f32::INFINITY)),
    },
    BadInput {
        what: "firmware telemetry NaN",
        check: "telemetry_finite",
        words: "temperatures or pressure that are not numbers",
        holds: true,
        set: |r, on| r.sim().corrupt_telemetry(on.then_some(f32::NAN)),
    },
    BadInput {
        what: "firmware encoder failed",
        check: "encoders_ok",
        words: "failed joint encoder",
        holds: true,
        set: |r, on| r.sim().fail_encoders(if on { 0b100 } else { 0 }),
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_non_finite_input_is_rejected_under_its_own_check_and_the_loop_lives() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let robot = start(Options::default(), |_| {}).await;
    robot.working("start-up").await;
    for input in &BAD_INPUTS {
        for hold in [Duration::from_secs(1), Duration::from_secs(10)] {
            let what = format!("{} for {} s", input.what, hold.as_secs());
            arm_moving(robot.sim(), &format!("before {what}")).await;
            let before = robot.page.status().await;
            let sim_before = robot.sim().state();
            (input.set)(&robot, true);
            let end = Instant::now() + hold;
            let mut ticks = before["loop"]["ticks"].as_u64().unwrap();
            let mut said = false;
            while Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let s = robot.page.status().await;
                let now_ticks = s["loop"]["ticks"].as_u64().unwrap();
                assert!(now_ticks > ticks, "{what}: the control loop stopped at {now_ticks} ticks: {s:#}");
                ticks = now_ticks;
                no_thread_died(&s);
                said |= says(&s, input.words);
            }
            let during = robot.page.status().await;
            assert!(
                rejects(&during, input.check) > rejects(&before, input.check),
                "{what}: nothing rejected under {}: {during:#}",
                input.check
            );
            assert!(said || says(&during, input.words), "{what}: the page never said \"{}\": {during:#}", input.words);
            if input.holds {
                let sim = robot.sim().state();
                assert!(sim.velocities_rad_s.iter().all(|v| v.abs() < 1e-3), "{what}: the arm moves: {sim:?}");
            }
            let sim = robot.sim().state();
            assert_eq!(
                sim.commands_non_finite, sim_before.commands_non_finite,
                "{what}: a non-finite command was sent"
            );
            assert!(sim.commands_received > sim_before.commands_received, "{what}: commands stopped");
            (input.set)(&robot, false);
            robot.working(&what).await;
        }
    }
    let last = robot.page.status().await;
    no_thread_died(&last);
    assert_eq!(last["loop"]["threads"].as_array().unwrap().iter().filter(|t| t["stalled"] == true).count(), 0);
    robot.daemon.stop().await;
}

static STALL_CONTROL: AtomicBool = AtomicBool::new(false);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_control_thread_stops_the_arm_and_is_reported() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let options = Options { stall_control: Some(&STALL_CONTROL), ..Options::default() };
    let robot = start(options, |c| c.realtime.stall_exit_s = 3.0).await;
    let status = robot.daemon.pipeline().status();
    robot.working("start-up").await;
    let period = Duration::from_secs_f64(1.0 / f64::from(robot.config.control.rate_hz));
    let timeout = Duration::from_millis(robot.config.firmware.command_timeout_ms);

    arm_moving(robot.sim(), "before the stall").await;
    STALL_CONTROL.store(true, Relaxed);
    let stalled_at = Instant::now();
    // The supervisor's report: polled finely, to measure how soon it comes.
    while status.stalled.load(Relaxed) & RtThread::Control.bit() == 0 {
        assert!(stalled_at.elapsed() < LIMIT, "the stall was never reported");
        std::thread::sleep(Duration::from_millis(1));
    }
    let reported_after = stalled_at.elapsed();
    assert!(reported_after <= Duration::from_millis(100), "the stall was reported after {reported_after:?}");
    println!("stall reported after {reported_after:?}");
    // The thread's last round, on the clock the supervisor measures with: it
    // can precede the switch above by a period or more on a loaded machine.
    let last_round_ns = status.progress_ns[RtThread::Control as usize].load(Relaxed);

    // The firmware stops the arm on its own: no fresh command came.
    gantry_tests::wait_for("the firmware's timeout stop", LIMIT, || robot.sim().state().holding_for_timeout).await;
    let sim = robot.sim().state();
    let gap = Duration::from_micros(sim.timeout_stop_since_us - sim.last_command_us);
    println!("firmware stop began {gap:?} after the last command");
    assert!(gap >= timeout, "stopped before the timeout: {gap:?}");
    // One simulator step (2 ms) is the firmware's own resolution.
    assert!(gap <= timeout + period + Duration::from_millis(2), "stopped {gap:?} after the last command");
    gantry_tests::wait_for("the arm at rest", LIMIT, || robot.sim().state().velocities_rad_s.iter().all(|v| *v == 0.0))
        .await;

    let s = robot
        .page
        .until("the page red, naming the thread, the rate falling to zero", |s| {
            s["state"] == "red" && says(s, "gantry-control stalled") && s["loop"]["rate_hz"].as_f64() == Some(0.0)
        })
        .await;
    assert_eq!(s["mode"], "safe_stop", "{s:#}");
    let control = s["loop"]["threads"].as_array().unwrap().iter().find(|t| t["name"] == "gantry-control").unwrap();
    assert_eq!(control["stalled"], true);
    assert!(control["last_progress_age_s"].as_f64().unwrap() >= 1.0, "{control}");
    let recent = s["governor"]["recent_incidents"].as_array().unwrap();
    assert!(recent.iter().any(|i| i["check"] == "realtime_threads"), "no incident recorded: {s:#}");

    // Past realtime.stall_exit_s the daemon is told to exit.
    gantry_tests::wait_for("the exit request", LIMIT, || status.fatal.load(Relaxed)).await;
    let silent = Duration::from_nanos(gantry_hal::clock::monotonic_ns() - last_round_ns);
    assert!(silent >= Duration::from_secs(3), "exit requested after {silent:?} of silence");

    STALL_CONTROL.store(false, Relaxed);
    gantry_tests::wait_for("the stall cleared", LIMIT, || status.stalled.load(Relaxed) == 0).await;
    robot.working("the stall").await;
    robot.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_a_real_time_thread_is_caught_and_holds_the_robot() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let robot = start(Options::default(), |_| {}).await;
    robot.working("start-up").await;
    arm_moving(robot.sim(), "before the panic").await;
    robot.faults.panic.store(true, Relaxed);
    let s = robot.page.until("the dead thread reported", |s| s["state"] == "red" && says(s, "gantry-infer died")).await;
    assert_eq!(s["mode"], "safe_stop", "{s:#}");
    let infer = s["loop"]["threads"].as_array().unwrap().iter().find(|t| t["name"] == "gantry-infer").unwrap();
    assert_eq!(infer["dead"], true);
    // The other threads run on: the control loop ticks and holds the arm.
    let ticks = s["loop"]["ticks"].as_u64().unwrap();
    let later = robot.page.until("ticks advancing", |x| x["loop"]["ticks"].as_u64().unwrap() > ticks + 50).await;
    assert!(rejects(&later, "realtime_threads") > 0, "{later:#}");
    gantry_tests::wait_for("the arm held", LIMIT, || {
        robot.sim().state().velocities_rad_s.iter().all(|v| v.abs() < 1e-3)
    })
    .await;
    robot.daemon.stop().await;
}
