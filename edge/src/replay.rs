//! `gantry-edge replay --recording FILE --model DIR`: a recorded segment run
//! offline through a policy and the safety governor.
//!
//! The recorder keeps, around each incident, every frame's model inputs
//! (`/samples` with `/model_input/*`) and every control tick's complete
//! inputs and verdict (`/replay/ticks`), and at the start of each segment the
//! configuration the robot ran with (`/config`). Replay feeds each frame's
//! inputs to the policy in `DIR` (the same preprocessing tables, the same
//! arithmetic from action to goal), then runs the control loop over the
//! recorded ticks: restored to the robot's memory at the start of each
//! window, then on its own, following the replayed goals. A tick the robot
//! sent ahead of the schedule is replayed as one: where the replayed run
//! declines it, nothing is sent then (`ahead_declined`), as on the robot, and
//! the recorded ticks go on at their recorded times. On the recorded
//! model the actions and verdicts come out identical, bit for bit; on another
//! model they show what that model would have done, and what the governor
//! would have let through.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use gantry_config::edge::MAX_JOINTS;
use gantry_config::EdgeConfig;
use gantry_recorder::messages::{foxglove, ReplayTickMsg, RobotConfigMsg, SampleMsg};
use gantry_recorder::replay::ReplayTick;
use prost::Message as _;
use serde::Serialize;

use crate::control::ControlLoop;
use crate::governor::Check;
use crate::model::ModelPackage;
use crate::preprocess::Preprocessor;

/// A tick further than this from the one before starts a new window (the
/// robot's memory is taken up again there).
const WINDOW_GAP_NS: u64 = 100_000_000;

/// What a replay found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub robot_id: String,
    pub recorded_model: String,
    pub replayed_model: String,
    /// Frames whose inputs were recorded, run through the policy.
    pub frames: u64,
    /// …whose goal and gripper came out identical (bit for bit) to the recording.
    pub actions_identical: u64,
    /// Recorded ticks run through the control loop and the governor.
    pub ticks: u64,
    pub windows: u64,
    /// Ticks whose policy output came from a replayed frame (the others, at
    /// the start of a window, follow a frame from before it, as recorded).
    pub ticks_on_replayed_frames: u64,
    /// …whose verdict (approved, failed checks, hold, command) came out identical.
    pub verdicts_identical: u64,
    /// Ticks the robot sent ahead of the schedule (a new policy output
    /// answered at once); replayed the same way, where only an approval is sent.
    pub ahead_recorded: u64,
    /// …that the replayed run declined: the robot would have sent nothing
    /// then, and left the decision to its next scheduled tick.
    pub ahead_declined: u64,
    pub approved_recorded: u64,
    pub approved_replayed: u64,
    /// Rejections, per first failed check: recorded and replayed.
    pub rejected_recorded: HashMap<String, u64>,
    pub rejected_replayed: HashMap<String, u64>,
    /// The largest difference between a replayed and a recorded command (rad).
    pub max_command_difference_rad: f64,
}

fn first_check(failed: u32) -> String {
    Check::ALL.iter().find(|c| failed & c.bit() != 0).map_or("none", |c| c.name()).to_string()
}

