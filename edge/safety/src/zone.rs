//! Is anything but the arm inside the safety zone, and how near is it to the
//! arm? Runs once per depth frame on the depth capture thread.
//!
//! Each depth pixel is deprojected through the camera's intrinsics and moved
//! into the robot's base frame with the camera's extrinsics. Points inside the
//! zone box (robot frame) that lie within the arm's own links (from forward
//! kinematics of the measured pose, plus a margin) are the arm and are left
//! out; every other point is an intrusion, binned by its distance to the arm.
//! A pixel without a reading (0) whose ray crosses the zone counts against the
//! zone's visibility: past a configured fraction of the zone's footprint the
//! camera is blind there and the zone is not clear.

use crate::kinematics::Outline;

/// A pinhole camera's intrinsics, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Intrinsics {
    pub fx: f32,
    pub fy: f32,
    pub cx: f32,
    pub cy: f32,
}

/// A rigid transform from the camera's frame (x right, y down, z along the
/// optical axis) to the robot's base frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub r: [[f32; 3]; 3],
    pub t: [f32; 3],
}

impl Pose {
    /// The camera at `xyz` (metres) turned by fixed-axis roll, pitch, yaw
    /// (radians): `R = Rz(yaw) * Ry(pitch) * Rx(roll)`.
    pub fn from_xyz_rpy(xyz: [f64; 3], rpy: [f64; 3]) -> Self {
        let (sr, cr) = libm::sincos(rpy[0]);
        let (sp, cp) = libm::sincos(rpy[1]);
        let (sy, cy) = libm::sincos(rpy[2]);
        let r = [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ];
        let f = |row: [f64; 3]| [row[0] as f32, row[1] as f32, row[2] as f32];
        Self { r: [f(r[0]), f(r[1]), f(r[2])], t: f(xyz) }
    }

    /// A camera-frame direction in the base frame.
    pub fn rotate(&self, v: [f32; 3]) -> [f32; 3] {
        let r = &self.r;
        [
            r[0][0] * v[0] + r[0][1] * v[1] + r[0][2] * v[2],
            r[1][0] * v[0] + r[1][1] * v[1] + r[1][2] * v[2],
            r[2][0] * v[0] + r[2][1] * v[1] + r[2][2] * v[2],
        ]
    }

    /// A base-frame point in the camera's frame.
    pub fn to_camera(&self, p: [f32; 3]) -> [f32; 3] {
        let d = [p[0] - self.t[0], p[1] - self.t[1], p[2] - self.t[2]];
        let r = &self.r;
        [
            r[0][0] * d[0] + r[1][0] * d[1] + r[2][0] * d[2],
            r[0][1] * d[0] + r[1][1] * d[1] + r[2][1] * d[2],
            r[0][2] * d[0] + r[1][2] * d[1] + r[2][2] * d[2],
        ]
    }
}

/// Distance bins for the nearest intrusion.
const BINS: usize = 160;
/// Width of one bin, millimetres: the reading is conservative by at most this.
pub const BIN_MM: u32 = 25;

/// What one depth frame says about the safety zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ZoneReading {
    /// Capture time of the depth frame (the robot's monotonic clock); 0 = none yet.
    pub capture_ns: u64,
    pub frame_seq: u64,
    /// Points inside the zone that are not the arm.
    pub occupied_pixels: u32,
    /// Points inside the zone that are the arm itself (left out).
    pub arm_pixels: u32,
    /// Pixels without a reading whose ray crosses the zone.
    pub invalid_pixels: u32,
    /// Pixels whose ray crosses the zone at all.
    pub footprint_pixels: u32,
    /// Enough points inside the zone to be an intrusion.
    pub intrusion: bool,
    /// Too many pixels over the zone without a reading: the camera cannot
    /// see whether it is clear.
    pub blind: bool,
    /// Distance from the arm's surface to the nearest intrusion (the nearest
    /// distance that at least the threshold's number of points are within),
    /// millimetres, rounded down to a bin; [`ZoneReading::NONE`] without one.
    pub nearest_mm: u32,
}

impl ZoneReading {
    pub const NONE: u32 = u32::MAX;

