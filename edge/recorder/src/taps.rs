//! Where the real-time threads hand what they did to the recorder: fixed-size
//! records and preallocated thumbnails through lock-free queues. A full queue
//! drops the record and counts it; the real-time thread never waits.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;
use gantry_config::edge::MAX_JOINTS;
use gantry_hal::{FrameBuf, PixelFormat, StreamInfo};

use gantry_safety::governor::{Incident, RobotState};
use gantry_safety::mode::{LoopMemory, PolicyOutput};

/// One control tick: what the policy asked for, what the governor sent, and the
/// joint state it decided on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ControlRecord {
    pub t_ns: u64,
    pub seq: u32,
    pub mode: u8,
    pub joints: u8,
    pub approved: bool,
    /// Failed checks, one bit per [`gantry_safety::governor::Check`].
    pub failed: u32,
    pub from_baseline: bool,
    pub frame_seq: u64,
    pub goal_rad: [f32; MAX_JOINTS],
    pub goal_gripper: f32,
    pub command_rad: [f32; MAX_JOINTS],
    pub command_gripper: f32,
    /// Joint state as the governor saw it; `joint_state_ns` 0 when none had arrived.
    pub joint_state_ns: u64,
    pub positions_rad: [f32; MAX_JOINTS],
    pub velocities_rad_s: [f32; MAX_JOINTS],
    /// The tick's complete inputs, for replay: the state the governor saw,
    /// the policy output the tick followed, the loop's memory before it, and
    /// whether the verdict was the protocol's hold.
    pub state: RobotState,
    pub policy: PolicyOutput,
    pub memory: LoopMemory,
    pub hold: bool,
    /// Sent ahead of the schedule, answering a new policy output at once.
    pub ahead: bool,
}

/// One inference: which frame, how long, on which policy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameRecord {
    pub frame_seq: u64,
    pub capture_ns: u64,
    pub done_ns: u64,
    pub late: bool,
    pub unsafe_action: bool,
    pub from_baseline: bool,
    /// The policy produced an action (false: preprocessing or the backend failed).
    pub ok: bool,
}

/// A downscaled RGB copy of a camera frame, in a buffer allocated once.
pub struct Thumb {
    pub frame_seq: u64,
    pub capture_ns: u64,
    pub width: u32,
    pub height: u32,
    pub rgb: Box<[u8]>,
}

/// Downscales every n-th camera frame into a pool of thumbnails.
pub struct ThumbTap {
    free: ArrayQueue<Box<Thumb>>,
    full: ArrayQueue<Box<Thumb>>,
    /// 0: no thumbnails. Set by the recorder's image policy.
    every_n: AtomicU32,
    src: (usize, usize),
    /// For each output column (row): the two source columns (rows) it averages.
    xs: Box<[(usize, usize)]>,
    ys: Box<[(usize, usize)]>,
    pub dropped: AtomicU64,
}

