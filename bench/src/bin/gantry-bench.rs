//! `gantry-bench`: the benchmark report (see `shared/CONTRACT.md`).
//!
//! Measures, on this machine: the governor's check time; preprocessing and
//! inference per model; the whole pipeline (synthetic 1080p camera and depth,
//! firmware simulator, each model, 100 Hz control, recording on) for
//! frame-to-command latency, Gantry's overhead, control-loop jitter,
//! allocations and model swap, beside a Python/OpenCV/onnxruntime loop on the
//! same model and frames and beside `cyclictest`; the recorder on a simulated
//! run (throughput, compression, bytes per day) beside the `zstd` command line
//! on the same messages; and cloud ingest from N robots through the embedded
//! broker and Mosquitto, beside the same broker between `mosquitto_pub` and
//! `mosquitto_sub`.

use std::path::PathBuf;

use clap::Parser;
use gantry_bench::report::Report;
use gantry_bench::{model_dir, percentiles, synthetic_frames};
use gantry_config::edge::MAX_JOINTS;
use gantry_config::EdgeConfig;
use gantry_edge::governor::{Command, RobotState, SafetyGovernor};
use gantry_edge::zone::ZoneReading;
use gantry_hal::alloc_count::CountingAllocator;
use gantry_policy::infer::tract::TractBackend;
use gantry_policy::infer::PolicyBackend;
use gantry_policy::model::ModelPackage;
use gantry_policy::preprocess::Preprocessor;

/// Counts allocations per thread role, for the allocations-per-frame figures.
#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

