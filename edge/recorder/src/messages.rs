//! What a recorded segment contains: one MCAP channel per kind of message,
//! protobuf encoded with its `FileDescriptorSet` embedded as the schema, so
//! Foxglove, the `mcap` CLI and any protobuf reader decode them with nothing
//! else. Foxglove's well-known schemas where one fits (`CompressedImage`,
//! `RawImage`, `FrameTransforms`, `CameraCalibration`), Gantry's compact ones
//! (`config/proto/gantry/`) for the rest.
//!
//! Times: MCAP `log_time` and every `unix_ns` are wall-clock nanoseconds since
//! the Unix epoch; `mono_ns` fields are the robot's `CLOCK_MONOTONIC`, which is
//! what latencies are measured on.

pub use gantry_config::records::foxglove;
pub use gantry_config::records::{
    ArmModelMsg, ControlMsg, EpisodeMsg, FrameMsg, HealthMsg, IncidentMsg, JointStateMsg, ReplayTickMsg,
    RobotConfigMsg, SampleMsg,
};

use gantry_safety::governor::{Check, Incident};
use gantry_safety::mode::Mode;

use super::taps::{ControlRecord, FrameRecord};

/// One recorded channel: its topic and its message's protobuf name.
#[derive(Debug, Clone, Copy)]
pub struct ChannelDef {
    pub topic: &'static str,
    pub schema_name: &'static str,
}

impl ChannelDef {
    /// The schema's `FileDescriptorSet` (empty if the build lacks it, which
    /// `tests` rule out).
    pub fn schema(&self) -> &'static [u8] {
        gantry_config::records::schemas::descriptor(self.schema_name).unwrap_or_default()
    }
}

/// MCAP's names for the encoding of every channel's schema and messages.
pub const SCHEMA_ENCODING: &str = "protobuf";
pub const MESSAGE_ENCODING: &str = "protobuf";

const fn ch(topic: &'static str, schema_name: &'static str) -> ChannelDef {
    ChannelDef { topic, schema_name }
}

/// Every channel a segment may hold, in a fixed order (the `CH_*` indices).
pub const ALL: [ChannelDef; 17] = [
    ch("/control", "gantry.Control"),
    ch("/joint_states", "gantry.JointState"),
    ch("/frames", "gantry.Frame"),
    ch("/incidents", "gantry.Incident"),
    ch("/episodes", "gantry.Episode"),
    ch("/health", "gantry.Health"),
    ch("/camera/image", "foxglove.CompressedImage"),
    ch("/tf", "foxglove.FrameTransforms"),
    ch("/tf_static", "foxglove.FrameTransforms"),
    ch("/samples", "gantry.Sample"),
    ch("/model_input/rgb", "foxglove.RawImage"),
    ch("/model_input/depth", "foxglove.RawImage"),
    ch("/camera/calibration", "foxglove.CameraCalibration"),
    ch("/depth/calibration", "foxglove.CameraCalibration"),
    ch("/arm", "gantry.ArmModel"),
    ch("/replay/ticks", "gantry.ReplayTick"),
    ch("/config", "gantry.RobotConfig"),
];

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
        has_image: false,
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
        joint: i.joint.map(u32::from),
        frame_seq: i.frame_seq,
        rejected_rad: i.rejected.targets_rad[..joints].to_vec(),
        rejected_gripper: i.rejected.gripper,
        substituted_rad: i.substituted.targets_rad[..joints].to_vec(),
        substituted_gripper: i.substituted.gripper,
    }
}

