//! The frame path allocates nothing once running, and a slow consumer makes the
//! source drop (and count) frames instead.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use gantry_config::edge::Synthetic;
use gantry_hal::alloc_count::{count, set_role, CountingAllocator};
use gantry_hal::synthetic::{Scene, SyntheticCamera, SyntheticDepth};
use gantry_hal::{Capture, FrameBuf, Pacing};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Counts the test's own threads only, not the harness's.
const TRACKED: u8 = 1;

fn camera() -> SyntheticCamera {
    SyntheticCamera::new(Scene::new(Synthetic::default()), 1920, 1080, 30, Pacing::Max)
}

/// Single-threaded and exact: the consumer takes one frame every 5 captures and
/// holds the last 3, so of the pool's 4 buffers only one circulates.
#[test]
fn slow_consumer_makes_the_source_drop_and_count_without_allocating() {
    let mut capture = Capture::new(camera(), 4);
    let queue = capture.queue();
    let stats = capture.stats();
    let mut held: heapless::Deque<FrameBuf, 3> = heapless::Deque::new();
    let mut seen = 0u64;
    let mut last_seq = None;

    // Warm-up: fill the consumer's hands.
    for _ in 0..3 {
        assert!(capture.step().unwrap());
        let (f, _) = queue.latest().unwrap();
        held.push_back(f).ok().unwrap();
    }

    const STEPS: u64 = 1000;
    let allocations_before = count(TRACKED);
    set_role(TRACKED);
    let mut published = 0u64;
    for step in 0..STEPS {
        if capture.step().unwrap() {
            published += 1;
        }
        if step % 5 == 4 {
            if let Some((frame, _)) = queue.latest() {
                let seq = frame.meta().seq;
                assert!(last_seq.is_none_or(|l| seq > l), "frames must arrive in order");
                last_seq = Some(seq);
                // The pixels are really there: the table's colour at the top-left corner.
                assert!(frame[3 * 1921] > 100);
                seen += 1;
                drop(held.pop_front());
                held.push_back(frame).ok().unwrap();
            }
        }
    }
    set_role(0);
    let allocations = count(TRACKED) - allocations_before;

    let dropped = stats.dropped_no_buffer.load(Ordering::Relaxed);
    assert_eq!(allocations, 0, "the frame path allocated");
    assert_eq!(published, STEPS / 5);
    assert_eq!(dropped, STEPS - STEPS / 5);
    assert_eq!(seen, STEPS / 5);
    assert_eq!(stats.captured.load(Ordering::Relaxed), 3 + published);
    // The source itself skipped nothing: every drop was the pool's.
    assert_eq!(stats.dropped_by_source.load(Ordering::Relaxed), 0);
    assert_eq!(capture.pool().capacity(), 4);
}

/// Two real threads: a camera paced at 2 kHz and a consumer that is slower.
#[test]
fn threaded_capture_and_slow_consumer_allocate_nothing() {
    let depth = SyntheticDepth::new(Scene::new(Synthetic::default()), 848, 480, 2000, Pacing::RealTime);
    let mut capture = Capture::new(depth, 3);
    let queue = capture.queue();
    let stats = capture.stats();
    let done = Arc::new(AtomicBool::new(false));
    let consumer_allocs = Arc::new(AtomicU64::new(0));

    // Warm-up outside the count: 3 frames published, 2 dropped.
    for _ in 0..5 {
        capture.step().unwrap();
    }
    while queue.pop().is_some() {}

    let ready = Arc::new(std::sync::Barrier::new(2));
    let consumer = {
        let (queue, done, consumer_allocs, ready) =
            (queue.clone(), done.clone(), consumer_allocs.clone(), ready.clone());
        std::thread::spawn(move || {
            ready.wait();
            let mut taken = 0u64;
            let mut superseded = 0u64;
            let before = count(2);
            set_role(2);
            let mut held: Option<FrameBuf> = None;
            while !done.load(Ordering::Acquire) {
                if let Some((f, s)) = queue.latest() {
                    taken += 1;
                    superseded += s;
                    assert!(f.as_u16()[0] > 1000, "depth frame holds the table");
                    held = Some(f);
                }
                // A slow consumer: work on the frame for a while before the next.
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            drop(held);
            set_role(0);
            consumer_allocs.store(count(2) - before, Ordering::Relaxed);
            (taken, superseded)
        })
    };

    ready.wait();
    let ((), capture_allocs) = gantry_hal::alloc_count::counting(TRACKED, || {
        for _ in 0..2000 {
            capture.step().unwrap();
        }
    });
    done.store(true, Ordering::Release);
    let (taken, superseded) = consumer.join().unwrap();

    assert_eq!(capture_allocs, 0, "capture thread allocated");
    assert_eq!(consumer_allocs.load(Ordering::Relaxed), 0, "consumer thread allocated");
    let captured = stats.captured.load(Ordering::Relaxed) - 3;
    let dropped = stats.dropped_no_buffer.load(Ordering::Relaxed) - 2;
    assert_eq!(captured + dropped, 2000);
    assert!(taken > 0, "captured {captured} dropped {dropped} taken {taken} superseded {superseded}");
    assert!(dropped > 0, "a consumer slower than the camera must cause drops");
    assert!(taken + superseded <= captured);
}
