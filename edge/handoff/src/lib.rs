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
//!
//! A reader may also sleep until a new value is published or a deadline
//! passes, whichever comes first ([`Snapshot::wait_newer`]): a futex on the
//! cell's publication count, so a real-time loop can answer a new value at
//! once and still never sleeps past its own deadline. The writer pays a
//! system call only while someone sleeps on the cell.

#![forbid(unsafe_op_in_unsafe_fn)]
// Nothing here may stop a real-time thread: no unwrap, expect or panic
// outside tests (`clippy.toml` also disallows `f32::clamp`).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
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
    /// Completed stores (wrapping): the futex word readers sleep on.
    published: AtomicU32,
    /// Readers asleep in [`Snapshot::wait_newer`].
    sleepers: AtomicU32,
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
        published: AtomicU32::new(0),
        sleepers: AtomicU32::new(0),
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
        // Sequentially consistent with the sleeper's count and check in
        // `wait_newer`: either it sees this store or this sees it asleep.
        c.published.fetch_add(1, Ordering::SeqCst);
        if c.sleepers.load(Ordering::SeqCst) != 0 {
            futex::wake_all(&c.published);
        }
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

    /// How many stores have completed (wrapping): pass it to [`Self::wait_newer`].
    pub fn version(&self) -> u32 {
        self.cell.published.load(Ordering::SeqCst)
    }

    /// Sleeps until a store completes after `seen` (a [`Self::version`]) or
    /// `CLOCK_MONOTONIC` reaches `deadline_ns`, whichever is first; returns
    /// whether a store came. A store that completed before the call returns at
    /// once. The sleep never outlasts the deadline, whatever the writer does.
    pub fn wait_newer(&self, seen: u32, deadline_ns: u64) -> bool {
        let c = &*self.cell;
        loop {
            if c.published.load(Ordering::SeqCst) != seen {
                return true;
            }
            c.sleepers.fetch_add(1, Ordering::SeqCst);
            // The kernel compares the word with `seen` before it sleeps, so a
            // store between this check and the sleep is not missed either.
            let timed_out = if c.published.load(Ordering::SeqCst) == seen {
                futex::wait_until(&c.published, seen, deadline_ns)
            } else {
                false
            };
            c.sleepers.fetch_sub(1, Ordering::SeqCst);
            if timed_out {
                return c.published.load(Ordering::SeqCst) != seen;
            }
        }
    }
}

/// The two futex operations [`Snapshot::wait_newer`] needs (Linux).
mod futex {
    use std::sync::atomic::AtomicU32;

    /// Sleeps while `word` holds `expected`, until `deadline_ns` on
    /// `CLOCK_MONOTONIC` (absolute, like the control loop's own sleep); true
    /// when the deadline passed. A wake, a changed word or a signal returns false.
    pub fn wait_until(word: &AtomicU32, expected: u32, deadline_ns: u64) -> bool {
        let ts = libc::timespec {
            tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `word` and `ts` outlive the call; FUTEX_WAIT_BITSET takes an
        // absolute CLOCK_MONOTONIC timeout and a match-any bitset.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
                expected,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
    }

    /// Wakes every thread asleep on `word`.
    pub fn wake_all(word: &AtomicU32) {
        // SAFETY: `word` outlives the call; FUTEX_WAKE reads no other argument.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
        }
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

    fn monotonic_ns() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    #[test]
    fn a_sleeping_reader_wakes_for_a_store_and_otherwise_at_its_deadline() {
        let (mut publisher, reader) = snapshot(0u64);
        // Nothing published: back at the deadline, with nothing new.
        let seen = reader.version();
        let deadline = monotonic_ns() + 20_000_000;
        assert!(!reader.wait_newer(seen, deadline));
        assert!(monotonic_ns() >= deadline, "returned before its deadline");
        // A store before the call: at once.
        publisher.publish(1);
        assert!(reader.wait_newer(seen, monotonic_ns() + 60_000_000_000));
        // A store while asleep: woken long before a deadline a minute away
        // (a lost wake-up would sleep the whole minute, then fail here).
        let seen = reader.version();
        let sleeper = {
            let reader = reader.clone();
            std::thread::spawn(move || {
                let deadline = monotonic_ns() + 60_000_000_000;
                let woke = reader.wait_newer(seen, deadline);
                (woke, monotonic_ns() < deadline, reader.read())
            })
        };
        // The sleeper may not be asleep yet; a store either way must reach it.
        while !sleeper.is_finished() {
            publisher.publish(2);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(sleeper.join().unwrap(), (true, true, Some(2)));
        assert_ne!(reader.version(), seen);
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