/// The robot's fixed geometry, for the calibration written at the start of
/// each segment and the arm's transforms.
#[derive(Debug, Clone, Default)]
pub struct Rig {
    pub rgb: Option<gantry_hal::StreamInfo>,
    pub depth: Option<gantry_hal::StreamInfo>,
    /// The depth camera in the base frame: position (m), fixed-axis roll,
    /// pitch, yaw (rad).
    pub camera_position_m: [f64; 3],
    pub camera_rpy_rad: [f64; 3],
    /// Denavit–Hartenberg rows `[a_m, alpha_rad, d_m, theta_offset_rad]`.
    pub dh: Vec<[f64; 4]>,
    pub tool_offset_m: [f64; 3],
    pub position_min_rad: Vec<f64>,
    pub position_max_rad: Vec<f64>,
    pub velocity_max_rad_s: Vec<f64>,
}

/// Frame ids in the transforms and images.
pub const BASE_FRAME: &str = "base";
pub const CAMERA_FRAME: &str = "camera";
pub const TOOL_FRAME: &str = "tool";

fn link_frame(i: usize) -> String {
    format!("link{i}")
}

fn quat_mul(a: foxglove::Quaternion, b: foxglove::Quaternion) -> foxglove::Quaternion {
    foxglove::Quaternion {
        w: a.w * b.w - a.x * b.x - a.y * b.y - a.z * b.z,
        x: a.w * b.x + a.x * b.w + a.y * b.z - a.z * b.y,
        y: a.w * b.y - a.x * b.z + a.y * b.w + a.z * b.x,
        z: a.w * b.z + a.x * b.y - a.y * b.x + a.z * b.w,
    }
}

fn axis_angle(axis: usize, angle: f64) -> foxglove::Quaternion {
    let (s, c) = (angle / 2.0).sin_cos();
    let mut q = foxglove::Quaternion { x: 0.0, y: 0.0, z: 0.0, w: c };
    match axis {
        0 => q.x = s,
        1 => q.y = s,
        _ => q.z = s,
    }
    q
}

fn transform(
    unix_ns: u64,
    parent: &str,
    child: &str,
    t: [f64; 3],
    r: foxglove::Quaternion,
) -> foxglove::FrameTransform {
    foxglove::FrameTransform {
        timestamp: Some(foxglove::Timestamp::from_unix_ns(unix_ns)),
        parent_frame_id: parent.to_string(),
        child_frame_id: child.to_string(),
        translation: Some(foxglove::Vector3 { x: t[0], y: t[1], z: t[2] }),
        rotation: Some(r),
    }
}

impl Rig {
    /// The arm at joint angles `q`: one transform per DH link (`base` →
    /// `link1` → … → `linkN`), then `linkN` → `tool`. Link i is
    /// Rz(θ) · Tz(d) · Tx(a) · Rx(α) of its parent, as in `gantry-safety`'s
    /// kinematics.
    pub fn arm_transforms(&self, q: &[f32], unix_ns: u64) -> foxglove::FrameTransforms {
        let mut transforms = Vec::with_capacity(self.dh.len() + 1);
        for (i, &[a, alpha, d, offset]) in self.dh.iter().enumerate() {
            let theta = f64::from(q.get(i).copied().unwrap_or(0.0)) + offset;
            let (st, ct) = theta.sin_cos();
            let parent = if i == 0 { BASE_FRAME.to_string() } else { link_frame(i) };
            let rotation = quat_mul(axis_angle(2, theta), axis_angle(0, alpha));
            transforms.push(transform(unix_ns, &parent, &link_frame(i + 1), [a * ct, a * st, d], rotation));
        }
        let last = if self.dh.is_empty() { BASE_FRAME.to_string() } else { link_frame(self.dh.len()) };
        let identity = foxglove::Quaternion { x: 0.0, y: 0.0, z: 0.0, w: 1.0 };
        transforms.push(transform(unix_ns, &last, TOOL_FRAME, self.tool_offset_m, identity));
        foxglove::FrameTransforms { transforms }
    }

