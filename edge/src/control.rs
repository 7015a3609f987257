//! One control tick: the newest policy goal → a feasible step toward it → the
//! safety governor → the firmware. The tick takes its inputs and the time as
//! arguments, so tests drive it with a mock clock and the control thread with the
//! real one. Nothing here allocates, locks or formats.

use gantry_config::edge::MAX_JOINTS;
use gantry_config::EdgeConfig;

use gantry_safety::shaper::Shaper;

use crate::governor::{Command, RobotState, SafetyGovernor, Verdict};

pub use gantry_safety::mode::{LoopMemory, Mode, PolicyOutput};

/// The control tick's state between ticks.
pub struct ControlLoop {
    governor: SafetyGovernor,
    shaper: Shaper,
    last: Command,
    velocity: [f32; MAX_JOINTS],
    started: bool,
    /// Policy outputs from frames before this one are not followed: after an
    /// e-stop reset the robot waits for a fresh output.
    min_frame_seq: u64,
}

impl ControlLoop {
    pub fn new(config: &EdgeConfig) -> Self {
        Self {
            governor: SafetyGovernor::new(config),
            shaper: Shaper::new(
                config.firmware.joints,
                &config.governor.max_velocity_rad_s,
                &config.governor.max_accel_rad_s2,
            ),
            last: Command::default(),
            velocity: [0.0; MAX_JOINTS],
            started: false,
            min_frame_seq: 0,
        }
    }

    pub fn governor(&self) -> &SafetyGovernor {
        &self.governor
    }

    pub fn governor_mut(&mut self) -> &mut SafetyGovernor {
        &mut self.governor
    }

    /// The local e-stop reset: clears the governor's latches and starts over
    /// from the measured pose at rest; outputs of frames up to `frame_seq`
    /// (the newest when the reset came) are not followed.
    pub fn reset(&mut self, frame_seq: u64) {
        self.governor.reset();
        self.started = false;
        self.velocity = [0.0; MAX_JOINTS];
        self.min_frame_seq = frame_seq.saturating_add(1);
    }

    /// What the loop remembers between ticks, for the recorder's replay ticks.
    pub fn memory(&self) -> LoopMemory {
        LoopMemory {
            governor: self.governor.memory(),
            last: self.last,
            velocity: self.velocity,
            started: self.started,
            min_frame_seq: self.min_frame_seq,
        }
    }

    /// Takes up `m` (from [`Self::memory`] of a loop built from the same
    /// configuration): the next tick decides as that loop's would have.
    pub fn restore(&mut self, m: &LoopMemory) {
        self.governor.restore(&m.governor);
        self.last = m.last;
        self.velocity = m.velocity;
        self.started = m.started;
        self.min_frame_seq = m.min_frame_seq;
    }

    /// One tick: shape toward the policy's goal (or hold, without one) and govern.
    /// The returned verdict says what must be sent: its command, or the
    /// protocol's hold when `hold` is set.
    pub fn tick(&mut self, state: &RobotState, policy: &PolicyOutput) -> Verdict {
        let proposed = self.propose(state, policy);
        let verdict = self.governor.check(&proposed.0, &proposed.1);
        self.take(&verdict);
        verdict
    }

    /// A tick ahead of the schedule, for a new policy output: what [`Self::tick`]
    /// would send if the governor approves it; otherwise `None`, nothing sent
    /// and the loop exactly as before (see [`SafetyGovernor::check_ahead`]).
    pub fn tick_ahead(&mut self, state: &RobotState, policy: &PolicyOutput) -> Option<Verdict> {
        let before = self.memory();
        let proposed = self.propose(state, policy);
        match self.governor.check_ahead(&proposed.0, &proposed.1) {
            Some(verdict) => {
                self.take(&verdict);
                Some(verdict)
            }
            None => {
                self.restore(&before);
                None
            }
        }
    }

    /// The shaped command toward the policy's goal, and the state to judge it in.
    fn propose(&mut self, state: &RobotState, policy: &PolicyOutput) -> (Command, RobotState) {
        if !self.started && self.governor.measured_usable(state) {
            // Start from where the arm is, not from zero, and at rest.
            self.last.targets_rad = state.positions_rad;
            self.velocity = [0.0; MAX_JOINTS];
            self.started = true;
        }
        let mut policy = *policy;
        if policy.frame_seq < self.min_frame_seq {
            // Older than the reset: not a reason to move.
            policy.frame_ns = 0;
        }
        let policy = &policy;
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
        // Slower while someone is near: the share of the limits the separation allows.
        let scale = self.governor.speed_scale(&state);
        // Planned over the interval the governor will judge it over: a tick
        // sooner than a period moves less.
        let dt = self.governor.step_s(state.now_ns);
        (self.shaper.step(&self.last, &mut self.velocity, &goal, gripper, scale, dt), state)
    }

    /// Goes on from what the governor let out.
    fn take(&mut self, verdict: &Verdict) {
        if verdict.hold {
            self.started = false;
        } else {
            // Go on from what was sent: after a substitute, from the
            // controlled stop's position and velocity.
            self.last = verdict.command;
            self.velocity = self.governor.last_velocity();
        }
    }
}
