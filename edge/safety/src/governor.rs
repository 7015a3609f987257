//! The safety governor: every command is checked here before it reaches the
//! firmware. Any failed check rejects it, substitutes a controlled stop
//! (IEC 60204-1 category 2: each joint decelerates from its last commanded
//! velocity within its acceleration limit, then holds; gripper unchanged) and
//! reports exactly one [`Incident`]. A pure function of the command, the sampled
//! state and the governor's own memory of what it last let out: no allocation,
//! no lock, no I/O.
//!
//! The checks, in the order they are evaluated (all are evaluated; the first
//! failure names the incident, the rest are in its `failed` set):
//! 1. e-stop: pressed or latched → safe action until an explicit local reset;
//!    not yet reported by the firmware → safe action (without latching);
//!    every real-time thread making progress (the supervisor's word);
//! 2. firmware link alive, no firmware fault (latched until the local reset,
//!    except the firmware's own stop for want of commands, which fails
//!    `firmware_stopped` once and restarts motion from the measured pose),
//!    joint state fresh, for the configured number of joints, finite and from
//!    working encoders, no joint measured faster than its velocity limit;
//! 3. inference deadline met, policy output fresh and finite;
//! 4. workspace clear: a fresh depth reading, a camera that can see the
//!    zone, nobody nearer the arm than the stop distance, and none since
//!    `resume_after`; in the slow band beyond it, no point of the arm faster
//!    than the separation distance allows ([`crate::separation`]);
//! 5. joint position (with the margin, and room to brake to a stop inside
//!    it), velocity and acceleration limits;
//! 6. every link above the table and outside every keep-out box, the tool tip
//!    (with its offset) above the table and inside the tool box (forward
//!    kinematics);
//! 7. telemetry fresh and finite, motor temperatures and gripper pressure
//!    within limits;
//! 8. the optional safety model approved the policy's action (it runs on the
//!    inference thread; its verdict comes with the output, and an output that
//!    is not a number is a refusal).
//!
//! A value that is not a finite number never passes a check and never reaches
//! the substitute: the controlled stop starts from the last command sent (always
//! finite); before any command was sent it holds the measured position if that
//! is fresh and finite, and otherwise there is no position to command at all:
//! the verdict says `hold`, and the caller sends the protocol's hold instead.

use crate::kinematics::{Arm, Outline};
use crate::separation::Separation;
use crate::zone::ZoneReading;
use crate::{within, MAX_JOINTS};

/// The most keep-out boxes the governor checks.
pub const MAX_KEEP_OUT: usize = 8;

/// A command for one control tick: absolute joint targets and the gripper.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    FirmwareFault,
    FirmwareStopped,
    JointStateFresh,
    JointCount,
    JointPositionsFinite,
    JointVelocitiesFinite,
    EncodersOk,
    MeasuredVelocity,
    InferenceDeadline,
    PolicyOutputFresh,
    PolicyOutputFinite,
    WorkspaceClear,
    SeparationDistance,
    JointPosition,
    JointVelocity,
    JointAcceleration,
    ToolAboveTable,
    ToolInBox,
    ArmAboveTable,
    KeepOut,
    TelemetryFresh,
    TelemetryFinite,
    MotorTemperature,
    GripperPressure,
    SafetyModel,
}

impl Check {
    pub const ALL: [Check; 28] = [
        Check::EStop,
        Check::RealtimeThreads,
        Check::FirmwareLink,
        Check::FirmwareFault,
        Check::FirmwareStopped,
        Check::JointStateFresh,
        Check::JointCount,
        Check::JointPositionsFinite,
        Check::JointVelocitiesFinite,
        Check::EncodersOk,
        Check::MeasuredVelocity,
        Check::InferenceDeadline,
        Check::PolicyOutputFresh,
        Check::PolicyOutputFinite,
        Check::WorkspaceClear,
        Check::SeparationDistance,
        Check::JointPosition,
        Check::JointVelocity,
        Check::JointAcceleration,
        Check::ToolAboveTable,
        Check::ToolInBox,
        Check::ArmAboveTable,
        Check::KeepOut,
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
            Check::FirmwareFault => "firmware_fault",
            Check::FirmwareStopped => "firmware_stopped",
            Check::JointStateFresh => "joint_state_fresh",
            Check::JointCount => "joint_count",
            Check::JointPositionsFinite => "joint_positions_finite",
            Check::JointVelocitiesFinite => "joint_velocities_finite",
            Check::EncodersOk => "encoders_ok",
            Check::MeasuredVelocity => "measured_velocity",
            Check::InferenceDeadline => "inference_deadline",
            Check::PolicyOutputFresh => "policy_output_fresh",
            Check::PolicyOutputFinite => "policy_output_finite",
            Check::WorkspaceClear => "workspace_clear",
            Check::SeparationDistance => "separation_distance",
            Check::JointPosition => "joint_position",
            Check::JointVelocity => "joint_velocity",
            Check::JointAcceleration => "joint_acceleration",
            Check::ToolAboveTable => "tool_above_table",
            Check::ToolInBox => "tool_in_box",
            Check::ArmAboveTable => "arm_above_table",
            Check::KeepOut => "keep_out",
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
            Check::FirmwareFault => "the firmware reported a fault (reset the e-stop once it is cleared)",
            Check::FirmwareStopped => {
                "the firmware stopped the arm for want of commands; starting again from where it stopped"
            }
            Check::JointStateFresh => "no fresh joint state from the firmware",
            Check::JointCount => "the firmware reports a different number of joints than configured",
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
            Check::WorkspaceClear => {
                "someone or something is too near the arm, the camera cannot see the workspace, or no fresh depth frame"
            }
            Check::SeparationDistance => "slowed down: someone is near the arm (speed and separation monitoring)",
            Check::JointPosition => "a joint would leave its position limits",
            Check::JointVelocity => "a joint would move faster than its limit",
            Check::JointAcceleration => "a joint would accelerate harder than its limit",
            Check::ToolAboveTable => "the tool would go below the table",
            Check::ToolInBox => "the tool would leave its allowed box",
            Check::ArmAboveTable => "a link of the arm would go below the table",
            Check::KeepOut => "the arm would enter a keep-out zone",
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
                | Check::FirmwareFault
                | Check::JointCount
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
                | Check::ArmAboveTable
                | Check::KeepOut
                | Check::SafetyModel
        )
    }
}