    /// Nothing in the zone and the camera can see it.
    pub fn clear(&self) -> bool {
        !self.intrusion && !self.blind
    }
}

impl Default for ZoneReading {
    fn default() -> Self {
        Self {
            capture_ns: 0,
            frame_seq: 0,
            occupied_pixels: 0,
            arm_pixels: 0,
            invalid_pixels: 0,
            footprint_pixels: 0,
            intrusion: false,
            blind: false,
            nearest_mm: Self::NONE,
        }
    }
}

/// The zone as configured, before it meets a camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneSpec {
    /// The box, metres in the robot's base frame.
    pub min_m: [f64; 3],
    pub max_m: [f64; 3],
    /// Where the depth camera is.
    pub camera: Pose,
    /// Points inside the zone, as a share of its footprint, that make an intrusion.
    pub min_fraction: f64,
    /// Pixels without a reading over the zone, as a share of its footprint,
    /// past which the camera counts as blind there.
    pub invalid_max_fraction: f64,
    /// The arm's links are this thick (radius, metres)…
    pub link_radius_m: f64,
    /// …and points this much farther out still count as the arm.
    pub filter_margin_m: f64,
}

/// The zone seen through one camera, ready to read its frames.
#[derive(Debug, Clone, Copy)]
pub struct Zone {
    min: [f32; 3],
    max: [f32; 3],
    camera: Pose,
    k: Intrinsics,
    width: usize,
    unit_m: f32,
    footprint: u32,
    min_pixels: u32,
    invalid_max: u32,
    link_radius: f32,
    filter_radius: f32,
}

impl Zone {
    /// The zone for a `width`×`height` depth stream in units of `unit_mm`.
    /// Counts the zone's footprint in the image once (every pixel's ray).
    pub fn new(spec: &ZoneSpec, k: Intrinsics, width: usize, height: usize, unit_mm: f32) -> Self {
        let f = |v: [f64; 3]| [v[0] as f32, v[1] as f32, v[2] as f32];
        let mut zone = Self {
            min: f(spec.min_m),
            max: f(spec.max_m),
            camera: spec.camera,
            k,
            width,
            unit_m: unit_mm / 1000.0,
            footprint: 0,
            min_pixels: 0,
            invalid_max: 0,
            link_radius: spec.link_radius_m as f32,
            filter_radius: (spec.link_radius_m + spec.filter_margin_m) as f32,
        };
        let mut footprint = 0u32;
        for v in 0..height {
            for u in 0..width {
                footprint += u32::from(zone.ray_crosses(u, v));
            }
        }
        zone.footprint = footprint;
        let share = |fraction: f64| (fraction * f64::from(footprint)) as u32;
        // At least one point: a zone that sees nothing is never "occupied" by rounding.
        zone.min_pixels = share(spec.min_fraction).max(1);
        zone.invalid_max = share(spec.invalid_max_fraction);
        zone
    }

    pub fn footprint_pixels(&self) -> u32 {
        self.footprint
    }

    /// The base-frame direction of pixel (u, v)'s ray, scaled so that depth z
    /// (along the optical axis) is at `t + z * dir`.
    fn ray(&self, u: usize, v: usize) -> [f32; 3] {
        let k = &self.k;
        self.camera.rotate([(u as f32 - k.cx) / k.fx, (v as f32 - k.cy) / k.fy, 1.0])
    }

    /// Whether pixel (u, v)'s ray passes through the zone box in front of the camera.
    fn ray_crosses(&self, u: usize, v: usize) -> bool {
        let dir = self.ray(u, v);
        let (mut enter, mut exit) = (0.0f32, f32::MAX);
        for (a, &d) in dir.iter().enumerate() {
            let o = self.camera.t[a];
            if libm::fabsf(d) < 1e-9 {
                if o < self.min[a] || o > self.max[a] {
                    return false;
                }
                continue;
            }
            let (t0, t1) = ((self.min[a] - o) / d, (self.max[a] - o) / d);
            let (near, far) = if t0 < t1 { (t0, t1) } else { (t1, t0) };
            enter = enter.max(near);
            exit = exit.min(far);
        }
        // Strictly: a ray that only touches the box at the lens sees none of it.
        exit > enter
    }

