//! The recorder on a simulated run: minutes of robot activity at the default
//! recording policy, produced as fast as the recorder takes it.
//!
//! Per simulated second: 100 control ticks (with joint states), 30 camera frames
//! (metadata, and each one thumbnailed and JPEG-encoded for the incident
//! pre-roll, every 30th written), a health snapshot every 30 s, an episode a
//! minute, and one person entering the workspace for 5 s (100 incidents a
//! second, with their pre-roll images). A task runs the whole time, so every
//! frame's model inputs (RGB and depth at 128 × 128, the 50M policy's
//! resolution) go to the sample tap: one sample a second is written, and
//! every frame's around the incident. Log batches for the uplink are cut
//! every 20 simulated ms, as the recorder thread does.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use gantry_config::EdgeConfig;
use gantry_edge::governor::{Check, Command, Incident};
use gantry_edge::health::HealthSnapshot;
use gantry_edge::record::quota::ImageLevel;
use gantry_edge::record::taps::{ControlRecord, FrameRecord, SampleInput, SampleTap, ThumbTap};
use gantry_edge::record::{Recorder, Settings, TaskEvent};
use gantry_hal::synthetic::{Scene, SyntheticCamera, SyntheticDepth};
use gantry_hal::{FramePool, FrameSource, Pacing};

/// What a simulated run measured.
#[derive(Debug, Clone, Copy)]
pub struct RecorderRun {
    pub simulated_s: f64,
    /// Time spent inside the recorder (encoding, compression, writing).
    pub recorder_s: f64,
    /// Capture-thread thumbnail time per frame.
    pub thumb_us: f64,
    pub payload_bytes: u64,
    pub file_bytes: u64,
    pub messages: u64,
    pub images: u64,
    pub samples: u64,
    pub segments: u64,
}

/// The model's input resolution the samples are recorded at.
pub const MODEL_SIDE: usize = 128;

impl RecorderRun {
    pub fn bytes_per_day(&self) -> f64 {
        self.file_bytes as f64 * 86_400.0 / self.simulated_s
    }
}

