//! Speed and separation monitoring in the spirit of ISO/TS 15066 (clause
//! 5.5.4): how far a person must stay from the moving arm, and how fast the
//! arm may move while the nearest person is at a given distance.
//!
//! The protective separation distance for a robot moving at `v_r`:
//!
//! ```text
//! S_p(v_r) = v_h·(T_r + T_s) + v_r·T_r + v_r·T_s/2 + C + Z
//! ```
//!
//! - `v_h`: the person's speed towards the robot (1.6 m/s, ISO 13855);
//! - `T_r`: the reaction time: sensor latency, one depth frame period (the
//!   person may step in just after a frame) and one control period;
//! - `T_s`: the stopping time: the longest a joint takes to brake from its
//!   velocity limit at its acceleration limit;
//! - `v_r·T_s/2`: the distance the arm covers while braking uniformly;
//! - `C`: the intrusion distance (a hand reaching ahead of the body the
//!   camera sees); `Z`: the position uncertainty of sensor and robot.
//!
//! Solved for the speed, a person at distance `d` allows
//! `v_max(d) = (d − S_p(0)) / (T_r + T_s/2)`: full speed far away, slower in a
//! band as the person comes nearer, and a protective stop once `d < S_p(0)`.

/// The parameters of the separation distance, in seconds, metres and m/s.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Separation {
    pub human_speed_m_s: f64,
    pub reaction_s: f64,
    pub stop_time_s: f64,
    /// `C + Z`.
    pub clearance_m: f64,
}

impl Separation {
    /// `S_p(v_r)`.
    pub fn protective_distance_m(&self, robot_speed_m_s: f64) -> f64 {
        self.human_speed_m_s * (self.reaction_s + self.stop_time_s)
            + robot_speed_m_s * (self.reaction_s + self.stop_time_s / 2.0)
            + self.clearance_m
    }

    /// `S_p(0)`: nearer than this, the arm must stand still.
    pub fn stop_distance_m(&self) -> f64 {
        self.protective_distance_m(0.0)
    }

    /// The fastest any point of the arm may move with a person at `distance_m`
    /// (0 inside the stop distance; infinite without anyone; 0 for NaN).
    pub fn allowed_speed_m_s(&self, distance_m: f64) -> f64 {
        let room = distance_m - self.stop_distance_m();
        let per = self.reaction_s + self.stop_time_s / 2.0;
        if room.is_nan() || room <= 0.0 {
            0.0
        } else if per > 0.0 {
            room / per
        } else {
            f64::INFINITY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowed_speed_keeps_the_person_outside_the_protective_distance() {
        let s = Separation { human_speed_m_s: 1.6, reaction_s: 0.1, stop_time_s: 0.2, clearance_m: 0.2 };
        assert!((s.stop_distance_m() - (1.6 * 0.3 + 0.2)).abs() < 1e-12);
        for d in [0.0, 0.5, 0.68, 0.7, 1.0, 2.0, 5.0] {
            let v = s.allowed_speed_m_s(d);
            assert!(v >= 0.0);
            // At the allowed speed, the person is exactly at the protective distance (or nearer than the stop distance and v = 0).
            if d > s.stop_distance_m() {
                assert!((s.protective_distance_m(v) - d).abs() < 1e-9, "{d} {v}");
            } else {
                assert_eq!(v, 0.0);
            }
        }
        assert_eq!(s.allowed_speed_m_s(f64::NAN), 0.0);
        assert_eq!(s.allowed_speed_m_s(f64::INFINITY), f64::INFINITY);
    }
}