    fn inside(&self, p: [f32; 3]) -> bool {
        (0..3).all(|a| p[a] >= self.min[a] && p[a] <= self.max[a])
    }

    /// Reads a depth frame (`u16` device units) against the arm at `arm`
    /// (its measured pose when the frame was taken).
    pub fn read(&self, depth: &[u16], arm: &Outline, capture_ns: u64, frame_seq: u64) -> ZoneReading {
        let mut links = [[[0f32; 3]; 2]; crate::kinematics::MAX_POINTS];
        let mut n_links = 0;
        for (slot, pair) in links.iter_mut().zip(arm.points().windows(2)) {
            let f = |p: [f64; 3]| [p[0] as f32, p[1] as f32, p[2] as f32];
            if let [a, b] = pair {
                *slot = [f(*a), f(*b)];
                n_links += 1;
            }
        }
        let links = links.get(..n_links).unwrap_or(&[]);
        let mut bins = [0u32; BINS];
        let (mut occupied, mut own, mut invalid) = (0u32, 0u32, 0u32);
        let k = self.k;
        let x_step = self.camera.rotate([1.0 / k.fx, 0.0, 0.0]);
        for (v, row) in depth.chunks_exact(self.width.max(1)).enumerate() {
            let row_dir = self.ray(0, v);
            for (u, &d) in row.iter().enumerate() {
                if d == 0 {
                    // No reading is no evidence that the zone is clear here.
                    invalid += u32::from(self.ray_crosses(u, v));
                    continue;
                }
                let z = f32::from(d) * self.unit_m;
                let uf = u as f32;
                let t = self.camera.t;
                // Height first: most pixels are the table below the zone.
                let height = t[2] + z * (row_dir[2] + uf * x_step[2]);
                if height < self.min[2] || height > self.max[2] {
                    continue;
                }
                let p = [t[0] + z * (row_dir[0] + uf * x_step[0]), t[1] + z * (row_dir[1] + uf * x_step[1]), height];
                if !self.inside(p) {
                    continue;
                }
                let to_arm = links.iter().map(|[a, b]| segment_distance(p, *a, *b)).fold(f32::MAX, f32::min);
                if to_arm <= self.filter_radius {
                    own += 1;
                    continue;
                }
                occupied += 1;
                let bin = ((to_arm - self.link_radius).max(0.0) * 1000.0 / BIN_MM as f32) as usize;
                if let Some(b) = bins.get_mut(bin.min(BINS - 1)) {
                    *b += 1;
                }
            }
        }
        let intrusion = occupied >= self.min_pixels;
        let mut nearest_mm = ZoneReading::NONE;
        if intrusion {
            let mut total = 0u32;
            for (i, n) in bins.iter().enumerate() {
                total += n;
                if total >= self.min_pixels {
                    nearest_mm = i as u32 * BIN_MM;
                    break;
                }
            }
        }
        ZoneReading {
            capture_ns,
            frame_seq,
            occupied_pixels: occupied,
            arm_pixels: own,
            invalid_pixels: invalid,
            footprint_pixels: self.footprint,
            intrusion,
            blind: invalid > self.invalid_max,
            nearest_mm,
        }
    }
}