pub fn simulated_run(data_dir: &Path, minutes: f64) -> anyhow::Result<RecorderRun> {
    let mut config = EdgeConfig::default();
    config.robot.data_dir = data_dir.display().to_string();
    let settings = Settings::from_config(&config, "baseline-2");
    let every_n = settings.thumb_every_n(ImageLevel::Normal);
    let (mut rec, _) = Recorder::open(settings)?;
    let stats = rec.stats();
    let seconds = minutes * 60.0;
    let mut scene = config.synthetic.clone();
    scene.person_event = true;
    scene.person_enter_s = seconds / 3.0;
    scene.person_leave_s = seconds / 3.0 + 5.0;
    let scene = Scene::new(scene);
    let mut camera = SyntheticCamera::new(scene.clone(), config.camera.width, config.camera.height, 30, Pacing::Max);
    let pool = FramePool::new(1, camera.info().frame_bytes());
    let tap = ThumbTap::new(camera.info(), config.recorder.image_width, 4);
    tap.set_every_n(every_n);
    let mut depth_cam = SyntheticDepth::new(scene.clone(), config.depth.width, config.depth.height, 30, Pacing::Max);
    let depth_pool = FramePool::new(1, depth_cam.info().frame_bytes());
    let preroll_frames = (config.recorder.incident_preroll_s * 30.0).ceil() as usize;
    let samples = SampleTap::new(MODEL_SIDE * MODEL_SIDE * 3, MODEL_SIDE * MODEL_SIDE, preroll_frames + 8);
    let (cam_w, cam_h) = (config.camera.width as usize, config.camera.height as usize);
    let (dep_w, dep_h) = (config.depth.width as usize, config.depth.height as usize);
    let mut model_rgb = vec![0u8; MODEL_SIDE * MODEL_SIDE * 3];
    let mut model_depth = vec![0u16; MODEL_SIDE * MODEL_SIDE];
    rec.record_task_at(&TaskEvent::Started { task_id: "bench-task".into(), kind: "pick".into() }, 1_000_000_000_000);

    let base_ns = 1_000_000_000_000u64;
    let ticks = (seconds * 100.0) as u64;
    let mut in_rec = Duration::ZERO;
    let mut in_thumb = Duration::ZERO;
    let mut frames = 0u64;
    let timed = |f: &mut dyn FnMut(), acc: &mut Duration| {
        let t = Instant::now();
        f();
        *acc += t.elapsed();
    };
    for i in 0..ticks {
        let t_s = i as f64 / 100.0;
        let t_ns = base_ns + i * 10_000_000;
        let person = scene.person_present(t_s);
        let mut r = ControlRecord {
            t_ns,
            seq: i as u32,
            joints: 6,
            approved: !person,
            failed: if person { 1 << (Check::WorkspaceClear as u16) } else { 0 },
            frame_seq: i * 30 / 100,
            joint_state_ns: t_ns - 1_500_000,
            ..ControlRecord::default()
        };
        for j in 0..6 {
            let q = (t_s * 0.3 + j as f64).sin() as f32 * 0.4;
            r.goal_rad[j] = q + 0.01;
            r.command_rad[j] = q;
            r.positions_rad[j] = q - 0.002;
            r.velocities_rad_s[j] = (t_s * 0.3 + j as f64).cos() as f32 * 0.12;
        }
        r.goal_gripper = 0.5 + 0.5 * (t_s * 0.1).sin() as f32;
        r.command_gripper = r.goal_gripper;
        timed(&mut || rec.record_control(&r), &mut in_rec);
        if person {
            let incident = Incident {
                time_ns: t_ns,
                check: Check::WorkspaceClear,
                failed: r.failed,
                value: 1800.0,
                limit: 0.0,
                measure: gantry_edge::governor::Measure::DistanceM,
                joint: None,
                rejected: Command::default(),
                substituted: Command::default(),
                frame_seq: r.frame_seq,
            };
            timed(&mut || rec.record_incident(&incident), &mut in_rec);
        }
        // 30 frames a second on the 100 Hz tick grid.
        while frames * 100 <= i * 30 {
            let mut buf = pool.acquire().expect("one buffer, returned each frame");
            let meta = camera.next_frame(Some(&mut buf))?;
            let meta = gantry_hal::FrameMeta { seq: meta.seq, capture_ns: base_ns + frames * 33_333_333 };
            buf.set_meta(meta);
            timed(&mut || tap.offer(&buf), &mut in_thumb);
            // The model's inputs, nearest-neighbour (the pipeline area-averages
            // RGB; the bytes compress alike).
            for y in 0..MODEL_SIDE {
                for x in 0..MODEL_SIDE {
                    let src = ((y * cam_h / MODEL_SIDE) * cam_w + x * cam_w / MODEL_SIDE) * 3;
                    model_rgb[(y * MODEL_SIDE + x) * 3..][..3].copy_from_slice(&buf[src..src + 3]);
                }
            }
            drop(buf);
            let mut dbuf = depth_pool.acquire().expect("one buffer, returned each frame");
            depth_cam.next_frame(Some(&mut dbuf))?;
            for y in 0..MODEL_SIDE {
                for x in 0..MODEL_SIDE {
                    let src = ((y * dep_h / MODEL_SIDE) * dep_w + x * dep_w / MODEL_SIDE) * 2;
                    model_depth[y * MODEL_SIDE + x] = u16::from_le_bytes([dbuf[src], dbuf[src + 1]]);
                }
            }
            drop(dbuf);
            let side = MODEL_SIDE as u32;
            samples.offer(&SampleInput {
                frame_seq: meta.seq,
                capture_ns: meta.capture_ns,
                rgb_size: (side, side),
                rgb: &model_rgb,
                depth_size: (side, side),
                depth: &model_depth,
                depth_unit_mm: 1.0,
                joints: 6,
                positions_rad: &r.positions_rad,
                velocities_rad_s: &r.velocities_rad_s,
                goal_rad: &r.goal_rad,
                goal_gripper: r.goal_gripper,
                from_baseline: false,
            });
            let fr = FrameRecord {
                frame_seq: meta.seq,
                capture_ns: meta.capture_ns,
                done_ns: meta.capture_ns + 9_500_000,
                ok: true,
                ..FrameRecord::default()
            };
            timed(
                &mut || {
                    rec.record_frame(&fr);
                    while let Some(thumb) = tap.take() {
                        rec.record_thumb(&thumb);
                        tap.recycle(thumb);
                    }
                    while let Some(sample) = samples.take() {
                        rec.record_sample(sample);
                    }
                    for spent in rec.take_spent_samples() {
                        samples.recycle(spent);
                    }
                },
                &mut in_rec,
            );
            frames += 1;
        }
        // The recorder thread drains its queues and cuts due log batches every 20 ms.
        if i % 2 == 1 {
            timed(&mut || rec.cut_batches(false), &mut in_rec);
        }
        if i % 3000 == 0 {
            let h = HealthSnapshot {
                unix_ns: 1_700_000_000_000_000_000 + i * 10_000_000,
                robot_id: "robot-0".into(),
                system: gantry_edge::health::SystemSample { cpu_pct: 40.0, ..Default::default() },
                motor_temp_c: vec![35.0; 6],
                gripper_pressure_kpa: Some(280.0),
                ..HealthSnapshot::default()
            };
            timed(&mut || rec.record_health(&h.to_record()), &mut in_rec);
        }
    }
    let t = Instant::now();
    rec.close();
    in_rec += t.elapsed();
    let (rec, _) = Recorder::open(Settings::from_config(&config, "baseline-2"))?;
    let rows = rec.catalog().on_disk()?;
    Ok(RecorderRun {
        simulated_s: seconds,
        recorder_s: in_rec.as_secs_f64(),
        thumb_us: in_thumb.as_secs_f64() * 1e6 / frames.max(1) as f64,
        payload_bytes: stats.payload_bytes.load(Relaxed),
        file_bytes: rows.iter().map(|r| r.bytes).sum(),
        messages: stats.messages.load(Relaxed),
        images: stats.images.load(Relaxed),
        samples: stats.samples.load(Relaxed),
        segments: rows.len() as u64,
    })
}

