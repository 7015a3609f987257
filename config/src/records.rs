//! The recorded messages' JSON shapes (`docs/PROTOCOL.md`, "Recorded segments"),
//! shared by the robot that writes them and the cloud that exports them.
//!
//! Times: every `unix_ns` is wall-clock nanoseconds since the Unix epoch;
//! `mono_ns` fields are the robot's `CLOCK_MONOTONIC`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlMsg {
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
    pub unix_ns: u64,
    pub mono_ns: u64,
    pub age_ns: u64,
    pub positions_rad: Vec<f32>,
    pub velocities_rad_s: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameMsg {
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
    pub unix_ns: u64,
    pub mono_ns: u64,
    pub check: String,
    pub failed: Vec<String>,
    pub value: f64,
    pub limit: f64,
    pub joint: Option<u8>,
    pub frame_seq: u64,
    pub rejected_rad: Vec<f32>,
    pub rejected_gripper: f32,
    pub substituted_rad: Vec<f32>,
    pub substituted_gripper: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeMsg {
    pub task_id: String,
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
