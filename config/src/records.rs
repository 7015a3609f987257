//! The recorded messages (`docs/PROTOCOL.md`, "Recorded segments"): protobuf
//! in recordings (JSON in older ones), shared by the robot that writes them and
//! the cloud that exports them.
//!
//! Times: every `unix_ns` is wall-clock nanoseconds since the Unix epoch;
//! `mono_ns` fields are the robot's `CLOCK_MONOTONIC`. Keys: every message
//! carries `boot_id` (one per start of the daemon, which restarts `seq` and
//! `frame_seq`) and, during a task, its `task_id`.

use serde::{Deserialize, Serialize};

/// The protobuf schemas of the recorded messages, one serialized
/// `FileDescriptorSet` per message (built from `config/proto/` by `build.rs`).
pub mod schemas {
    include!(concat!(env!("OUT_DIR"), "/schemas.rs"));

    /// The `FileDescriptorSet` for a message's full name (`gantry.Control`,
    /// `foxglove.CompressedImage`, …).
    pub fn descriptor(name: &str) -> Option<&'static [u8]> {
        SCHEMAS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }
}

// The structs below are the messages of `config/proto/gantry/*.proto`
// and Foxglove's schemas, tag for tag: protobuf in recordings, JSON (the
// same field names) in older recordings and tests. `tests/recording.rs`
// holds each to its descriptor.

