//! Replay ticks: one control tick's complete inputs and outcome, as the
//! recorder keeps them around incidents (`/replay/ticks`, `gantry.ReplayTick`)
//! and `gantry-edge replay` reads them back. Floats travel as their bits, so
//! a replay decides on exactly what the robot decided on.

use gantry_safety::governor::{Command, FaultReport, GovernorMemory, RobotState, Verdict};
use gantry_safety::mode::{LoopMemory, PolicyOutput};
use gantry_safety::MAX_JOINTS;
use serde::{Deserialize, Serialize};

use super::taps::ControlRecord;

/// `gantry.ReplayTick.encoding` of [`ReplayTick`] in postcard. postcard is
/// positional: any change to the types is a new encoding.
pub const ENCODING: &str = "postcard-3";

/// Ticks recorded before a tick said whether it went out ahead of the
/// schedule. Read with `ahead` false: such a tick is replayed as a scheduled
/// one, as replay did then.
pub const ENCODING_V2: &str = "postcard-2";

/// Ticks recorded before the governor remembered when it let out its last
/// command (`GovernorMemory::last_ns`, since commands may come ahead of the
/// schedule). Read with `last_ns` = 0: the governor then judges the next
/// command over a whole period, as it judged every command then.
pub const ENCODING_V1: &str = "postcard-1";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReplayTick {
    pub state: RobotState,
    pub policy: PolicyOutput,
    /// The control loop's memory before the tick.
    pub memory: LoopMemory,
    pub verdict: Verdict,
    /// Sent ahead of the schedule, answering a new policy output at once:
    /// only an approval is sent on such a tick (`ControlLoop::tick_ahead`).
    pub ahead: bool,
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
            ahead: r.ahead,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(encoding: &str, data: &[u8]) -> anyhow::Result<Self> {
        match encoding {
            ENCODING => Ok(postcard::from_bytes(data)?),
            ENCODING_V2 => Ok(postcard::from_bytes::<ReplayTickV2>(data)?.into()),
            ENCODING_V1 => Ok(postcard::from_bytes::<ReplayTickV1>(data)?.into()),
            _ => anyhow::bail!(
                "replay tick encoding {encoding:?}; this build reads {ENCODING:?}, {ENCODING_V2:?} and {ENCODING_V1:?}"
            ),
        }
    }
}

/// [`ReplayTick`] as `postcard-2` laid it out.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ReplayTickV2 {
    state: RobotState,
    policy: PolicyOutput,
    memory: LoopMemory,
    verdict: Verdict,
}

impl From<ReplayTickV2> for ReplayTick {
    fn from(v: ReplayTickV2) -> Self {
        Self { state: v.state, policy: v.policy, memory: v.memory, verdict: v.verdict, ahead: false }
    }
}

/// [`ReplayTick`] as `postcard-1` laid it out.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ReplayTickV1 {
    state: RobotState,
    policy: PolicyOutput,
    memory: LoopMemoryV1,
    verdict: Verdict,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct LoopMemoryV1 {
    governor: GovernorMemoryV1,
    last: Command,
    velocity: [f32; MAX_JOINTS],
    started: bool,
    min_frame_seq: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct GovernorMemoryV1 {
    last: Command,
    last_velocity: [f32; MAX_JOINTS],
    has_last: bool,
    estop_latched: bool,
    fault_seen_ns: u64,
    fault_latched: Option<FaultReport>,
    zone_blocked_ns: u64,
}

impl From<ReplayTickV1> for ReplayTick {
    fn from(v: ReplayTickV1) -> Self {
        let (m, g) = (v.memory, v.memory.governor);
        ReplayTickV2 {
            state: v.state,
            policy: v.policy,
            memory: LoopMemory {
                governor: GovernorMemory {
                    last: g.last,
                    last_velocity: g.last_velocity,
                    has_last: g.has_last,
                    last_ns: 0,
                    estop_latched: g.estop_latched,
                    fault_seen_ns: g.fault_seen_ns,
                    fault_latched: g.fault_latched,
                    zone_blocked_ns: g.zone_blocked_ns,
                },
                last: m.last,
                velocity: m.velocity,
                started: m.started,
                min_frame_seq: m.min_frame_seq,
            },
            verdict: v.verdict,
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_round_trips_bit_for_bit() {
        let mut r =
            ControlRecord { approved: false, failed: 0b1010, hold: true, ahead: true, ..ControlRecord::default() };
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

    /// A tick recorded before `last_ns` existed reads back whole, `last_ns` 0.
    #[test]
    fn a_postcard_1_tick_reads_back_with_last_ns_zero() {
        let mut r = ControlRecord { approved: true, ..ControlRecord::default() };
        r.state.now_ns = 5_000_000_000;
        r.memory.governor.has_last = true;
        r.memory.governor.last.targets_rad[0] = 0.5;
        r.memory.governor.last_velocity[0] = -0.25;
        r.memory.governor.zone_blocked_ns = 42;
        r.memory.min_frame_seq = 9;
        r.command_rad[0] = 0.51;
        let tick = ReplayTick::of(&r);
        let g = tick.memory.governor;
        let v1 = ReplayTickV1 {
            state: tick.state,
            policy: tick.policy,
            memory: LoopMemoryV1 {
                governor: GovernorMemoryV1 {
                    last: g.last,
                    last_velocity: g.last_velocity,
                    has_last: g.has_last,
                    estop_latched: g.estop_latched,
                    fault_seen_ns: g.fault_seen_ns,
                    fault_latched: g.fault_latched,
                    zone_blocked_ns: g.zone_blocked_ns,
                },
                last: tick.memory.last,
                velocity: tick.memory.velocity,
                started: tick.memory.started,
                min_frame_seq: tick.memory.min_frame_seq,
            },
            verdict: tick.verdict,
        };
        let bytes = postcard::to_allocvec(&v1).unwrap();
        assert_eq!(ReplayTick::decode(ENCODING_V1, &bytes).unwrap(), tick);
        // The layouts differ: read as the current one, the old bytes do not
        // come back as the tick.
        assert_ne!(ReplayTick::decode(ENCODING, &bytes).ok(), Some(tick));
    }

    /// A tick recorded before ticks said whether they went ahead reads back
    /// whole, as a scheduled one.
    #[test]
    fn a_postcard_2_tick_reads_back_as_scheduled() {
        let mut r = ControlRecord { approved: true, ahead: true, ..ControlRecord::default() };
        r.state.now_ns = 7_000_000_000;
        r.memory.governor.last_ns = 6_990_000_000;
        r.memory.governor.last_velocity[1] = 0.75;
        r.command_rad[1] = 0.2;
        let tick = ReplayTick::of(&r);
        let v2 = ReplayTickV2 { state: tick.state, policy: tick.policy, memory: tick.memory, verdict: tick.verdict };
        let bytes = postcard::to_allocvec(&v2).unwrap();
        assert_eq!(ReplayTick::decode(ENCODING_V2, &bytes).unwrap(), ReplayTick { ahead: false, ..tick });
        assert!(ReplayTick::decode(ENCODING, &bytes).is_err(), "one field short in the current layout");
    }
}
