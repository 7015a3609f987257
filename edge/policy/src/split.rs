//! A second thread for the RGB area average.
//!
//! A 1080p frame is 6 MB, and a camera's frame comes from memory, not from a
//! cache: one core streaming it is limited by its own memory bandwidth (about
//! 0.75 ms on the development VM, against 0.4 ms for a frame already in
//! cache). Two cores each reading half take about half the time. The
//! inference thread hands the lower half of the output rows to an
//! [`RgbHelper`] and does the upper half itself, then waits for the helper.
//!
//! The hand-off is two [`gantry_handoff`] cells: the job (pointers into the
//! inference thread's frame, tables and tensor) one way, the finished job's
//! number the other, each with a futex to sleep on. Nothing is allocated per
//! frame. The inference thread never goes on before the helper has finished
//! with its memory ([`Pending`] waits even when dropped early), so the helper
//! only ever sees memory that is alive and that nobody else touches. Should
//! the helper stop answering, the inference thread waits with it, and the
//! daemon's supervisor, which watches the inference thread, holds the robot
//! and names `gantry-infer`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use gantry_handoff::{snapshot, Publisher, Snapshot};

use crate::preprocess::{Band, Geometry};

/// How long the inference thread spins for the helper before it sleeps: the
/// halves take about as long, so the helper is usually a wake-up away.
const SPIN_NS: u64 = 200_000;
/// How often an idle helper looks at its stop flag.
const IDLE_CHECK_NS: u64 = 200_000_000;

/// One half frame's work: where to read and where to write.
#[derive(Clone, Copy)]
struct Job {
    /// 0: no job (the cell's initial value and the stop signal).
    seq: u64,
    geometry: *const Geometry,
    frame: (*const u8, usize),
    first: usize,
    planes: [(*mut f32, usize); 3],
    rgb_u8: (*mut u8, usize),
}

// SAFETY: the pointers are dereferenced only by the helper, between the job's
// publication and its completion, while the inference thread that owns the
// memory waits for it (`Pending`).
unsafe impl Send for Job {}

impl Job {
    const NONE: Job = Job {
        seq: 0,
        geometry: std::ptr::null(),
        frame: (std::ptr::null(), 0),
        first: 0,
        planes: [(std::ptr::null_mut(), 0); 3],
        rgb_u8: (std::ptr::null_mut(), 0),
    };
}

/// The helper thread and its two cells; stops and joins the thread on drop.
pub struct RgbHelper {
    jobs: Publisher<Job>,
    done: Snapshot<u64>,
    seq: u64,
    /// Bytes per source row the helper's band sums hold.
    row_bytes: usize,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RgbHelper {
    /// Starts the helper for frames of up to `row_bytes` bytes per row (its
    /// band sums are allocated here, once). `on_start` runs first on the new
    /// thread: real-time placement, or a test's allocation counting.
    pub fn spawn(row_bytes: usize, on_start: impl FnOnce() + Send + 'static) -> std::io::Result<Self> {
        let (jobs, job_reader) = snapshot(Job::NONE);
        let (mut done_out, done) = snapshot(0u64);
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        // Taken before the thread starts, so a job published before it first
        // sleeps is seen at once.
        let mut seen = job_reader.version();
        let thread = std::thread::Builder::new().name("gantry-infer-2".into()).spawn(move || {
            let mut narrow = Band::new(true, row_bytes);
            let mut wide = Band::new(false, row_bytes);
            on_start();
            let mut last = 0;
            while !halt.load(Ordering::Acquire) {
                job_reader.wait_newer(seen, monotonic_ns().saturating_add(IDLE_CHECK_NS));
                seen = job_reader.version();
                let Some(job) = job_reader.read() else { continue };
                if job.seq == 0 || job.seq == last {
                    continue;
                }
                last = job.seq;
                // SAFETY: see `Job`: the inference thread keeps every pointed-to
                // value alive and untouched until `done` says `job.seq`, and
                // the output slices are disjoint from the rows it writes itself.
                unsafe {
                    let g = &*job.geometry;
                    let frame = std::slice::from_raw_parts(job.frame.0, job.frame.1);
                    let planes = job.planes.map(|(p, n)| std::slice::from_raw_parts_mut(p, n));
                    let rgb_u8 = std::slice::from_raw_parts_mut(job.rgb_u8.0, job.rgb_u8.1);
                    let band = if g.narrow { &mut narrow } else { &mut wide };
                    g.rows_into(frame, band, job.first, planes, rgb_u8);
                }
                done_out.publish(job.seq);
            }
        })?;
        Ok(Self { jobs, done, seq: 0, row_bytes, stop, thread: Some(thread) })
    }

    /// Whether the helper's band sums hold a row of `g`'s frames.
    pub(crate) fn fits(&self, g: &Geometry) -> bool {
        g.stride <= self.row_bytes
    }

    /// Hands the helper output rows `first..` of `planes` and `rgb_u8`; the
    /// borrows last until the returned [`Pending`] has seen it finish.
    pub(crate) fn begin<'a>(
        &'a mut self,
        geometry: &'a Geometry,
        frame: &'a [u8],
        first: usize,
        planes: [&'a mut [f32]; 3],
        rgb_u8: &'a mut [u8],
    ) -> Pending<'a> {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.jobs.publish(Job {
            seq: self.seq,
            geometry,
            frame: (frame.as_ptr(), frame.len()),
            first,
            planes: planes.map(|p| (p.as_mut_ptr(), p.len())),
            rgb_u8: (rgb_u8.as_mut_ptr(), rgb_u8.len()),
        });
        Pending { helper: self }
    }
}

impl Drop for RgbHelper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.jobs.publish(Job::NONE);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A job on the helper; dropping it waits until the helper has finished it.
pub(crate) struct Pending<'a> {
    helper: &'a mut RgbHelper,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let h = &*self.helper;
        let spin_until = monotonic_ns().saturating_add(SPIN_NS);
        loop {
            let seen = h.done.version();
            if h.done.read() == Some(h.seq) {
                return;
            }
            if monotonic_ns() < spin_until {
                std::hint::spin_loop();
            } else {
                h.done.wait_newer(seen, monotonic_ns().saturating_add(IDLE_CHECK_NS));
            }
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock futex deadlines are on.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}
