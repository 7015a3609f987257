//! Forward kinematics of the configured arm (standard Denavit–Hartenberg).

use gantry_config::edge::MAX_JOINTS;

/// The arm's DH rows, copied out of the configuration once.
#[derive(Debug, Clone, Copy)]
pub struct Arm {
    rows: [[f64; 4]; MAX_JOINTS],
    joints: usize,
}

impl Arm {
    /// `dh` rows are `[a_m, alpha_rad, d_m, theta_offset_rad]`; at most [`MAX_JOINTS`].
    pub fn new(dh: &[[f64; 4]]) -> Self {
        let mut rows = [[0.0; 4]; MAX_JOINTS];
        let joints = dh.len().min(MAX_JOINTS);
        rows[..joints].copy_from_slice(&dh[..joints]);
        Self { rows, joints }
    }

    pub fn joints(&self) -> usize {
        self.joints
    }

    /// The tool's position (metres, base frame) at joint angles `q`.
    pub fn tool_position(&self, q: &[f32]) -> [f64; 3] {
        // Accumulate the homogeneous transform as a 3x4 matrix [R | p].
        let mut r = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let mut p = [0.0f64; 3];
        for (i, &[a, alpha, d, offset]) in self.rows[..self.joints].iter().enumerate() {
            let theta = f64::from(q.get(i).copied().unwrap_or(0.0)) + offset;
            let (st, ct) = theta.sin_cos();
            let (sa, ca) = alpha.sin_cos();
            // Link transform: Rz(theta) Tz(d) Tx(a) Rx(alpha).
            let link_r = [[ct, -st * ca, st * sa], [st, ct * ca, -ct * sa], [0.0, sa, ca]];
            let link_p = [a * ct, a * st, d];
            let mut nr = [[0.0; 3]; 3];
            for row in 0..3 {
                for col in 0..3 {
                    nr[row][col] = (0..3).map(|k| r[row][k] * link_r[k][col]).sum();
                }
                p[row] += (0..3).map(|k| r[row][k] * link_p[k]).sum::<f64>();
            }
            r = nr;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planar_two_link_arm() {
        // Two 1 m links in the plane: straight out, then elbow at 90°.
        let arm = Arm::new(&[[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]);
        let p = arm.tool_position(&[0.0, 0.0]);
        assert!((p[0] - 2.0).abs() < 1e-9 && p[1].abs() < 1e-9);
        let p = arm.tool_position(&[0.0, std::f32::consts::FRAC_PI_2]);
        assert!((p[0] - 1.0).abs() < 1e-6 && (p[1] - 1.0).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn default_arm_at_zero_is_above_the_base() {
        let arm = Arm::new(&gantry_config::edge::Arm::default().dh);
        let p = arm.tool_position(&[0.0; 6]);
        // UR5-like at zero: stretched out along -x at shoulder height.
        assert!((p[0] + 0.8172).abs() < 1e-3, "{p:?}");
        assert!(p[2] > 0.0);
    }
}
