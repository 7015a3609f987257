//! What a recorded segment contains: one MCAP channel per kind of message, JSON
//! encoded with a JSON Schema, so Foxglove, the `mcap` CLI and any JSON reader
//! can open them. Images use Foxglove's `foxglove.CompressedImage` schema.
//!
//! Times: MCAP `log_time` and every `unix_ns` are wall-clock nanoseconds since
//! the Unix epoch; `mono_ns` fields are the robot's `CLOCK_MONOTONIC`, which is
//! what latencies are measured on.

pub use gantry_config::records::{
    CompressedImageMsg, ControlMsg, EpisodeMsg, FrameMsg, IncidentMsg, JointStateMsg, Time,
};

use gantry_safety::governor::{Check, Incident};
use gantry_safety::mode::Mode;

use super::taps::{ControlRecord, FrameRecord};

/// One recorded channel.
#[derive(Debug, Clone, Copy)]
pub struct ChannelDef {
    pub topic: &'static str,
    pub schema_name: &'static str,
    pub schema: &'static str,
}

pub const CONTROL: ChannelDef = ChannelDef {
    topic: "/control",
    schema_name: "gantry.Control",
    schema: r#"{"type":"object","title":"gantry.Control","description":"One control tick: the policy's goal and the command the safety governor sent.","properties":{"boot_id":{"type":"string","description":"This start of the robot's daemon"},"task_id":{"type":["string","null"],"description":"The task being worked on"},"unix_ns":{"type":"integer"},"mono_ns":{"type":"integer"},"seq":{"type":"integer"},"mode":{"type":"string","enum":["running","degraded","safe_stop","estop"]},"approved":{"type":"boolean"},"rejected_by":{"type":"array","items":{"type":"string"}},"from_baseline":{"type":"boolean"},"frame_seq":{"type":"integer"},"goal_rad":{"type":"array","items":{"type":"number"}},"goal_gripper":{"type":"number"},"command_rad":{"type":"array","items":{"type":"number"}},"command_gripper":{"type":"number"}},"required":["unix_ns","mono_ns","seq","mode","approved","command_rad","command_gripper"]}"#,
};

pub const JOINT_STATES: ChannelDef = ChannelDef {
    topic: "/joint_states",
    schema_name: "gantry.JointState",
    schema: r#"{"type":"object","title":"gantry.JointState","description":"The firmware's joint state as the governor used it on a control tick.","properties":{"boot_id":{"type":"string","description":"This start of the robot's daemon"},"task_id":{"type":["string","null"],"description":"The task being worked on"},"unix_ns":{"type":"integer"},"mono_ns":{"type":"integer"},"age_ns":{"type":"integer","description":"Age of the firmware's report when the tick read it"},"positions_rad":{"type":"array","items":{"type":"number"}},"velocities_rad_s":{"type":"array","items":{"type":"number"}}},"required":["unix_ns","mono_ns","positions_rad","velocities_rad_s"]}"#,
};

pub const FRAMES: ChannelDef = ChannelDef {
    topic: "/frames",
    schema_name: "gantry.Frame",
    schema: r#"{"type":"object","title":"gantry.Frame","description":"One camera frame the policy ran on.","properties":{"boot_id":{"type":"string","description":"This start of the robot's daemon"},"task_id":{"type":["string","null"],"description":"The task being worked on"},"unix_ns":{"type":"integer"},"frame_seq":{"type":"integer"},"capture_mono_ns":{"type":"integer"},"done_mono_ns":{"type":"integer"},"latency_ms":{"type":"number"},"late":{"type":"boolean"},"unsafe_action":{"type":"boolean"},"from_baseline":{"type":"boolean"},"ok":{"type":"boolean"}},"required":["unix_ns","frame_seq","capture_mono_ns","done_mono_ns","latency_ms","late","ok"]}"#,
};