#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
pub struct ControlMsg {
    /// This start of the robot's daemon (`seq` and `frame_seq` restart with it).
    #[serde(default)]
    #[prost(string, tag = "1")]
    pub boot_id: String,
    /// The task being worked on, if any.
    #[serde(default)]
    #[prost(string, optional, tag = "2")]
    pub task_id: Option<String>,
    #[prost(uint64, tag = "3")]
    pub unix_ns: u64,
    #[prost(uint64, tag = "4")]
    pub mono_ns: u64,
    #[prost(uint32, tag = "5")]
    pub seq: u32,
    #[prost(string, tag = "6")]
    pub mode: String,
    #[prost(bool, tag = "7")]
    pub approved: bool,
    #[prost(string, repeated, tag = "8")]
    pub rejected_by: Vec<String>,
    #[prost(bool, tag = "9")]
    pub from_baseline: bool,
    #[prost(uint64, tag = "10")]
    pub frame_seq: u64,
    #[prost(float, repeated, tag = "11")]
    pub goal_rad: Vec<f32>,
    #[prost(float, tag = "12")]
    pub goal_gripper: f32,
    #[prost(float, repeated, tag = "13")]
    pub command_rad: Vec<f32>,
    #[prost(float, tag = "14")]
    pub command_gripper: f32,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
pub struct JointStateMsg {
    /// This start of the robot's daemon (`seq` and `frame_seq` restart with it).
    #[serde(default)]
    #[prost(string, tag = "1")]
    pub boot_id: String,
    /// The task being worked on, if any.
    #[serde(default)]
    #[prost(string, optional, tag = "2")]
    pub task_id: Option<String>,
    #[prost(uint64, tag = "3")]
    pub unix_ns: u64,
    #[prost(uint64, tag = "4")]
    pub mono_ns: u64,
    #[prost(uint64, tag = "5")]
    pub age_ns: u64,
    #[prost(float, repeated, tag = "6")]
    pub positions_rad: Vec<f32>,
    #[prost(float, repeated, tag = "7")]
    pub velocities_rad_s: Vec<f32>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
pub struct FrameMsg {
    /// This start of the robot's daemon (`seq` and `frame_seq` restart with it).
    #[serde(default)]
    #[prost(string, tag = "1")]
    pub boot_id: String,
    /// The task being worked on, if any.
    #[serde(default)]
    #[prost(string, optional, tag = "2")]
    pub task_id: Option<String>,
    #[prost(uint64, tag = "3")]
    pub unix_ns: u64,
    #[prost(uint64, tag = "4")]
    pub frame_seq: u64,
    #[prost(uint64, tag = "5")]
    pub capture_mono_ns: u64,
    #[prost(uint64, tag = "6")]
    pub done_mono_ns: u64,
    #[prost(double, tag = "7")]
    pub latency_ms: f64,
    #[prost(bool, tag = "8")]
    pub late: bool,
    #[prost(bool, tag = "9")]
    pub unsafe_action: bool,
    #[prost(bool, tag = "10")]
    pub from_baseline: bool,
    #[prost(bool, tag = "11")]
    pub ok: bool,
    /// This frame's camera image is in the recording.
    #[serde(default)]
    #[prost(bool, tag = "12")]
    pub has_image: bool,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
pub struct IncidentMsg {
    /// This start of the robot's daemon (`seq` and `frame_seq` restart with it).
    #[serde(default)]
    #[prost(string, tag = "1")]
    pub boot_id: String,
    /// The task being worked on, if any.
    #[serde(default)]
    #[prost(string, optional, tag = "2")]
    pub task_id: Option<String>,
    #[prost(uint64, tag = "3")]
    pub unix_ns: u64,
    #[prost(uint64, tag = "4")]
    pub mono_ns: u64,
    #[prost(string, tag = "5")]
    pub check: String,
    #[prost(string, repeated, tag = "6")]
    pub failed: Vec<String>,
    #[prost(double, tag = "7")]
    pub value: f64,
    #[prost(double, tag = "8")]
    pub limit: f64,
    /// The unit of `value` and `limit` (`ms`, `m`, `rad/s`, `°C`, …; empty
    /// for a yes/no condition, a code or a count).
    #[serde(default)]
    #[prost(string, tag = "9")]
    pub unit: String,
    #[prost(uint32, optional, tag = "10")]
    pub joint: Option<u32>,
    #[prost(uint64, tag = "11")]
    pub frame_seq: u64,
    #[prost(float, repeated, tag = "12")]
    pub rejected_rad: Vec<f32>,
    #[prost(float, tag = "13")]
    pub rejected_gripper: f32,
    #[prost(float, repeated, tag = "14")]
    pub substituted_rad: Vec<f32>,
    #[prost(float, tag = "15")]
    pub substituted_gripper: f32,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
pub struct EpisodeMsg {
    /// This start of the robot's daemon.
    #[serde(default)]
    #[prost(string, tag = "1")]
    pub boot_id: String,
    #[prost(string, tag = "2")]
    pub task_id: String,
    /// The task's kind (`pick`, …); empty for a fixed stretch of work.
    #[serde(default)]
    #[prost(string, tag = "3")]
    pub kind: String,
    #[prost(string, tag = "4")]
    pub robot_id: String,
    #[prost(string, tag = "5")]
    pub model_version: String,
    #[prost(uint64, tag = "6")]
    pub start_unix_ns: u64,
    #[prost(uint64, tag = "7")]
    pub end_unix_ns: u64,
    #[prost(bool, tag = "8")]
    pub success: bool,
    #[prost(string, optional, tag = "9")]
    pub failure_reason: Option<String>,
    #[prost(uint64, tag = "10")]
    pub ticks: u64,
    #[prost(uint64, tag = "11")]
    pub rejects: u64,
}

/// The health snapshot as recorded: the daemon's snapshot, flat, with the keys.
#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
pub struct HealthMsg {
    #[serde(default)]
    #[prost(string, tag = "1")]
    pub boot_id: String,
    #[serde(default)]
    #[prost(string, optional, tag = "2")]
    pub task_id: Option<String>,
    #[prost(uint64, tag = "3")]
    pub unix_ns: u64,
    #[prost(string, tag = "4")]
    pub robot_id: String,
    #[prost(double, tag = "5")]
    pub uptime_s: f64,
    #[prost(string, tag = "6")]
    pub mode: String,
    #[prost(double, tag = "7")]
    pub cpu_pct: f64,
    #[prost(double, tag = "8")]
    pub process_cpu_pct: f64,
    #[prost(uint64, tag = "9")]
    pub mem_used_bytes: u64,
    #[prost(uint64, tag = "10")]
    pub mem_total_bytes: u64,
    #[prost(uint64, tag = "11")]
    pub process_rss_bytes: u64,
    #[prost(double, optional, tag = "12")]
    pub gpu_pct: Option<f64>,
    #[prost(uint64, optional, tag = "13")]
    pub gpu_mem_used_bytes: Option<u64>,
    #[prost(uint64, tag = "14")]
    pub disk_free_bytes: u64,
    #[prost(uint64, tag = "15")]
    pub disk_total_bytes: u64,
    #[prost(bool, tag = "16")]
    pub net_connected: bool,
    #[prost(bool, tag = "17")]
    pub link_alive: bool,
    #[prost(float, repeated, tag = "18")]
    pub motor_temp_c: Vec<f32>,
    #[prost(float, optional, tag = "19")]
    pub gripper_pressure_kpa: Option<f32>,
    #[prost(double, tag = "20")]
    pub loop_rate_hz: f64,
    #[prost(double, tag = "21")]
    pub latency_p50_ms: f64,
    #[prost(double, tag = "22")]
    pub latency_p99_ms: f64,
    #[prost(double, tag = "23")]
    pub latency_max_ms: f64,
    #[prost(double, tag = "24")]
    pub jitter_p99_us: f64,
    #[prost(uint64, tag = "25")]
    pub deadline_misses: u64,
    #[prost(uint64, tag = "26")]
    pub fallbacks: u64,
    #[prost(uint64, tag = "27")]
    pub governor_checks: u64,
    #[prost(uint64, tag = "28")]
    pub governor_rejects: u64,
    #[prost(uint64, tag = "29")]
    pub frames_captured: u64,
    #[prost(uint64, tag = "30")]
    pub frames_dropped: u64,
    #[prost(uint64, tag = "31")]
    pub recorder_disk_used_bytes: u64,
    #[prost(uint64, tag = "32")]
    pub recorder_unsynced_bytes: u64,
    #[prost(uint64, tag = "33")]
    pub recorder_dropped: u64,
    #[prost(bool, tag = "34")]
    pub disk_alert: bool,
    #[prost(uint64, tag = "35")]
    pub sync_backlog: u64,
}

/// A training sample: the policy's inputs for one frame (its pixels are the
/// `/model_input/*` images logged at the same time), its action and the
/// governed command (`gantry.Sample`).
#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
pub struct SampleMsg {
    #[prost(string, tag = "1")]
    pub boot_id: String,
    #[prost(string, optional, tag = "2")]
    pub task_id: Option<String>,
    #[prost(uint64, tag = "3")]
    pub unix_ns: u64,
    #[prost(uint64, tag = "4")]
    pub frame_seq: u64,
    #[prost(string, tag = "5")]
    pub model_version: String,
    #[prost(bool, tag = "6")]
    pub has_depth: bool,
    #[prost(float, tag = "7")]
    pub depth_unit_mm: f32,
    #[prost(float, repeated, tag = "8")]
    pub joint_positions_rad: Vec<f32>,
    #[prost(float, repeated, tag = "9")]
    pub joint_velocities_rad_s: Vec<f32>,
    #[prost(float, repeated, tag = "10")]
    pub goal_rad: Vec<f32>,
    #[prost(float, tag = "11")]
    pub goal_gripper: f32,
    #[prost(bool, tag = "12")]
    pub from_baseline: bool,
    #[prost(bool, tag = "13")]
    pub has_command: bool,
    #[prost(bool, tag = "14")]
    pub approved: bool,
    #[prost(string, repeated, tag = "15")]
    pub rejected_by: Vec<String>,
    #[prost(float, repeated, tag = "16")]
    pub command_rad: Vec<f32>,
    #[prost(float, tag = "17")]
    pub command_gripper: f32,
    #[prost(string, tag = "18")]
    pub reason: String,
}

/// One control tick's inputs and outcome, for replay (`gantry.ReplayTick`).
#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
pub struct ReplayTickMsg {
    #[prost(string, tag = "1")]
    pub boot_id: String,
    #[prost(uint64, tag = "2")]
    pub unix_ns: u64,
    #[prost(uint64, tag = "3")]
    pub mono_ns: u64,
    #[prost(uint64, tag = "4")]
    pub frame_seq: u64,
    #[prost(bool, tag = "5")]
    pub approved: bool,
    #[prost(string, tag = "6")]
    pub encoding: String,
    #[prost(bytes = "vec", tag = "7")]
    pub data: Vec<u8>,
}

/// The configuration the robot ran with, once per segment (`gantry.RobotConfig`).
#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
pub struct RobotConfigMsg {
    #[prost(string, tag = "1")]
    pub boot_id: String,
    #[prost(uint64, tag = "2")]
    pub unix_ns: u64,
    #[prost(string, tag = "3")]
    pub robot_id: String,
    #[prost(string, tag = "4")]
    pub model_version: String,
    #[prost(string, tag = "5")]
    pub toml: String,
}

/// The arm, once per segment (`gantry.ArmModel`).
#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
pub struct ArmModelMsg {
    #[prost(string, tag = "1")]
    pub boot_id: String,
    #[prost(uint64, tag = "2")]
    pub unix_ns: u64,
    #[prost(uint32, tag = "3")]
    pub joints: u32,
    #[prost(double, repeated, tag = "4")]
    pub dh_a_m: Vec<f64>,
    #[prost(double, repeated, tag = "5")]
    pub dh_alpha_rad: Vec<f64>,
    #[prost(double, repeated, tag = "6")]
    pub dh_d_m: Vec<f64>,
    #[prost(double, repeated, tag = "7")]
    pub dh_theta_offset_rad: Vec<f64>,
    #[prost(double, repeated, tag = "8")]
    pub tool_offset_m: Vec<f64>,
    #[prost(double, repeated, tag = "9")]
    pub position_min_rad: Vec<f64>,
    #[prost(double, repeated, tag = "10")]
    pub position_max_rad: Vec<f64>,
    #[prost(double, repeated, tag = "11")]
    pub velocity_max_rad_s: Vec<f64>,
    #[prost(string, tag = "12")]
    pub model_version: String,
    #[prost(string, tag = "13")]
    pub robot_id: String,
}

/// Foxglove's well-known schemas (`config/proto/foxglove/`).
pub mod foxglove {
    use serde::{Deserialize, Serialize};

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    impl Timestamp {
        pub fn from_unix_ns(ns: u64) -> Self {
            Self { seconds: (ns / 1_000_000_000) as i64, nanos: (ns % 1_000_000_000) as i32 }
        }

        pub fn unix_ns(&self) -> u64 {
            (self.seconds.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(self.nanos.max(0) as u64)
        }
    }

    #[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
    pub struct CompressedImage {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "4")]
        pub frame_id: String,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
        #[prost(string, tag = "3")]
        pub format: String,
    }

