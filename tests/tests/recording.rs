//! A recording opens in Foxglove's readers: three seconds of a robot's work
//! (control ticks, frames with their model inputs, camera images, a task, an
//! incident, health) go through the recorder's taps as the daemon's threads
//! hand them over; every segment is then read by Python's `mcap` with
//! `mcap-protobuf-support` (`scripts/check-recording.py`), which decodes every
//! message from the schemas embedded in the file alone. Its counts must match
//! the `mcap` crate's, the arm's transforms chain from `base` to `tool`, the
//! images are JPEG, and the training samples are those the policy says.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_edge::record::segment::Encoding;
use gantry_edge::record::taps::{ControlRecord, FrameRecord, SampleInput, SampleTap, Taps, Thumb};
use gantry_edge::record::{Recorder, Settings, TaskEvent};
use gantry_hal::{PixelFormat, StreamInfo};
use serde_json::Value;

const MODEL: (u32, u32) = (32, 24);
const DEPTH: (u32, u32) = (16, 12);

fn stream(width: u32, height: u32, format: PixelFormat) -> StreamInfo {
    StreamInfo {
        width,
        height,
        format,
        fps: 30,
        intrinsics: gantry_hal::frame::Intrinsics {
            fx: 500.0,
            fy: 500.0,
            cx: width as f32 / 2.0,
            cy: height as f32 / 2.0,
        },
        depth_unit_mm: 1.0,
    }
}

fn settings(dir: &std::path::Path) -> Settings {
    let config = gantry_config::EdgeConfig::default();
    let mut s = Settings::from_config(&config, "vision-test-1")
        .with_streams(stream(1920, 1080, PixelFormat::Rgb8), Some(stream(848, 480, PixelFormat::Depth16)));
    s.robot_id = "robot-rec".into();
    s.data_dir = dir.to_path_buf();
    s.encoding = Encoding { zstd_level: 3, chunk_bytes: 256 * 1024 };
    s
}