/// The `zstd` command line on the same data: every message the run recorded,
/// read back from its segments and concatenated, compressed at the
/// recorder's level on one thread. Returns (input MB/s, ratio), or `None`
/// where `zstd` is not installed.
pub fn zstd_cli(data_dir: &Path, level: i32) -> anyhow::Result<Option<(f64, f64)>> {
    let mut all = Vec::new();
    let mut segments: Vec<_> = std::fs::read_dir(data_dir.join("segments"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "mcap"))
        .collect();
    segments.sort();
    for path in segments {
        let bytes = std::fs::read(&path)?;
        for m in mcap::MessageStream::new(&bytes)? {
            all.extend_from_slice(&m?.data);
        }
    }
    let input = data_dir.join("messages.bin");
    let output = data_dir.join("messages.bin.zst");
    std::fs::write(&input, &all)?;
    let t = Instant::now();
    let status = std::process::Command::new("zstd")
        .args(["-q", "-f", "-T1", &format!("-{}", level.max(1))])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .status();
    let took = t.elapsed().as_secs_f64();
    match status {
        Ok(s) if s.success() => {
            let out = std::fs::metadata(&output)?.len();
            Ok(Some((all.len() as f64 / 1e6 / took, all.len() as f64 / out as f64)))
        }
        Ok(s) => anyhow::bail!("zstd exited with {s}"),
        Err(e) => {
            eprintln!("zstd: {e} (apt-get install zstd); its figures are left out");
            Ok(None)
        }
    }
}