    #[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
    pub struct RawImage {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "7")]
        pub frame_id: String,
        #[prost(fixed32, tag = "2")]
        pub width: u32,
        #[prost(fixed32, tag = "3")]
        pub height: u32,
        #[prost(string, tag = "4")]
        pub encoding: String,
        #[prost(fixed32, tag = "5")]
        pub step: u32,
        #[prost(bytes = "vec", tag = "6")]
        pub data: Vec<u8>,
    }

    #[derive(Clone, Copy, PartialEq, Serialize, Deserialize, prost::Message)]
    pub struct Vector3 {
        #[prost(double, tag = "1")]
        pub x: f64,
        #[prost(double, tag = "2")]
        pub y: f64,
        #[prost(double, tag = "3")]
        pub z: f64,
    }

    #[derive(Clone, Copy, PartialEq, Serialize, Deserialize, prost::Message)]
    pub struct Quaternion {
        #[prost(double, tag = "1")]
        pub x: f64,
        #[prost(double, tag = "2")]
        pub y: f64,
        #[prost(double, tag = "3")]
        pub z: f64,
        #[prost(double, tag = "4")]
        pub w: f64,
    }

    #[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
    pub struct FrameTransform {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub parent_frame_id: String,
        #[prost(string, tag = "3")]
        pub child_frame_id: String,
        #[prost(message, optional, tag = "4")]
        pub translation: Option<Vector3>,
        #[prost(message, optional, tag = "5")]
        pub rotation: Option<Quaternion>,
    }

