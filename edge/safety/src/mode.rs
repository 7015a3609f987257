//! The control loop's own data: the operating mode (which the status page,
//! recorder and task executor read), the policy output it follows and what
//! it remembers between ticks.

/// The operating mode the status page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Running = 0,
    /// On the baseline policy, or without real-time scheduling.
    Degraded = 1,
    /// No usable policy output: holding position.
    SafeStop = 2,
    EStop = 3,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Running => "running",
            Mode::Degraded => "degraded",
            Mode::SafeStop => "safe_stop",
            Mode::EStop => "estop",
        }
    }

    pub fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Degraded,
            2 => Mode::SafeStop,
            3 => Mode::EStop,
            _ => Mode::Running,
        }
    }
}

/// The newest policy result, as the inference thread publishes it and the
/// control tick follows it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PolicyOutput {
    /// Capture time and sequence of the RGB frame it was computed from; 0 = none yet.
    pub frame_ns: u64,
    pub frame_seq: u64,
    /// When inference finished.
    pub done_ns: u64,
    /// How long the model itself ran (`PolicyBackend::run`), for the overhead
    /// figure: frame-to-command latency less this.
    pub model_ns: u64,
    /// Missed its inference deadline.
    pub late: bool,
    /// The safety model refused this action.
    pub unsafe_action: bool,
    /// The policy's action held a value that is not a finite number; the goal
    /// is then the joint state it was computed from and must not be followed.
    pub non_finite: bool,
    /// Where the policy wants the joints: positions at inference time + its deltas.
    pub goal_rad: [f32; crate::MAX_JOINTS],
    pub gripper: f32,
    /// Produced by the baseline policy (fallback) rather than the primary.
    pub baseline: bool,
}

/// What the control loop remembers between ticks (its governor's memory
/// included): restored, the next tick decides as the robot's did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LoopMemory {
    pub governor: crate::governor::GovernorMemory,
    pub last: crate::governor::Command,
    pub velocity: [f32; crate::MAX_JOINTS],
    pub started: bool,
    pub min_frame_seq: u64,
}
