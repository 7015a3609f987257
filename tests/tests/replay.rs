//! Replay of a recorded incident. A robot on the simulator works until a
//! person walks into the workspace (the governor stops the arm), then the
//! recorded segment goes through `gantry-edge replay`'s engine offline:
//!
//! - on the recorded model, every replayed action (joint goal and gripper)
//!   and every governor verdict (approved, failed checks, hold, command)
//!   equals the recording bit for bit, the stop for the person included;
//! - on a different model (the same network with another input
//!   normalisation), the actions differ, and so do the commands the governor
//!   lets through, while it still stops the arm for the person.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use gantry_edge::daemon::Daemon;
use gantry_edge::governor::Check;
use gantry_edge::pipeline::Options;
use gantry_tests::{robot_config, wait_for};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline");

/// The baseline network under another normalisation: a different model.
fn other_model(dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(format!("{MODEL}/model.onnx"), dir.join("model.onnx")).unwrap();
    let manifest = std::fs::read_to_string(format!("{MODEL}/manifest.toml"))
        .unwrap()
        .replace("version = \"baseline-2\"", "version = \"baseline-2-renormalised\"")
        .replace("mean = [0.485, 0.456, 0.406]", "mean = [0.2, 0.6, 0.1]")
        .replace("scale_mm = 2000.0", "scale_mm = 900.0");
    assert!(manifest.contains("renormalised") && manifest.contains("scale_mm = 900.0"));
    std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
    dir.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_incident_replays_bit_for_bit_and_another_model_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = robot_config("robot-replay", &tmp.path().join("robot"), "mqtt://127.0.0.1:1");
    (config.camera.width, config.camera.height) = (320, 240);
    (config.depth.width, config.depth.height) = (424, 240);
    config.synthetic.person_event = true;
    config.synthetic.person_enter_s = 2.0;
    config.synthetic.person_leave_s = 3.0;
    let daemon = Daemon::start(&config, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    let view = daemon.view();
    // Working first, then the person: the governor's rejections, then the
    // post-roll's samples (two seconds of frames after the incident).
    let person = || view.governor.per_check[Check::WorkspaceClear as usize].load(Relaxed);
    wait_for("the person to be seen", Duration::from_secs(30), || person() > 0).await;
    let at_incident = view.recorder.samples.load(Relaxed);
    wait_for("the incident's samples", Duration::from_secs(30), || {
        view.recorder.samples.load(Relaxed) >= at_incident + 50
    })
    .await;
    daemon.stop().await;

    let segments: Vec<_> = std::fs::read_dir(tmp.path().join("robot/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "mcap"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");

    let same = gantry_edge::replay::replay(&segments[0], MODEL).unwrap();
    eprintln!("same model:\n{same}");
    assert!(same.frames >= 60, "the incident's frames: {same:?}");
    assert!(same.ticks >= 200, "the incident's ticks: {same:?}");
    assert!(same.approved_recorded > 0, "the arm was moving before the person came: {same:?}");
    assert!(same.rejected_recorded.get("workspace_clear").is_some_and(|n| *n > 0), "{same:?}");
    assert_eq!(same.actions_identical, same.frames, "every action, bit for bit: {same:?}");
    assert_eq!(same.verdicts_identical, same.ticks, "every verdict, bit for bit: {same:?}");
    // New outputs were answered ahead of the schedule, and replayed so.
    assert!(same.ahead_recorded > 0 && same.ahead_declined == 0, "{same:?}");
    assert!(same.ticks_on_replayed_frames * 10 >= same.ticks * 9, "{same:?}");
    assert_eq!(same.rejected_replayed, same.rejected_recorded);
    assert_eq!(same.max_command_difference_rad, 0.0);

    let other = gantry_edge::replay::replay(&segments[0], &other_model(&tmp.path().join("other"))).unwrap();
    eprintln!("another model:\n{other}");
    assert_eq!((other.frames, other.ticks, other.ahead_recorded), (same.frames, same.ticks, same.ahead_recorded));
    assert!(other.actions_identical * 2 < other.frames, "the other model acts differently: {other:?}");
    assert!(other.verdicts_identical < other.ticks, "and the governor decides on its actions: {other:?}");
    assert!(other.max_command_difference_rad > 0.0);
    assert!(other.rejected_replayed.get("workspace_clear").is_some_and(|n| *n > 0), "still stopped for the person");
}
