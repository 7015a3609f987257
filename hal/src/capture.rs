//! The capture driver: one step takes one frame from a source into the pool and
//! hands it to consumers, or drops and counts it when no buffer is free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::frame::{FrameBuf, FramePool, FrameQueue};
use crate::source::{FrameSource, HalError};

/// Counters a capture thread publishes; read from anywhere.
#[derive(Debug, Default)]
pub struct CaptureStats {
    pub captured: AtomicU64,
    /// Frames thrown away because consumers held every buffer.
    pub dropped_no_buffer: AtomicU64,
    /// Gaps in the source's own sequence numbers (driver or device drops).
    pub dropped_by_source: AtomicU64,
    pub errors: AtomicU64,
    pub last_capture_ns: AtomicU64,
}

impl CaptureStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_no_buffer.load(Ordering::Relaxed) + self.dropped_by_source.load(Ordering::Relaxed)
    }
}

/// Drives one source into one pool. Allocates nothing after [`Capture::new`].
pub struct Capture<S> {
    source: S,
    pool: Arc<FramePool>,
    queue: Arc<FrameQueue>,
    stats: Arc<CaptureStats>,
    last_seq: Option<u64>,
}

impl<S: FrameSource> Capture<S> {
    /// A pool of `pool_frames` buffers sized for the source, and its queue.
    pub fn new(source: S, pool_frames: usize) -> Self {
        let pool = FramePool::new(pool_frames, source.info().frame_bytes());
        let queue = FrameQueue::new(&pool);
        Self { source, pool, queue, stats: Arc::new(CaptureStats::default()), last_seq: None }
    }

    /// Where consumers take frames from.
    pub fn queue(&self) -> Arc<FrameQueue> {
        self.queue.clone()
    }

    pub fn pool(&self) -> Arc<FramePool> {
        self.pool.clone()
    }

    pub fn stats(&self) -> Arc<CaptureStats> {
        self.stats.clone()
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    /// Waits for the next frame and publishes it (or drops it). Returns whether
    /// the frame was published.
    pub fn step(&mut self) -> Result<bool, HalError> {
        self.step_inspect(|_| {})
    }

    /// Like [`Capture::step`], letting `inspect` read the frame on this thread
    /// before consumers can take it (the depth thread's workspace check).
    pub fn step_inspect(&mut self, inspect: impl FnOnce(&FrameBuf)) -> Result<bool, HalError> {
        let published = match self.pool.acquire() {
            Some(mut buf) => {
                let meta = self.source.next_frame(Some(&mut buf)).inspect_err(|_| {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                })?;
                buf.set_meta(meta);
                self.note(meta.seq, meta.capture_ns);
                inspect(&buf);
                self.queue.push(buf);
                true
            }
            None => {
                let meta = self.source.next_frame(None)?;
                self.note(meta.seq, meta.capture_ns);
                self.stats.dropped_no_buffer.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        if published {
            self.stats.captured.fetch_add(1, Ordering::Relaxed);
        }
        Ok(published)
    }

    fn note(&mut self, seq: u64, capture_ns: u64) {
        if let Some(last) = self.last_seq {
            let gap = seq.saturating_sub(last + 1);
            if gap > 0 {
                self.stats.dropped_by_source.fetch_add(gap, Ordering::Relaxed);
            }
        }
        self.last_seq = Some(seq);
        self.stats.last_capture_ns.store(capture_ns, Ordering::Relaxed);
    }
}
