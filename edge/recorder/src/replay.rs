//! Replay ticks: one control tick's complete inputs and outcome, as the
//! recorder keeps them around incidents (`/replay/ticks`, `gantry.ReplayTick`)
//! and `gantry-edge replay` reads them back. Floats travel as their bits, so
//! a replay decides on exactly what the robot decided on.

use gantry_safety::governor::{Command, RobotState, Verdict};
use gantry_safety::mode::{LoopMemory, PolicyOutput};
use serde::{Deserialize, Serialize};

use super::taps::ControlRecord;

/// `gantry.ReplayTick.encoding` of [`ReplayTick`] in postcard.
pub const ENCODING: &str = "postcard-1";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReplayTick {
    pub state: RobotState,
    pub policy: PolicyOutput,
    /// The control loop's memory before the tick.
    pub memory: LoopMemory,
    pub verdict: Verdict,
}

impl ReplayTick {
    pub fn of(r: &ControlRecord) -> Self {
        Self {
            state: r.state,
            policy: r.policy,
            memory: r.memory,
            verdict: Verdict {
                command: Command { targets_rad: r.command_rad, gripper: r.command_gripper },
                approved: r.approved,
                failed: r.failed,
                hold: r.hold,
            },
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(encoding: &str, data: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(encoding == ENCODING, "replay tick encoding {encoding:?}; this build reads {ENCODING:?}");
        Ok(postcard::from_bytes(data)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_round_trips_bit_for_bit() {
        let mut r = ControlRecord { approved: false, failed: 0b1010, hold: true, ..ControlRecord::default() };
        r.state.positions_rad[2] = f32::from_bits(0x3E99_999A);
        r.state.zone.nearest_mm = 1234;
        r.state.fault.joint = Some(3);
        r.policy.goal_rad[0] = -0.0;
        r.policy.frame_seq = 77;
        r.memory.governor.fault_latched = Some(Default::default());
        r.memory.velocity[5] = 1e-30;
        r.command_rad[1] = 0.25;
        let tick = ReplayTick::of(&r);
        let back = ReplayTick::decode(ENCODING, &tick.encode()).unwrap();
        assert_eq!(back, tick);
        assert_eq!(back.policy.goal_rad[0].to_bits(), (-0.0f32).to_bits());
        assert!(ReplayTick::decode("postcard-0", &tick.encode()).is_err());
    }
}
