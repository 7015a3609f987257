//! The whole robot pipeline under measurement, and its peers: the same
//! pipeline as a Python loop (`bench/peers/pipeline.py`), and `cyclictest`
//! for the control thread's scheduling jitter.
//!
//! Gantry runs as on a robot: synthetic 1080p camera and depth, the firmware
//! simulator, the model under test (tract; with `--gpu`, ONNX Runtime on
//! TensorRT or CUDA with the RGB preprocessing on the GPU) with the baseline as fallback,
//! control at 100 Hz, recording on. Allocations are counted per thread role
//! by the counting allocator `gantry-bench` installs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_config::EdgeConfig;
use gantry_edge::pipeline::{Options, Parts, Pipeline, PipelineStatus, RtThread};
use gantry_edge::record::{Recorder, RecorderThread, Settings};
use gantry_hal::alloc_count::{count, set_role};
use gantry_hal::Pacing;
use gantry_policy::infer::tract::TractBackend;
use gantry_policy::infer::PolicyBackend;
use gantry_policy::model::ModelPackage;

/// Allocation roles: capture and control threads, and the inference thread.
pub const ROLE_RT: u8 = 1;
pub const ROLE_INFER: u8 = 2;

fn after_warmup(thread: RtThread) {
    set_role(if thread == RtThread::Inference { ROLE_INFER } else { ROLE_RT });
}

/// Percentiles in one unit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// What one pipeline run measured.
#[derive(Debug, Clone, Default)]
pub struct PipelineRun {
    /// The execution path the model ran on, and why it is not the one asked for.
    pub backend: String,
    pub policy_failures: Vec<String>,
    pub latency_ms: Spread,
    pub overhead_ms: Spread,
    /// Preprocessing + the model's run on the inference thread (p50, p99 only).
    pub floor_ms: Spread,
    pub jitter_us: Spread,
    pub rate_hz: f64,
    pub overruns: u64,
    /// Ticks taken at once for a new policy output, and outputs whose ahead
    /// tick the governor declined (left to the schedule), in the measured seconds.
    pub early_ticks: u64,
    pub early_deferred: u64,
    pub deadline_misses: u64,
    pub inferences: u64,
    pub fallbacks: u64,
    pub rt_granted: bool,
    /// Allocations per control tick on the capture and control threads, and
    /// per inference on the inference thread, after warm-up.
    pub rt_allocs_per_tick: f64,
    pub infer_allocs_per_frame: f64,
    /// Time the inference thread took to switch to a staged policy, and the
    /// frames that missed their deadline meanwhile (none expected).
    pub swap: Option<(Duration, u64)>,
    /// Loading and warming the swapped-in policy, off the real-time threads.
    pub swap_load: Option<Duration>,
    /// `cyclictest` beside the control thread, over the same seconds.
    pub cyclictest_us: Option<Spread>,
}

