//! A recording opens in Foxglove's readers: three seconds of a robot's work
//! (control ticks, frames with their model inputs, camera images, a task, an
//! incident, health) go through the recorder's taps as the daemon's threads
//! hand them over; every segment is then read by Python's `mcap` with
//! `mcap-protobuf-support` (`scripts/check-recording.py`), which decodes every
//! message from the schemas embedded in the file alone. Its counts must match
//! the `mcap` crate's, the arm's transforms chain from `base` to `tool`, the
//! images are JPEG, and the training samples are those the policy says.

use std::collections::BTreeMap;

use gantry_edge::record::Recorder;
use gantry_tests::recording;
use serde_json::Value;

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
    let (mut rec, _) = Recorder::open(recording::settings(tmp.path(), "robot-rec")).unwrap();
    let taps = recording::taps();
    let frame_seq = recording::run(&mut rec, &taps, gantry_hal::clock::monotonic_ns(), "task-7");
    let health = gantry_edge::health::HealthSnapshot { unix_ns: 1, robot_id: "robot-rec".into(), ..Default::default() };
    rec.record_health(&health.to_record());
    let stats = rec.stats();
    rec.close();

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
}

/// `hal`'s replay sources play a recording's model inputs back as camera and
/// depth frames: the recorded pixels, in order, stamped on the recorded clock,
/// then the end. Opened from the configuration as the daemon opens them.
#[test]
fn the_replay_sources_play_the_model_inputs_on_the_recorded_clock() {
    use gantry_hal::replay::{ReplaySource, Stream};
    use gantry_hal::{FrameSource, Pacing, PixelFormat};
    use prost::Message as _;

    let tmp = tempfile::tempdir().unwrap();
    let (mut rec, _) = Recorder::open(recording::settings(tmp.path(), "robot-rec")).unwrap();
    let taps = recording::taps();
    recording::run(&mut rec, &taps, gantry_hal::clock::monotonic_ns(), "task-9");
    rec.close();
    let path = std::fs::read_dir(tmp.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "mcap"))
        .unwrap();
    // What the recording holds, read with the `mcap` crate.
    let data = std::fs::read(&path).unwrap();
    let mut recorded: Vec<(u64, Vec<u8>)> = Vec::new();
    for m in mcap::MessageStream::new(&data).unwrap() {
        let m = m.unwrap();
        if m.channel.topic == "/model_input/rgb" {
            recorded.push((m.log_time, gantry_config::records::foxglove::RawImage::decode(&m.data[..]).unwrap().data));
        }
    }
    assert!(recorded.len() > 40, "{} model inputs recorded", recorded.len());

    let mut config = gantry_config::EdgeConfig::default();
    config.camera.source = gantry_config::edge::CameraSource::Replay;
    config.depth.source = gantry_config::edge::DepthSource::Replay;
    config.camera.replay_path = path.display().to_string();
    let (mut rgb, depth) = gantry_hal::open_sources(&config, Pacing::Max, None).unwrap();
    let info = rgb.info();
    assert_eq!((info.width, info.height, info.format), (32, 24, PixelFormat::Rgb8));
    let mut buf = vec![0u8; info.frame_bytes()];
    let mut first = None;
    for (i, (t, pixels)) in recorded.iter().enumerate() {
        let meta = rgb.next_frame(Some(&mut buf)).unwrap();
        assert_eq!(&buf, pixels, "frame {i}: the recorded pixels");
        assert_eq!(meta.seq, i as u64);
        let (t0, c0) = *first.get_or_insert((*t, meta.capture_ns));
        assert_eq!(meta.capture_ns - c0, t - t0, "frame {i}: on the recorded clock");
    }
    assert!(rgb.next_frame(Some(&mut buf)).is_err(), "then the end");
    let depth = depth.expect("the depth replay");
    assert_eq!((depth.info().width, depth.info().height, depth.info().format), (16, 12, PixelFormat::Depth16));
    assert_eq!(ReplaySource::open(&path, Stream::Depth, Pacing::Max).unwrap().len(), recorded.len());

    config.camera.replay_path = tmp.path().join("missing.mcap").display().to_string();
    let e = gantry_hal::open_sources(&config, Pacing::Max, None).err().expect("no such recording");
    assert!(e.to_string().contains("missing.mcap"), "{e}");
}
