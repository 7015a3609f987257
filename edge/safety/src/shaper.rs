//! Turns a goal into a per-tick step the governor will accept: velocity and
//! acceleration stay within a fraction of the governor's limits, and the step
//! slows down in time to stop at the goal.

use crate::governor::Command;
use crate::{limit, MAX_JOINTS};

#[derive(Debug, Clone)]
pub struct Shaper {
    joints: usize,
    vel_max: [f32; MAX_JOINTS],
    acc_max: [f32; MAX_JOINTS],
}

/// Share of each governor limit the shaper plans with.
pub const HEADROOM: f32 = 0.8;

impl Shaper {
    /// Plans with [`HEADROOM`] of the governor's velocity and acceleration limits.
    pub fn new(joints: usize, vel_max: &[f64], acc_max: &[f64]) -> Self {
        let scaled = |limits: &[f64]| {
            let mut out = [0f32; MAX_JOINTS];
            for (o, v) in out.iter_mut().zip(limits) {
                *o = *v as f32 * HEADROOM;
            }
            out
        };
        Self { joints: joints.min(MAX_JOINTS), vel_max: scaled(vel_max), acc_max: scaled(acc_max) }
    }

    /// The next command from `last` (moving at `velocity`) toward `goal`, to
    /// be sent `dt` seconds after `last` (the governor's
    /// [`step_s`](crate::governor::Governor::step_s)), at most `speed_scale`
    /// (0…1) of the velocity limits: the share speed and separation monitoring
    /// allows now.
    pub fn step(
        &self,
        last: &Command,
        velocity: &mut [f32; MAX_JOINTS],
        goal: &[f32; MAX_JOINTS],
        gripper: f32,
        speed_scale: f32,
        dt: f32,
    ) -> Command {
        let scale = limit(speed_scale, 0.0, 1.0);
        let mut next = Command { targets_rad: last.targets_rad, gripper: limit(gripper, 0.0, 1.0) };
        for j in 0..self.joints {
            let distance = goal[j] - last.targets_rad[j];
            // The speed from which we can still stop at the goal.
            let stoppable = libm::sqrtf(2.0 * self.acc_max[j] * libm::fabsf(distance));
            let vel_max = self.vel_max[j] * scale;
            let wanted = limit(limit(distance / dt, -stoppable, stoppable), -vel_max, vel_max);
            let dv = self.acc_max[j] * dt;
            let v = limit(wanted, velocity[j] - dv, velocity[j] + dv);
            velocity[j] = v;
            next.targets_rad[j] = last.targets_rad[j] + v * dt;
        }
        next
    }
}
