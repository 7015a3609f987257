//! A counting global allocator for the allocation tests and benchmarks: each
//! thread declares a role, and allocations are counted per role. Install it in a
//! test binary with
//! `#[global_allocator] static ALLOC: CountingAllocator = CountingAllocator;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Roles a thread can count under; 0 is "not counted".
pub const ROLES: usize = 4;

static COUNTS: [AtomicU64; ROLES] = [const { AtomicU64::new(0) }; ROLES];

thread_local! {
    static ROLE: Cell<u8> = const { Cell::new(0) };
}

pub struct CountingAllocator;

fn note() {
    let role = ROLE.with(Cell::get) as usize;
    if role != 0 && role < ROLES {
        COUNTS[role].fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: defers every call to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Counts this thread's allocations under `role` from now on (0 stops counting).
pub fn set_role(role: u8) {
    ROLE.with(|r| r.set(role));
}

/// Allocations counted under `role` so far, by every thread.
pub fn count(role: u8) -> u64 {
    COUNTS[role as usize % ROLES].load(Ordering::Relaxed)
}

/// Runs `f` on this thread counting under `role`; returns its result and the
/// allocations it made.
pub fn counting<R>(role: u8, f: impl FnOnce() -> R) -> (R, u64) {
    let before = count(role);
    set_role(role);
    let out = f();
    set_role(0);
    (out, count(role) - before)
}