/// Everything the Python reader said about one segment.
fn python_read(path: &std::path::Path) -> Value {
    let python = gantry_tests::lake_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/check-recording.py");
    let out = std::process::Command::new(python).arg(script).arg(path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check-recording.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn every_channel_decodes_in_python_with_the_embedded_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut rec, _) = Recorder::open(settings(tmp.path())).unwrap();
    let (rgb_len, depth_len) = ((MODEL.0 * MODEL.1 * 3) as usize, (DEPTH.0 * DEPTH.1) as usize);
    let taps = Taps::new(100, stream(1920, 1080, PixelFormat::Rgb8), 480, 4, SampleTap::new(rgb_len, depth_len, 80), 4);
    let t0 = gantry_hal::clock::monotonic_ns();
    let ms = |m: u64| t0 + m * 1_000_000;
    let mut frame_seq = 0u64;
    let mut goals = BTreeMap::new();
    // Three seconds at 100 Hz; a frame every 33 ms; the task from 0.5 s to
    // 2.8 s; the governor rejects a command at 2.0 s.
    for tick in 0..300u64 {
        let now = ms(tick * 10);
        if tick == 50 {
            rec.drain(&taps);
            rec.record_task_at(&TaskEvent::Started { task_id: "task-7".into(), kind: "pick".into() }, now);
        }
        if tick * 10 >= frame_seq * 33 {
            let capture = ms(frame_seq * 33);
            let rgb: Vec<u8> = (0..rgb_len).map(|i| ((i as u64 * 7 + frame_seq) % 251) as u8).collect();
            let depth: Vec<u16> = (0..depth_len).map(|i| 500 + (i as u16 % 40)).collect();
            let mut goal = [0f32; gantry_config::edge::MAX_JOINTS];
            goal[..6].copy_from_slice(&[0.1, -0.5, 0.4, 0.0, 0.2, frame_seq as f32 / 100.0]);
            goals.insert(frame_seq, goal[5]);
            let positions = [0.1f32; gantry_config::edge::MAX_JOINTS];
            taps.samples.offer(&SampleInput {
                frame_seq,
                capture_ns: capture,
                rgb_size: MODEL,
                rgb: &rgb,
                depth_size: DEPTH,
                depth: &depth,
                depth_unit_mm: 1.0,
                joints: 6,
                positions_rad: &positions,
                velocities_rad_s: &[0.0; gantry_config::edge::MAX_JOINTS],
                goal_rad: &goal,
                goal_gripper: 0.5,
                from_baseline: false,
            });
            taps.push_frame(FrameRecord {
                frame_seq,
                capture_ns: capture,
                done_ns: capture + 9_000_000,
                ok: true,
                ..FrameRecord::default()
            });
            if frame_seq.is_multiple_of(15) {
                let thumb: Vec<u8> = (0..64 * 36 * 3).map(|i| ((i as u64 * 13 + frame_seq) % 241) as u8).collect();
                rec.record_thumb(&Thumb { frame_seq, capture_ns: capture, width: 64, height: 36, rgb: thumb.into() });
            }
            frame_seq += 1;
        }
        let mut r = ControlRecord {
            t_ns: now,
            seq: tick as u32,
            joints: 6,
            approved: tick != 200,
            frame_seq: frame_seq - 1,
            joint_state_ns: now - 1_000_000,
            ..ControlRecord::default()
        };
        r.positions_rad[..6].copy_from_slice(&[0.1, -0.5, 0.4, 0.0, 0.2, 0.3]);
        r.goal_rad = r.positions_rad;
        r.command_rad = r.positions_rad;
        if tick == 200 {
            r.failed = 1 << (gantry_edge::governor::Check::WorkspaceClear as u16);
            taps.push_incident(gantry_edge::governor::Incident {
                time_ns: now,
                check: gantry_edge::governor::Check::WorkspaceClear,
                failed: r.failed,
                value: 0.3,
                limit: 0.5,
                measure: gantry_edge::governor::Measure::DistanceM,
                joint: None,
                rejected: Default::default(),
                substituted: Default::default(),
                frame_seq: r.frame_seq,
            });
        }
        taps.push_control(r);
        if tick == 280 {
            rec.drain(&taps);
            let done = TaskEvent::Finished { task_id: "task-7".into(), success: true, reason: String::new() };
            rec.record_task_at(&done, now);
        }
        if tick.is_multiple_of(2) {
            rec.drain(&taps);
        }
    }
    rec.drain(&taps);
    let health = gantry_edge::health::HealthSnapshot { unix_ns: 1, robot_id: "robot-rec".into(), ..Default::default() };
    rec.record_health(&health.to_record());
    let stats = rec.stats();
    rec.close();
    std::thread::sleep(Duration::ZERO);

    let segments: Vec<_> = std::fs::read_dir(tmp.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mcap"))
        .collect();
    assert_eq!(segments.len(), 1);
    let path = &segments[0];
    let py = python_read(path);
    assert_eq!(py["problems"], serde_json::json!([]), "{py:#}");

    // The same counts through the `mcap` crate.
    let data = std::fs::read(path).unwrap();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for m in mcap::MessageStream::new(&data).unwrap() {
        *counts.entry(m.unwrap().channel.topic.clone()).or_default() += 1;
    }
    let py_counts: BTreeMap<String, u64> =
        py["counts"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
    assert_eq!(py_counts, counts);
    for def in gantry_edge::record::messages::ALL {
        assert!(counts.get(def.topic).is_some_and(|n| *n > 0), "{} has messages: {counts:?}", def.topic);
    }
    assert_eq!(counts["/tf"], 30, "the arm at 10 Hz for 3 s");
    // Every 30th frame (0, 30, 60, 90), and 75 inside the incident's
    // post-roll; 15 and 45 were in the pre-roll but older than one written.
    assert_eq!(counts["/camera/image"], 5);
    assert_eq!(py["first"]["/model_input/rgb"], serde_json::json!({"width": 32, "height": 24, "encoding": "rgb8"}));
    assert_eq!(py["first"]["/model_input/depth"]["encoding"], "16UC1");
    let chain = py["first"]["/tf"].as_array().unwrap();
    assert_eq!(chain.len(), 7, "six links and the tool: {chain:?}");
    assert_eq!(py["first"]["/arm"]["joints"], 6);

    // Samples: one a second during the task, every frame around the
    // incident; each once, in order; the task's id only on frames inside it.
    let samples = py["samples"].as_array().unwrap();
    let seqs: Vec<u64> = samples.iter().map(|s| s["frame_seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let reasons = |r: &str| samples.iter().filter(|s| s["reason"] == r).count();
    assert!(reasons("rate") >= 2, "{samples:?}");
    // The incident at 2.0 s: every frame of the pre-roll (2 s) newer than the
    // last sample written, and every frame of the post-roll (the 1 s left).
    let last_rate_before = samples
        .iter()
        .filter(|s| s["reason"] == "rate" && s["frame_seq"].as_u64().unwrap() * 33 < 2000)
        .map(|s| s["frame_seq"].as_u64().unwrap())
        .max()
        .unwrap();
    let incident: Vec<u64> =
        samples.iter().filter(|s| s["reason"] == "incident").map(|s| s["frame_seq"].as_u64().unwrap()).collect();
    assert_eq!(incident, (last_rate_before + 1..frame_seq).collect::<Vec<_>>(), "full rate around the incident");
    let task_frames = |s: &&Value| s["task_id"] == "task-7";
    let first_task_seq = samples.iter().find(task_frames).unwrap()["frame_seq"].as_u64().unwrap();
    assert!(first_task_seq * 33 >= 500, "frames before the task are not the task's");
    assert!(samples.iter().all(|s| s["joints"] == 6 && s["boot_id"].as_str().is_some_and(|b| b.len() == 16)));
    assert!(samples.iter().filter(|s| s["has_command"] == true).count() >= samples.len() - 1);
    assert_eq!(stats.samples.load(std::sync::atomic::Ordering::Relaxed), samples.len() as u64);
    assert!(goals.len() >= samples.len());
}