    #[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
    pub struct FrameTransforms {
        #[prost(message, repeated, tag = "1")]
        pub transforms: Vec<FrameTransform>,
    }

    #[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
    pub struct CameraCalibration {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "9")]
        pub frame_id: String,
        #[prost(fixed32, tag = "2")]
        pub width: u32,
        #[prost(fixed32, tag = "3")]
        pub height: u32,
        #[prost(string, tag = "4")]
        pub distortion_model: String,
        #[prost(double, repeated, tag = "5")]
        #[serde(rename = "D")]
        pub d: Vec<f64>,
        #[prost(double, repeated, tag = "6")]
        #[serde(rename = "K")]
        pub k: Vec<f64>,
        #[prost(double, repeated, tag = "7")]
        #[serde(rename = "R")]
        pub r: Vec<f64>,
        #[prost(double, repeated, tag = "8")]
        #[serde(rename = "P")]
        pub p: Vec<f64>,
    }
}

/// The JSON `foxglove.CompressedImage` of recordings before protobuf: time
/// as `sec`/`nsec`, data in base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Time {
    pub sec: u32,
    pub nsec: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressedImageMsg {
    pub timestamp: Time,
    pub frame_id: String,
    /// Base64 of the JPEG bytes.
    pub data: String,
    pub format: String,
}

