//! The safety governor on the control thread: `gantry-safety`'s checks, plus
//! the counters the status page reads and the queue that carries each
//! incident to the supervisor and the recorder. No allocation, no lock, no I/O.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use gantry_config::edge::MAX_JOINTS;
use gantry_config::EdgeConfig;
pub use gantry_safety::governor::{Check, Command, FaultReport, Incident, Limits, Measure, RobotState, Verdict};
use gantry_safety::governor::{Governor, MAX_KEEP_OUT};
use gantry_safety::kinematics::Arm;
use gantry_safety::separation::Separation;

// The configuration and the safety kernel size their arrays alike.
const _: () = assert!(MAX_JOINTS == gantry_safety::MAX_JOINTS);

/// Counters the status page reads.
#[derive(Debug, Default)]
pub struct GovernorStats {
    pub checks: AtomicU64,
    pub rejects: AtomicU64,
    /// Rejections with at least one failed check that blames the policy.
    pub policy_rejects: AtomicU64,
    pub per_check: [AtomicU64; Check::ALL.len()],
    /// Incidents dropped because nobody drained the queue (never expected).
    pub incidents_dropped: AtomicU64,
    /// The checks the last command failed (one bit per [`Check`]); 0 after an approval.
    pub failing_now: AtomicU32,
    /// Monotonic time of the last rejection; 0 before any.
    pub last_reject_ns: AtomicU64,
}

pub struct SafetyGovernor {
    governor: Governor,
    incidents: Arc<ArrayQueue<Incident>>,
    stats: Arc<GovernorStats>,
    /// The first failed check of the rejections running now; `None` after an
    /// approval. One incident is queued per run, not one per rejected tick.
    episode: Option<Check>,
}

/// How many incidents can wait for the recorder before the oldest are dropped.
pub const INCIDENT_QUEUE: usize = 4096;

fn array(v: &[f64]) -> [f32; MAX_JOINTS] {
    let mut a = [0f32; MAX_JOINTS];
    for (d, s) in a.iter_mut().zip(v) {
        *d = *s as f32;
    }
    a
}

/// The governor's limits, in the units its checks compare in.
pub fn limits(config: &EdgeConfig) -> Limits {
    let g = &config.governor;
    let margin = g.position_margin_rad as f32;
    let mut pos_min = array(&g.joint_min_rad);
    let mut pos_max = array(&g.joint_max_rad);
    for (lo, hi) in pos_min.iter_mut().zip(pos_max.iter_mut()) {
        *lo += margin;
        *hi -= margin;
    }
    let ms = |v: u64| v * 1_000_000;
    let period_s = 1.0 / config.control.rate_hz.max(1) as f32;
    // Links are checked as lines: the boxes grow by the links' radius.
    let r = config.arm.link_radius_m;
    let mut keep_out = [[0.0; 6]; MAX_KEEP_OUT];
    for (d, b) in keep_out.iter_mut().zip(&g.keep_out_m) {
        *d = [b[0] - r, b[1] - r, b[2] - r, b[3] + r, b[4] + r, b[5] + r];
    }
    Limits {
        joints: config.firmware.joints.min(MAX_JOINTS),
        pos_min,
        pos_max,
        vel_max: array(&g.max_velocity_rad_s),
        acc_max: array(&g.max_accel_rad_s2),
        period_s,
        joint_state_max_age_ns: ms(g.command_max_age_ms),
        telemetry_max_age_ns: ms(g.telemetry_max_age_ms),
        policy_max_age_ns: (f64::from(period_s) * 1e9 * f64::from(config.control.max_action_age_periods)) as u64,
        depth_max_age_ns: ms(g.depth_max_age_ms),
        table_height_m: g.table_height_m,
        box_min: g.tool_box_min_m,
        box_max: g.tool_box_max_m,
        max_temp_c: g.max_motor_temp_c as f32,
        pressure_min_kpa: g.gripper_pressure_min_kpa as f32,
        pressure_max_kpa: g.gripper_pressure_max_kpa as f32,
        separation: separation(config),
        resume_after_ns: ms(g.resume_after_ms),
        keep_out,
        keep_out_count: g.keep_out_m.len().min(MAX_KEEP_OUT),
    }
}

/// The separation distance's parameters (see `gantry_safety::separation`).
pub fn separation(config: &EdgeConfig) -> Separation {
    let g = &config.governor;
    let period_s = 1.0 / f64::from(config.control.rate_hz.max(1));
    let depth_period_s = 1.0 / f64::from(config.depth.fps.max(1));
    // The longest any joint takes to brake from its velocity limit.
    let stop_time_s = g
        .max_velocity_rad_s
        .iter()
        .zip(&g.max_accel_rad_s2)
        .take(config.firmware.joints)
        .map(|(v, a)| v / a)
        .fold(0.0, f64::max);
    Separation {
        human_speed_m_s: g.human_speed_m_s,
        reaction_s: g.sensor_latency_ms as f64 / 1e3 + depth_period_s + period_s,
        stop_time_s,
        clearance_m: g.intrusion_distance_m + g.position_uncertainty_m,
    }
}

