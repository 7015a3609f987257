//! The safety governor: every command is checked here before it reaches the
//! firmware. Any failed check rejects it, substitutes the safe action (hold the
//! measured position, zero velocity, gripper unchanged) and reports exactly one
//! [`Incident`]. A pure function of the command, the sampled state and the
//! governor's own memory of what it last let out: no allocation, no lock, no I/O.
//!
//! The checks, in the order they are evaluated (all are evaluated; the first
//! failure names the incident, the rest are in its `failed` set):
//! 1. e-stop: pressed or latched → safe action until an explicit local reset;
//!    not yet reported by the firmware → safe action (without latching);
//!    every real-time thread making progress (the supervisor's word);
//! 2. firmware link alive, joint state fresh, finite and from working encoders,
//!    no joint measured faster than its velocity limit;
//! 3. inference deadline met, policy output fresh and finite;
//! 4. workspace clear (a stale depth reading counts as not clear);
//! 5. joint position, velocity and acceleration limits (with the margin);
//! 6. tool above the table and inside the tool box (forward kinematics);
//! 7. telemetry fresh and finite, motor temperatures and gripper pressure
//!    within limits;
//! 8. the optional safety model approved the policy's action (it runs on the
//!    inference thread; its verdict comes with the output, and an output that
//!    is not a number is a refusal).
//!
//! A value that is not a finite number never passes a check and never reaches
//! the substitute: the hold is built from the measured position only when that
//! is finite and fresh, else from the last command sent, which always was.

use crate::kinematics::Arm;
use crate::zone::ZoneReading;
use crate::{within, MAX_JOINTS};

/// A command for one control tick: absolute joint targets and the gripper.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Command {
    pub targets_rad: [f32; MAX_JOINTS],
    pub gripper: f32,
}

/// One governor check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Check {
    EStop = 0,
    RealtimeThreads,
    FirmwareLink,
    JointStateFresh,
    JointPositionsFinite,
    JointVelocitiesFinite,
    EncodersOk,
    MeasuredVelocity,
    InferenceDeadline,
    PolicyOutputFresh,
    PolicyOutputFinite,
    WorkspaceClear,
    JointPosition,
    JointVelocity,
    JointAcceleration,
    ToolAboveTable,
    ToolInBox,
    TelemetryFresh,
    TelemetryFinite,
    MotorTemperature,
    GripperPressure,
    SafetyModel,
}

