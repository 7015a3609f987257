//! Forward kinematics of the configured arm (standard Denavit–Hartenberg).

use crate::MAX_JOINTS;

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
        for (row, given) in rows.iter_mut().zip(dh) {
            *row = *given;
        }
        Self { rows, joints: dh.len().min(MAX_JOINTS) }
    }

    pub fn joints(&self) -> usize {
        self.joints
    }

    /// The tool's position (metres, base frame) at joint angles `q`.
    pub fn tool_position(&self, q: &[f32]) -> [f64; 3] {
        // Accumulate the homogeneous transform as a 3x4 matrix [R | p].
        let mut r = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let mut p = [0.0f64; 3];
        for (i, &[a, alpha, d, offset]) in self.rows.iter().take(self.joints).enumerate() {
            let theta = f64::from(q.get(i).copied().unwrap_or(0.0)) + offset;
            let (st, ct) = libm::sincos(theta);
            let (sa, ca) = libm::sincos(alpha);
            // Link transform: Rz(theta) Tz(d) Tx(a) Rx(alpha).
            let link_r = [[ct, -st * ca, st * sa], [st, ct * ca, -ct * sa], [0.0, sa, ca]];
            let link_p = [a * ct, a * st, d];
            let mut nr = [[0.0; 3]; 3];
            for (row, out) in nr.iter_mut().enumerate() {
                for (col, cell) in out.iter_mut().enumerate() {
                    *cell = (0..3).map(|k| r[row][k] * link_r[k][col]).sum();
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
        let p = arm.tool_position(&[0.0, core::f32::consts::FRAC_PI_2]);
        assert!((p[0] - 1.0).abs() < 1e-6 && (p[1] - 1.0).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn ur5_like_arm_at_zero_is_stretched_out_above_the_base() {
        let half_pi = core::f64::consts::FRAC_PI_2;
        let arm = Arm::new(&[
            [0.0, half_pi, 0.1625, 0.0],
            [-0.425, 0.0, 0.0, 0.0],
            [-0.3922, 0.0, 0.0, 0.0],
            [0.0, half_pi, 0.1333, 0.0],
            [0.0, -half_pi, 0.0997, 0.0],
            [0.0, 0.0, 0.0996, 0.0],
        ]);
        let p = arm.tool_position(&[0.0; 6]);
        assert!((p[0] + 0.8172).abs() < 1e-3, "{p:?}");
        assert!(p[2] > 0.0);
    }
}