/// Replays `recording` through the policy package in `model_dir`.
pub fn replay(recording: &Path, model_dir: &str) -> anyhow::Result<Report> {
    let data = std::fs::read(recording).with_context(|| format!("reading {}", recording.display()))?;
    let mut config: Option<RobotConfigMsg> = None;
    let mut samples: Vec<SampleMsg> = Vec::new();
    let mut rgb: HashMap<u64, foxglove::RawImage> = HashMap::new();
    let mut depth: HashMap<u64, foxglove::RawImage> = HashMap::new();
    let mut ticks: Vec<ReplayTick> = Vec::new();
    let stream =
        mcap::MessageStream::new(&data).with_context(|| format!("{} is not an MCAP file", recording.display()))?;
    for m in stream {
        let m = m.with_context(|| format!("reading {}", recording.display()))?;
        let d = &m.data[..];
        match m.channel.topic.as_str() {
            "/config" if config.is_none() => config = Some(RobotConfigMsg::decode(d)?),
            "/samples" => samples.push(SampleMsg::decode(d)?),
            "/model_input/rgb" => drop(rgb.insert(m.log_time, foxglove::RawImage::decode(d)?)),
            "/model_input/depth" => drop(depth.insert(m.log_time, foxglove::RawImage::decode(d)?)),
            "/replay/ticks" => {
                let t = ReplayTickMsg::decode(d)?;
                ticks.push(ReplayTick::decode(&t.encoding, &t.data)?);
            }
            _ => {}
        }
    }
    let config_msg = config.context("the recording holds no /config message (recorded before replay existed?)")?;
    let config: EdgeConfig = toml::from_str(&config_msg.toml).context("the recorded configuration does not parse")?;
    let joints = config.firmware.joints.min(MAX_JOINTS);
    let package = ModelPackage::load(model_dir).with_context(|| format!("loading the model package {model_dir}"))?;
    let mut backend = crate::infer::load_backend(&package, &config.policy)?;
    let pre = Preprocessor::new(&package, (1, 1), (1, 1))?;
    let mut report = Report {
        robot_id: config_msg.robot_id.clone(),
        recorded_model: config_msg.model_version.clone(),
        replayed_model: package.manifest.version.clone(),
        ..Report::default()
    };

    // The policy, frame by frame.
    let mut goals: HashMap<u64, ([f32; MAX_JOINTS], f32, bool)> = HashMap::new();
    for s in &samples {
        let Some(image) = rgb.get(&s.unix_ns) else { continue };
        let inputs = backend.inputs();
        pre.rgb_from_model_res(&image.data, inputs.rgb)?;
        match depth.get(&s.unix_ns).filter(|_| s.has_depth) {
            Some(d) => {
                let mm: Vec<u16> = d.data.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
                pre.depth_from_model_res(&mm, s.depth_unit_mm, inputs.depth)?;
            }
            None => inputs.depth.fill(0.0),
        }
        let mut positions = [0f32; MAX_JOINTS];
        let mut velocities = [0f32; MAX_JOINTS];
        for (p, v) in positions.iter_mut().zip(&s.joint_positions_rad) {
            *p = *v;
        }
        for (p, v) in velocities.iter_mut().zip(&s.joint_velocities_rad_s) {
            *p = *v;
        }
        pre.joints(&positions, &velocities, inputs.joints)?;
        let action = backend.run()?;
        let (goal, gripper, non_finite) = crate::infer::goal_of(&positions, action, joints);
        report.frames += 1;
        let same = goal.iter().zip(&s.goal_rad).all(|(a, b)| a.to_bits() == b.to_bits())
            && gripper.to_bits() == s.goal_gripper.to_bits();
        report.actions_identical += u64::from(same);
        goals.insert(s.frame_seq, (goal, gripper, non_finite));
    }

    // The control loop and the governor, tick by tick.
    let mut control = ControlLoop::new(&config);
    let mut last_ns: Option<u64> = None;
    for t in &ticks {
        if last_ns.is_none_or(|l| t.state.now_ns.saturating_sub(l) > WINDOW_GAP_NS || t.state.now_ns <= l) {
            control.restore(&t.memory);
            report.windows += 1;
        }
        last_ns = Some(t.state.now_ns);
        let mut policy = t.policy;
        if let Some((goal, gripper, non_finite)) = goals.get(&policy.frame_seq).filter(|_| policy.frame_ns != 0) {
            policy.goal_rad = *goal;
            policy.gripper = *gripper;
            policy.non_finite = *non_finite;
            report.ticks_on_replayed_frames += 1;
        }
        report.ticks += 1;
        report.ahead_recorded += u64::from(t.ahead);
        let v = if t.ahead {
            let Some(v) = control.tick_ahead(&t.state, &policy) else {
                report.ahead_declined += 1;
                continue;
            };
            v
        } else {
            control.tick(&t.state, &policy)
        };
        let r = t.verdict;
        let same = v.approved == r.approved
            && v.failed == r.failed
            && v.hold == r.hold
            && v.command.gripper.to_bits() == r.command.gripper.to_bits()
            && v.command.targets_rad.iter().zip(&r.command.targets_rad).all(|(a, b)| a.to_bits() == b.to_bits());
        report.verdicts_identical += u64::from(same);
        report.approved_recorded += u64::from(r.approved);
        report.approved_replayed += u64::from(v.approved);
        if !r.approved {
            *report.rejected_recorded.entry(first_check(r.failed)).or_default() += 1;
        }
        if !v.approved {
            *report.rejected_replayed.entry(first_check(v.failed)).or_default() += 1;
        }
        let diff = v
            .command
            .targets_rad
            .iter()
            .zip(&r.command.targets_rad)
            .take(joints)
            .map(|(a, b)| f64::from((a - b).abs()))
            .fold(0.0, f64::max);
        report.max_command_difference_rad = report.max_command_difference_rad.max(diff);
    }
    Ok(report)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "robot {}: recorded on model {}, replayed on {}",
            self.robot_id, self.recorded_model, self.replayed_model
        )?;
        writeln!(
            f,
            "frames replayed: {}; actions identical to the recording: {}",
            self.frames, self.actions_identical
        )?;
        writeln!(
            f,
            "ticks replayed: {} in {} windows ({} on replayed frames); verdicts identical: {}",
            self.ticks, self.windows, self.ticks_on_replayed_frames, self.verdicts_identical
        )?;
        writeln!(
            f,
            "ticks ahead of the schedule: recorded {}, declined on replay {}",
            self.ahead_recorded, self.ahead_declined
        )?;
        writeln!(f, "approved: recorded {}, replayed {}", self.approved_recorded, self.approved_replayed)?;
        let mut checks: Vec<&String> = self.rejected_recorded.keys().chain(self.rejected_replayed.keys()).collect();
        checks.sort();
        checks.dedup();
        for c in checks {
            let (a, b) = (self.rejected_recorded.get(c).unwrap_or(&0), self.rejected_replayed.get(c).unwrap_or(&0));
            writeln!(f, "  rejected by {c}: recorded {a}, replayed {b}")?;
        }
        write!(f, "largest command difference: {:.6} rad", self.max_command_difference_rad)
    }
}