impl Check {
    pub const ALL: [Check; 22] = [
        Check::EStop,
        Check::RealtimeThreads,
        Check::FirmwareLink,
        Check::JointStateFresh,
        Check::JointPositionsFinite,
        Check::JointVelocitiesFinite,
        Check::EncodersOk,
        Check::MeasuredVelocity,
        Check::InferenceDeadline,
        Check::PolicyOutputFresh,
        Check::PolicyOutputFinite,
        Check::WorkspaceClear,
        Check::JointPosition,
        Check::JointVelocity,
        Check::JointAcceleration,
        Check::ToolAboveTable,
        Check::ToolInBox,
        Check::TelemetryFresh,
        Check::TelemetryFinite,
        Check::MotorTemperature,
        Check::GripperPressure,
        Check::SafetyModel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::EStop => "estop",
            Check::RealtimeThreads => "realtime_threads",
            Check::FirmwareLink => "firmware_link",
            Check::JointStateFresh => "joint_state_fresh",
            Check::JointPositionsFinite => "joint_positions_finite",
            Check::JointVelocitiesFinite => "joint_velocities_finite",
            Check::EncodersOk => "encoders_ok",
            Check::MeasuredVelocity => "measured_velocity",
            Check::InferenceDeadline => "inference_deadline",
            Check::PolicyOutputFresh => "policy_output_fresh",
            Check::PolicyOutputFinite => "policy_output_finite",
            Check::WorkspaceClear => "workspace_clear",
            Check::JointPosition => "joint_position",
            Check::JointVelocity => "joint_velocity",
            Check::JointAcceleration => "joint_acceleration",
            Check::ToolAboveTable => "tool_above_table",
            Check::ToolInBox => "tool_in_box",
            Check::TelemetryFresh => "telemetry_fresh",
            Check::TelemetryFinite => "telemetry_finite",
            Check::MotorTemperature => "motor_temperature",
            Check::GripperPressure => "gripper_pressure",
            Check::SafetyModel => "safety_model",
        }
    }

    /// What a failure of this check means, in a technician's words.
    pub fn describe(self) -> &'static str {
        match self {
            Check::EStop => "the e-stop is pressed or latched (or the firmware has not reported it yet)",
            Check::RealtimeThreads => "a real-time thread has stalled or died",
            Check::FirmwareLink => "the firmware link is down",
            Check::JointStateFresh => "no fresh joint state from the firmware",
            Check::JointPositionsFinite => {
                "the firmware reports joint positions that are not numbers (NaN or infinite)"
            }
            Check::JointVelocitiesFinite => {
                "the firmware reports joint velocities that are not numbers (NaN or infinite)"
            }
            Check::EncodersOk => "the firmware reports a failed joint encoder",
            Check::MeasuredVelocity => "a joint is measured moving faster than its limit",
            Check::InferenceDeadline => "the policy missed its inference deadline",
            Check::PolicyOutputFresh => "no fresh policy output",
            Check::PolicyOutputFinite => "the policy produced an action that is not a number (NaN or infinite)",
            Check::WorkspaceClear => "the workspace is not clear (or no fresh depth frame)",
            Check::JointPosition => "a joint would leave its position limits",
            Check::JointVelocity => "a joint would move faster than its limit",
            Check::JointAcceleration => "a joint would accelerate harder than its limit",
            Check::ToolAboveTable => "the tool would go below the table",
            Check::ToolInBox => "the tool would leave its allowed box",
            Check::TelemetryFresh => "no recent temperature and pressure readings from the firmware",
            Check::TelemetryFinite => {
                "the firmware reports temperatures or pressure that are not numbers (NaN or infinite)"
            }
            Check::MotorTemperature => "a motor is too hot",
            Check::GripperPressure => "the gripper pressure is out of range",
            Check::SafetyModel => "the safety model refused the action",
        }
    }

    /// Whether a failure means broken evidence (a stalled thread, a sensor or
    /// model giving no numbers, a failed encoder) rather than a situation the
    /// robot is right to wait out: the page shows these red.
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Check::RealtimeThreads
                | Check::JointPositionsFinite
                | Check::JointVelocitiesFinite
                | Check::EncodersOk
                | Check::MeasuredVelocity
                | Check::PolicyOutputFinite
                | Check::TelemetryFinite
        )
    }

    pub fn bit(self) -> u32 {
        1 << self as u8
    }

    /// Whether a failure of this check is the policy's doing: its proposal
    /// broke a limit. The others fail on the robot's surroundings (a person,
    /// the e-stop, a stale link, a hot motor, a starved CPU) whatever the
    /// policy proposes, so a model on probation is not judged by them.
    pub fn blames_policy(self) -> bool {
        matches!(
            self,
            Check::JointPosition
                | Check::JointVelocity
                | Check::JointAcceleration
                | Check::ToolAboveTable
                | Check::ToolInBox
                | Check::SafetyModel
        )
    }
}

/// Everything the governor looks at besides the command, sampled once per tick.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RobotState {
    pub now_ns: u64,
    pub joints: usize,
    pub positions_rad: [f32; MAX_JOINTS],
    pub velocities_rad_s: [f32; MAX_JOINTS],
    /// Bit `j` set: joint `j`'s encoder reads correctly.
    pub encoder_ok: u8,
    /// When the joint state was received; 0 = never.
    pub joint_state_ns: u64,
    pub motor_temp_c: [f32; MAX_JOINTS],
    pub gripper_pressure_kpa: f32,
    /// When the telemetry was received; 0 = never.
    pub telemetry_ns: u64,
    /// The firmware has reported the e-stop at least once; until then it
    /// counts as pressed.
    pub estop_known: bool,
    pub estop_pressed: bool,
    pub estop_latched: bool,
    pub link_alive: bool,
    pub zone: ZoneReading,
    /// Capture time of the frame the policy output came from; 0 = no output yet.
    pub policy_frame_ns: u64,
    pub policy_frame_seq: u64,
    /// The output missed its inference deadline.
    pub policy_late: bool,
    /// The safety model refused the policy's action.
    pub policy_unsafe: bool,
    /// The policy's action was not finite.
    pub policy_non_finite: bool,
    /// Real-time threads the supervisor reports stalled or dead, one bit each.
    pub threads_stalled: u8,
}

