//! Real-time placement of the hot threads: core pinning, `SCHED_FIFO`, locked
//! memory. Each step is attempted; what the system refuses (no `CAP_SYS_NICE`, a
//! container, a core that does not exist) is reported, and the daemon runs on in
//! "degraded" real-time mode rather than stopping.

use std::io;

/// What one thread got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadPlacement {
    /// Pinned to the requested core (or no core was requested).
    pub pinned: bool,
    pub fifo: bool,
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE)`: no page of the daemon is swapped out.
pub fn lock_memory() -> io::Result<()> {
    // SAFETY: plain syscall without pointers.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pins the calling thread to `core` (if given) and asks for `SCHED_FIFO` at `priority`.
pub fn place_current_thread(core: Option<usize>, priority: u8) -> ThreadPlacement {
    let pinned = match core {
        None => true,
        Some(core) if core < libc::CPU_SETSIZE as usize => {
            // SAFETY: cpu_set_t is plain data; CPU_SET stays within it (checked above).
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(core, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
            }
        }
        Some(_) => false,
    };
    let param = libc::sched_param { sched_priority: i32::from(priority) };
    // SAFETY: pthread_self is always valid; param lives across the call.
    let fifo = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) } == 0;
    ThreadPlacement { pinned, fifo }
}

/// Puts the calling thread at the bottom of the scheduler: `SCHED_IDLE`
/// (runs only when nothing else wants the CPU). Returns whether it took.
pub fn lowest_priority() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pthread_self is always valid; param lives across the call.
    unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_IDLE, &param) == 0 }
}

/// Sleeps until `deadline_ns` on `CLOCK_MONOTONIC` (absolute, so lateness does
/// not accumulate from tick to tick).
pub fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is valid; a null remainder is allowed with TIMER_ABSTIME.
    while unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) }
        == libc::EINTR
    {}
}
