//! A robot's work, handed to the recorder the way the daemon's threads hand
//! it over (through the taps), on a simulated clock: control ticks at 100 Hz,
//! a frame every 33 ms with its model inputs and sometimes a camera image, one
//! task, one governor rejection. For tests of what recordings hold.

use gantry_config::edge::MAX_JOINTS;
use gantry_edge::governor::{Check, Incident, Measure};
use gantry_edge::record::taps::{ControlRecord, FrameRecord, SampleInput, SampleTap, Taps, Thumb};
use gantry_edge::record::{Recorder, Settings, TaskEvent};
use gantry_hal::{PixelFormat, StreamInfo};

/// The model's input sizes: RGB and depth.
pub const MODEL: (u32, u32) = (32, 24);
pub const DEPTH: (u32, u32) = (16, 12);

pub fn stream(width: u32, height: u32, format: PixelFormat) -> StreamInfo {
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

/// The default robot's recorder settings, recording into `dir` as `robot`.
pub fn settings(dir: &std::path::Path, robot: &str) -> Settings {
    let config = gantry_config::EdgeConfig::default();
    let mut s = Settings::from_config(&config, "vision-test-1")
        .with_streams(stream(1920, 1080, PixelFormat::Rgb8), Some(stream(848, 480, PixelFormat::Depth16)));
    s.robot_id = robot.into();
    s.data_dir = dir.to_path_buf();
    s.encoding = gantry_edge::record::segment::Encoding { zstd_level: 3, chunk_bytes: 256 * 1024 };
    s
}

/// Taps sized for [`run`].
pub fn taps() -> Taps {
    let (rgb, depth) = ((MODEL.0 * MODEL.1 * 3) as usize, (DEPTH.0 * DEPTH.1) as usize);
    Taps::new(100, stream(1920, 1080, PixelFormat::Rgb8), 480, 4, SampleTap::new(rgb, depth, 80), 4)
}

/// Three seconds from `t0` (monotonic ns): the task `task` from 0.5 s to 2.8 s,
/// the governor rejecting a command at 2.0 s. Returns the frames made.
pub fn run(rec: &mut Recorder, taps: &Taps, t0: u64, task: &str) -> u64 {
    let (rgb_len, depth_len) = ((MODEL.0 * MODEL.1 * 3) as usize, (DEPTH.0 * DEPTH.1) as usize);
    let ms = |m: u64| t0 + m * 1_000_000;
    let mut frame_seq = 0u64;
    for tick in 0..300u64 {
        let now = ms(tick * 10);
        if tick == 50 {
            rec.drain(taps);
            rec.record_task_at(&TaskEvent::Started { task_id: task.into(), kind: "pick".into() }, now);
        }
        if tick * 10 >= frame_seq * 33 {
            let capture = ms(frame_seq * 33);
            let rgb: Vec<u8> = (0..rgb_len).map(|i| ((i as u64 * 7 + frame_seq) % 251) as u8).collect();
            let depth: Vec<u16> = (0..depth_len).map(|i| 500 + (i as u16 % 40)).collect();
            let mut goal = [0f32; MAX_JOINTS];
            goal[..6].copy_from_slice(&[0.1, -0.5, 0.4, 0.0, 0.2, frame_seq as f32 / 100.0]);
            taps.samples.offer(&SampleInput {
                frame_seq,
                capture_ns: capture,
                rgb_size: MODEL,
                rgb: &rgb,
                depth_size: DEPTH,
                depth: &depth,
                depth_unit_mm: 1.0,
                joints: 6,
                positions_rad: &[0.1; MAX_JOINTS],
                velocities_rad_s: &[0.0; MAX_JOINTS],
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
            r.failed = 1 << (Check::WorkspaceClear as u16);
            taps.push_incident(Incident {
                time_ns: now,
                check: Check::WorkspaceClear,
                failed: r.failed,
                value: 0.3,
                limit: 0.5,
                measure: Measure::DistanceM,
                joint: None,
                rejected: Default::default(),
                substituted: Default::default(),
                frame_seq: r.frame_seq,
            });
        }
        taps.push_control(r);
        if tick == 280 {
            rec.drain(taps);
            let done = TaskEvent::Finished { task_id: task.into(), success: true, reason: String::new() };
            rec.record_task_at(&done, now);
        }
        if tick.is_multiple_of(2) {
            rec.drain(taps);
        }
    }
    rec.drain(taps);
    frame_seq
}
