//! The fault suite, robot side: one robot on the simulator with its cloud, and
//! one fault at a time — a camera that stops delivering frames, a policy that
//! fails, a policy that hangs, a firmware link that is cut, a firmware link
//! that sends garbage, the broker down. For each: the daemon stays up, the
//! governor holds the arm still where the fault leaves it without a safe
//! command, the status page (`/api/status`, over HTTP) says what is wrong,
//! and everything is back to normal once the fault clears.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_edge::daemon::Daemon;
use gantry_edge::pipeline::{Options, Parts};
use gantry_firmware_bridge::sim::SimHandle;
use gantry_sync::Service;
use gantry_tests::faults::{says, FaultyPolicy, PolicyFaults, StallingSource, StatusPage};
use gantry_tests::{cloud_config, free_port, robot_config};
use serde_json::Value;

const LIMIT: Duration = gantry_tests::faults::LIMIT;

fn rejects(s: &Value, check: &str) -> u64 {
    s["governor"]["rejects_by_check"][check].as_u64().unwrap()
}

/// The arm moves: some joint travels within a few hundred milliseconds. A
/// fault test asserts this first, or `arm_still` would pass on an arm that
/// never moved.
async fn arm_moving(sim: &SimHandle, what: &str) {
    gantry_tests::faults::arm_moving(sim, what).await
}

/// The arm stands still: every joint's speed in the simulator near zero.
async fn arm_still(sim: &SimHandle, what: &str) {
    let deadline = Instant::now() + LIMIT;
    while sim.state().velocities_rad_s.iter().any(|v| v.abs() > 1e-3) {
        assert!(Instant::now() < deadline, "{what}: the arm keeps moving: {:?}", sim.state().velocities_rad_s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …and stays still: no command moves it while the fault lasts.
    let before = sim.state().positions_rad;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = sim.state().positions_rad;
    assert!(before.iter().zip(&after).all(|(a, b)| (a - b).abs() < 1e-3), "{what}: moved from {before:?} to {after:?}");
}

async fn start_cloud(dir: &std::path::Path, port: u16) -> Service {
    let service = Service::start(&cloud_config(dir, &format!("127.0.0.1:{port}"))).await.unwrap();
    let stats = service.ingest.clone();
    gantry_tests::wait_for("ingestion subscribed", LIMIT, || stats.subscribed.load(Relaxed)).await;
    service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_holds_the_robot_safe_is_reported_and_clears() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cloud = Some(start_cloud(&tmp.path().join("cloud"), port).await);
    let mut config = robot_config("robot-faults", &tmp.path().join("robot"), &format!("mqtt://127.0.0.1:{port}"));
    config.control.recover_after_s = 1.0;

    let mut parts = Parts::from_config(&config, gantry_hal::Pacing::RealTime).unwrap();
    let stalled = Arc::new(AtomicBool::new(false));
    let faults = Arc::new(PolicyFaults::default());
    parts.camera = Box::new(StallingSource { inner: parts.camera, stalled: stalled.clone() });
    parts.primary = Box::new(FaultyPolicy::new(parts.primary, faults.clone()));
    let daemon = Daemon::start_with_parts(&config, parts, Options::default()).await.unwrap();
    let sim = daemon.pipeline().simulator().expect("the simulated firmware");
    let robot = StatusPage::new(daemon.status_addr);
    robot.healthy("start-up").await;

    // The camera stops: no new policy output, so the governor rejects the
    // stale one and holds the arm.
    arm_moving(sim, "before the camera stall").await;
    let s = robot.status().await;
    stalled.store(true, Relaxed);
    robot
        .until("the camera stall reported, the governor holding", |x| {
            says(x, "camera delivering no frames")
                && rejects(x, "policy_output_fresh") > rejects(&s, "policy_output_fresh")
        })
        .await;
    arm_still(sim, "camera stalled").await;
    stalled.store(false, Relaxed);
    robot.healthy("the camera stall").await;

    // The policy fails: the pipeline steps down to the baseline, which keeps
    // the robot working; back on the policy once it runs again.
    faults.fail.store(true, Relaxed);
    let during = robot.until("the step down to the baseline", |s| s["mode"] == "degraded").await;
    assert!(says(&during, "running the baseline policy"), "{during:#}");
    assert_eq!(during["model"]["on_baseline"], true);
    faults.fail.store(false, Relaxed);
    let after = robot.healthy("the failing policy").await;
    assert!(after["loop"]["fallbacks"].as_u64().unwrap() >= 1);

    // The policy hangs inside a run: nothing comes out, the governor holds.
    arm_moving(sim, "before the policy hangs").await;
    let s = robot.status().await;
    faults.hang.store(true, Relaxed);
    robot
        .until("the hung policy reported, the governor holding", |x| {
            says(x, "no policy output") && rejects(x, "policy_output_fresh") > rejects(&s, "policy_output_fresh")
        })
        .await;
    arm_still(sim, "policy hung").await;
    faults.hang.store(false, Relaxed);
    robot.healthy("the hung policy").await;

    // The firmware link is cut: the governor sees the link dead; the firmware
    // holds the arm on its own host timeout.
    arm_moving(sim, "before the link is cut").await;
    let s = robot.status().await;
    sim.cut_link(true);
    let during = robot
        .until("the cut link reported, the governor holding", |x| {
            says(x, "firmware link down") && rejects(x, "firmware_link") > rejects(&s, "firmware_link")
        })
        .await;
    assert_eq!(during["firmware"]["link_alive"], false);
    gantry_tests::wait_for("the firmware holding without its host", LIMIT, || sim.state().holding_for_timeout).await;
    arm_still(sim, "link cut").await;
    sim.cut_link(false);
    let after = robot.healthy("the cut link").await;
    assert!(after["firmware"]["link_losses"].as_u64().unwrap() > s["firmware"]["link_losses"].as_u64().unwrap());

    // The firmware sends garbage: rejected and counted, the link survives.
    let s = robot.status().await;
    sim.inject_garbage(50_000);
    let during = robot
        .until("the garbage counted", |x| {
            x["firmware"]["frames_rejected"].as_u64().unwrap() > s["firmware"]["frames_rejected"].as_u64().unwrap()
        })
        .await;
    robot.healthy("garbage on the link").await;
    // Valid frames keep arriving (two reads a millisecond apart may see the same count).
    let ok_during = during["firmware"]["frames_ok"].as_u64().unwrap();
    robot.until("valid frames after the garbage", |x| x["firmware"]["frames_ok"].as_u64().unwrap() > ok_during).await;

    // The broker goes down with the cloud: the robot buffers and says so.
    cloud.take().unwrap().stop().await;
    let during = robot.until("the outage reported", |s| says(s, "cloud unreachable")).await;
    assert_eq!(during["sync"]["connected"], false);
    robot.until("batches buffered", |s| s["sync"]["backlog"].as_u64().unwrap() > 0).await;
    cloud = Some(start_cloud(&tmp.path().join("cloud"), port).await);
    robot.healthy("the outage").await;
    robot.until("the backlog sent", |s| s["sync"]["backlog"] == 0).await;

    // Through it all: one daemon, never restarted, the control loop ticking.
    let last = robot.status().await;
    assert!(last["uptime_s"].as_f64().unwrap() > 1.0);
    assert!(last["loop"]["ticks"].as_u64().unwrap() > 0);
    daemon.stop().await;
    cloud.unwrap().stop().await;
}