/// Everything the governor looks at besides the command, sampled once per tick.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RobotState {
    pub now_ns: u64,
    pub joints: usize,
    pub positions_rad: [f32; MAX_JOINTS],
    pub velocities_rad_s: [f32; MAX_JOINTS],
    /// Bit `j` set: joint `j`'s encoder reads correctly.
    pub encoder_ok: u8,
    /// When the joint state was received; 0 = never.
    pub joint_state_ns: u64,
    /// How many joints the firmware's joint state carried.
    pub reported_joints: u8,
    /// The newest fault the firmware reported.
    pub fault: FaultReport,
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

/// A fault message from the firmware, as the governor needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FaultReport {
    /// When it was received; 0 = never. A later time is a new fault.
    pub received_ns: u64,
    /// The firmware's fault code, for the incident.
    pub code: u8,
    /// The joint concerned, if any.
    pub joint: Option<u8>,
    /// Stays in force until the local reset (over-current, encoder, joint
    /// limit…); a fault that does not latch (the firmware's own command-timeout
    /// stop) stops this tick and restarts motion from the measured pose.
    pub latches: bool,
}

/// A rejected command, and why.
/// What an incident's value and limit measure, so a reader can say it in
/// words and units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// A yes/no condition: the value says nothing more.
    Flag,
    /// Age of a reading against the oldest allowed, milliseconds.
    AgeMs,
    /// Time since the workspace was last blocked against `resume_after`, milliseconds.
    ClearForMs,
    /// Depth pixels without a reading against the zone's footprint.
    BlindPixels,
    /// Nearest person or object against the stop distance, metres.
    DistanceM,
    /// Joint or tool position, radians or metres as the check's name says.
    Rad,
    Metres,
    RadPerS,
    RadPerS2,
    /// Tool speed against the allowed speed, m/s.
    MPerS,
    Celsius,
    KPa,
    /// A firmware fault code.
    Code,
    /// A count (joints, stalled threads) against the expected.
    Count,
    /// A keep-out box's index.
    Index,
}

impl Measure {
    /// The unit to print after a value, or "" where there is none.
    pub fn unit(self) -> &'static str {
        match self {
            Measure::AgeMs | Measure::ClearForMs => "ms",
            Measure::DistanceM | Measure::Metres => "m",
            Measure::Rad => "rad",
            Measure::RadPerS => "rad/s",
            Measure::RadPerS2 => "rad/s²",
            Measure::MPerS => "m/s",
            Measure::Celsius => "°C",
            Measure::KPa => "kPa",
            Measure::BlindPixels => "pixels",
            Measure::Flag | Measure::Code | Measure::Count | Measure::Index => "",
        }
    }
}

