//! Deterministic synthetic camera and depth sources.
//!
//! The scene is a pure function of the seed and the frame time `seq / fps`: a
//! table seen from above (a plane, slightly tilted), a part moving on it in a
//! circle, and — when configured — a person who walks into the workspace at
//! `person_enter_s` and leaves at `person_leave_s`. The same seed gives the same
//! pixels on every run, so the safety governor can be tested against it. The
//! depth camera also sees the person and, when given its joint angles, the arm
//! itself, both placed in the robot's base frame through the camera's
//! configured extrinsics.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_config::edge::{Synthetic as SceneConfig, MAX_JOINTS};
use gantry_config::EdgeConfig;
use gantry_safety::kinematics::Arm;
use gantry_safety::zone::Pose;
use rand_core::RngCore;
use rand_pcg::Pcg64Mcg;

use crate::clock::monotonic_ns;
use crate::frame::{FrameMeta, Intrinsics, PixelFormat, StreamInfo};
use crate::source::{FrameSource, HalError, Pacing};

/// The arm's joint angles for the synthetic depth camera to draw: written by
/// the robot from the firmware's joint state, read when a frame is rendered.
/// Wait-free; a frame drawn mid-update mixes two poses a millisecond apart.
#[derive(Debug, Default)]
pub struct ArmPose {
    angles: [AtomicU32; MAX_JOINTS],
    known: AtomicBool,
}

impl ArmPose {
    pub fn store(&self, q: &[f32]) {
        for (a, v) in self.angles.iter().zip(q) {
            a.store(v.to_bits(), Ordering::Relaxed);
        }
        self.known.store(true, Ordering::Release);
    }

    /// The angles, once any were stored.
    pub fn load(&self) -> Option<[f32; MAX_JOINTS]> {
        if !self.known.load(Ordering::Acquire) {
            return None;
        }
        let mut q = [0f32; MAX_JOINTS];
        for (v, a) in q.iter_mut().zip(&self.angles) {
            *v = f32::from_bits(a.load(Ordering::Relaxed));
        }
        Some(q)
    }
}

/// The arm as the depth camera sees it.
#[derive(Debug, Clone)]
struct SceneArm {
    arm: Arm,
    joints: usize,
    radius_m: f32,
    pose: Arc<ArmPose>,
}

/// The moving scene both sources render.
#[derive(Debug, Clone)]
pub struct Scene {
    pub config: SceneConfig,
    /// The depth camera's pose in the robot's base frame.
    camera: Pose,
    arm: Option<SceneArm>,
}

/// The person's footprint in normalised image coordinates (0..1) in the RGB
/// image, while present.
const PERSON_BOX: [f32; 4] = [0.40, 0.25, 0.62, 0.80];
/// Half the person's footprint in the base frame (x, y), metres.
const PERSON_HALF_M: [f32; 2] = [0.2, 0.25];
/// Spacing of the spheres that draw the arm's links, metres.
const ARM_STEP_M: f64 = 0.02;

impl Scene {
    /// The scene with the depth camera where the default configuration puts it.
    pub fn new(config: SceneConfig) -> Self {
        let g = gantry_config::edge::Governor::default();
        Self { config, camera: Pose::from_xyz_rpy(g.camera_position_m, g.camera_rpy_rad), arm: None }
    }

    /// The scene the configuration describes, the depth camera at its configured pose.
    pub fn from_config(config: &EdgeConfig) -> Self {
        let g = &config.governor;
        Self {
            config: config.synthetic.clone(),
            camera: Pose::from_xyz_rpy(g.camera_position_m, g.camera_rpy_rad),
            arm: None,
        }
    }

    /// The depth camera also draws the configured arm at the angles `pose` holds.
    pub fn with_arm(mut self, config: &EdgeConfig, pose: Arc<ArmPose>) -> Self {
        self.arm = Some(SceneArm {
            arm: Arm::new(&config.arm.dh).with_tool(config.arm.tool_offset_m),
            joints: config.firmware.joints.min(MAX_JOINTS),
            radius_m: config.arm.link_radius_m as f32,
            pose,
        });
        self
    }

