//! One control tick: the newest policy goal → a feasible step toward it → the
//! safety governor → the firmware. The tick takes its inputs and the time as
//! arguments, so tests drive it with a mock clock and the control thread with the
//! real one. Nothing here allocates, locks or formats.

use gantry_config::edge::MAX_JOINTS;
use gantry_config::EdgeConfig;

use crate::governor::{Command, RobotState, SafetyGovernor, Verdict};

/// The newest policy result, as the inference thread publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
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
    pub goal_rad: [f32; MAX_JOINTS],
    pub gripper: f32,
    /// Produced by the baseline policy (fallback) rather than the primary.
    pub baseline: bool,
}

/// Turns a goal into a per-tick step the governor will accept: velocity and
/// acceleration stay within a fraction of the governor's limits, and the step
/// slows down in time to stop at the goal.
#[derive(Debug, Clone)]
pub struct Shaper {
    joints: usize,
    vel_max: [f32; MAX_JOINTS],
    acc_max: [f32; MAX_JOINTS],
    period_s: f32,
}

/// Share of each governor limit the shaper plans with.
const HEADROOM: f32 = 0.8;

impl Shaper {
    pub fn new(config: &EdgeConfig) -> Self {
        let mut vel_max = [0f32; MAX_JOINTS];
        let mut acc_max = [0f32; MAX_JOINTS];
        for (i, v) in config.governor.max_velocity_rad_s.iter().enumerate().take(MAX_JOINTS) {
            vel_max[i] = *v as f32 * HEADROOM;
        }
        for (i, a) in config.governor.max_accel_rad_s2.iter().enumerate().take(MAX_JOINTS) {
            acc_max[i] = *a as f32 * HEADROOM;
        }
        Self {
            joints: config.firmware.joints.min(MAX_JOINTS),
            vel_max,
            acc_max,
            period_s: 1.0 / config.control.rate_hz.max(1) as f32,
        }
    }

    /// The next command from `last` (moving at `velocity`) toward `goal`.
    pub fn step(
        &self,
        last: &Command,
        velocity: &mut [f32; MAX_JOINTS],
        goal: &[f32; MAX_JOINTS],
        gripper: f32,
    ) -> Command {
        let dt = self.period_s;
        let mut next = Command { targets_rad: last.targets_rad, gripper: limit(gripper, 0.0, 1.0) };
        for j in 0..self.joints {
            let distance = goal[j] - last.targets_rad[j];
            // The speed from which we can still stop at the goal.
            let stoppable = (2.0 * self.acc_max[j] * distance.abs()).sqrt();
            let wanted = limit(limit(distance / dt, -stoppable, stoppable), -self.vel_max[j], self.vel_max[j]);
            let dv = self.acc_max[j] * dt;
            let v = limit(wanted, velocity[j] - dv, velocity[j] + dv);
            velocity[j] = v;
            next.targets_rad[j] = last.targets_rad[j] + v * dt;
        }
        next
    }
}

/// `x` within `lo..=hi` without `f32::clamp`'s panics (NaN or crossed bounds):
/// a NaN `x` gives `lo`, crossed bounds give `hi`. Callers keep non-finite
/// values away; this only makes sure none of them can stop the thread.
fn limit(x: f32, lo: f32, hi: f32) -> f32 {
    x.max(lo).min(hi)
}

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

/// The control tick's state between ticks.
pub struct ControlLoop {
    governor: SafetyGovernor,
    shaper: Shaper,
    last: Command,
    velocity: [f32; MAX_JOINTS],
    started: bool,
}

impl ControlLoop {
    pub fn new(config: &EdgeConfig) -> Self {
        Self {
            governor: SafetyGovernor::new(config),
            shaper: Shaper::new(config),
            last: Command::default(),
            velocity: [0.0; MAX_JOINTS],
            started: false,
        }
    }

    pub fn governor(&self) -> &SafetyGovernor {
        &self.governor
    }

    pub fn governor_mut(&mut self) -> &mut SafetyGovernor {
        &mut self.governor
    }

    /// One tick: shape toward the policy's goal (or hold, without one) and govern.
    /// The returned verdict's command is what must be sent.
    pub fn tick(&mut self, state: &RobotState, policy: &PolicyOutput) -> Verdict {
        if !self.started {
            // Start from where the arm is, not from zero.
            self.last = self.governor.safe_command(state);
            self.started =
                state.joint_state_ns != 0 && state.positions_rad.iter().take(state.joints).all(|p| p.is_finite());
        }
        // Without a usable goal the shaper aims where it already is; the
        // governor rejects the tick for the non-finite output.
        let finite = !policy.non_finite && policy.gripper.is_finite() && policy.goal_rad.iter().all(|g| g.is_finite());
        let mut state = *state;
        state.policy_non_finite |= policy.frame_ns != 0 && !finite;
        let (goal, gripper) = if policy.frame_ns != 0 && finite {
            (policy.goal_rad, policy.gripper)
        } else {
            (self.last.targets_rad, self.last.gripper)
        };
        let proposed = self.shaper.step(&self.last, &mut self.velocity, &goal, gripper);
        let verdict = self.governor.check(&proposed, &state);
        if !verdict.approved {
            // The substituted hold is a stop: plan the next move from rest.
            self.velocity = [0.0; MAX_JOINTS];
        }
        self.last = verdict.command;
        verdict
    }
}