    /// The camera in the base frame (fixed-axis roll, pitch, yaw: R = Rz·Ry·Rx).
    pub fn camera_transform(&self, unix_ns: u64) -> foxglove::FrameTransforms {
        let [roll, pitch, yaw] = self.camera_rpy_rad;
        let r = quat_mul(quat_mul(axis_angle(2, yaw), axis_angle(1, pitch)), axis_angle(0, roll));
        foxglove::FrameTransforms {
            transforms: vec![transform(unix_ns, BASE_FRAME, CAMERA_FRAME, self.camera_position_m, r)],
        }
    }

    /// A pinhole calibration of a stream (no distortion: the sources rectify).
    pub fn calibration(info: &gantry_hal::StreamInfo, unix_ns: u64) -> foxglove::CameraCalibration {
        let k = info.intrinsics;
        let (fx, fy, cx, cy) = (f64::from(k.fx), f64::from(k.fy), f64::from(k.cx), f64::from(k.cy));
        foxglove::CameraCalibration {
            timestamp: Some(foxglove::Timestamp::from_unix_ns(unix_ns)),
            frame_id: CAMERA_FRAME.to_string(),
            width: info.width,
            height: info.height,
            distortion_model: "plumb_bob".to_string(),
            d: vec![0.0; 5],
            k: vec![fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
            r: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p: vec![fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        }
    }

    pub fn arm_model(&self, boot_id: &str, robot_id: &str, model_version: &str, unix_ns: u64) -> ArmModelMsg {
        ArmModelMsg {
            boot_id: boot_id.to_string(),
            unix_ns,
            joints: self.dh.len() as u32,
            dh_a_m: self.dh.iter().map(|r| r[0]).collect(),
            dh_alpha_rad: self.dh.iter().map(|r| r[1]).collect(),
            dh_d_m: self.dh.iter().map(|r| r[2]).collect(),
            dh_theta_offset_rad: self.dh.iter().map(|r| r[3]).collect(),
            tool_offset_m: self.tool_offset_m.to_vec(),
            position_min_rad: self.position_min_rad.clone(),
            position_max_rad: self.position_max_rad.clone(),
            velocity_max_rad_s: self.velocity_max_rad_s.clone(),
            model_version: model_version.to_string(),
            robot_id: robot_id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transforms compose to the same tool position as the safety
    /// kernel's forward kinematics.
    #[test]
    fn arm_transforms_agree_with_the_kinematics() {
        let half_pi = std::f64::consts::FRAC_PI_2;
        let dh = vec![
            [0.0, half_pi, 0.1625, 0.0],
            [-0.425, 0.0, 0.0, 0.0],
            [-0.3922, 0.0, 0.0, 0.0],
            [0.0, half_pi, 0.1333, 0.0],
            [0.0, -half_pi, 0.0997, 0.0],
            [0.0, 0.0, 0.0996, 0.0],
        ];
        let rig = Rig { dh: dh.clone(), tool_offset_m: [0.0, 0.0, 0.12], ..Rig::default() };
        let q = [0.3f32, -1.1, 0.7, 0.2, -0.5, 1.3];
        let want = gantry_safety::kinematics::Arm::new(&dh).with_tool(rig.tool_offset_m).outline(&q).tool();
        // Compose parent ← child: p = t + R·p_child.
        let rotate = |q: foxglove::Quaternion, v: [f64; 3]| -> [f64; 3] {
            let p = foxglove::Quaternion { x: v[0], y: v[1], z: v[2], w: 0.0 };
            let conj = foxglove::Quaternion { x: -q.x, y: -q.y, z: -q.z, w: q.w };
            let r = quat_mul(quat_mul(q, p), conj);
            [r.x, r.y, r.z]
        };
        let mut point = [0.0; 3];
        for t in rig.arm_transforms(&q, 0).transforms.iter().rev() {
            let (tr, rot) = (t.translation.unwrap(), t.rotation.unwrap());
            let r = rotate(rot, point);
            point = [tr.x + r[0], tr.y + r[1], tr.z + r[2]];
        }
        for k in 0..3 {
            assert!((point[k] - want[k]).abs() < 1e-9, "{point:?} vs {want:?}");
        }
    }
}