/// The configured arm, with its tool.
pub fn arm(config: &EdgeConfig) -> Arm {
    Arm::new(&config.arm.dh).with_tool(config.arm.tool_offset_m)
}

impl SafetyGovernor {
    pub fn new(config: &EdgeConfig) -> Self {
        Self {
            governor: Governor::new(limits(config), arm(config)),
            incidents: Arc::new(ArrayQueue::new(INCIDENT_QUEUE)),
            stats: Arc::new(GovernorStats::default()),
            episode: None,
        }
    }

    /// Where incidents wait for the recorder and the status page.
    pub fn incidents(&self) -> Arc<ArrayQueue<Incident>> {
        self.incidents.clone()
    }

    pub fn stats(&self) -> Arc<GovernorStats> {
        self.stats.clone()
    }

    /// The last command the governor let out (approved or substituted).
    pub fn last_sent(&self) -> Command {
        self.governor.last_sent()
    }

    pub fn estop_latched(&self) -> bool {
        self.governor.estop_latched()
    }

    /// The latching firmware fault in force, if any.
    pub fn fault_latched(&self) -> Option<FaultReport> {
        self.governor.fault_latched()
    }

    /// The explicit local reset (see [`Governor::reset`]).
    pub fn reset(&mut self) {
        self.governor.reset();
        self.episode = None;
    }

    pub fn memory(&self) -> gantry_safety::governor::GovernorMemory {
        self.governor.memory()
    }

    pub fn restore(&mut self, m: &gantry_safety::governor::GovernorMemory) {
        self.governor.restore(m);
    }

    /// The velocity of the last command sent, per joint.
    pub fn last_velocity(&self) -> [f32; MAX_JOINTS] {
        self.governor.last_velocity()
    }

    /// The interval a command sent at `now_ns` is judged over (see [`Governor::step_s`]).
    pub fn step_s(&self, now_ns: u64) -> f32 {
        self.governor.step_s(now_ns)
    }

    /// The share of the velocity limits speed and separation monitoring allows now.
    pub fn speed_scale(&self, state: &RobotState) -> f32 {
        self.governor.speed_scale(state)
    }

    pub fn measured_usable(&self, state: &RobotState) -> bool {
        self.governor.measured_usable(state)
    }

    /// Checks `proposed` against `state`, counts the outcome and queues the
    /// incident of a rejection that starts a run (an e-stop press is one
    /// incident however long it is held); returns what to send.
    pub fn check(&mut self, proposed: &Command, state: &RobotState) -> Verdict {
        let (verdict, incident) = self.governor.check(proposed, state);
        self.account(&verdict, incident, state);
        verdict
    }

    /// A command ahead of the control schedule (the loop answering a new
    /// policy output at once): checked like any other, but only an approval
    /// takes effect. On a rejection the governor is left exactly as it was, no
    /// incident is queued and nothing is to be sent: the scheduled tick, at
    /// most a period later, decides again and sends the controlled stop. So a
    /// substitute always comes one period after the last command, the interval
    /// its stopping path was checked over.
    pub fn check_ahead(&mut self, proposed: &Command, state: &RobotState) -> Option<Verdict> {
        let before = self.governor.memory();
        if !before.has_last {
            // Motion from rest starts on the schedule: its first step is
            // judged over a whole period.
            return None;
        }
        let (verdict, incident) = self.governor.check(proposed, state);
        if verdict.approved {
            self.account(&verdict, incident, state);
            Some(verdict)
        } else {
            self.governor.restore(&before);
            None
        }
    }

    /// Counts a check's outcome and queues its incident.
    fn account(&mut self, verdict: &Verdict, incident: Option<Incident>, state: &RobotState) {
        self.stats.checks.fetch_add(1, Ordering::Relaxed);
        self.stats.failing_now.store(verdict.failed, Ordering::Relaxed);
        if let Some(incident) = incident {
            self.stats.rejects.fetch_add(1, Ordering::Relaxed);
            self.stats.last_reject_ns.store(state.now_ns, Ordering::Relaxed);
            let mut blames_policy = false;
            for c in Check::ALL {
                if incident.failed & c.bit() != 0 {
                    if let Some(n) = self.stats.per_check.get(c as usize) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    blames_policy |= c.blames_policy();
                }
            }
            if blames_policy {
                self.stats.policy_rejects.fetch_add(1, Ordering::Relaxed);
            }
            if self.episode != Some(incident.check) && self.incidents.force_push(incident).is_some() {
                self.stats.incidents_dropped.fetch_add(1, Ordering::Relaxed);
            }
            self.episode = Some(incident.check);
        } else {
            self.episode = None;
        }
    }
}