    /// Whether the person is inside the workspace at scene time `t_s`.
    pub fn person_present(&self, t_s: f64) -> bool {
        self.config.person_event && t_s >= self.config.person_enter_s && t_s < self.config.person_leave_s
    }

    /// Centre of the moving part, normalised image coordinates.
    fn part_center(t_s: f64) -> (f32, f32) {
        let a = t_s * 0.8;
        (0.5 + 0.25 * a.cos() as f32, 0.5 + 0.2 * a.sin() as f32)
    }
}

fn intrinsics(width: u32, height: u32, hfov_deg: f32) -> Intrinsics {
    let fx = width as f32 / 2.0 / (hfov_deg.to_radians() / 2.0).tan();
    Intrinsics { fx, fy: fx, cx: width as f32 / 2.0, cy: height as f32 / 2.0 }
}

/// Frame numbering and real-time pacing, shared by both sources.
struct FrameClock {
    pacing: Pacing,
    fps: u32,
    period: Duration,
    next: Option<Instant>,
    seq: u64,
}

impl FrameClock {
    fn new(pacing: Pacing, fps: u32) -> Self {
        Self { pacing, fps, period: Duration::from_secs_f64(1.0 / f64::from(fps.max(1))), next: None, seq: 0 }
    }

    /// Waits for the next frame's time (under real-time pacing); returns its
    /// sequence number and its scene time in seconds.
    fn next_frame(&mut self) -> (u64, f64) {
        if self.pacing == Pacing::RealTime {
            let now = Instant::now();
            let due = *self.next.get_or_insert(now);
            if due > now {
                std::thread::sleep(due - now);
            }
            // Late frames do not bunch up: the next one is a period after this one.
            self.next = Some(due.max(now) + self.period);
        }
        let seq = self.seq;
        self.seq += 1;
        (seq, seq as f64 / f64::from(self.fps.max(1)))
    }
}

fn check_len(dst: &[u8], info: &StreamInfo) -> Result<(), HalError> {
    if dst.len() != info.frame_bytes() {
        return Err(HalError::BufferSize { got: dst.len(), want: info.frame_bytes() });
    }
    Ok(())
}

/// 1920×1080 RGB8 (or as configured) rendering of the scene.
pub struct SyntheticCamera {
    scene: Scene,
    info: StreamInfo,
    background: Box<[u8]>,
    clock: FrameClock,
}

impl SyntheticCamera {
    pub fn new(scene: Scene, width: u32, height: u32, fps: u32, pacing: Pacing) -> Self {
        let info = StreamInfo {
            width,
            height,
            format: PixelFormat::Rgb8,
            fps,
            intrinsics: intrinsics(width, height, 69.0),
            depth_unit_mm: 0.0,
        };
        // The static part of the scene is rendered once; each frame copies it.
        let mut rng = Pcg64Mcg::new(u128::from(scene.config.seed) | 1);
        let mut background = vec![0u8; info.frame_bytes()].into_boxed_slice();
        let (w, h) = (width as usize, height as usize);
        for y in 0..h {
            for x in 0..w {
                let grain = (rng.next_u32() & 0x0f) as u8;
                let grid = if x % 120 < 2 || y % 120 < 2 { 40 } else { 0 };
                let i = (y * w + x) * 3;
                background[i] = 150 + grain - grid;
                background[i + 1] = 130 + grain - grid;
                background[i + 2] = 100 + grain / 2;
            }
        }
        Self { scene, info, background, clock: FrameClock::new(pacing, fps) }
    }