impl Check {
    /// What a failure's value measures (the workspace check says per cause).
    pub fn measure(self) -> Measure {
        match self {
            Check::EStop | Check::FirmwareLink | Check::InferenceDeadline | Check::PolicyOutputFinite => Measure::Flag,
            Check::JointPositionsFinite | Check::JointVelocitiesFinite | Check::TelemetryFinite => Measure::Flag,
            Check::EncodersOk | Check::SafetyModel => Measure::Flag,
            Check::RealtimeThreads | Check::JointCount => Measure::Count,
            Check::FirmwareFault | Check::FirmwareStopped => Measure::Code,
            Check::JointStateFresh | Check::PolicyOutputFresh | Check::TelemetryFresh => Measure::AgeMs,
            Check::WorkspaceClear => Measure::DistanceM,
            Check::SeparationDistance => Measure::MPerS,
            Check::MeasuredVelocity | Check::JointVelocity => Measure::RadPerS,
            Check::JointPosition => Measure::Rad,
            Check::JointAcceleration => Measure::RadPerS2,
            Check::ToolAboveTable | Check::ArmAboveTable | Check::ToolInBox => Measure::Metres,
            Check::KeepOut => Measure::Index,
            Check::MotorTemperature => Measure::Celsius,
            Check::GripperPressure => Measure::KPa,
        }
    }
}

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
    /// What they measure.
    pub measure: Measure,
    pub joint: Option<u8>,
    pub rejected: Command,
    pub substituted: Command,
    pub frame_seq: u64,
}

/// The governor's decision on one command.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Verdict {
    pub command: Command,
    pub approved: bool,
    pub failed: u32,
    /// No position may be commanded (nothing was sent yet and the measured
    /// pose is unknown): send the protocol's hold, not `command`.
    pub hold: bool,
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
    /// Speed and separation monitoring.
    pub separation: Separation,
    /// After the zone needed a stop, motion resumes only once it has stayed
    /// clear this long (depth capture time).
    pub resume_after_ns: u64,
    /// Boxes no part of the arm may enter, `[min_x, min_y, min_z, max_x,
    /// max_y, max_z]` in metres (base frame), already grown by the links' radius.
    pub keep_out: [[f64; 6]; MAX_KEEP_OUT],
    pub keep_out_count: usize,
}

pub struct Governor {
    limits: Limits,
    arm: Arm,
    /// The last command sent, and the one before, for velocity and acceleration.
    last: Command,
    last_velocity: [f32; MAX_JOINTS],
    has_last: bool,
    /// When the last command was let out (`RobotState::now_ns`).
    last_ns: u64,
    estop_latched: bool,
    /// The newest fault already taken into account, by its receive time.
    fault_seen_ns: u64,
    /// A latching firmware fault in force until the local reset.
    fault_latched: Option<FaultReport>,
    /// Capture time of the newest depth reading that needed a stop; 0 = none.
    zone_blocked_ns: u64,
    /// The fastest any point of the arm can move at the velocity limits (m/s).
    speed_bound_m_s: f64,
    /// Ticks a controlled stop from the velocity limits takes: a command
    /// faster than that fails `joint_velocity`, so its path is not followed further.
    stop_ticks: usize,
}

/// What the governor remembers from one tick to the next: with its limits
/// and arm, all its decisions depend on. A replay restores it to decide again
/// exactly as the robot did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GovernorMemory {
    pub last: Command,
    pub last_velocity: [f32; MAX_JOINTS],
    pub has_last: bool,
    pub last_ns: u64,
    pub estop_latched: bool,
    pub fault_seen_ns: u64,
    pub fault_latched: Option<FaultReport>,
    pub zone_blocked_ns: u64,
}

/// What the governor sends when a check fails.
struct Substitute {
    command: Command,
    velocity: [f32; MAX_JOINTS],
    hold: bool,
}

