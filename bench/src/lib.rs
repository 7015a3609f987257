//! Gantry's benchmarks: shared set-up for the criterion benches, the
//! `gantry-bench` report and the `gantry-fleet` simulator.
//!
//! Frames come from the synthetic sources, models from `models/`; the 50M-parameter
//! policy must be generated first (`python3 models/make_models.py vision-50m models/vision-50m`).

pub mod ingest;
pub mod peers;
pub mod pipeline;
pub mod recorder;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use gantry_config::edge::Synthetic;
use gantry_hal::synthetic::{Scene, SyntheticCamera, SyntheticDepth};
use gantry_hal::{FrameSource, Pacing};
use hdrhistogram::Histogram;

/// A model package under `models/`, if it is there.
pub fn model_dir(name: &str) -> Option<PathBuf> {
    // `GANTRY_MODELS`: where the packages are when the binary runs away from
    // its checkout (`bench/gpu.sh run` on another machine).
    let models = std::env::var_os("GANTRY_MODELS")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"), PathBuf::from);
    let dir = models.join(name);
    dir.join("manifest.toml").is_file().then_some(dir)
}

/// One synthetic 1080p RGB frame and one 848×480 depth frame.
pub fn synthetic_frames() -> (Vec<u8>, Vec<u8>) {
    let scene = Scene::new(Synthetic::default());
    let mut camera = SyntheticCamera::new(scene.clone(), 1920, 1080, 30, Pacing::Max);
    let mut depth = SyntheticDepth::new(scene, 848, 480, 30, Pacing::Max);
    let mut rgb = vec![0u8; camera.info().frame_bytes()];
    let mut d = vec![0u8; depth.info().frame_bytes()];
    camera.next_frame(Some(&mut rgb)).expect("synthetic camera");
    depth.next_frame(Some(&mut d)).expect("synthetic depth");
    (rgb, d)
}

/// Latency percentiles of `iterations` runs of `f`, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn percentiles(iterations: usize, mut f: impl FnMut()) -> Percentiles {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
    for _ in 0..iterations {
        let t = std::time::Instant::now();
        f();
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    let ms = |ns: u64| Duration::from_nanos(ns).as_secs_f64() * 1e3;
    Percentiles { p50_ms: ms(h.value_at_quantile(0.5)), p99_ms: ms(h.value_at_quantile(0.99)), max_ms: ms(h.max()) }
}
