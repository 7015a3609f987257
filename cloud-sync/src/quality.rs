//! Data quality checks, run on every stored log batch at ingestion. A batch
//! that fails one is stored all the same, with its flags (the catalog's
//! `flags`, and each exported row's `flags` column): flagged data is labelled,
//! never dropped.
//!
//! | flag | meaning |
//! | --- | --- |
//! | `timestamps_not_increasing` | a channel's `log_time` went backwards or repeated |
//! | `action_out_of_bounds` | a commanded joint position outside `[-quality.max_abs_joint_rad, +…]` |
//! | `label_contradicts_events` | an episode marked successful with governor rejections or incidents inside it, or a failure without a reason |
//! | `robot_unhealthy` | a health snapshot with the robot not running normally, a dead firmware link or a motor over `quality.max_motor_temp_c` |
//! | `video_corrupted` | a camera image that is not a complete JPEG |
//! | `malformed_messages` | messages that do not match their channel's schema (kept in the stored batch, left out of the tables) |

use std::collections::HashMap;

use gantry_config::records::{ControlMsg, EpisodeMsg, FrameMsg, IncidentMsg};

/// What a batch holds, parsed.
#[derive(Debug, Default)]
pub struct Parsed {
    pub control: Vec<ControlMsg>,
    pub frames: Vec<FrameMsg>,
    pub incidents: Vec<IncidentMsg>,
    pub episodes: Vec<EpisodeMsg>,
    pub health: Vec<serde_json::Value>,
    /// (log time, JPEG bytes) of camera images.
    pub images: Vec<(u64, Vec<u8>)>,
    /// Channels whose `log_time` did not strictly increase.
    pub out_of_order: Vec<String>,
    /// Messages that do not match their channel's schema (kept in the stored
    /// batch, left out of the tables).
    pub unparsed: u64,
}

/// Parses an MCAP body. Damage to the MCAP itself is an error (the batch is
/// then rejected); a message that does not match its schema is counted.
pub fn parse(body: &[u8]) -> anyhow::Result<Parsed> {
    let mut p = Parsed::default();
    let mut last: HashMap<String, u64> = HashMap::new();
    for m in mcap::MessageStream::new(body)? {
        let m = m?;
        let topic = m.channel.topic.as_str();
        if let Some(prev) = last.insert(topic.to_string(), m.log_time) {
            if m.log_time <= prev && !p.out_of_order.iter().any(|t| t == topic) {
                p.out_of_order.push(topic.to_string());
            }
        }
        let ok = match topic {
            "/control" => json(&m.data).map(|v| p.control.push(v)),
            "/frames" => json(&m.data).map(|v| p.frames.push(v)),
            "/incidents" => json(&m.data).map(|v| p.incidents.push(v)),
            "/episodes" => json(&m.data).map(|v| p.episodes.push(v)),
            "/health" => json(&m.data).map(|v| p.health.push(v)),
            "/camera/image" => json::<gantry_config::records::CompressedImageMsg>(&m.data).map(|img| {
                use base64::Engine as _;
                let jpeg = base64::engine::general_purpose::STANDARD.decode(img.data.as_bytes()).unwrap_or_default();
                p.images.push((m.log_time, jpeg));
            }),
            _ => Some(()),
        };
        if ok.is_none() {
            p.unparsed += 1;
        }
    }
    Ok(p)
}

fn json<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    serde_json::from_slice(data).ok()
}

/// Limits the checks use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_abs_joint_rad: f32,
    pub max_motor_temp_c: f32,
}

impl From<&gantry_config::cloud::Quality> for Limits {
    fn from(q: &gantry_config::cloud::Quality) -> Self {
        Self { max_abs_joint_rad: q.max_abs_joint_rad, max_motor_temp_c: q.max_motor_temp_c }
    }
}

pub const TIMESTAMPS: &str = "timestamps_not_increasing";
pub const BOUNDS: &str = "action_out_of_bounds";
pub const LABEL: &str = "label_contradicts_events";
pub const UNHEALTHY: &str = "robot_unhealthy";
pub const VIDEO: &str = "video_corrupted";
pub const MALFORMED: &str = "malformed_messages";

pub fn action_in_bounds(c: &ControlMsg, l: &Limits) -> bool {
    c.command_rad.iter().chain(&c.goal_rad).all(|q| q.is_finite() && q.abs() <= l.max_abs_joint_rad)
}

/// An episode's own flags: its label against what happened inside it.
pub fn episode_flags(e: &EpisodeMsg, incidents: &[IncidentMsg]) -> Vec<&'static str> {
    let inside = incidents.iter().any(|i| (e.start_unix_ns..=e.end_unix_ns).contains(&i.unix_ns));
    let contradicts =
        if e.success { e.rejects > 0 || inside } else { e.failure_reason.as_deref().is_none_or(str::is_empty) };
    if contradicts {
        vec![LABEL]
    } else {
        Vec::new()
    }
}

pub fn health_ok(h: &serde_json::Value, l: &Limits) -> bool {
    let running = h["mode"].as_str() == Some("running");
    let link = h["link_alive"].as_bool().unwrap_or(true);
    let hot = h["motor_temp_c"]
        .as_array()
        .is_some_and(|t| t.iter().any(|v| v.as_f64().unwrap_or(0.0) > f64::from(l.max_motor_temp_c)));
    running && link && !hot
}

/// A complete JPEG: starts with SOI, ends with EOI, and has something between.
pub fn jpeg_ok(b: &[u8]) -> bool {
    b.len() > 4 && b.starts_with(&[0xFF, 0xD8]) && b.ends_with(&[0xFF, 0xD9])
}

/// The batch's flags, sorted.
pub fn batch_flags(p: &Parsed, l: &Limits) -> Vec<String> {
    let mut flags = Vec::new();
    if !p.out_of_order.is_empty() {
        flags.push(TIMESTAMPS);
    }
    if !p.control.iter().all(|c| action_in_bounds(c, l)) {
        flags.push(BOUNDS);
    }
    if p.episodes.iter().any(|e| !episode_flags(e, &p.incidents).is_empty()) {
        flags.push(LABEL);
    }
    if !p.health.iter().all(|h| health_ok(h, l)) {
        flags.push(UNHEALTHY);
    }
    if !p.images.iter().all(|(_, b)| jpeg_ok(b)) {
        flags.push(VIDEO);
    }
    if p.unparsed > 0 {
        flags.push(MALFORMED);
    }
    flags.sort_unstable();
    flags.into_iter().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(success: bool, rejects: u64, reason: Option<&str>) -> EpisodeMsg {
        EpisodeMsg {
            task_id: "t".into(),
            robot_id: "r".into(),
            model_version: "m".into(),
            start_unix_ns: 100,
            end_unix_ns: 200,
            success,
            failure_reason: reason.map(Into::into),
            ticks: 10,
            rejects,
        }
    }

    #[test]
    fn labels_are_checked_against_events() {
        assert!(episode_flags(&episode(true, 0, None), &[]).is_empty());
        assert_eq!(episode_flags(&episode(true, 3, None), &[]), [LABEL]);
        assert!(episode_flags(&episode(false, 3, Some("governor:joint_limits")), &[]).is_empty());
        assert_eq!(episode_flags(&episode(false, 0, None), &[]), [LABEL]);
    }

    #[test]
    fn jpegs_must_be_whole() {
        assert!(jpeg_ok(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9]));
        assert!(!jpeg_ok(&[0xFF, 0xD8, 1, 2, 3]));
        assert!(!jpeg_ok(&[]));
    }
}