#[derive(Debug, Parser)]
#[command(name = "gantry-bench", version, about = "Gantry's benchmark report")]
struct Args {
    /// A shorter run (under 2 minutes).
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run only these sections (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// The GPU figures (`bench/gpu.sh`): inference also on ONNX Runtime's
    /// TensorRT and CUDA providers with the RGB preprocessing on the GPU, and
    /// the pipeline on them (build with `--features ort,cuda`; `ORT_DYLIB_PATH`
    /// names a GPU build of ONNX Runtime).
    #[arg(long)]
    gpu: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Governor,
    Inference,
    Pipeline,
    Recorder,
    Ingest,
}

/// Every input fresh and in range, the arm measured at `positions`, the
/// workspace as `zone` says (stamped fresh).
fn healthy(now: u64, positions: [f32; MAX_JOINTS], zone: ZoneReading) -> RobotState {
    RobotState {
        now_ns: now,
        joints: 6,
        positions_rad: positions,
        encoder_ok: 0xff,
        joint_state_ns: now - 1_000_000,
        reported_joints: 6,
        telemetry_ns: now - 1_000_000,
        estop_known: true,
        link_alive: true,
        zone: ZoneReading { capture_ns: now - 1_000_000, frame_seq: 1, ..zone },
        policy_frame_ns: now - 1_000_000,
        policy_frame_seq: 1,
        ..RobotState::default()
    }
}

fn governor_check_time(report: &mut Report, iterations: usize) {
    let config = EdgeConfig::default();
    let mut governor = SafetyGovernor::new(&config);
    let mut home = [0f32; MAX_JOINTS];
    home[..6].copy_from_slice(&[0.0, -1.2, 1.2, -1.5, -1.5, 0.0]);
    let mut now = 1_000_000_000_000u64;
    let incidents = governor.incidents();
    let p = percentiles(iterations, || {
        now += 10_000_000;
        let state = healthy(now, home, ZoneReading::default());
        std::hint::black_box(governor.check(&Command { targets_rad: home, gripper: 0.5 }, &state));
    });
    while incidents.pop().is_some() {}
    report.add("governor check p50", p.p50_ms * 1e3, "µs");
    report.add("governor check p99", p.p99_ms * 1e3, "µs");

    // The base joint sweeping at the shaper's speed with someone 1 m away:
    // the separation check and every tick of the controlled stop's path run.
    let mut governor = SafetyGovernor::new(&config);
    let incidents = governor.incidents();
    let mut cmd = Command { targets_rad: home, gripper: 0.5 };
    let (mut v, mut way, mut tick) = (0f32, 1f32, 0u64);
    let p = percentiles(iterations, || {
        now += 10_000_000;
        // Back and forth, 1.2 rad each way, within the acceleration limit.
        tick += 1;
        if tick.is_multiple_of(400) {
            way = -way;
        }
        v = (v + 0.05 * way).clamp(-0.3, 0.3);
        // Measured where the last command went.
        let measured = cmd.targets_rad;
        cmd.targets_rad[0] += v * 0.01;
        let state = healthy(now, measured, ZoneReading { intrusion: true, nearest_mm: 1000, ..ZoneReading::default() });
        std::hint::black_box(governor.check(&cmd, &state));
    });
    while incidents.pop().is_some() {}
    report.add("governor check, arm moving, person in the slow band p50", p.p50_ms * 1e3, "µs");
    report.add("governor check, arm moving, person in the slow band p99", p.p99_ms * 1e3, "µs");

    // The workspace check of one 848x480 depth frame showing the arm and a person.
    let mut config = EdgeConfig::default();
    config.synthetic.person_event = true;
    config.synthetic.person_enter_s = 0.0;
    let pose = std::sync::Arc::new(gantry_hal::synthetic::ArmPose::default());
    pose.store(&home);
    let scene = gantry_hal::synthetic::Scene::from_config(&config).with_arm(&config, pose);
    let mut depth = gantry_hal::synthetic::SyntheticDepth::new(scene, 848, 480, 30, gantry_hal::Pacing::Max);
    let info = gantry_hal::FrameSource::info(&depth);
    let mut frame = vec![0u8; info.frame_bytes()];
    if gantry_hal::FrameSource::next_frame(&mut depth, Some(&mut frame)).is_ok() {
        let d: Vec<u16> = frame.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        let zone = gantry_edge::zone::configured(&config, &info);
        let arm = gantry_edge::governor::arm(&config).outline(&home[..6]);
        let p = percentiles((iterations / 1000).max(100), || {
            std::hint::black_box(zone.read(&d, &arm, 1, 1));
        });
        report.add("workspace check per 848x480 depth frame p50", p.p50_ms, "ms");
        report.add("workspace check per 848x480 depth frame p99", p.p99_ms, "ms");
    }
}

/// Preprocessing and inference per model, alone: the RGB preprocessing beside
/// `fast_image_resize` and OpenCV's `INTER_AREA` on the same frame, the whole
/// preprocessing beside OpenCV + numpy, and each backend that loads here
/// (tract; ONNX Runtime's CPU provider when built with `ort` and its library
/// is found) with its allocations per run.
fn inference(report: &mut Report, quick: bool, gpu: bool) -> anyhow::Result<()> {
    use gantry_bench::peers::{fir_box_resize, opencv_preprocess};
    use gantry_hal::alloc_count::counting;
    let (rgb, depth) = synthetic_frames();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
    for name in ["baseline", "vision-50m"] {
        let Some(dir) = model_dir(name) else {
            eprintln!("{name}: not generated (python3 models/make_models.py {name} models/{name}); skipped");
            continue;
        };
        let model = ModelPackage::load(&dir)?;
        let mut pre = Preprocessor::new(&model, (1920, 1080), (848, 480))?;
        let mut backends: Vec<Box<dyn PolicyBackend>> = vec![Box::new(TractBackend::load(&model, threads)?)];
        #[cfg(feature = "ort")]
        {
            use gantry_config::edge::{Backend, ExecutionProvider, Policy};
            let policy =
                Policy { backend: Backend::Ort, providers: vec![ExecutionProvider::Cpu], threads, ..Policy::default() };
            match gantry_policy::infer::ort::OrtBackend::load(&model, &policy) {
                Ok((b, _)) => backends.push(Box::new(b)),
                Err(e) => eprintln!("{name}: ONNX Runtime: {e} (ORT_DYLIB_PATH=$(scripts/fetch-onnxruntime.sh)); its figures are left out"),
            }
        }
        if gpu {
            gpu_inference(report, &model, name, &rgb, threads, quick);
        }
        let n = match (name, quick) {
            ("baseline", false) => 2000,
            ("baseline", true) => 300,
            (_, false) => 300,
            (_, true) => 50,
        };
        let size = model.rgb()?.shape[2..].to_vec();
        let (w, h) = (size[1] as u32, size[0] as u32);
        let what = format!("{name}: preprocess 1080p RGB to {w}x{h}");
        let p = percentiles(n, || pre.rgb(&rgb, backends[0].inputs().rgb).expect("rgb"));
        let fir = fir_box_resize(&rgb, (1920, 1080), (w, h), n)?;
        let fir_peer = "fast_image_resize 6, box convolution, resize only (u8, interleaved)";
        report.add_with_peer(
            format!("{what} (area average + normalise, planar f32) p50"),
            p.p50_ms,
            "ms",
            fir_peer,
            fir.p50_ms,
        );
        report.add_with_peer(
            format!("{what} (area average + normalise, planar f32) p99"),
            p.p99_ms,
            "ms",
            fir_peer,
            fir.p99_ms,
        );
        let cv = opencv_preprocess(&dir, &rgb, &depth, n)?;
        if let Some(cv) = &cv {
            let peer = format!("{}, cv2.resize INTER_AREA only (u8, interleaved)", cv.versions);
            report.add_with_peer(format!("{what}, beside OpenCV p50"), p.p50_ms, "ms", &peer, cv.resize_ms.0);
            report.add_with_peer(format!("{what}, beside OpenCV p99"), p.p99_ms, "ms", &peer, cv.resize_ms.1);
        }
        let p = percentiles(n, || pre.depth(&depth, 1.0, backends[0].inputs().depth).expect("depth"));
        report.add(format!("{name}: preprocess 848x480 depth p50"), p.p50_ms, "ms");
        report.add(format!("{name}: preprocess 848x480 depth p99"), p.p99_ms, "ms");
        let p = percentiles(n, || {
            let inputs = backends[0].inputs();
            pre.rgb(&rgb, inputs.rgb).expect("rgb");
            pre.depth(&depth, 1.0, inputs.depth).expect("depth");
        });
        let mut whole = |q: &str, value: f64, peer: Option<f64>| match (&cv, peer) {
            (Some(cv), Some(v)) => report.add_with_peer(
                format!("{name}: preprocess 1080p RGB + depth {q}"),
                value,
                "ms",
                &format!("{}, the same preprocessing", cv.versions),
                v,
            ),
            _ => report.add(format!("{name}: preprocess 1080p RGB + depth {q}"), value, "ms"),
        };
        whole("p50", p.p50_ms, cv.as_ref().map(|c| c.whole_ms.0));
        whole("p99", p.p99_ms, cv.as_ref().map(|c| c.whole_ms.1));
        // As the pipeline meets a frame: just written, not in this core's
        // caches. Eight copies in turn (50 MB) outgrow the last-level cache.
        let frames: Vec<Vec<u8>> = vec![rgb.clone(); 8];
        let mut next = 0;
        let p = percentiles(n, || {
            let inputs = backends[0].inputs();
            pre.rgb(&frames[next % frames.len()], inputs.rgb).expect("rgb");
            pre.depth(&depth, 1.0, inputs.depth).expect("depth");
            next += 1;
        });
        report.add(format!("{name}: preprocess 1080p RGB + depth, frame not in cache p50"), p.p50_ms, "ms");
        report.add(format!("{name}: preprocess 1080p RGB + depth, frame not in cache p99"), p.p99_ms, "ms");
        for backend in &mut backends {
            let path = backend.execution_path();
            let mut allocs = 0;
            let p = percentiles(n, || allocs += counting(1, || backend.run().map(|_| ()).expect("inference")).1);
            report.add(format!("{name}: infer {path} p50"), p.p50_ms, "ms");
            report.add(format!("{name}: infer {path} p99"), p.p99_ms, "ms");
            report.add(
                format!("{name}: infer {path}, Rust-side allocations per run"),
                allocs as f64 / n as f64,
                "allocs",
            );
        }
    }
    Ok(())
}

/// The model on ONNX Runtime's TensorRT, then CUDA provider, with the RGB
/// preprocessing on the GPU writing straight into the session's input: the
/// preprocessing alone, and preprocessing + inference, per frame. What cannot
/// start here is said on stderr, and its figures are left out.
#[cfg(feature = "ort")]
fn gpu_inference(report: &mut Report, model: &ModelPackage, name: &str, rgb: &[u8], threads: usize, quick: bool) {
    use gantry_config::edge::{Backend, ExecutionProvider, Policy};
    let cache = std::env::temp_dir().join("gantry-bench-trt-cache");
    let policy = Policy {
        backend: Backend::Ort,
        providers: vec![ExecutionProvider::Tensorrt, ExecutionProvider::Cuda],
        threads,
        tensorrt_cache_dir: cache.display().to_string(),
        ..Policy::default()
    };
    let mut backend = match gantry_policy::infer::ort::OrtBackend::load(model, &policy) {
        Ok((b, tried)) => {
            for t in tried {
                eprintln!("{name}: ONNX Runtime {}: {}", t.provider, t.reason);
            }
            b
        }
        Err(e) => {
            eprintln!("{name}: no GPU provider started: {e}; the GPU figures are left out");
            return;
        }
    };
    let path = backend.execution_path();
    if let Err(reason) = backend.bind_rgb_on_device((1920, 1080)) {
        eprintln!("{name}: RGB preprocessing on the GPU unavailable: {reason}; the GPU figures are left out");
        return;
    }
    let n = if quick { 100 } else { 1000 };
    let mut image = vec![0u8; 3 * model.io_shape().map_or(0, |io| io.rgb.0 * io.rgb.1)];
    let mut failed = 0u64;
    let p = percentiles(n, || failed += u64::from(!matches!(backend.rgb_on_device(rgb, &mut image), Some(Ok(())))));
    report.add(format!("{name}: preprocess 1080p RGB on the GPU into the {path} session p50"), p.p50_ms, "ms");
    report.add(format!("{name}: preprocess 1080p RGB on the GPU into the {path} session p99"), p.p99_ms, "ms");
    let p = percentiles(n, || {
        failed += u64::from(!matches!(backend.rgb_on_device(rgb, &mut image), Some(Ok(()))));
        failed += u64::from(backend.run().is_err());
    });
    report.add(format!("{name}: preprocess on the GPU + infer {path} p50"), p.p50_ms, "ms");
    report.add(format!("{name}: preprocess on the GPU + infer {path} p99"), p.p99_ms, "ms");
    report.add(format!("{name}: GPU preprocessing or inference failures"), failed as f64, "runs");
}

#[cfg(not(feature = "ort"))]
fn gpu_inference(_: &mut Report, _: &ModelPackage, name: &str, _: &[u8], _: usize, _: bool) {
    eprintln!("{name}: the GPU figures need gantry-bench built with --features ort,cuda; left out");
}

/// The pipeline on each model beside the Python peer on the same model and
/// frames, and the control thread's jitter beside `cyclictest`.
fn pipeline(report: &mut Report, seconds: u64, gpu: bool) -> anyhow::Result<()> {
    use gantry_bench::pipeline::{python_peer, run};
    for name in ["baseline", "vision-50m"] {
        let Some(model) = model_dir(name) else {
            eprintln!("{name}: not generated (python3 models/make_models.py {name} models/{name}); skipped");
            continue;
        };
        eprintln!("pipeline: {name}, {seconds} s…");
        let g = run(&model, seconds, gpu)?;
        for f in &g.policy_failures {
            eprintln!("pipeline: {name}: not as configured: {f}");
        }
        eprintln!("pipeline: {name}, Python peer, {seconds} s…");
        let peer = python_peer(&model, seconds)?;
        let label = format!("pipeline ({name}, {}, 100 Hz, 1080p)", g.backend);
        let mut fig = |what: &str, value: f64, unit: &str, peer_value: Option<f64>| match (&peer, peer_value) {
            (Some(p), Some(v)) => report.add_with_peer(format!("{label}: {what}"), value, unit, &p.versions, v),
            _ => report.add(format!("{label}: {what}"), value, unit),
        };
        let p = peer.clone().unwrap_or_default();
        fig("frame→command latency p50", g.latency_ms.p50, "ms", Some(p.latency_ms.p50));
        fig("frame→command latency p99", g.latency_ms.p99, "ms", Some(p.latency_ms.p99));
        fig("frame→command latency p99.9", g.latency_ms.p999, "ms", Some(p.latency_ms.p999));
        fig("frame→command latency max", g.latency_ms.max, "ms", Some(p.latency_ms.max));
        fig("overhead (latency less the model's run) p50", g.overhead_ms.p50, "ms", Some(p.overhead_ms.p50));
        fig("overhead (latency less the model's run) p99", g.overhead_ms.p99, "ms", Some(p.overhead_ms.p99));
        fig("overhead (latency less the model's run) p99.9", g.overhead_ms.p999, "ms", Some(p.overhead_ms.p999));
        fig("floor: preprocess + infer only p50", g.floor_ms.p50, "ms", None);
        fig("floor: preprocess + infer only p99", g.floor_ms.p99, "ms", None);
        fig("latency p50 less the floor p50", g.latency_ms.p50 - g.floor_ms.p50, "ms", None);
        fig("control wake-up jitter p50", g.jitter_us.p50, "µs", Some(p.jitter_us.p50));
        fig("control wake-up jitter p99", g.jitter_us.p99, "µs", Some(p.jitter_us.p99));
        fig("control wake-up jitter p99.9", g.jitter_us.p999, "µs", Some(p.jitter_us.p999));
        fig("control wake-up jitter max", g.jitter_us.max, "µs", Some(p.jitter_us.max));
        fig("control rate (scheduled and ahead ticks)", g.rate_hz, "Hz", Some(p.rate_hz));
        if let Some(c) = g.cyclictest_us {
            let peer = "cyclictest (rt-tests), SCHED_FIFO at the control priority, 10 ms interval, same seconds";
            let label = format!("{label}: control wake-up jitter beside cyclictest");
            report.add_with_peer(format!("{label} p50"), g.jitter_us.p50, "µs", peer, c.p50);
            report.add_with_peer(format!("{label} p99"), g.jitter_us.p99, "µs", peer, c.p99);
            report.add_with_peer(format!("{label} p99.9"), g.jitter_us.p999, "µs", peer, c.p999);
            report.add_with_peer(format!("{label} max"), g.jitter_us.max, "µs", peer, c.max);
        }
        report.add(format!("{label}: control overruns"), g.overruns as f64, "ticks");
        report.add(format!("{label}: ticks ahead of the schedule, for a new output"), g.early_ticks as f64, "ticks");
        report.add(
            format!("{label}: new outputs left to the scheduled tick (governor declined ahead)"),
            g.early_deferred as f64,
            "outputs",
        );
        report.add(format!("{label}: inference deadline misses"), g.deadline_misses as f64, "frames");
        report.add(format!("{label}: inferences"), g.inferences as f64, "frames");
        report.add(format!("{label}: steps down to the baseline"), g.fallbacks as f64, "times");
        report.add(
            format!("{label}: allocations per control tick, capture + control threads"),
            g.rt_allocs_per_tick,
            "allocs",
        );
        report.add(format!("{label}: allocations per inference, inference thread"), g.infer_allocs_per_frame, "allocs");
        report.add(
            format!("{label}: real-time scheduling"),
            if g.rt_granted { 1.0 } else { 0.0 },
            "1 = SCHED_FIFO granted",
        );
        if let Some(load) = g.swap_load {
            report.add(
                format!("{label}: model swap, load + warm-up off the real-time threads"),
                load.as_secs_f64() * 1e3,
                "ms",
            );
        }
        if let Some((swap, misses)) = g.swap {
            report.add(format!("{label}: model swap, staged → serving"), swap.as_secs_f64() * 1e3, "ms");
            report.add(format!("{label}: model swap, deadline misses around it"), misses as f64, "frames");
        }
    }
    Ok(())
}

fn recorder(report: &mut Report, minutes: f64) -> anyhow::Result<()> {
    let data = std::env::temp_dir().join(format!("gantry-bench-recorder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let run = gantry_bench::recorder::simulated_run(&data, minutes)?;
    let level = EdgeConfig::default().recorder.zstd_level;
    let cli = gantry_bench::recorder::zstd_cli(&data, level)?;
    let _ = std::fs::remove_dir_all(&data);
    let label = format!("recorder ({minutes:.0}-min simulated run, default policy, samples on)");
    let mb_in = run.payload_bytes as f64 / 1e6 / run.recorder_s;
    let ratio = run.payload_bytes as f64 / run.file_bytes as f64;
    match cli {
        Some((cli_mb, cli_ratio)) => {
            let peer = format!("zstd -{level} -T1 (command line) on the same messages, concatenated");
            report.add_with_peer(format!("{label}: throughput, messages in"), mb_in, "MB/s", &peer, cli_mb);
            report.add_with_peer(format!("{label}: compression ratio"), ratio, "×", &peer, cli_ratio);
        }
        None => {
            report.add(format!("{label}: throughput, messages in"), mb_in, "MB/s");
            report.add(format!("{label}: compression ratio"), ratio, "×");
        }
    }
    report.add(format!("{label}: throughput, MCAP out"), run.file_bytes as f64 / 1e6 / run.recorder_s, "MB/s");
    report.add(format!("{label}: bytes per day, extrapolated"), run.bytes_per_day() / 1e9, "GB/day");
    report.add(format!("{label}: recorder CPU at real time"), 100.0 * run.recorder_s / run.simulated_s, "% of a core");
    report.add(format!("{label}: messages per simulated second"), run.messages as f64 / run.simulated_s, "msg/s");
    report.add(format!("{label}: images written"), run.images as f64, "images");
    report.add(
        format!("{label}: training samples written (1/s in a task, every frame around the incident)"),
        run.samples as f64,
        "samples",
    );
    report.add(format!("{label}: segments"), run.segments as f64, "files");
    report.add("recorder: thumbnail on the capture thread (1080p → 480 px)", run.thumb_us, "µs/frame");
    Ok(())
}

fn ingest(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    use gantry_bench::ingest::{fleet_load, measure, Broker, Samples};
    let work = std::env::temp_dir().join(format!("gantry-bench-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let samples = Samples::from_simulated_run(&work.join("samples"), 1.0)?;
    let size = samples.mean_bytes();
    report.add("ingest: mean log batch on the wire (1-min simulated run)", size as f64 / 1e3, "kB");
    for (kind, (n, mean)) in ["incidents", "health", "logs"].iter().zip(samples.composition()) {
        report.add(
            format!("ingest: {kind} batches in the sample, mean size"),
            mean as f64 / 1e3,
            &format!("kB ({n} batches)"),
        );
    }
    let (robots, per_robot) = if quick { (10, 100) } else { (20, 500) };
    for broker in [Broker::Embedded, Broker::Mosquitto] {
        eprintln!("ingest: {} ({robots} robots × {per_robot} batches of {size} bytes)…", broker.name());
        // Each broker's run in its own directory, all removed at the end: a
        // directory of thousands of files deleted just before a run slows
        // the file creations it measures.
        let (gantry, peer) = match measure(&work.join(format!("run-{broker:?}")), broker, robots, per_robot, &samples) {
            Ok(m) => m,
            // Mosquitto not installed: that broker's rows are left out, the report goes on.
            Err(e) if broker == Broker::Mosquitto => {
                eprintln!("ingest through Mosquitto: {e:#} (apt-get install mosquitto); its figures are left out");
                continue;
            }
            Err(e) => return Err(e),
        };
        let label = format!("ingest, {robots} robots × {per_robot} batches, {}", broker.name());
        match peer {
            Some(peer) => {
                let peer_name = format!(
                    "mosquitto_pub ×{robots} → mosquitto_sub, same broker, {:.1} kB messages",
                    size as f64 / 1e3
                );
                report.add_with_peer(
                    format!("{label}: messages/s"),
                    gantry.messages_per_s(),
                    "msg/s",
                    &peer_name,
                    peer.messages_per_s(),
                );
                report.add_with_peer(format!("{label}: MB/s"), gantry.mb_per_s(), "MB/s", &peer_name, peer.mb_per_s());
            }
            None => {
                report.add(format!("{label}: messages/s"), gantry.messages_per_s(), "msg/s");
                report.add(format!("{label}: MB/s"), gantry.mb_per_s(), "MB/s");
            }
        }
    }
    let (robots, seconds) = (1000, if quick { 20.0 } else { 60.0 });
    for broker in [Broker::Embedded, Broker::Mosquitto] {
        eprintln!("ingest: {robots} protocol-level robots at their real rates for {seconds} s, {}…", broker.name());
        let l = match fleet_load(&work.join(format!("fleet-{broker:?}")), broker, robots, seconds, &samples) {
            Ok(l) => l,
            Err(e) if broker == Broker::Mosquitto => {
                eprintln!("fleet load through Mosquitto: {e:#} (apt-get install mosquitto); its figures are left out");
                continue;
            }
            Err(e) => return Err(e),
        };
        let label =
            format!("ingest, {} robots at their real rates for {:.0} s, {}", l.robots, l.seconds, broker.name());
        report.add(format!("{label}: batches offered"), l.offered_per_s, "batches/s");
        report.add(
            format!("{label}: batches stored of those published"),
            l.stored as f64,
            &format!("of {}", l.published),
        );
        report.add(format!("{label}: publish → broker PUBACK, p50"), l.puback_ms[0], "ms");
        report.add(format!("{label}: publish → broker PUBACK, p99"), l.puback_ms[1], "ms");
        report.add(format!("{label}: publish → taken up by ingestion, p50"), l.stored_ms[0], "ms");
        report.add(format!("{label}: publish → taken up by ingestion, p99"), l.stored_ms[1], "ms");
        report.add(
            format!("{label}: ingestion → committed and acknowledged, p50 (bucket bound)"),
            l.commit_ms[0],
            "ms",
        );
        report.add(
            format!("{label}: ingestion → committed and acknowledged, p99 (bucket bound)"),
            l.commit_ms[1],
            "ms",
        );
        report.add(format!("{label}: last batch stored after the last publish"), l.drain_s, "s");
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // The report goes to stdout; warnings of the systems under test to stderr.
    gantry_config::cli::init_tracing_at("warn");
    let args = Args::parse();
    let mut report = Report::default();
    let run = |s: Section| args.only.is_empty() || args.only.contains(&s);
    if run(Section::Governor) {
        governor_check_time(&mut report, if args.quick { 100_000 } else { 1_000_000 });
    }
    if run(Section::Inference) {
        inference(&mut report, args.quick, args.gpu)?;
    }
    if run(Section::Pipeline) {
        pipeline(&mut report, if args.quick { 10 } else { 60 }, args.gpu)?;
    }
    if run(Section::Recorder) {
        recorder(&mut report, if args.quick { 2.0 } else { 10.0 })?;
    }
    if run(Section::Ingest) {
        ingest(&mut report, args.quick)?;
    }
    print!("{}", report.markdown());
    if let Some(path) = args.json {
        std::fs::write(&path, report.json())?;
    }
    Ok(())
}