pub const INCIDENTS: ChannelDef = ChannelDef {
    topic: "/incidents",
    schema_name: "gantry.Incident",
    schema: r#"{"type":"object","title":"gantry.Incident","description":"A command the safety governor rejected, and what it sent instead.","properties":{"boot_id":{"type":"string","description":"This start of the robot's daemon"},"task_id":{"type":["string","null"],"description":"The task being worked on"},"unix_ns":{"type":"integer"},"mono_ns":{"type":"integer"},"check":{"type":"string"},"failed":{"type":"array","items":{"type":"string"}},"value":{"type":"number"},"limit":{"type":"number"},"unit":{"type":"string","description":"Unit of value and limit; empty for a yes/no condition, a code or a count"},"joint":{"type":["integer","null"]},"frame_seq":{"type":"integer"},"rejected_rad":{"type":"array","items":{"type":"number"}},"rejected_gripper":{"type":"number"},"substituted_rad":{"type":"array","items":{"type":"number"}},"substituted_gripper":{"type":"number"}},"required":["unix_ns","check","failed","value","limit"]}"#,
};

pub const EPISODES: ChannelDef = ChannelDef {
    topic: "/episodes",
    schema_name: "gantry.Episode",
    schema: r#"{"type":"object","title":"gantry.Episode","description":"One task: when it ran and how it ended.","properties":{"boot_id":{"type":"string","description":"This start of the robot's daemon"},"kind":{"type":"string","description":"The task's kind; empty for a fixed stretch"},"task_id":{"type":"string"},"robot_id":{"type":"string"},"model_version":{"type":"string"},"start_unix_ns":{"type":"integer"},"end_unix_ns":{"type":"integer"},"success":{"type":"boolean"},"failure_reason":{"type":["string","null"]},"ticks":{"type":"integer"},"rejects":{"type":"integer"}},"required":["task_id","robot_id","start_unix_ns","end_unix_ns","success"]}"#,
};

pub const HEALTH: ChannelDef = ChannelDef {
    topic: "/health",
    schema_name: "gantry.Health",
    schema: r#"{"type":"object","title":"gantry.Health","description":"The periodic health snapshot (see docs/PROTOCOL.md).","properties":{"boot_id":{"type":"string","description":"This start of the robot's daemon"},"task_id":{"type":["string","null"],"description":"The task being worked on"},"unix_ns":{"type":"integer"},"robot_id":{"type":"string"},"cpu_pct":{"type":"number"},"gpu_pct":{"type":["number","null"]},"mem_used_bytes":{"type":"integer"},"disk_free_bytes":{"type":"integer"},"net_connected":{"type":"boolean"},"motor_temp_c":{"type":"array","items":{"type":"number"}},"gripper_pressure_kpa":{"type":["number","null"]}},"required":["unix_ns","robot_id"]}"#,
};

/// Foxglove's `foxglove.CompressedImage`, in its JSON form (data in base64).
pub const IMAGES: ChannelDef = ChannelDef {
    topic: "/camera/image",
    schema_name: "foxglove.CompressedImage",
    schema: r#"{"title":"foxglove.CompressedImage","description":"A compressed image","type":"object","properties":{"timestamp":{"type":"object","title":"time","properties":{"sec":{"type":"integer","minimum":0},"nsec":{"type":"integer","minimum":0,"maximum":999999999}},"description":"Timestamp of image"},"frame_id":{"type":"string","description":"Frame of reference for the image."},"data":{"type":"string","contentEncoding":"base64","description":"Compressed image data"},"format":{"type":"string","description":"Image format"}}}"#,
};

/// Every channel a segment may hold, in a fixed order.
pub const ALL: [ChannelDef; 7] = [CONTROL, JOINT_STATES, FRAMES, INCIDENTS, EPISODES, HEALTH, IMAGES];

/// Names of the checks whose bits are set in `failed`.
pub fn failed_checks(failed: u32) -> Vec<String> {
    Check::ALL.iter().filter(|c| failed & c.bit() != 0).map(|c| c.name().to_string()).collect()
}

