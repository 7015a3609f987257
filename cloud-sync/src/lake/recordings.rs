//! A bulk-uploaded recording (a whole MCAP segment) becomes rows of the
//! `samples` and `images` tables: what the streamed log batches leave out.
//!
//! A segment is one boot's. Images carry no frame number of their own: the
//! camera's image is logged at its frame's capture time, and the model's
//! inputs at their sample's, so each finds its frame by log time within the
//! segment.

use std::collections::HashMap;

use gantry_config::records::{foxglove, FrameMsg, SampleMsg};
use prost::Message as _;

use super::rows::{flags, image_id, rows, Partitions};
use super::schema::{self, Mismatch, V};
use crate::quality;
use crate::store::UploadedSegment;

/// (boot, task, frame_seq) of a capture time.
type FrameKeys = (String, Option<String>, u64);

#[derive(Default)]
struct Parsed {
    samples: Vec<SampleMsg>,
    /// (log time, topic, image) of camera images and model inputs.
    camera: Vec<(u64, foxglove::CompressedImage)>,
    model: Vec<(u64, &'static str, foxglove::RawImage)>,
    frames: HashMap<u64, FrameKeys>,
    boot_id: Option<String>,
    damaged: bool,
}

fn parse(body: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    let Ok(stream) = mcap::MessageStream::new(body) else {
        p.damaged = true;
        return p;
    };
    for m in stream {
        let Ok(m) = m else {
            // A damaged chunk ends what can be read in order; the upload's
            // flags already say so.
            p.damaged = true;
            break;
        };
        if m.channel.message_encoding != "protobuf" {
            continue;
        }
        let data = &m.data[..];
        match m.channel.topic.as_str() {
            "/samples" => {
                if let Ok(s) = SampleMsg::decode(data) {
                    p.boot_id.get_or_insert_with(|| s.boot_id.clone());
                    p.samples.push(s);
                }
            }
            "/frames" => {
                if let Ok(f) = FrameMsg::decode(data) {
                    let capture = frame_capture_unix_ns(&f);
                    p.boot_id.get_or_insert_with(|| f.boot_id.clone());
                    p.frames.insert(capture, (f.boot_id, f.task_id, f.frame_seq));
                }
            }
            "/camera/image" => {
                if let Ok(img) = foxglove::CompressedImage::decode(data) {
                    p.camera.push((m.log_time, img));
                }
            }
            topic @ ("/model_input/rgb" | "/model_input/depth") => {
                if let Ok(img) = foxglove::RawImage::decode(data) {
                    let kind = if topic.ends_with("rgb") { "model_rgb" } else { "model_depth" };
                    p.model.push((m.log_time, kind, img));
                }
            }
            "/arm" if p.boot_id.is_none() => {
                if let Ok(a) = gantry_config::records::ArmModelMsg::decode(data) {
                    p.boot_id = Some(a.boot_id).filter(|b| !b.is_empty());
                }
            }
            _ => {}
        }
    }
    p
}

/// The capture time of a frame on the wall clock: its log time less its latency.
pub fn frame_capture_unix_ns(f: &FrameMsg) -> u64 {
    f.unix_ns.saturating_sub(f.done_mono_ns.saturating_sub(f.capture_mono_ns))
}

/// Adds a recording's samples and images.
pub fn add_recording(
    parts: &mut Partitions,
    u: &UploadedSegment,
    body: &[u8],
    limits: &quality::Limits,
) -> Result<(), Mismatch> {
    let p = parse(body);
    let robot = u.robot_id.as_str();
    let recording = u.segment_id.as_str();
    let boot = p.boot_id.clone().unwrap_or_default();
    let mut wide = Vec::new();
    if p.damaged {
        wide.push(quality::MALFORMED);
    }
    let by_time: HashMap<u64, &SampleMsg> = p.samples.iter().map(|s| (s.unix_ns, s)).collect();
    for s in &p.samples {
        let mut own = wide.clone();
        if !s.has_command {
            own.push(quality::NO_COMMAND);
        } else if !s.approved {
            own.push(quality::REJECTED);
        }
        let f = flags(own, &[]);
        let rgb_id = image_id(robot, &s.boot_id, s.frame_seq, "model_rgb");
        let depth_id = s.has_depth.then(|| image_id(robot, &s.boot_id, s.frame_seq, "model_depth"));
        rows(parts, &schema::SAMPLES, s.unix_ns, robot).push(&[
            V::S(Some(robot)),
            V::S(Some(&s.boot_id)),
            V::S(s.task_id.as_deref()),
            V::T(s.unix_ns),
            V::I(Some(i64::try_from(s.frame_seq).unwrap_or(i64::MAX))),
            V::S(Some(&s.model_version)),
            V::B(Some(s.has_depth)),
            V::F(Some(f64::from(s.depth_unit_mm))),
            V::S(Some(&rgb_id)),
            V::S(depth_id.as_deref()),
            V::L(&s.joint_positions_rad),
            V::L(&s.joint_velocities_rad_s),
            V::L(&s.goal_rad),
            V::F(Some(f64::from(s.goal_gripper))),
            V::B(Some(s.from_baseline)),
            V::B(Some(s.has_command)),
            V::B(Some(s.approved)),
            V::SL(&s.rejected_by),
            V::L(&s.command_rad),
            V::F(Some(f64::from(s.command_gripper))),
            V::S(Some(&s.reason)),
            V::SL(&f),
            V::S(Some(recording)),
        ])?;
    }
    for (t, img) in &p.camera {
        let keys = p.frames.get(t);
        let decoded = quality::decode_jpeg(&img.data);
        let mut own = wide.clone();
        let (width, height, blur) = match &decoded {
            Some((w, h, rgb)) => (*w, *h, Some(quality::blur_score(rgb, *w, *h))),
            None => {
                own.push(quality::VIDEO);
                (0, 0, None)
            }
        };
        if blur.is_some_and(|b| b < f64::from(limits.min_blur_score)) {
            own.push(quality::BLURRED);
        }
        let f = flags(own, &[]);
        let id = keys.map(|k| image_id(robot, &k.0, k.2, "camera"));
        rows(parts, &schema::IMAGES, *t, robot).push(&[
            V::S(Some(robot)),
            V::S(Some(keys.map_or(boot.as_str(), |k| k.0.as_str()))),
            V::S(keys.and_then(|k| k.1.as_deref())),
            V::T(*t),
            V::I(keys.map(|k| i64::try_from(k.2).unwrap_or(i64::MAX))),
            V::S(id.as_deref()),
            V::S(Some("camera")),
            V::S(Some(&img.format)),
            V::I(Some(width as i64)),
            V::I(Some(height as i64)),
            V::Bin(&img.data),
            V::F(blur),
            V::SL(&f),
            V::S(Some(recording)),
        ])?;
    }
    for (t, kind, img) in &p.model {
        let sample = by_time.get(t);
        let mut own = wide.clone();
        let bpp = if img.encoding == "rgb8" { 3 } else { 2 };
        let whole = img.data.len() == img.width as usize * img.height as usize * bpp;
        if !whole {
            own.push(quality::VIDEO);
        }
        let blur = (*kind == "model_rgb" && whole)
            .then(|| quality::blur_score(&img.data, img.width as usize, img.height as usize));
        if blur.is_some_and(|b| b < f64::from(limits.min_blur_score)) {
            own.push(quality::BLURRED);
        }
        let f = flags(own, &[]);
        let id = sample.map(|s| image_id(robot, &s.boot_id, s.frame_seq, kind));
        rows(parts, &schema::IMAGES, *t, robot).push(&[
            V::S(Some(robot)),
            V::S(Some(sample.map_or(boot.as_str(), |s| s.boot_id.as_str()))),
            V::S(sample.and_then(|s| s.task_id.as_deref())),
            V::T(*t),
            V::I(sample.map(|s| i64::try_from(s.frame_seq).unwrap_or(i64::MAX))),
            V::S(id.as_deref()),
            V::S(Some(kind)),
            V::S(Some(&img.encoding)),
            V::I(Some(i64::from(img.width))),
            V::I(Some(i64::from(img.height))),
            V::Bin(&img.data),
            V::F(blur),
            V::SL(&f),
            V::S(Some(recording)),
        ])?;
    }
    Ok(())
}