/// Runs the pipeline on `model` for `seconds`, with `cyclictest` beside it
/// when installed; then swaps in a second copy of the model and times it.
/// `gpu`: the model on ONNX Runtime's TensorRT, then CUDA provider, and the
/// RGB preprocessing on the GPU (`ORT_DYLIB_PATH`: a GPU build of the library).
pub fn run(model: &Path, seconds: u64, gpu: bool) -> anyhow::Result<PipelineRun> {
    let data = std::env::temp_dir().join(format!("gantry-bench-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut config = EdgeConfig::default();
    config.robot.data_dir = data.display().to_string();
    config.policy.model_dir = model.display().to_string();
    config.policy.baseline_model_dir =
        crate::model_dir("baseline").expect("the baseline is committed").display().to_string();
    if gpu {
        use gantry_config::edge::{Backend, ExecutionProvider, Preprocess};
        config.policy.backend = Backend::Ort;
        config.policy.providers = vec![ExecutionProvider::Tensorrt, ExecutionProvider::Cuda];
        config.policy.preprocess = Preprocess::Cuda;
        config.policy.tensorrt_cache_dir = data.join("trt-cache").display().to_string();
    }
    let parts = Parts::from_config(&config, Pacing::RealTime)?;
    let (backend, policy_failures) = (parts.primary.execution_path().to_string(), parts.policy_failures.clone());
    let (recorder, _) = Recorder::open(Settings::from_config(&config, &parts.primary.manifest().version))?;
    let pipeline = Pipeline::start(&config, parts, Options { after_warmup: Some(after_warmup), ..Options::default() })?;
    // Recording on, as on a robot: its thumbnails cost the capture thread.
    let recorder = RecorderThread::spawn(recorder, pipeline.taps())?;
    let status = pipeline.status();
    // Warm-up: the first second's figures are not the steady state.
    std::thread::sleep(Duration::from_secs(2));
    let (ticks0, inf0, rt0, infer0) =
        (status.ticks.load(Relaxed), status.inferences.load(Relaxed), count(ROLE_RT), count(ROLE_INFER));
    let (early0, deferred0) = (status.early_ticks.load(Relaxed), status.early_deferred.load(Relaxed));
    let cyclic = cyclictest_start(seconds, config.realtime.control_priority);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let elapsed = start.elapsed().as_secs_f64();
    let ticks = status.ticks.load(Relaxed) - ticks0;
    let inferences = status.inferences.load(Relaxed) - inf0;
    let mut run = PipelineRun {
        backend,
        policy_failures,
        latency_ms: spread(
            &status,
            |s| [&s.latency_p50_ns, &s.latency_p99_ns, &s.latency_p999_ns, &s.latency_max_ns],
            1e6,
        ),
        overhead_ms: spread(
            &status,
            |s| [&s.overhead_p50_ns, &s.overhead_p99_ns, &s.overhead_p999_ns, &s.latency_max_ns],
            1e6,
        ),
        jitter_us: spread(&status, |s| [&s.jitter_p50_ns, &s.jitter_p99_ns, &s.jitter_p999_ns, &s.jitter_max_ns], 1e3),
        rate_hz: ticks as f64 / elapsed,
        overruns: status.overruns.load(Relaxed),
        early_ticks: status.early_ticks.load(Relaxed) - early0,
        early_deferred: status.early_deferred.load(Relaxed) - deferred0,
        deadline_misses: status.deadline_misses.load(Relaxed),
        inferences,
        fallbacks: status.fallbacks.load(Relaxed),
        rt_granted: !status.rt_degraded.load(Relaxed),
        rt_allocs_per_tick: (count(ROLE_RT) - rt0) as f64 / ticks.max(1) as f64,
        infer_allocs_per_frame: (count(ROLE_INFER) - infer0) as f64 / inferences.max(1) as f64,
        cyclictest_us: cyclic.and_then(cyclictest_finish),
        ..PipelineRun::default()
    };
    // The overhead's max is not kept apart from the latency's; leave it out.
    run.overhead_ms.max = f64::NAN;
    run.floor_ms = Spread {
        p50: status.floor_p50_ns.load(Relaxed) as f64 / 1e6,
        p99: status.floor_p99_ns.load(Relaxed) as f64 / 1e6,
        p999: f64::NAN,
        max: f64::NAN,
    };

    let t = Instant::now();
    let package = ModelPackage::load(model)?;
    let mut backend = TractBackend::load(&package, 2)?;
    for _ in 0..config.models.warmup_runs {
        backend.run()?;
    }
    run.swap_load = Some(t.elapsed());
    let slot = pipeline.policy_slot();
    let (swaps, misses) = (slot.swaps.load(Relaxed), status.deadline_misses.load(Relaxed));
    let t = Instant::now();
    slot.stage(Box::new(backend))?;
    while slot.swaps.load(Relaxed) == swaps && t.elapsed() < Duration::from_secs(10) {
        std::thread::yield_now();
    }
    if slot.swaps.load(Relaxed) > swaps {
        let took = t.elapsed();
        // A few frames on the new policy, then count deadline misses.
        std::thread::sleep(Duration::from_millis(500));
        run.swap = Some((took, status.deadline_misses.load(Relaxed) - misses));
    }
    drop(slot.take_retired());
    pipeline.stop();
    recorder.stop();
    let _ = std::fs::remove_dir_all(data);
    Ok(run)
}

fn spread(
    s: &Arc<PipelineStatus>,
    f: impl Fn(&PipelineStatus) -> [&std::sync::atomic::AtomicU64; 4],
    unit: f64,
) -> Spread {
    let [p50, p99, p999, max] = f(s).map(|a| a.load(Relaxed) as f64 / unit);
    Spread { p50, p99, p999, max }
}

/// `cyclictest`: one SCHED_FIFO thread at the control thread's priority
/// waking every 10 ms (100 Hz), with its latency histogram.
fn cyclictest_start(seconds: u64, priority: u8) -> Option<std::process::Child> {
    let loops = (seconds * 100).to_string();
    let child = Command::new("cyclictest")
        .args(["-q", "-m", "-t1", "-i", "10000", "-h", "20000", "-l", &loops, "-p", &priority.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("cyclictest: {e} (apt-get install rt-tests); its figures are left out");
            None
        }
    }
}

/// Percentiles from cyclictest's histogram (one line per microsecond).
fn cyclictest_finish(child: std::process::Child) -> Option<Spread> {
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut hist = Vec::new();
    let mut max = None;
    for line in text.lines() {
        if let Some(m) = line.strip_prefix("# Max Latencies: ") {
            max = m.trim().parse::<f64>().ok();
        } else if !line.starts_with('#') {
            let mut it = line.split_whitespace();
            if let (Some(us), Some(n)) = (it.next(), it.next()) {
                if let (Ok(us), Ok(n)) = (us.parse::<u64>(), n.parse::<u64>()) {
                    hist.push((us, n));
                }
            }
        }
    }
    let total: u64 = hist.iter().map(|h| h.1).sum();
    if total == 0 {
        return None;
    }
    let at = |q: f64| {
        let want = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        hist.iter()
            .find(|(_, n)| {
                seen += n;
                seen >= want
            })
            .map_or(f64::NAN, |h| h.0 as f64)
    };
    Some(Spread { p50: at(0.5), p99: at(0.99), p999: at(0.999), max: max.unwrap_or(f64::NAN) })
}

/// What the Python peer measured.
#[derive(Debug, Clone, Default)]
pub struct PeerRun {
    pub latency_ms: Spread,
    pub overhead_ms: Spread,
    pub jitter_us: Spread,
    pub rate_hz: f64,
    pub versions: String,
}

/// The Python peer on the same model and frames for `seconds`; `None` (with
/// a line on stderr) where its environment is missing.
pub fn python_peer(model: &Path, seconds: u64) -> anyhow::Result<Option<PeerRun>> {
    let Some(python) = crate::peers::peer_python() else { return Ok(None) };
    let (rgb, depth) = crate::synthetic_frames();
    let frames = crate::peers::FramesOnDisk::write(&rgb, &depth)?;
    let out = Command::new(&python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/pipeline.py"))
        .args(frames.args())
        .args(["--model", &model.display().to_string()])
        .args(["--seconds", &seconds.to_string(), "--threads", "2"])
        .output()?;
    anyhow::ensure!(out.status.success(), "python peer failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let s = |k: &str| Spread {
        p50: v[k]["p50"].as_f64().unwrap_or(f64::NAN),
        p99: v[k]["p99"].as_f64().unwrap_or(f64::NAN),
        p999: v[k]["p999"].as_f64().unwrap_or(f64::NAN),
        max: v[k]["max"].as_f64().unwrap_or(f64::NAN),
    };
    Ok(Some(PeerRun {
        latency_ms: s("latency_ms"),
        overhead_ms: s("overhead_ms"),
        jitter_us: s("jitter_us"),
        rate_hz: v["control_rate_hz"].as_f64().unwrap_or(f64::NAN),
        versions: format!(
            "Python: OpenCV {} + numpy {} + onnxruntime {} (CPU, 2 threads)",
            v["opencv"].as_str().unwrap_or("?"),
            v["numpy"].as_str().unwrap_or("?"),
            v["onnxruntime"].as_str().unwrap_or("?")
        ),
    }))
}
