//! Forward kinematics of the configured arm (standard Denavit–Hartenberg): the
//! tool tip, and the points that outline the whole arm for the link checks
//! and the camera's self-filter.

use crate::MAX_JOINTS;

/// Points that outline the arm: the base, per joint the point after its `d`
/// offset and the joint frame's origin, then the tool tip. Consecutive points
/// are joined by links.
pub const MAX_POINTS: usize = 2 * MAX_JOINTS + 2;

/// The arm's outline at one pose, metres in the base frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outline {
    pub points: [[f64; 3]; MAX_POINTS],
    pub count: usize,
}

impl Default for Outline {
    fn default() -> Self {
        Self { points: [[0.0; 3]; MAX_POINTS], count: 0 }
    }
}

impl Outline {
    pub fn points(&self) -> &[[f64; 3]] {
        self.points.get(..self.count).unwrap_or(&[])
    }

    /// The tool tip (the last point), or the base for an empty outline.
    pub fn tool(&self) -> [f64; 3] {
        self.points().last().copied().unwrap_or([0.0; 3])
    }
}

/// The arm's DH rows and tool, copied out of the configuration once.
#[derive(Debug, Clone, Copy)]
pub struct Arm {
    rows: [[f64; 4]; MAX_JOINTS],
    joints: usize,
    tool: [f64; 3],
}

impl Arm {
    /// `dh` rows are `[a_m, alpha_rad, d_m, theta_offset_rad]`; at most
    /// [`MAX_JOINTS`]. No tool: the tip is the last joint frame's origin.
    pub fn new(dh: &[[f64; 4]]) -> Self {
        let mut rows = [[0.0; 4]; MAX_JOINTS];
        for (row, given) in rows.iter_mut().zip(dh) {
            *row = *given;
        }
        Self { rows, joints: dh.len().min(MAX_JOINTS), tool: [0.0; 3] }
    }

    /// The tool's tip, in the last joint's frame (metres).
    pub fn with_tool(mut self, offset_m: [f64; 3]) -> Self {
        self.tool = offset_m;
        self
    }

    pub fn joints(&self) -> usize {
        self.joints
    }

    /// How far any point of the arm beyond joint `j` can be from joint `j`'s
    /// axis: the lengths of the links after it and the tool. A bound, so
    /// `sum(|q̇_j| * reach(j))` bounds the speed of every point of the arm.
    pub fn reach(&self, j: usize) -> f64 {
        let links: f64 =
            self.rows.iter().take(self.joints).skip(j).map(|[a, _, d, _]| libm::fabs(*a) + libm::fabs(*d)).sum();
        links + libm::sqrt(self.tool.iter().map(|c| c * c).sum())
    }

    /// The arm's outline at joint angles `q` (missing angles count as 0).
    pub fn outline(&self, q: &[f32]) -> Outline {
        let mut out = Outline::default();
        let mut push = |p: [f64; 3]| {
            if let Some(slot) = out.points.get_mut(out.count) {
                *slot = p;
                out.count += 1;
            }
        };
        // The transform so far as a 3x4 matrix [R | p].
        let mut r = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let mut p = [0.0f64; 3];
        push(p);
        for (i, &[a, alpha, d, offset]) in self.rows.iter().take(self.joints).enumerate() {
            let theta = f64::from(q.get(i).copied().unwrap_or(0.0)) + offset;
            let (st, ct) = libm::sincos(theta);
            let (sa, ca) = libm::sincos(alpha);
            // Link transform: Rz(theta) Tz(d) Tx(a) Rx(alpha). The link runs
            // along the old z by d, then along the new x by a.
            for (row, pr) in p.iter_mut().enumerate() {
                *pr += r[row][2] * d;
            }
            push(p);
            let link_r = [[ct, -st * ca, st * sa], [st, ct * ca, -ct * sa], [0.0, sa, ca]];
            let along_x = [a * ct, a * st, 0.0];
            let mut nr = [[0.0; 3]; 3];
            for (row, out) in nr.iter_mut().enumerate() {
                for (col, cell) in out.iter_mut().enumerate() {
                    *cell = (0..3).map(|k| r[row][k] * link_r[k][col]).sum();
                }
                p[row] += (0..3).map(|k| r[row][k] * along_x[k]).sum::<f64>();
            }
            r = nr;
            push(p);
        }
        let mut tip = p;
        for (row, t) in tip.iter_mut().enumerate() {
            *t += (0..3).map(|k| r[row][k] * self.tool[k]).sum::<f64>();
        }
        push(tip);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planar_two_link_arm() {
        // Two 1 m links in the plane: straight out, then elbow at 90°.
        let arm = Arm::new(&[[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]);
        let p = arm.outline(&[0.0, 0.0]).tool();
        assert!((p[0] - 2.0).abs() < 1e-9 && p[1].abs() < 1e-9);
        let p = arm.outline(&[0.0, core::f32::consts::FRAC_PI_2]).tool();
        assert!((p[0] - 1.0).abs() < 1e-6 && (p[1] - 1.0).abs() < 1e-6, "{p:?}");
        // The elbow is the first link's end.
        let o = arm.outline(&[0.0, core::f32::consts::FRAC_PI_2]);
        assert_eq!(o.count, 6);
        assert!((o.points[2][0] - 1.0).abs() < 1e-9 && o.points[2][1].abs() < 1e-9, "{o:?}");
    }

    #[test]
    fn the_tool_offset_is_in_the_last_frame() {
        // One 1 m link along x; the tool points 0.2 m along the last frame's x.
        let arm = Arm::new(&[[1.0, 0.0, 0.0, 0.0]]).with_tool([0.2, 0.0, 0.0]);
        let p = arm.outline(&[core::f32::consts::FRAC_PI_2]).tool();
        assert!(p[0].abs() < 1e-6 && (p[1] - 1.2).abs() < 1e-6, "{p:?}");
        assert!((arm.reach(0) - 1.2).abs() < 1e-12);
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
        let p = arm.outline(&[0.0; 6]).tool();
        assert!((p[0] + 0.8172).abs() < 1e-3, "{p:?}");
        assert!(p[2] > 0.0);
        // The shoulder sits d1 above the base whatever the pose.
        let o = arm.outline(&[1.0, 0.3, -0.2, 0.0, 0.0, 0.0]);
        assert!((o.points[1][2] - 0.1625).abs() < 1e-9, "{o:?}");
    }
}
