//! The recorded messages' JSON shapes (`docs/PROTOCOL.md`, "Recorded segments"),
//! shared by the robot that writes them and the cloud that exports them.
//!
//! Times: every `unix_ns` is wall-clock nanoseconds since the Unix epoch;
//! `mono_ns` fields are the robot's `CLOCK_MONOTONIC`. Keys: every message
//! carries `boot_id` (one per start of the daemon, which restarts `seq` and
//! `frame_seq`) and, during a task, its `task_id`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlMsg {
    /// This start of the robot's daemon (`seq` and `frame_seq` restart with it).
    #[serde(default)]
    pub boot_id: String,
    /// The task being worked on, if any.
    #[serde(default)]
    pub task_id: Option<String>,
    pub unix_ns: u64,
    pub mono_ns: u64,
    pub seq: u32,
    pub mode: String,
    pub approved: bool,
    pub rejected_by: Vec<String>,
    pub from_baseline: bool,
    pub frame_seq: u64,
    pub goal_rad: Vec<f32>,
    pub goal_gripper: f32,
    pub command_rad: Vec<f32>,
    pub command_gripper: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointStateMsg {
    /// This start of the robot's daemon (`seq` and `frame_seq` restart with it).
    #[serde(default)]
    pub boot_id: String,
    /// The task being worked on, if any.
    #[serde(default)]
    pub task_id: Option<String>,
    pub unix_ns: u64,
    pub mono_ns: u64,
    pub age_ns: u64,
    pub positions_rad: Vec<f32>,
    pub velocities_rad_s: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameMsg {
    /// This start of the robot's daemon (`seq` and `frame_seq` restart with it).
    #[serde(default)]
    pub boot_id: String,
    /// The task being worked on, if any.
    #[serde(default)]
    pub task_id: Option<String>,
    pub unix_ns: u64,
    pub frame_seq: u64,
    pub capture_mono_ns: u64,
    pub done_mono_ns: u64,
    pub latency_ms: f64,
    pub late: bool,
    pub unsafe_action: bool,
    pub from_baseline: bool,
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentMsg {
    /// This start of the robot's daemon (`seq` and `frame_seq` restart with it).
    #[serde(default)]
    pub boot_id: String,
    /// The task being worked on, if any.
    #[serde(default)]
    pub task_id: Option<String>,
    pub unix_ns: u64,
    pub mono_ns: u64,
    pub check: String,
    pub failed: Vec<String>,
    pub value: f64,
    pub limit: f64,
    /// The unit of `value` and `limit` (`ms`, `m`, `rad/s`, `°C`, …; empty
    /// for a yes/no condition, a code or a count).
    #[serde(default)]
    pub unit: String,
    pub joint: Option<u8>,
    pub frame_seq: u64,
    pub rejected_rad: Vec<f32>,
    pub rejected_gripper: f32,
    pub substituted_rad: Vec<f32>,
    pub substituted_gripper: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeMsg {
    /// This start of the robot's daemon.
    #[serde(default)]
    pub boot_id: String,
    pub task_id: String,
    /// The task's kind (`pick`, …); empty for a fixed stretch of work.
    #[serde(default)]
    pub kind: String,
    pub robot_id: String,
    pub model_version: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub success: bool,
    pub failure_reason: Option<String>,
    pub ticks: u64,
    pub rejects: u64,
}

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
    chunk_records(mcap, offset).is_some()
}

/// `Some` when every size in the chunk holds (the body of [`chunk_readable`], written with `?`).
fn chunk_records(mcap: &[u8], offset: usize) -> Option<()> {
    // Chunk: opcode, length, start and end time, uncompressed size and CRC,
    // compression name (u32 length + bytes), records length, records.
    (*mcap.get(offset)? == OP_CHUNK).then_some(())?;
    let size = u64_at(mcap, offset + 25)?;
    (size <= MAX_CHUNK_BYTES).then_some(())?;
    let name_len = u32_at(mcap, offset + 37)? as usize;
    let name = mcap.get(offset + 41..(offset + 41).checked_add(name_len)?)?;
    let records_at = offset + 41 + name_len;
    let records_len = usize::try_from(u64_at(mcap, records_at)?).ok()?;
    let records = mcap.get(records_at + 8..(records_at + 8).checked_add(records_len)?)?;
    let inflated;
    let records = match name {
        b"" => records,
        b"zstd" => {
            inflated = zstd::bulk::decompress(records, size as usize).ok()?;
            &inflated[..]
        }
        _ => return None,
    };
    (records.len() as u64 == size).then_some(())?;
    let mut at = 0usize;
    while at < records.len() {
        let len = usize::try_from(u64_at(records, at + 1)?).ok()?;
        at = at.checked_add(RECORD_HEAD)?.checked_add(len)?;
        (at <= records.len()).then_some(())?;
    }
    Some(())
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