/// The keys every message carries: this start of the daemon and the task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub boot_id: String,
    pub task_id: Option<String>,
}

impl Keys {
    /// A fresh boot id: 16 random hex digits.
    pub fn new_boot() -> Self {
        let mut bytes = [0u8; 8];
        // Without randomness the clock still tells boots apart.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = gantry_hal::clock::unix_ns().to_le_bytes();
        }
        Self { boot_id: bytes.iter().map(|b| format!("{b:02x}")).collect(), task_id: None }
    }
}

/// A message with the keys beside its own fields (for messages whose type
/// has no place for them, such as the health snapshot).
#[derive(serde::Serialize)]
pub struct Keyed<'a, T: serde::Serialize> {
    #[serde(flatten)]
    pub msg: &'a T,
    pub boot_id: &'a str,
    pub task_id: Option<&'a str>,
}

/// The `/control` message of a control tick.
pub fn control_msg(r: &ControlRecord, unix_ns: u64, k: &Keys) -> ControlMsg {
    let n = usize::from(r.joints);
    ControlMsg {
        boot_id: k.boot_id.clone(),
        task_id: k.task_id.clone(),
        unix_ns,
        mono_ns: r.t_ns,
        seq: r.seq,
        mode: Mode::from_u8(r.mode).as_str().to_string(),
        approved: r.approved,
        rejected_by: failed_checks(r.failed),
        from_baseline: r.from_baseline,
        frame_seq: r.frame_seq,
        goal_rad: r.goal_rad[..n].to_vec(),
        goal_gripper: r.goal_gripper,
        command_rad: r.command_rad[..n].to_vec(),
        command_gripper: r.command_gripper,
    }
}

/// The `/joint_states` message of a control tick, when it had a joint state.
pub fn joint_state_msg(r: &ControlRecord, unix_ns: u64, k: &Keys) -> Option<JointStateMsg> {
    let n = usize::from(r.joints);
    (r.joint_state_ns != 0).then(|| JointStateMsg {
        boot_id: k.boot_id.clone(),
        task_id: k.task_id.clone(),
        unix_ns,
        mono_ns: r.t_ns,
        age_ns: r.t_ns.saturating_sub(r.joint_state_ns),
        positions_rad: r.positions_rad[..n].to_vec(),
        velocities_rad_s: r.velocities_rad_s[..n].to_vec(),
    })
}

/// The `/frames` message of an inference.
pub fn frame_msg(r: &FrameRecord, unix_ns: u64, k: &Keys) -> FrameMsg {
    FrameMsg {
        boot_id: k.boot_id.clone(),
        task_id: k.task_id.clone(),
        unix_ns,
        frame_seq: r.frame_seq,
        capture_mono_ns: r.capture_ns,
        done_mono_ns: r.done_ns,
        latency_ms: r.done_ns.saturating_sub(r.capture_ns) as f64 / 1e6,
        late: r.late,
        unsafe_action: r.unsafe_action,
        from_baseline: r.from_baseline,
        ok: r.ok,
    }
}

/// The `/incidents` message of a governor incident.
pub fn incident_msg(i: &Incident, joints: usize, unix_ns: u64, k: &Keys) -> IncidentMsg {
    IncidentMsg {
        boot_id: k.boot_id.clone(),
        task_id: k.task_id.clone(),
        unix_ns,
        mono_ns: i.time_ns,
        check: i.check.name().to_string(),
        failed: failed_checks(i.failed),
        value: i.value,
        limit: i.limit,
        unit: i.measure.unit().to_string(),
        joint: i.joint,
        frame_seq: i.frame_seq,
        rejected_rad: i.rejected.targets_rad[..joints].to_vec(),
        rejected_gripper: i.rejected.gripper,
        substituted_rad: i.substituted.targets_rad[..joints].to_vec(),
        substituted_gripper: i.substituted.gripper,
    }
}