    fn render(&self, t_s: f64, dst: &mut [u8]) {
        dst.copy_from_slice(&self.background);
        let (w, h) = (self.info.width as usize, self.info.height as usize);
        let (cx, cy) = Scene::part_center(t_s);
        let half = (h / 12).max(1);
        let (px, py) = ((cx * w as f32) as usize, (cy * h as f32) as usize);
        fill_rect(dst, w, h, px.saturating_sub(half), py.saturating_sub(half), px + half, py + half, [200, 40, 30]);
        if self.scene.person_present(t_s) {
            let [x0, y0, x1, y1] = PERSON_BOX;
            let r = |v: f32, n: usize| (v * n as f32) as usize;
            fill_rect(dst, w, h, r(x0, w), r(y0, h), r(x1, w), r(y1, h), [30, 60, 160]);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn fill_rect(dst: &mut [u8], w: usize, h: usize, x0: usize, y0: usize, x1: usize, y1: usize, rgb: [u8; 3]) {
    let (x1, y1) = (x1.min(w), y1.min(h));
    for y in y0.min(y1)..y1 {
        let row = &mut dst[(y * w + x0.min(x1)) * 3..(y * w + x1) * 3];
        for px in row.chunks_exact_mut(3) {
            px.copy_from_slice(&rgb);
        }
    }
}

impl FrameSource for SyntheticCamera {
    fn info(&self) -> StreamInfo {
        self.info
    }

    fn next_frame(&mut self, dst: Option<&mut [u8]>) -> Result<FrameMeta, HalError> {
        let (seq, t_s) = self.clock.next_frame();
        if let Some(dst) = dst {
            check_len(dst, &self.info)?;
            self.render(t_s, dst);
        }
        Ok(FrameMeta { seq, capture_ns: monotonic_ns() })
    }
}

/// 848×480 depth in millimetres (or as configured) of the same scene.
pub struct SyntheticDepth {
    scene: Scene,
    info: StreamInfo,
    /// The table plane with its noise, rendered once; each frame copies it.
    table: Box<[u16]>,
    clock: FrameClock,
}

impl SyntheticDepth {
    pub fn new(scene: Scene, width: u32, height: u32, fps: u32, pacing: Pacing) -> Self {
        let info = StreamInfo {
            width,
            height,
            format: PixelFormat::Depth16,
            fps,
            intrinsics: intrinsics(width, height, 87.0),
            depth_unit_mm: 1.0,
        };
        let mut rng = Pcg64Mcg::new(u128::from(scene.config.seed.wrapping_mul(31)) | 1);
        let (w, h) = (width as usize, height as usize);
        let base = f32::from(scene.config.table_distance_mm);
        let noise = u32::from(scene.config.depth_noise_mm);
        let mut table = vec![0u16; w * h].into_boxed_slice();
        for y in 0..h {
            // The table tilts away from the camera towards the top of the image.
            let plane = base + (h as f32 / 2.0 - y as f32) * 0.15;
            for x in 0..w {
                let n = if noise == 0 { 0.0 } else { (rng.next_u32() % (2 * noise + 1)) as f32 - noise as f32 };
                table[y * w + x] = (plane + n).clamp(1.0, 65_535.0) as u16;
            }
        }
        Self { scene, info, table, clock: FrameClock::new(pacing, fps) }
    }

    fn render(&self, t_s: f64, dst: &mut [u16]) {
        dst.copy_from_slice(&self.table);
        let (w, h) = (self.info.width as usize, self.info.height as usize);
        let (cx, cy) = Scene::part_center(t_s);
        let half = (h / 12).max(1);
        let (px, py) = ((cx * w as f32) as usize, (cy * h as f32) as usize);
        let part_mm = self.scene.config.table_distance_mm.saturating_sub(120);
        fill_depth(dst, w, h, [px.saturating_sub(half), py.saturating_sub(half), px + half, py + half], part_mm);
        if self.scene.person_present(t_s) {
            self.draw_person(dst);
        }
        if let Some(arm) = &self.scene.arm {
            self.draw_arm(arm, dst);
        }
    }

    /// Projects a base-frame point; `None` behind the camera.
    fn project(&self, p: [f32; 3]) -> Option<(f32, f32, f32)> {
        let c = self.scene.camera.to_camera(p);
        let k = self.info.intrinsics;
        (c[2] > 1e-3).then(|| (k.fx * c[0] / c[2] + k.cx, k.fy * c[1] / c[2] + k.cy, c[2]))
    }

    /// The top of the person's body: a horizontal rectangle at
    /// `person_height_m` over `person_position_m`, as the camera sees it.
    fn draw_person(&self, dst: &mut [u16]) {
        let c = &self.scene.config;
        let (px, py, top) = (c.person_position_m[0] as f32, c.person_position_m[1] as f32, c.person_height_m as f32);
        let [hx, hy] = PERSON_HALF_M;
        let (w, h) = (self.info.width as usize, self.info.height as usize);
        let (mut u0, mut v0, mut u1, mut v1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for (dx, dy) in [(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)] {
            let Some((u, v, _)) = self.project([px + dx, py + dy, top]) else { return };
            (u0, v0, u1, v1) = (u0.min(u), v0.min(v), u1.max(u), v1.max(v));
        }
        let k = self.info.intrinsics;
        let cam = self.scene.camera;
        for v in (v0.max(0.0) as usize)..(v1.max(0.0).ceil() as usize).min(h) {
            for u in (u0.max(0.0) as usize)..(u1.max(0.0).ceil() as usize).min(w) {
                let dir = cam.rotate([(u as f32 - k.cx) / k.fx, (v as f32 - k.cy) / k.fy, 1.0]);
                if dir[2].abs() < 1e-6 {
                    continue;
                }
                // Depth along the optical axis where this pixel's ray meets the top.
                let z = (top - cam.t[2]) / dir[2];
                let (x, y) = (cam.t[0] + z * dir[0], cam.t[1] + z * dir[1]);
                if z > 0.0 && (x - px).abs() <= hx && (y - py).abs() <= hy {
                    let d = &mut dst[v * w + u];
                    *d = if c.person_reads_invalid { 0 } else { (*d).min((z * 1000.0).clamp(1.0, 65_535.0) as u16) };
                }
            }
        }
    }

    /// The arm's links as rows of spheres at its current joint angles.
    fn draw_arm(&self, arm: &SceneArm, dst: &mut [u16]) {
        let Some(q) = arm.pose.load() else { return };
        let outline = arm.arm.outline(&q[..arm.joints]);
        let (w, h) = (self.info.width as usize, self.info.height as usize);
        let fx = self.info.intrinsics.fx;
        for pair in outline.points().windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let len = (0..3).map(|i| (b[i] - a[i]).powi(2)).sum::<f64>().sqrt();
            let steps = (len / ARM_STEP_M).ceil().max(1.0) as usize;
            for s in 0..=steps {
                let f = s as f64 / steps as f64;
                let p = [0, 1, 2].map(|i| (a[i] + f * (b[i] - a[i])) as f32);
                let Some((u, v, z)) = self.project(p) else { continue };
                // The sphere's near side, filling its disc in the image.
                let mm = ((z - arm.radius_m) * 1000.0).clamp(1.0, 65_535.0) as u16;
                let r = arm.radius_m * fx / z;
                let (ur, vr) = (u.round() as i64, v.round() as i64);
                let ri = r.ceil() as i64;
                for y in (vr - ri).max(0)..(vr + ri + 1).min(h as i64) {
                    for x in (ur - ri).max(0)..(ur + ri + 1).min(w as i64) {
                        let (dx, dy) = (x as f32 - u, y as f32 - v);
                        if dx * dx + dy * dy <= r * r {
                            let d = &mut dst[y as usize * w + x as usize];
                            *d = (*d).min(mm);
                        }
                    }
                }
            }
        }
    }
}

fn fill_depth(dst: &mut [u16], w: usize, h: usize, [x0, y0, x1, y1]: [usize; 4], mm: u16) {
    let (x1, y1) = (x1.min(w), y1.min(h));
    for y in y0.min(y1)..y1 {
        dst[y * w + x0.min(x1)..y * w + x1].fill(mm);
    }
}

impl FrameSource for SyntheticDepth {
    fn info(&self) -> StreamInfo {
        self.info
    }

    fn next_frame(&mut self, dst: Option<&mut [u8]>) -> Result<FrameMeta, HalError> {
        let (seq, t_s) = self.clock.next_frame();
        if let Some(dst) = dst {
            check_len(dst, &self.info)?;
            let depth: &mut [u16] =
                bytemuck::try_cast_slice_mut(dst).map_err(|e| HalError::Unsupported(format!("depth buffer: {e}")))?;
            self.render(t_s, depth);
        }
        Ok(FrameMeta { seq, capture_ns: monotonic_ns() })
    }
}