/// The most one MCAP chunk may declare that it inflates to. Gantry writes
/// chunks of 1 MB.
pub const MAX_CHUNK_BYTES: u64 = 64 << 20;

const OP_FOOTER: u8 = 0x02;
const OP_CHUNK: u8 = 0x06;
const MAGIC_LEN: usize = 8;
/// Opcode and record length.
const RECORD_HEAD: usize = 9;

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Whether the mcap crate can read the chunk record at `offset` without being
/// trusted with sizes it would allocate for. It reserves a chunk's declared
/// uncompressed size, and then each inner record's declared length, before
/// it inflates them, so a forged or bit-flipped size aborts the reading
/// process (found by `tests/tests/fuzz.rs`). Here the chunk is inflated into
/// a buffer of at most [`MAX_CHUNK_BYTES`] and every inner record must fit it.
pub fn chunk_readable(mcap: &[u8], offset: usize) -> bool {
    chunk_contents(mcap, offset).is_some()
}

/// The records of the chunk at `offset`, inflated once (borrowed when stored
/// uncompressed), when every size in it holds and its CRC (where it has one)
/// matches: what [`chunk_readable`] checks, kept for reading.
pub fn chunk_contents(mcap: &[u8], offset: usize) -> Option<std::borrow::Cow<'_, [u8]>> {
    // Chunk: opcode, length, start and end time, uncompressed size and CRC,
    // compression name (u32 length + bytes), records length, records.
    (*mcap.get(offset)? == OP_CHUNK).then_some(())?;
    let size = u64_at(mcap, offset + 25)?;
    (size <= MAX_CHUNK_BYTES).then_some(())?;
    let crc = u32_at(mcap, offset + 33)?;
    let name_len = u32_at(mcap, offset + 37)? as usize;
    let name = mcap.get(offset + 41..(offset + 41).checked_add(name_len)?)?;
    let records_at = offset + 41 + name_len;
    let records_len = usize::try_from(u64_at(mcap, records_at)?).ok()?;
    let records = mcap.get(records_at + 8..(records_at + 8).checked_add(records_len)?)?;
    let records = match name {
        b"" => std::borrow::Cow::Borrowed(records),
        b"zstd" => std::borrow::Cow::Owned(zstd::bulk::decompress(records, size as usize).ok()?),
        _ => return None,
    };
    (records.len() as u64 == size).then_some(())?;
    (crc == 0 || crc32fast::hash(&records) == crc).then_some(())?;
    let mut at = 0usize;
    while at < records.len() {
        let len = usize::try_from(u64_at(&records, at + 1)?).ok()?;
        at = at.checked_add(RECORD_HEAD)?.checked_add(len)?;
        (at <= records.len()).then_some(())?;
    }
    Some(records)
}

/// Walks an MCAP file's top-level records and returns the offset of the
/// first chunk that is not [`chunk_readable`], if any. Stops at the footer or
/// at a record that runs past the end (the reader reports those itself).
pub fn unreadable_chunk(mcap: &[u8]) -> Option<usize> {
    let mut at = MAGIC_LEN;
    while let Some(len) = u64_at(mcap, at + 1) {
        match mcap[at] {
            OP_FOOTER => return None,
            OP_CHUNK if !chunk_readable(mcap, at) => return Some(at),
            _ => {}
        }
        at = usize::try_from(len).ok().and_then(|len| (at + RECORD_HEAD).checked_add(len))?;
    }
    None
}