impl Governor {
    pub fn new(limits: Limits, arm: Arm) -> Self {
        let n = limits.joints.min(MAX_JOINTS).min(arm.joints());
        let speed_bound_m_s =
            limits.vel_max.iter().take(n).enumerate().map(|(j, v)| f64::from(libm::fabsf(*v)) * arm.reach(j)).sum();
        let stop_ticks = limits
            .vel_max
            .iter()
            .zip(&limits.acc_max)
            .take(n)
            .map(|(v, a)| libm::ceilf(libm::fabsf(*v) / (a * limits.period_s)))
            .fold(0.0f32, f32::max);
        // NaN or a zero acceleration limit: the longest path.
        let stop_ticks =
            if stop_ticks.is_finite() { (stop_ticks as usize + 2).min(MAX_STOP_TICKS) } else { MAX_STOP_TICKS };
        Self {
            limits,
            arm,
            zone_blocked_ns: 0,
            speed_bound_m_s,
            stop_ticks,
            last: Command::default(),
            last_velocity: [0.0; MAX_JOINTS],
            has_last: false,
            last_ns: 0,
            estop_latched: false,
            fault_seen_ns: 0,
            fault_latched: None,
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

    /// The latching firmware fault in force, if any.
    pub fn fault_latched(&self) -> Option<FaultReport> {
        self.fault_latched
    }

    /// The velocity of the last command sent, per joint (rad/s).
    pub fn last_velocity(&self) -> [f32; MAX_JOINTS] {
        self.last_velocity
    }

    pub fn memory(&self) -> GovernorMemory {
        GovernorMemory {
            last: self.last,
            last_velocity: self.last_velocity,
            has_last: self.has_last,
            last_ns: self.last_ns,
            estop_latched: self.estop_latched,
            fault_seen_ns: self.fault_seen_ns,
            fault_latched: self.fault_latched,
            zone_blocked_ns: self.zone_blocked_ns,
        }
    }

    /// Takes up `m` (from [`Self::memory`] of a governor with the same limits
    /// and arm): the next check decides as that governor's would have.
    pub fn restore(&mut self, m: &GovernorMemory) {
        self.last = m.last;
        self.last_velocity = m.last_velocity;
        self.has_last = m.has_last;
        self.last_ns = m.last_ns;
        self.estop_latched = m.estop_latched;
        self.fault_seen_ns = m.fault_seen_ns;
        self.fault_latched = m.fault_latched;
        self.zone_blocked_ns = m.zone_blocked_ns;
    }

    /// The explicit local reset: clears the governor's own e-stop latch and a
    /// latched firmware fault. Motion then starts over from the measured pose
    /// at rest. The firmware's latch is cleared separately, and while it or the
    /// button is set the robot only ever gets the safe action.
    pub fn reset(&mut self) {
        self.estop_latched = false;
        self.fault_latched = None;
        self.restart();
    }

    /// The share of the velocity limits the arm may use now, from the nearest
    /// person's distance (1 with nobody in the zone): at that share no point of
    /// the arm moves faster than the separation allows. The shaper plans with
    /// it; the governor checks the speed itself.
    pub fn speed_scale(&self, state: &RobotState) -> f32 {
        let allowed = self.limits.separation.allowed_speed_m_s(nearest_m(&state.zone));
        if self.speed_bound_m_s <= 0.0 || allowed >= self.speed_bound_m_s {
            1.0
        } else {
            crate::limit((allowed / self.speed_bound_m_s) as f32, 0.0, 1.0)
        }
    }

    /// The time a command sent at `now_ns` moves over: since the last command
    /// was let out, at most one period. A tick sooner than a period (the
    /// control loop answering a new policy output at once) is judged over its
    /// real interval, so velocity and acceleration are never underestimated; a
    /// late tick is judged as one period, which overestimates them. Without a
    /// last command (motion starts from the measured pose at rest), one period.
    pub fn step_s(&self, now_ns: u64) -> f32 {
        let period = self.limits.period_s;
        if !self.has_last || self.last_ns == 0 {
            return period;
        }
        // At least a nanosecond, so a command at the same instant as the last
        // one has an infinite velocity (rejected) rather than a division by zero.
        let elapsed = now_ns.saturating_sub(self.last_ns).max(1) as f32 / 1e9;
        if elapsed < period {
            elapsed
        } else {
            period
        }
    }

    /// Forgets the last command: the next one is judged from the measured pose at rest.
    fn restart(&mut self) {
        self.has_last = false;
        self.last_velocity = [0.0; MAX_JOINTS];
    }

    /// Whether the measured pose is fresh and finite: a place to start or hold at.
    pub fn measured_usable(&self, state: &RobotState) -> bool {
        let n = state.joints.min(MAX_JOINTS);
        state.joint_state_ns != 0
            && state.now_ns.saturating_sub(state.joint_state_ns) <= self.limits.joint_state_max_age_ns
            && usize::from(state.reported_joints) == n
            && state.positions_rad.get(..n).unwrap_or(&[]).iter().all(|p| p.is_finite())
    }

    /// The controlled stop: from the last command sent, each joint's velocity
    /// falls by at most its acceleration limit per control period until it is
    /// zero, then the position holds ([`Governor::stop_step`]). Before any
    /// command was sent: hold the measured pose if it is usable, else no
    /// position at all (`hold`).
    ///
    /// The stop is the sequence of targets one period apart that
    /// [`Governor::check`] followed when it let the last command out, step
    /// for step and bit for bit, so no substitute ever goes where that check
    /// did not look. A scheduled tick is a period after the last command
    /// (a late one is judged as a period); jitter in when a target leaves
    /// does not move where it is.
    fn substitute(&self, state: &RobotState) -> Substitute {
        let l = &self.limits;
        let n = l.joints.min(MAX_JOINTS);
        if !self.has_last {
            let usable = self.measured_usable(state);
            let mut command = Command { targets_rad: [0.0; MAX_JOINTS], gripper: self.last.gripper };
            if usable {
                for (t, p) in command.targets_rad.iter_mut().zip(state.positions_rad.iter()).take(n) {
                    *t = *p;
                }
            }
            if !command.gripper.is_finite() {
                command.gripper = 0.0;
            }
            return Substitute { command, velocity: [0.0; MAX_JOINTS], hold: !usable };
        }
        let (mut command, mut velocity) = (self.last, self.last_velocity);
        self.stop_step(&mut command.targets_rad, &mut velocity);
        Substitute { command, velocity, hold: false }
    }

    /// One period of the controlled stop, in place: each joint's velocity
    /// slowed by its acceleration limit over a period, the target moved by
    /// it, and the velocity then taken as the targets carry it once rounded
    /// to f32 (as the next command's acceleration is judged against). The
    /// approval's look-ahead and the substitute both step with this, so they
    /// agree to the bit.
    fn stop_step(&self, targets: &mut [f32; MAX_JOINTS], velocity: &mut [f32; MAX_JOINTS]) {
        let l = &self.limits;
        let dt = l.period_s;
        for j in 0..l.joints.min(MAX_JOINTS) {
            let (Some(t), Some(v0), Some(a)) = (targets.get_mut(j), velocity.get_mut(j), l.acc_max.get(j)) else {
                continue;
            };
            let v = braked(*v0, a * dt);
            // Finite by construction; the guard keeps a bad limit from
            // turning into a non-finite target.
            if v.is_finite() && (*t + v * dt).is_finite() {
                let from = *t;
                *t += v * dt;
                *v0 = (*t - from) / dt;
            } else {
                *v0 = 0.0;
            }
        }
    }

    /// The command sent if this state rejected everything: the controlled
    /// stop's next step (see [`Governor::check`]).
    pub fn safe_command(&self, state: &RobotState) -> Command {
        self.substitute(state).command
    }

    /// The arm's way from targets `a` to targets `b`, the joints moving in
    /// proportion (as the firmware interpolates between two targets): every
    /// point of the arm stays above the table and out of the keep-out boxes
    /// all the way, and at `b` the tool is inside its box.
    ///
    /// Each link sweeps a surface that lies within `e` of the convex hull of
    /// its ends at `a` and at `b` ([`sweep_enters_box`]), where `e` bounds
    /// how far a point strays from the straight line between its two
    /// positions: `|P''| <= 2 * sum_jk |Δq_j| |Δq_k| reach(max(j, k))`, so
    /// `e = |P''| / 8 <= S * L / 4` with `S = sum |Δq_j|` and
    /// `L = sum |Δq_j| * reach(j)`. `e` is quadratic in the move: about 1 mm
    /// for a whole period at the velocity limits, micrometres for the first
    /// step from rest, so an arm stopped beside a box can still move away from it.
    ///
    /// `from` and `to` are the outlines at `a` and `b`: the caller has them
    /// already, each pose of a stop being the end of one move and the start
    /// of the next.
    fn check_move(
        &self,
        (a, from): (&[f32; MAX_JOINTS], &Outline),
        (b, to): (&[f32; MAX_JOINTS], &Outline),
        fail: &mut impl FnMut(Check, f64, f64, Option<u8>),
    ) {
        let l = &self.limits;
        let n = l.joints.min(MAX_JOINTS);
        let (mut turn, mut travel) = (0.0f64, 0.0f64);
        for j in 0..n {
            let dq = f64::from(libm::fabsf(b[j] - a[j]));
            turn += dq;
            travel += dq * self.arm.reach(j);
        }
        // A non-number anywhere is never clear of anything.
        let e = turn * travel / 4.0;
        let floor = l.table_height_m + e;
        let tool = to.tool();
        if !within(from.tool()[2].min(tool[2]), floor, f64::MAX) || !e.is_finite() {
            fail(Check::ToolAboveTable, tool[2], floor, None);
        }
        // The base and the shoulder point above it do not move; every point after them is checked.
        let lowest = from
            .points()
            .iter()
            .zip(to.points())
            .enumerate()
            .skip(2)
            .find(|(_, (p, q))| !within(p[2], floor, f64::MAX) || !within(q[2], floor, f64::MAX));
        if let Some((i, (p, q))) = lowest {
            // Outline points 2k and 2k+1 belong to joint k's link.
            fail(Check::ArmAboveTable, p[2].min(q[2]), floor, Some((i / 2 - 1) as u8));
        }
        let boxes = l.keep_out.get(..l.keep_out_count).unwrap_or(&[]);
        let mut links =
            from.points().get(1..).unwrap_or(&[]).windows(2).zip(to.points().get(1..).unwrap_or(&[]).windows(2));
        let hit = links
            .find_map(|(s0, s1)| boxes.iter().position(|bx| sweep_enters_box([s0[0], s0[1], s1[0], s1[1]], bx, e)));
        if let Some(k) = hit {
            fail(Check::KeepOut, k as f64, 0.0, Some(k as u8));
        }
        if let Some(ax) = (0..3).find(|&ax| !within(tool[ax], l.box_min[ax], l.box_max[ax])) {
            fail(
                Check::ToolInBox,
                tool[ax],
                if tool[ax] < l.box_min[ax] { l.box_min[ax] } else { l.box_max[ax] },
                Some(ax as u8),
            );
        }
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
        let dt = self.step_s(state.now_ns);

        // 1. E-stop: a press latches the governor as well, and only the local
        // reset clears that; the firmware's own latch stops the arm while it
        // is reported, and an unknown state is not "released".
        if state.estop_pressed {
            self.estop_latched = true;
        }
        if self.estop_latched || state.estop_latched || !state.estop_known {
            fail(Check::EStop, f64::from(u8::from(state.estop_pressed || !state.estop_known)), 0.0, None);
        }
        if state.threads_stalled != 0 {
            fail(Check::RealtimeThreads, f64::from(state.threads_stalled), 0.0, None);
        }
        // 2. Firmware link and joint state.
        if !state.link_alive {
            fail(Check::FirmwareLink, 0.0, 1.0, None);
        }
        let fault = state.fault;
        if fault.received_ns > self.fault_seen_ns {
            self.fault_seen_ns = fault.received_ns;
            if fault.latches {
                self.fault_latched = Some(fault);
            } else {
                // The firmware stopped the arm itself: go on from where it
                // came to rest, not from the last command.
                self.has_last = false;
                self.last_velocity = [0.0; MAX_JOINTS];
                fail(Check::FirmwareStopped, f64::from(fault.code), 0.0, fault.joint);
            }
        }
        if let Some(f) = self.fault_latched {
            fail(Check::FirmwareFault, f64::from(f.code), 0.0, f.joint);
        }
        if state.joint_state_ns == 0 || age(state.joint_state_ns) > l.joint_state_max_age_ns {
            fail(
                Check::JointStateFresh,
                age(state.joint_state_ns) as f64 / 1e6,
                l.joint_state_max_age_ns as f64 / 1e6,
                None,
            );
        }
        if state.joint_state_ns != 0 && usize::from(state.reported_joints) != n {
            fail(Check::JointCount, f64::from(state.reported_joints), n as f64, None);
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
        // 4. Workspace clear, from a fresh depth frame only; nobody within
        // the stop distance, a camera that sees the zone, and both for
        // `resume_after` since the last reading that needed a stop.
        let zone = state.zone;
        let zone_fresh = zone.capture_ns != 0 && age(zone.capture_ns) <= l.depth_max_age_ns;
        let nearest = nearest_m(&zone);
        let stop_distance = l.separation.stop_distance_m();
        if zone_fresh && (zone.blind || !within(nearest, stop_distance, f64::INFINITY)) {
            self.zone_blocked_ns = self.zone_blocked_ns.max(zone.capture_ns);
        }
        // The workspace check has four causes, each measured differently.
        let mut workspace = Measure::DistanceM;
        if !zone_fresh {
            workspace = Measure::AgeMs;
            fail(Check::WorkspaceClear, age(zone.capture_ns) as f64 / 1e6, l.depth_max_age_ns as f64 / 1e6, None);
        } else if zone.blind {
            workspace = Measure::BlindPixels;
            fail(Check::WorkspaceClear, f64::from(zone.invalid_pixels), f64::from(zone.footprint_pixels), None);
        } else if !within(nearest, stop_distance, f64::INFINITY) {
            fail(Check::WorkspaceClear, nearest, stop_distance, None);
        } else if self.zone_blocked_ns != 0 && zone.capture_ns.saturating_sub(self.zone_blocked_ns) < l.resume_after_ns
        {
            workspace = Measure::ClearForMs;
            fail(
                Check::WorkspaceClear,
                zone.capture_ns.saturating_sub(self.zone_blocked_ns) as f64 / 1e6,
                l.resume_after_ns as f64 / 1e6,
                None,
            );
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
            velocity[j] = (t - from) / dt;
            if !within(velocity[j].abs(), 0.0, l.vel_max[j]) {
                fail(Check::JointVelocity, f64::from(velocity[j]), f64::from(l.vel_max[j]), Some(j as u8));
            }
            // Room to stop: the controlled stop from this command (braking at
            // the acceleration limit) must end inside the position limits, so
            // no substitute ever carries the arm past them.
            let braking = velocity[j] * velocity[j] / (2.0 * l.acc_max[j]);
            let stops_at = if velocity[j] >= 0.0 { t + braking } else { t - braking };
            if t.is_finite() && within(t, l.pos_min[j], l.pos_max[j]) && !within(stops_at, l.pos_min[j], l.pos_max[j]) {
                let limit = if stops_at < l.pos_min[j] { l.pos_min[j] } else { l.pos_max[j] };
                fail(Check::JointPosition, f64::from(stops_at), f64::from(limit), Some(j as u8));
            }
            let accel = (velocity[j] - self.last_velocity[j]) / dt;
            if !within(accel.abs(), 0.0, l.acc_max[j]) {
                fail(Check::JointAcceleration, f64::from(accel), f64::from(l.acc_max[j]), Some(j as u8));
            }
        }
        // 4b. In the slow band: no point of the arm faster than the nearest
        // person's distance allows (a non-number never passes).
        let to = self.arm.outline(&proposed.targets_rad[..n]);
        if zone_fresh && nearest.is_finite() {
            let from = if self.has_last { self.last.targets_rad } else { state.positions_rad };
            let speed = outline_speed(&self.arm.outline(&from[..n]), &to, dt);
            let allowed = l.separation.allowed_speed_m_s(nearest);
            // The tolerance covers f32 rounding of a command planned at the limit.
            if !within(speed, 0.0, allowed * 1.001 + 1e-4) {
                fail(Check::SeparationDistance, speed, allowed, None);
            }
        }
        // 6. Where the arm and the tool go: at the command and at every tick
        // of the controlled stop from it, and on the way to each of them,
        // so no substitute carries the arm where the command itself stays
        // out of, and no point of the arm cuts through a box or the table
        // between two targets.
        let from = if self.has_last {
            self.last.targets_rad
        } else if state.positions_rad.iter().take(n).all(|p| p.is_finite()) {
            state.positions_rad
        } else {
            // No pose to come from (a check above failed already): the command alone.
            proposed.targets_rad
        };
        // Each pose's outline is computed once: the command's is `to`, and
        // each move's end is the next one's start.
        let (mut a, mut b, mut braking) = (from, proposed.targets_rad, velocity);
        let (mut at_a, mut at_b) = (self.arm.outline(&a[..n]), to);
        for _ in 0..=self.stop_ticks {
            self.check_move((&a, &at_a), (&b, &at_b), &mut fail);
            if braking.iter().take(n).all(|v| *v == 0.0) {
                break;
            }
            (a, at_a) = (b, at_b);
            self.stop_step(&mut b, &mut braking);
            at_b = self.arm.outline(&b[..n]);
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
        let (verdict, sent_velocity) = match first {
            None => (Verdict { command: *proposed, approved: true, failed: 0, hold: false }, velocity),
            Some((check, value, limit, joint)) => {
                let s = self.substitute(state);
                incident = Some(Incident {
                    time_ns: state.now_ns,
                    check,
                    failed,
                    value,
                    limit,
                    measure: if check == Check::WorkspaceClear { workspace } else { check.measure() },
                    joint,
                    rejected: *proposed,
                    substituted: s.command,
                    frame_seq: state.policy_frame_seq,
                });
                (Verdict { command: s.command, approved: false, failed, hold: s.hold }, s.velocity)
            }
        };
        // What was sent becomes the reference for the next velocity and
        // acceleration. A hold without a position leaves nothing to go on from.
        if verdict.hold {
            self.restart();
        } else {
            self.last = verdict.command;
            self.last_velocity = sent_velocity;
            self.has_last = true;
            self.last_ns = state.now_ns;
        }
        (verdict, incident)
    }
}

/// The most ticks a controlled stop is ever followed for (at 100 Hz and the
/// default limits a stop takes 19).
const MAX_STOP_TICKS: usize = 200;

/// One tick of the controlled stop: `v0` slowed by at most `dv` towards 0
/// (0 for a non-number).
fn braked(v0: f32, dv: f32) -> f32 {
    if v0 > dv {
        v0 - dv
    } else if v0 < -dv {
        v0 + dv
    } else {
        0.0
    }
}

/// The nearest intrusion's distance in metres (infinite with none).
fn nearest_m(zone: &ZoneReading) -> f64 {
    if zone.nearest_mm == ZoneReading::NONE {
        f64::INFINITY
    } else {
        f64::from(zone.nearest_mm) / 1000.0
    }
}

/// The fastest any point of the outline moves from `from` to `to` in `period_s`.
fn outline_speed(from: &Outline, to: &Outline, period_s: f32) -> f64 {
    let mut fastest = 0.0f64;
    for (a, b) in from.points().iter().zip(to.points()) {
        let d2: f64 = (0..3).map(|k| (b[k] - a[k]) * (b[k] - a[k])).sum();
        // A non-number is never "slow enough" (`max` would drop it).
        if d2.is_nan() {
            return f64::NAN;
        }
        fastest = fastest.max(libm::sqrt(d2));
    }
    fastest / f64::from(period_s)
}

/// Whether the convex hull of `p` (a link's two ends before and after a
/// move), grown by `e`, touches the box `[min.., max..]`: the separating
/// axis test, with the box's faces, the hull's faces and the cross products
/// of their edges as the axes (exact for two convex polyhedra, and a
/// degenerate hull, a segment or a flat quad, is covered by its edges).
/// True for anything that is not a number.
fn sweep_enters_box(p: [[f64; 3]; 4], b: &[f64; 6], e: f64) -> bool {
    if !e.is_finite() || p.iter().flatten().chain(b.iter()).any(|v| !v.is_finite()) {
        return true;
    }
    let sub = |u: [f64; 3], v: [f64; 3]| [u[0] - v[0], u[1] - v[1], u[2] - v[2]];
    let cross =
        |u: [f64; 3], v: [f64; 3]| [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]];
    let dot = |u: [f64; 3], v: [f64; 3]| u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
    let center = [(b[0] + b[3]) / 2.0, (b[1] + b[4]) / 2.0, (b[2] + b[5]) / 2.0];
    let half = [(b[3] - b[0]) / 2.0, (b[4] - b[1]) / 2.0, (b[5] - b[2]) / 2.0];
    // Apart along `axis`: the hull's and the box's projections, each
    // widened by `e` (the box only: growing either is the same).
    let apart = |axis: [f64; 3]| {
        let norm = libm::sqrt(dot(axis, axis));
        if norm < 1e-12 {
            return false;
        }
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for q in &p {
            let t = dot(*q, axis);
            lo = lo.min(t);
            hi = hi.max(t);
        }
        let c = dot(center, axis);
        let r =
            half[0] * libm::fabs(axis[0]) + half[1] * libm::fabs(axis[1]) + half[2] * libm::fabs(axis[2]) + e * norm;
        hi < c - r || lo > c + r
    };
    let units = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    if units.iter().any(|u| apart(*u)) {
        return false;
    }
    let edges = [sub(p[1], p[0]), sub(p[2], p[0]), sub(p[3], p[0]), sub(p[2], p[1]), sub(p[3], p[1]), sub(p[3], p[2])];
    let faces = [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]];
    if faces.iter().any(|f| apart(cross(sub(p[f[1]], p[f[0]]), sub(p[f[2]], p[f[0]])))) {
        return false;
    }
    !edges.iter().any(|d| units.iter().any(|u| apart(cross(*d, *u))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link that does not move is its segment.
    fn still(u: [f64; 3], v: [f64; 3]) -> [[f64; 3]; 4] {
        [u, v, u, v]
    }

    #[test]
    fn segments_and_boxes() {
        let b = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        assert!(sweep_enters_box(still([-1.0, 0.5, 0.5], [2.0, 0.5, 0.5]), &b, 0.0), "passes through");
        assert!(sweep_enters_box(still([0.5, 0.5, 0.5], [0.6, 0.5, 0.5]), &b, 0.0), "inside");
        assert!(!sweep_enters_box(still([-1.0, 0.5, 0.5], [-0.1, 0.5, 0.5]), &b, 0.0), "stops short");
        assert!(!sweep_enters_box(still([-1.0, 2.0, 0.5], [2.0, 2.0, 0.5]), &b, 0.0), "passes beside");
        assert!(!sweep_enters_box(still([-1.0, 1.5, 1.5], [1.5, -1.0, 1.5]), &b, 0.0), "diagonal, above");
        assert!(sweep_enters_box(still([-1.0, 1.5, 0.5], [1.5, -1.0, 0.5]), &b, 0.0), "diagonal, across a corner");
        assert!(sweep_enters_box(still([f64::NAN, 0.0, 0.0], [2.0, 2.0, 0.5]), &b, 0.0), "not a number");
        assert!(sweep_enters_box(still([-1.0, 0.5, 0.5], [-0.1, 0.5, 0.5]), &b, f64::NAN), "no bound on the way");
    }

    /// A link moving past a box: both of its positions clear, its way not.
    #[test]
    fn sweeps_and_boxes() {
        let b = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        // A vertical link beside the box's corner, then on its other side:
        // between the two it passes through the corner.
        let (u0, v0) = ([-0.2, 0.5, 0.2], [-0.2, 0.5, 0.8]);
        let (u1, v1) = ([0.5, -0.2, 0.2], [0.5, -0.2, 0.8]);
        assert!(!sweep_enters_box(still(u0, v0), &b, 0.0) && !sweep_enters_box(still(u1, v1), &b, 0.0));
        assert!(sweep_enters_box([u0, v0, u1, v1], &b, 0.0), "cuts the corner");
        // Moving straight away from the face it nearly touches: clear, as
        // long as the stray from the straight way is less than the gap.
        let (u0, v0) = ([-0.001, 0.2, 0.2], [-0.001, 0.8, 0.8]);
        let (u1, v1) = ([-0.05, 0.2, 0.2], [-0.05, 0.8, 0.8]);
        assert!(!sweep_enters_box([u0, v0, u1, v1], &b, 0.0005), "moves away");
        assert!(sweep_enters_box([u0, v0, u1, v1], &b, 0.002), "strays further than the gap");
        // Growing by `e` off a face: a gap wider than `e` is clear, a narrower one is not.
        let (u, v) = ([1.0011, 0.2, 0.2], [1.5, 0.8, 0.8]);
        assert!(!sweep_enters_box(still(u, v), &b, 1.0e-3), "1.1 mm off the face");
        assert!(sweep_enters_box(still(u, v), &b, 1.2e-3), "1.1 mm is within 1.2");
    }
}
