//! Frame buffers: a pool allocated once, handles that own one buffer each, and the
//! lock-free queue that carries them from the capture thread to consumers.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// 8-bit RGB, interleaved.
    Rgb8,
    /// Depth, little-endian `u16` in device units.
    Depth16,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Depth16 => 2,
        }
    }
}

/// Pinhole intrinsics of a stream, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    pub fx: f32,
    pub fy: f32,
    pub cx: f32,
    pub cy: f32,
}

/// What a source delivers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamInfo {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub fps: u32,
    pub intrinsics: Intrinsics,
    /// Millimetres per depth unit (depth streams).
    pub depth_unit_mm: f32,
}

impl StreamInfo {
    pub fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * self.format.bytes_per_pixel()
    }
}

/// Per-frame facts, written by the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameMeta {
    /// Source sequence number; gaps mean the device or the driver dropped frames.
    pub seq: u64,
    /// Capture time, [`crate::clock::monotonic_ns`].
    pub capture_ns: u64,
}

struct Slot {
    meta: UnsafeCell<FrameMeta>,
    // u64 words keep every buffer 8-byte aligned, so depth reads as u16 and
    // preprocessing can use wide loads.
    data: UnsafeCell<Box<[u64]>>,
}

/// A fixed set of equally sized frame buffers, allocated once.
pub struct FramePool {
    slots: Box<[Slot]>,
    free: ArrayQueue<usize>,
    frame_bytes: usize,
}

// SAFETY: a slot's cells are touched only through the one FrameBuf that took its
// index off the lock-free free list; the queue's push/pop order the accesses.
unsafe impl Sync for FramePool {}
unsafe impl Send for FramePool {}

impl FramePool {
    /// Allocates `frames` buffers of `frame_bytes` each. The only allocation the
    /// pool ever makes.
    pub fn new(frames: usize, frame_bytes: usize) -> Arc<Self> {
        assert!(frames > 0, "a frame pool needs at least one buffer");
        let words = frame_bytes.div_ceil(8);
        let slots: Box<[Slot]> = (0..frames)
            .map(|_| Slot {
                meta: UnsafeCell::new(FrameMeta::default()),
                data: UnsafeCell::new(vec![0u64; words].into_boxed_slice()),
            })
            .collect();
        let free = ArrayQueue::new(frames);
        for i in 0..frames {
            let _ = free.push(i);
        }
        Arc::new(Self { slots, free, frame_bytes })
    }

    /// Takes a free buffer, or `None` when consumers hold them all.
    pub fn acquire(self: &Arc<Self>) -> Option<FrameBuf> {
        self.free.pop().map(|index| FrameBuf { pool: self.clone(), index })
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }
}

/// Exclusive ownership of one pooled buffer; returns it to the pool on drop.
/// Moving a `FrameBuf` moves a pointer and an index, never pixels.
pub struct FrameBuf {
    pool: Arc<FramePool>,
    index: usize,
}

impl FrameBuf {
    pub fn meta(&self) -> FrameMeta {
        // SAFETY: this FrameBuf owns the slot exclusively.
        unsafe { *self.pool.slots[self.index].meta.get() }
    }

    pub fn set_meta(&mut self, meta: FrameMeta) {
        // SAFETY: as above, and we hold &mut self.
        unsafe { *self.pool.slots[self.index].meta.get() = meta }
    }

    /// The pixels of a depth frame.
    pub fn as_u16(&self) -> &[u16] {
        bytemuck::cast_slice(&self[..self.len() & !1])
    }

    pub fn as_u16_mut(&mut self) -> &mut [u16] {
        let n = self.len() & !1;
        bytemuck::cast_slice_mut(&mut self[..n])
    }

    /// Which pool buffer this is (for tests and diagnostics).
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Deref for FrameBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: exclusive ownership of the slot, see FramePool's Sync impl.
        let words = unsafe { &*self.pool.slots[self.index].data.get() };
        &bytemuck::cast_slice(words)[..self.pool.frame_bytes]
    }
}

impl DerefMut for FrameBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: exclusive ownership of the slot and &mut self.
        let words = unsafe { &mut *self.pool.slots[self.index].data.get() };
        &mut bytemuck::cast_slice_mut(words)[..self.pool.frame_bytes]
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        // Cannot fail: the queue has room for every index of the pool.
        let _ = self.pool.free.push(self.index);
    }
}

/// Frames ready for consumers, oldest first; bounded by the pool, so a push
/// never fails and never allocates.
pub struct FrameQueue {
    ready: ArrayQueue<FrameBuf>,
}

impl FrameQueue {
    pub fn new(pool: &FramePool) -> Arc<Self> {
        Arc::new(Self { ready: ArrayQueue::new(pool.capacity()) })
    }

    pub(crate) fn push(&self, frame: FrameBuf) {
        // A full queue holds every buffer of the pool, so this frame cannot
        // exist; force_push keeps the newest regardless.
        let _ = self.ready.force_push(frame);
    }

    /// The newest ready frame; older ready frames go back to the pool.
    /// Returns the frame and how many older ones it superseded.
    pub fn latest(&self) -> Option<(FrameBuf, u64)> {
        let mut newest = self.ready.pop()?;
        let mut superseded = 0;
        while let Some(f) = self.ready.pop() {
            newest = f;
            superseded += 1;
        }
        Some((newest, superseded))
    }

    /// The oldest ready frame, for consumers that want every frame (the recorder).
    pub fn pop(&self) -> Option<FrameBuf> {
        self.ready.pop()
    }

    pub fn len(&self) -> usize {
        self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}