/// A rejected command, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incident {
    pub time_ns: u64,
    /// The first failed check.
    pub check: Check,
    /// Every failed check, one bit per [`Check`].
    pub failed: u32,
    /// The measured value and the limit of the first failed check.
    pub value: f64,
    pub limit: f64,
    pub joint: Option<u8>,
    pub rejected: Command,
    pub substituted: Command,
    pub frame_seq: u64,
}

/// The governor's decision on one command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub command: Command,
    pub approved: bool,
    pub failed: u32,
}

/// Limits, in the units the checks compare in. Joint position limits already
/// have the configured margin taken off.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub joints: usize,
    pub pos_min: [f32; MAX_JOINTS],
    pub pos_max: [f32; MAX_JOINTS],
    pub vel_max: [f32; MAX_JOINTS],
    pub acc_max: [f32; MAX_JOINTS],
    pub period_s: f32,
    pub joint_state_max_age_ns: u64,
    pub telemetry_max_age_ns: u64,
    pub policy_max_age_ns: u64,
    pub depth_max_age_ns: u64,
    pub table_height_m: f64,
    pub box_min: [f64; 3],
    pub box_max: [f64; 3],
    pub max_temp_c: f32,
    pub pressure_min_kpa: f32,
    pub pressure_max_kpa: f32,
}

pub struct Governor {
    limits: Limits,
    arm: Arm,
    /// The last command sent, and the one before, for velocity and acceleration.
    last: Command,
    last_velocity: [f32; MAX_JOINTS],
    has_last: bool,
    estop_latched: bool,
}

