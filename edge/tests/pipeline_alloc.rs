//! The running pipeline allocates nothing on its capture and control threads
//! after warm-up, over more than 10,000 control ticks, while the recorder drains
//! their taps (records and thumbnails) into MCAP segments. The inference thread's
//! allocations (tract's intermediate tensors) are counted and reported separately.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gantry_config::EdgeConfig;
use gantry_edge::pipeline::{Options, Parts, Pipeline, RtThread};
use gantry_edge::record::{Recorder, RecorderThread, Settings};
use gantry_hal::alloc_count::{count, set_role, CountingAllocator};
use gantry_hal::Pacing;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Roles: the capture and control threads, and the inference thread.
const RT: u8 = 1;
const INFER: u8 = 2;

static HOOKED: AtomicU64 = AtomicU64::new(0);

fn after_warmup(thread: RtThread) {
    HOOKED.fetch_add(1, Ordering::Relaxed);
    set_role(if thread == RtThread::Inference { INFER } else { RT });
}

#[test]
fn ten_thousand_ticks_without_allocating_on_capture_and_control_threads() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EdgeConfig::default();
    config.robot.data_dir = dir.path().display().to_string();
    // 1 kHz so 10,000 ticks take ten seconds, not a hundred.
    config.control.rate_hz = 1000;
    config.control.max_action_age_periods = 200;
    config.policy.model_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline").into();
    config.policy.baseline_model_dir = config.policy.model_dir.clone();
    config.realtime.lock_memory = false;
    let parts = Parts::from_config(&config, Pacing::RealTime).unwrap();
    let options = Options { after_warmup: Some(after_warmup), warmup_iterations: 20, ..Options::default() };
    let settings = Settings::from_config(&config, &parts.primary.manifest().version);
    let (recorder, _) = Recorder::open(settings).unwrap();
    let pipeline = Pipeline::start(&config, parts, options).unwrap();
    // The recorder drains the taps, and with its incident pre-roll on, the
    // capture thread thumbnails every frame: all of it counted too.
    let recorder = RecorderThread::spawn(recorder, pipeline.taps()).unwrap();
    assert_eq!(pipeline.taps().thumbs.every_n(), 1);
    let status = pipeline.status();
    let taps = pipeline.taps();
    let deadline = Instant::now() + Duration::from_secs(60);
    while status.ticks.load(Ordering::Relaxed) < 10_500 {
        assert!(Instant::now() < deadline, "the control loop is too slow: {:?}", status);
        std::thread::sleep(Duration::from_millis(50));
    }
    let inferences = status.inferences.load(Ordering::Relaxed);
    let ticks = status.ticks.load(Ordering::Relaxed);
    let early = status.early_ticks.load(Ordering::Relaxed);
    let rt = count(RT);
    let infer = count(INFER);
    pipeline.stop();
    let rec = recorder.stats();
    recorder.stop();
    let images = rec.images.load(Ordering::Relaxed);
    let messages = rec.messages.load(Ordering::Relaxed);
    assert!(messages > 20_000, "the recorder drained the taps: {messages} messages");
    assert!(images > 0, "images were recorded");
    assert_eq!(rec.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(taps.dropped.load(Ordering::Relaxed), 0, "no record lost between the threads and the recorder");
    // Capture (RGB, depth), inference and control, and where there are two
    // cores the inference thread's RGB helper, counted as inference.
    let helper = u64::from(std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2);
    assert_eq!(HOOKED.load(Ordering::Relaxed), 4 + helper, "every real-time thread is counted");
    assert_eq!(rt, 0, "capture/control threads allocated {rt} times in {ticks} ticks");
    assert!(inferences > 100, "only {inferences} inferences");
    // The futex wake-up path ran too: some outputs were answered ahead of the schedule.
    assert!(early > 0 && early <= inferences, "{early} ticks ahead of the schedule for {inferences} outputs");
    println!(
        "{ticks} ticks, {inferences} inferences, inference-thread allocations {infer} ({:.1} per inference)",
        infer as f64 / inferences as f64
    );
}