/// Distance from `p` to the segment `a`–`b`.
fn segment_distance(p: [f32; 3], a: [f32; 3], b: [f32; 3]) -> f32 {
    let ab = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let ap = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
    let len2 = ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2];
    let s =
        if len2 > 0.0 { crate::limit((ap[0] * ab[0] + ap[1] * ab[1] + ap[2] * ab[2]) / len2, 0.0, 1.0) } else { 0.0 };
    let d = [ap[0] - s * ab[0], ap[1] - s * ab[1], ap[2] - s * ab[2]];
    libm::sqrtf(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinematics::Arm;

    const W: usize = 160;
    const H: usize = 120;

    /// A camera 1.5 m above the base looking straight down.
    fn spec() -> ZoneSpec {
        ZoneSpec {
            min_m: [-1.5, -1.5, 0.2],
            max_m: [1.5, 1.5, 2.0],
            camera: Pose::from_xyz_rpy([0.0, 0.0, 1.5], [core::f64::consts::PI, 0.0, 0.0]),
            min_fraction: 0.01,
            invalid_max_fraction: 0.05,
            link_radius_m: 0.05,
            filter_margin_m: 0.05,
        }
    }

    fn k() -> Intrinsics {
        Intrinsics { fx: 100.0, fy: 100.0, cx: W as f32 / 2.0, cy: H as f32 / 2.0 }
    }

    fn no_arm() -> Outline {
        Outline::default()
    }

    #[test]
    fn a_table_below_the_zone_is_clear_and_the_whole_image_is_footprint() {
        let zone = Zone::new(&spec(), k(), W, H, 1.0);
        assert_eq!(zone.footprint_pixels(), (W * H) as u32);
        let table = [1500u16; W * H];
        let r = zone.read(&table, &no_arm(), 1, 1);
        assert!(r.clear() && r.occupied_pixels == 0 && r.nearest_mm == ZoneReading::NONE, "{r:?}");
    }

    #[test]
    fn a_box_above_the_table_is_an_intrusion_at_its_distance_from_the_arm() {
        let zone = Zone::new(&spec(), k(), W, H, 1.0);
        let mut depth = [1500u16; W * H];
        // 40x40 pixels at 0.5 m from the camera (1.0 m above the base), image
        // columns 120..160: base x from +0.2 m to +0.4 m beside a vertical
        // arm at the origin.
        for v in 40..80 {
            for u in 120..160 {
                depth[v * W + u] = 500;
            }
        }
        let arm = Arm::new(&[[0.0, 0.0, 1.0, 0.0]]).outline(&[0.0]);
        let r = zone.read(&depth, &arm, 1, 1);
        assert!(r.intrusion && !r.clear(), "{r:?}");
        assert_eq!(r.occupied_pixels, 1600);
        // Nearest point 0.2 m from the axis, less the 0.05 m link radius; the
        // threshold's 192 points take the nearest five columns (to 0.225 m).
        assert!((150..=175).contains(&r.nearest_mm), "{r:?}");
    }

    #[test]
    fn the_arm_itself_is_left_out() {
        let zone = Zone::new(&spec(), k(), W, H, 1.0);
        let mut depth = [1500u16; W * H];
        // A vertical 1 m link at the base is seen end-on: its top at 0.5 m.
        for v in 50..70 {
            for u in 70..90 {
                depth[v * W + u] = 500;
            }
        }
        let arm = Arm::new(&[[0.0, 0.0, 1.0, 0.0]]).outline(&[0.0]);
        let r = zone.read(&depth, &arm, 1, 1);
        assert!(r.clear() && r.arm_pixels == 400, "{r:?}");
        // Without the arm there, the same points are an intrusion.
        let r = zone.read(&depth, &no_arm(), 1, 1);
        assert!(r.intrusion && r.occupied_pixels == 400, "{r:?}");
    }

    #[test]
    fn pixels_without_a_reading_over_the_zone_make_it_blind() {
        let zone = Zone::new(&spec(), k(), W, H, 1.0);
        let mut depth = [1500u16; W * H];
        let n = (W * H) / 20 + 1;
        depth[..n].fill(0);
        let r = zone.read(&depth, &no_arm(), 1, 1);
        assert!(r.blind && !r.clear() && r.invalid_pixels == n as u32, "{r:?}");
        depth[..n].fill(1500);
        depth[..n - 2].fill(0);
        assert!(zone.read(&depth, &no_arm(), 1, 1).clear());
    }

    #[test]
    fn a_zone_beside_the_view_has_a_partial_footprint() {
        let mut s = spec();
        s.min_m = [0.0, -1.5, 0.2];
        let zone = Zone::new(&s, k(), W, H, 1.0);
        // Base +x is image right (the camera is turned about its x axis).
        let f = zone.footprint_pixels() as usize;
        assert!(f > W * H / 2 - H && f < W * H / 2 + 2 * H, "{f}");
    }
}