impl Governor {
    pub fn new(limits: Limits, arm: Arm) -> Self {
        Self {
            limits,
            arm,
            last: Command::default(),
            last_velocity: [0.0; MAX_JOINTS],
            has_last: false,
            estop_latched: false,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The last command the governor let out (approved or substituted).
    pub fn last_sent(&self) -> Command {
        self.last
    }

    pub fn estop_latched(&self) -> bool {
        self.estop_latched
    }

    /// The explicit local reset: clears the governor's own e-stop latch. The
    /// firmware's latch is cleared separately, and while either is set the
    /// robot only ever gets the safe action.
    pub fn reset_estop(&mut self) {
        self.estop_latched = false;
    }

    /// The safe action for this state: hold the measured position, keep the
    /// gripper. A measured position that is stale or not finite is no place to
    /// hold at: then the last command sent is held, which was finite.
    pub fn safe_command(&self, state: &RobotState) -> Command {
        let n = state.joints.min(MAX_JOINTS);
        let measured = state.positions_rad.get(..n).unwrap_or(&[]);
        let usable = state.joint_state_ns != 0
            && state.now_ns.saturating_sub(state.joint_state_ns) <= self.limits.joint_state_max_age_ns
            && measured.iter().all(|p| p.is_finite());
        let mut c = if usable || !self.has_last {
            Command { targets_rad: state.positions_rad, gripper: self.last.gripper }
        } else {
            self.last
        };
        for (j, t) in c.targets_rad.iter_mut().enumerate() {
            if j >= n || !t.is_finite() {
                *t = 0.0;
            }
        }
        if !c.gripper.is_finite() {
            c.gripper = 0.0;
        }
        c
    }

    /// Checks `proposed` against `state`; returns what to send and, when it
    /// was rejected, the one incident that says why.
    // Joints index several parallel arrays at once.
    #[allow(clippy::needless_range_loop)]
    pub fn check(&mut self, proposed: &Command, state: &RobotState) -> (Verdict, Option<Incident>) {
        let l = &self.limits;
        let n = l.joints;
        let mut failed = 0u32;
        let mut first: Option<(Check, f64, f64, Option<u8>)> = None;
        let mut fail = |check: Check, value: f64, limit: f64, joint: Option<u8>| {
            failed |= check.bit();
            if first.is_none() {
                first = Some((check, value, limit, joint));
            }
        };
        let age = |t: u64| state.now_ns.saturating_sub(t);

        // 1. E-stop: the governor latches on its own as well.
        if state.estop_pressed || state.estop_latched {
            self.estop_latched = true;
        }
        if self.estop_latched || !state.estop_known {
            // Unknown is not "released": it stops the arm, without latching.
            fail(Check::EStop, f64::from(u8::from(state.estop_pressed || !state.estop_known)), 0.0, None);
        }
        if state.threads_stalled != 0 {
            fail(Check::RealtimeThreads, f64::from(state.threads_stalled), 0.0, None);
        }
        // 2. Firmware link and joint state.
        if !state.link_alive {
            fail(Check::FirmwareLink, 0.0, 1.0, None);
        }
        if state.joint_state_ns == 0 || age(state.joint_state_ns) > l.joint_state_max_age_ns {
            fail(
                Check::JointStateFresh,
                age(state.joint_state_ns) as f64 / 1e6,
                l.joint_state_max_age_ns as f64 / 1e6,
                None,
            );
        }
        let nan_at = |v: &[f32; MAX_JOINTS]| v.iter().take(n).position(|x| !x.is_finite());
        if let Some(j) = nan_at(&state.positions_rad) {
            fail(Check::JointPositionsFinite, f64::from(state.positions_rad[j]), 0.0, Some(j as u8));
        }
        if let Some(j) = nan_at(&state.velocities_rad_s) {
            fail(Check::JointVelocitiesFinite, f64::from(state.velocities_rad_s[j]), 0.0, Some(j as u8));
        }
        if let Some(j) = (0..n).find(|&j| (state.encoder_ok >> j) & 1 == 0) {
            fail(Check::EncodersOk, f64::from(state.encoder_ok), f64::from(((1u16 << n) - 1) as u8), Some(j as u8));
        }
        // The arm itself moving faster than allowed, whatever was commanded
        // (a finite reading only: a non-number already failed above).
        if let Some(j) = (0..n).find(|&j| {
            let v = state.velocities_rad_s[j];
            v.is_finite() && v.abs() > l.vel_max[j]
        }) {
            fail(Check::MeasuredVelocity, f64::from(state.velocities_rad_s[j]), f64::from(l.vel_max[j]), Some(j as u8));
        }
        // 3. The policy output.
        if state.policy_non_finite {
            fail(Check::PolicyOutputFinite, f64::NAN, 0.0, None);
        }
        if state.policy_late {
            fail(Check::InferenceDeadline, 1.0, 0.0, None);
        }
        if state.policy_frame_ns == 0 || age(state.policy_frame_ns) > l.policy_max_age_ns {
            fail(
                Check::PolicyOutputFresh,
                age(state.policy_frame_ns) as f64 / 1e6,
                l.policy_max_age_ns as f64 / 1e6,
                None,
            );
        }
        // 4. Workspace clear, from a fresh depth frame only.
        let zone = state.zone;
        if zone.capture_ns == 0 || age(zone.capture_ns) > l.depth_max_age_ns {
            fail(Check::WorkspaceClear, age(zone.capture_ns) as f64 / 1e6, l.depth_max_age_ns as f64 / 1e6, None);
        } else if !zone.clear {
            fail(Check::WorkspaceClear, f64::from(zone.occupied_pixels), 0.0, None);
        }
        // 5. Joint limits. Velocity and acceleration are those the command implies
        // relative to the previous command.
        let mut velocity = [0f32; MAX_JOINTS];
        for j in 0..n {
            let t = proposed.targets_rad[j];
            if !t.is_finite() || t < l.pos_min[j] || t > l.pos_max[j] {
                let limit = if t < l.pos_min[j] { l.pos_min[j] } else { l.pos_max[j] };
                fail(Check::JointPosition, f64::from(t), f64::from(limit), Some(j as u8));
            }
            let from = if self.has_last { self.last.targets_rad[j] } else { state.positions_rad[j] };
            velocity[j] = (t - from) / l.period_s;
            if !within(velocity[j].abs(), 0.0, l.vel_max[j]) {
                fail(Check::JointVelocity, f64::from(velocity[j]), f64::from(l.vel_max[j]), Some(j as u8));
            }
            let accel = (velocity[j] - self.last_velocity[j]) / l.period_s;
            if !within(accel.abs(), 0.0, l.acc_max[j]) {
                fail(Check::JointAcceleration, f64::from(accel), f64::from(l.acc_max[j]), Some(j as u8));
            }
        }
        // 6. Where the tool ends up.
        let tool = self.arm.tool_position(&proposed.targets_rad[..n]);
        if !within(tool[2], l.table_height_m, f64::MAX) {
            fail(Check::ToolAboveTable, tool[2], l.table_height_m, None);
        }
        if let Some(a) = (0..3).find(|&a| !within(tool[a], l.box_min[a], l.box_max[a])) {
            fail(
                Check::ToolInBox,
                tool[a],
                if tool[a] < l.box_min[a] { l.box_min[a] } else { l.box_max[a] },
                Some(a as u8),
            );
        }
        // 7. Robot health: limits are judged on finite readings only.
        if state.telemetry_ns == 0 || age(state.telemetry_ns) > l.telemetry_max_age_ns {
            fail(
                Check::TelemetryFresh,
                age(state.telemetry_ns) as f64 / 1e6,
                l.telemetry_max_age_ns as f64 / 1e6,
                None,
            );
        } else {
            let temps = state.motor_temp_c.get(..n).unwrap_or(&[]);
            let p = state.gripper_pressure_kpa;
            if let Some(j) = temps.iter().position(|t| !t.is_finite()) {
                fail(Check::TelemetryFinite, f64::from(temps[j]), 0.0, Some(j as u8));
            } else if !p.is_finite() {
                fail(Check::TelemetryFinite, f64::from(p), 0.0, None);
            } else {
                if let Some(j) = temps.iter().position(|t| *t > l.max_temp_c) {
                    fail(Check::MotorTemperature, f64::from(temps[j]), f64::from(l.max_temp_c), Some(j as u8));
                }
                if !within(p, l.pressure_min_kpa, l.pressure_max_kpa) {
                    let limit = if p < l.pressure_min_kpa { l.pressure_min_kpa } else { l.pressure_max_kpa };
                    fail(Check::GripperPressure, f64::from(p), f64::from(limit), None);
                }
            }
        }
        if !within(proposed.gripper, 0.0, 1.0) {
            fail(Check::GripperPressure, f64::from(proposed.gripper), 1.0, None);
        }
        // 8. The safety model's verdict on the action.
        if state.policy_unsafe {
            fail(Check::SafetyModel, 0.0, 0.5, None);
        }

        let mut incident = None;
        let verdict = match first {
            None => Verdict { command: *proposed, approved: true, failed: 0 },
            Some((check, value, limit, joint)) => {
                let substituted = self.safe_command(state);
                incident = Some(Incident {
                    time_ns: state.now_ns,
                    check,
                    failed,
                    value,
                    limit,
                    joint,
                    rejected: *proposed,
                    substituted,
                    frame_seq: state.policy_frame_seq,
                });
                Verdict { command: substituted, approved: false, failed }
            }
        };
        // What was sent becomes the reference for the next velocity and
        // acceleration; a substituted hold is a stop, after which motion starts
        // again from rest.
        let sent = verdict.command;
        for j in 0..n {
            let from = if self.has_last { self.last.targets_rad[j] } else { state.positions_rad[j] };
            self.last_velocity[j] = if verdict.approved { (sent.targets_rad[j] - from) / l.period_s } else { 0.0 };
        }
        self.last = sent;
        self.has_last = true;
        (verdict, incident)
    }
}
