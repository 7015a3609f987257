//! Where the real-time threads hand what they did to the recorder: fixed-size
//! records and preallocated thumbnails through lock-free queues. A full queue
//! drops the record and counts it; the real-time thread never waits.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;
use gantry_config::edge::MAX_JOINTS;
use gantry_hal::{FrameBuf, PixelFormat, StreamInfo};

use gantry_safety::governor::Incident;

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

    /// On the capture thread: thumbnails `frame` when its turn has come and a
    /// buffer is free. Allocation-free.
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

/// Everything the real-time threads hand to the recorder.
pub struct Taps {
    pub control: ArrayQueue<ControlRecord>,
    pub frames: ArrayQueue<FrameRecord>,
    pub incidents: ArrayQueue<Incident>,
    pub thumbs: ThumbTap,
    /// Records dropped because the recorder fell behind (or none is attached).
    pub dropped: AtomicU64,
}

impl Taps {
    /// Queues sized for `slack_s` seconds of records at the given rates.
    pub fn new(control_hz: u32, camera: StreamInfo, thumb_width: u32, thumb_pool: usize, slack_s: u32) -> Self {
        let slack = slack_s.max(1) as usize;
        Self {
            control: ArrayQueue::new(control_hz.max(1) as usize * slack),
            frames: ArrayQueue::new((camera.fps.max(1) as usize) * slack),
            incidents: ArrayQueue::new(control_hz.max(1) as usize * slack),
            thumbs: ThumbTap::new(camera, thumb_width, thumb_pool),
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
