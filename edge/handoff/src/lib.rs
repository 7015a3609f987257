//! Wait-free hand-offs for the real-time threads.
//!
//! A [`snapshot`] cell carries the newest value of a `Copy` type from exactly
//! one writer to any number of readers. It is a sequence lock with two
//! properties that `crossbeam`'s `AtomicCell<T>` lacks for a `T` wider than a
//! native atomic (it falls back to a global, striped lock that readers spin
//! on):
//!
//! - the writer never waits: it owns the only [`Publisher`], so no lock is needed
//!   between writers;
//! - a reader never waits on the writer: [`Snapshot::read`] retries a bounded
//!   number of times and then gives up, so a real-time reader that preempted a
//!   writer in the middle of a store does not spin on it. [`Latest`] wraps a
//!   reader that then keeps its last good value (whose age tells the caller it
//!   is stale).
//!
//! Values enter through [`Publisher::publish`] and leave through
//! [`Snapshot::read`] or [`Latest::get`]; nothing allocates after [`snapshot`].

#![forbid(unsafe_op_in_unsafe_fn)]
// Nothing here may stop a real-time thread: no unwrap, expect or panic
// outside tests (`clippy.toml` also disallows `f32::clamp`).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

/// How often a reader tries before it gives up. A store is a copy of a few
/// dozen bytes, so a reader that keeps seeing one in progress is looking at a
/// writer that was preempted, not one that is busy.
pub const READ_RETRIES: u32 = 64;

struct Cell<T> {
    /// Even: the value is stable. Odd: a store is in progress.
    seq: AtomicU64,
    /// Reads that gave up because a store stayed in progress.
    missed: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is only written by the single `Publisher` and only read as
// `MaybeUninit` bytes that are used once the sequence proves them unchanged.
unsafe impl<T: Copy + Send> Sync for Cell<T> {}

/// A new cell holding `initial`: its one writer and a reader to clone.
pub fn snapshot<T: Copy + Send>(initial: T) -> (Publisher<T>, Snapshot<T>) {
    let cell = Arc::new(Cell {
        seq: AtomicU64::new(0),
        missed: AtomicU64::new(0),
        value: UnsafeCell::new(MaybeUninit::new(initial)),
    });
    (Publisher { cell: cell.clone() }, Snapshot { cell })
}

/// The one writer of a cell (not `Clone`).
pub struct Publisher<T> {
    cell: Arc<Cell<T>>,
}

impl<T: Copy + Send> Publisher<T> {
    /// Stores `value`; wait-free.
    pub fn publish(&mut self, value: T) {
        let c = &*self.cell;
        let seq = c.seq.load(Ordering::Relaxed);
        c.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // The odd sequence must be visible before any byte of the new value.
        fence(Ordering::Release);
        // SAFETY: `&mut self` on the only publisher: no other store runs.
        // Readers copy the bytes as `MaybeUninit` and discard a torn copy.
        unsafe { std::ptr::write_volatile(c.value.get(), MaybeUninit::new(value)) };
        c.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// A reader of this cell.
    pub fn reader(&self) -> Snapshot<T> {
        Snapshot { cell: self.cell.clone() }
    }
}

/// A reader of a cell; clone it for every thread that reads.
pub struct Snapshot<T> {
    cell: Arc<Cell<T>>,
}

impl<T> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Self { cell: self.cell.clone() }
    }
}

impl<T: Copy + Send> Snapshot<T> {
    /// The newest value, or `None` if a store stayed in progress through
    /// [`READ_RETRIES`] tries. Never waits on the writer.
    pub fn read(&self) -> Option<T> {
        let c = &*self.cell;
        for _ in 0..READ_RETRIES {
            let before = c.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                // SAFETY: a volatile copy of the bytes as `MaybeUninit`, which any
                // bit pattern is; it is only assumed valid below, once the
                // sequence shows no store overlapped it.
                let copy = unsafe { std::ptr::read_volatile(c.value.get()) };
                fence(Ordering::Acquire);
                if c.seq.load(Ordering::Relaxed) == before {
                    // SAFETY: no store overlapped the copy, so it is the whole
                    // value a store wrote (or the initial one).
                    return Some(unsafe { copy.assume_init() });
                }
            }
            std::hint::spin_loop();
        }
        c.missed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The newest value, waiting out a store in progress by yielding: for
    /// threads below the writer's priority only, never a real-time one.
    pub fn read_wait(&self) -> T {
        loop {
            if let Some(v) = self.read() {
                return v;
            }
            std::thread::yield_now();
        }
    }

    /// Reads that gave up (a writer preempted in the middle of a store).
    pub fn missed(&self) -> u64 {
        self.cell.missed.load(Ordering::Relaxed)
    }
}

/// A reader that keeps its last good value: what a real-time loop holds.
pub struct Latest<T> {
    reader: Snapshot<T>,
    last: T,
}

impl<T: Copy + Send> Latest<T> {
    pub fn new(reader: Snapshot<T>, initial: T) -> Self {
        Self { reader, last: initial }
    }

    /// The newest value, or the last one read when a store is in progress.
    pub fn get(&mut self) -> T {
        if let Some(v) = self.reader.read() {
            self.last = v;
        }
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Every field equal: a torn read would mix two stores.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Wide {
        a: u64,
        b: [u64; 6],
        flag: bool,
        c: u64,
    }

    fn wide(n: u64) -> Wide {
        Wide { a: n, b: [n; 6], flag: n % 2 == 1, c: n }
    }

    #[test]
    fn readers_see_whole_values_only() {
        let (mut publisher, reader) = snapshot(wide(0));
        let stop = Arc::new(AtomicBool::new(false));
        // Reads each reader made, so the writer goes on until both have run
        // a while (on a busy machine a reader may start late).
        let seen: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let readers: Vec<_> = (0..2)
            .map(|i| {
                let (reader, stop, seen) = (reader.clone(), stop.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut last = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(v) = reader.read() {
                            assert_eq!(v, wide(v.a), "torn read");
                            assert!(v.a >= last, "went back from {last} to {}", v.a);
                            last = v.a;
                            seen[i].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        let mut n = 0;
        while n < 200_000 || seen.iter().any(|s| s.load(Ordering::Relaxed) < 10_000) {
            n += 1;
            publisher.publish(wide(n));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(reader.read(), Some(wide(n)));
    }

    #[test]
    fn a_reader_gives_up_on_a_writer_stopped_mid_store_and_keeps_its_last_value() {
        let (mut publisher, reader) = snapshot(wide(1));
        let mut latest = Latest::new(reader.clone(), wide(0));
        assert_eq!(latest.get(), wide(1));
        publisher.publish(wide(2));
        assert_eq!(latest.get(), wide(2));
        // A writer preempted between its two sequence stores.
        let seq = publisher.cell.seq.load(Ordering::Relaxed);
        publisher.cell.seq.store(seq + 1, Ordering::Relaxed);
        assert_eq!(reader.read(), None, "the read returns instead of waiting");
        assert_eq!(latest.get(), wide(2), "the last good value is kept");
        assert_eq!(reader.missed(), 2);
        publisher.cell.seq.store(seq + 2, Ordering::Release);
        assert_eq!(reader.read(), Some(wide(2)));
    }
}