impl ThumbTap {
    /// `width` is the thumbnail's width; its height keeps the camera's aspect.
    pub fn new(camera: StreamInfo, width: u32, pool: usize) -> Self {
        let (sw, sh) = (camera.width as usize, camera.height as usize);
        let dw = (width as usize).clamp(1, sw.max(1));
        let dh = (sh * dw / sw.max(1)).max(1);
        // Two samples per output pixel and axis, at the quarter points of the
        // source block: an area average good enough for a thumbnail at a quarter
        // of the memory traffic of a full box filter.
        let samples = |d: usize, s: usize| -> Box<[(usize, usize)]> {
            (0..d)
                .map(|i| {
                    let (a, b) = (i * s / d, ((i + 1) * s / d).max(i * s / d + 1));
                    (a + (b - a) / 4, (a + 3 * (b - a) / 4).min(s - 1))
                })
                .collect()
        };
        let free = ArrayQueue::new(pool.max(1));
        let full = ArrayQueue::new(pool.max(1));
        if camera.format == PixelFormat::Rgb8 {
            for _ in 0..pool.max(1) {
                let thumb = Thumb {
                    frame_seq: 0,
                    capture_ns: 0,
                    width: dw as u32,
                    height: dh as u32,
                    rgb: vec![0u8; dw * dh * 3].into_boxed_slice(),
                };
                let _ = free.push(Box::new(thumb));
            }
        }
        Self {
            free,
            full,
            every_n: AtomicU32::new(0),
            src: (sw, sh),
            xs: samples(dw, sw),
            ys: samples(dh, sh),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn set_every_n(&self, n: u32) {
        self.every_n.store(n, Ordering::Relaxed);
    }

    pub fn every_n(&self) -> u32 {
        self.every_n.load(Ordering::Relaxed)
    }

    /// On the inference thread, after its output is published: thumbnails
    /// `frame` when its turn has come and a buffer is free. Allocation-free.
    pub fn offer(&self, frame: &FrameBuf) {
        let n = self.every_n.load(Ordering::Relaxed);
        let meta = frame.meta();
        if n == 0 || !meta.seq.is_multiple_of(u64::from(n)) {
            return;
        }
        let Some(mut thumb) = self.free.pop() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let src: &[u8] = frame;
        let stride = self.src.0 * 3;
        if src.len() < stride * self.src.1 {
            let _ = self.free.push(thumb);
            return;
        }
        let mut out = thumb.rgb.chunks_exact_mut(3);
        for &(y0, y1) in self.ys.iter() {
            let (r0, r1) = (&src[y0 * stride..][..stride], &src[y1 * stride..][..stride]);
            for &(x0, x1) in self.xs.iter() {
                let Some(px) = out.next() else { break };
                for c in 0..3 {
                    let sum = u16::from(r0[x0 * 3 + c])
                        + u16::from(r0[x1 * 3 + c])
                        + u16::from(r1[x0 * 3 + c])
                        + u16::from(r1[x1 * 3 + c]);
                    px[c] = ((sum + 2) / 4) as u8;
                }
            }
        }
        thumb.frame_seq = meta.seq;
        thumb.capture_ns = meta.capture_ns;
        if let Err(thumb) = self.full.push(thumb) {
            let _ = self.free.push(thumb);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// On the recorder thread: the next thumbnail; give it back with [`Self::recycle`].
    pub fn take(&self) -> Option<Box<Thumb>> {
        self.full.pop()
    }

    pub fn recycle(&self, thumb: Box<Thumb>) {
        let _ = self.free.push(thumb);
    }
}

/// One frame's policy inputs at the model's resolution, the action it gave,
/// in a buffer allocated once (sized for the largest model the daemon runs).
pub struct SampleBuf {
    pub frame_seq: u64,
    pub capture_ns: u64,
    /// Width and height of `rgb[..rgb_len]` (RGB8 interleaved).
    pub rgb_size: (u32, u32),
    pub rgb_len: usize,
    pub rgb: Box<[u8]>,
    /// Width and height of `depth[..depth_len]`; 0 × 0 without a depth camera.
    pub depth_size: (u32, u32),
    pub depth_len: usize,
    pub depth: Box<[u16]>,
    pub depth_unit_mm: f32,
    pub joints: u8,
    pub positions_rad: [f32; MAX_JOINTS],
    pub velocities_rad_s: [f32; MAX_JOINTS],
    pub goal_rad: [f32; MAX_JOINTS],
    pub goal_gripper: f32,
    pub from_baseline: bool,
}

impl SampleBuf {
    pub fn rgb(&self) -> &[u8] {
        self.rgb.get(..self.rgb_len).unwrap_or(&[])
    }

    pub fn depth(&self) -> &[u16] {
        self.depth.get(..self.depth_len).unwrap_or(&[])
    }
}

/// What the inference thread offers for a sample.
pub struct SampleInput<'a> {
    pub frame_seq: u64,
    pub capture_ns: u64,
    pub rgb_size: (u32, u32),
    pub rgb: &'a [u8],
    pub depth_size: (u32, u32),
    pub depth: &'a [u16],
    pub depth_unit_mm: f32,
    pub joints: usize,
    pub positions_rad: &'a [f32; MAX_JOINTS],
    pub velocities_rad_s: &'a [f32; MAX_JOINTS],
    pub goal_rad: &'a [f32; MAX_JOINTS],
    pub goal_gripper: f32,
    pub from_baseline: bool,
}

/// Every inference's inputs, copied into a pool of preallocated buffers: the
/// recorder keeps a pre-roll of them and writes the ones it samples.
pub struct SampleTap {
    free: ArrayQueue<Box<SampleBuf>>,
    full: ArrayQueue<Box<SampleBuf>>,
    enabled: AtomicBool,
    /// Offers with no free buffer, or inputs larger than the buffers.
    pub dropped: AtomicU64,
}

impl SampleTap {
    /// `pool` buffers of `rgb_bytes` and `depth_pixels`; none when `pool` is 0.
    pub fn new(rgb_bytes: usize, depth_pixels: usize, pool: usize) -> Self {
        let free = ArrayQueue::new(pool.max(1));
        let full = ArrayQueue::new(pool.max(1));
        for _ in 0..pool {
            let buf = SampleBuf {
                frame_seq: 0,
                capture_ns: 0,
                rgb_size: (0, 0),
                rgb_len: 0,
                rgb: vec![0; rgb_bytes].into_boxed_slice(),
                depth_size: (0, 0),
                depth_len: 0,
                depth: vec![0; depth_pixels].into_boxed_slice(),
                depth_unit_mm: 1.0,
                joints: 0,
                positions_rad: [0.0; MAX_JOINTS],
                velocities_rad_s: [0.0; MAX_JOINTS],
                goal_rad: [0.0; MAX_JOINTS],
                goal_gripper: 0.0,
                from_baseline: false,
            };
            let _ = free.push(Box::new(buf));
        }
        Self { free, full, enabled: AtomicBool::new(pool > 0), dropped: AtomicU64::new(0) }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// On the inference thread: copies the inputs into a free buffer.
    /// Allocation-free; drops (counted) when none is free.
    pub fn offer(&self, s: &SampleInput<'_>) {
        if !self.enabled() {
            return;
        }
        let Some(mut buf) = self.free.pop() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (Some(rgb), Some(depth)) = (buf.rgb.get_mut(..s.rgb.len()), buf.depth.get_mut(..s.depth.len())) else {
            let _ = self.free.push(buf);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        rgb.copy_from_slice(s.rgb);
        depth.copy_from_slice(s.depth);
        buf.frame_seq = s.frame_seq;
        buf.capture_ns = s.capture_ns;
        buf.rgb_size = s.rgb_size;
        buf.rgb_len = s.rgb.len();
        buf.depth_size = s.depth_size;
        buf.depth_len = s.depth.len();
        buf.depth_unit_mm = s.depth_unit_mm;
        buf.joints = s.joints.min(MAX_JOINTS) as u8;
        buf.positions_rad = *s.positions_rad;
        buf.velocities_rad_s = *s.velocities_rad_s;
        buf.goal_rad = *s.goal_rad;
        buf.goal_gripper = s.goal_gripper;
        buf.from_baseline = s.from_baseline;
        if let Err(buf) = self.full.push(buf) {
            let _ = self.free.push(buf);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// On the recorder thread: the next sample; give it back with [`Self::recycle`].
    pub fn take(&self) -> Option<Box<SampleBuf>> {
        self.full.pop()
    }

    pub fn recycle(&self, buf: Box<SampleBuf>) {
        let _ = self.free.push(buf);
    }
}

/// Everything the real-time threads hand to the recorder.
pub struct Taps {
    pub control: ArrayQueue<ControlRecord>,
    pub frames: ArrayQueue<FrameRecord>,
    pub incidents: ArrayQueue<Incident>,
    pub thumbs: ThumbTap,
    pub samples: SampleTap,
    /// Records dropped because the recorder fell behind (or none is attached).
    pub dropped: AtomicU64,
}

impl Taps {
    /// Queues sized for `slack_s` seconds of records at the given rates.
    pub fn new(
        control_hz: u32,
        camera: StreamInfo,
        thumb_width: u32,
        thumb_pool: usize,
        samples: SampleTap,
        slack_s: u32,
    ) -> Self {
        let slack = slack_s.max(1) as usize;
        Self {
            control: ArrayQueue::new(control_hz.max(1) as usize * slack),
            frames: ArrayQueue::new((camera.fps.max(1) as usize) * slack),
            incidents: ArrayQueue::new(control_hz.max(1) as usize * slack),
            thumbs: ThumbTap::new(camera, thumb_width, thumb_pool),
            samples,
            dropped: AtomicU64::new(0),
        }
    }

    pub fn push_control(&self, r: ControlRecord) {
        if self.control.push(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn push_frame(&self, r: FrameRecord) {
        if self.frames.push(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn push_incident(&self, i: Incident) {
        if self.incidents.push(i).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
