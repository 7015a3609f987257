//! Peers measured beside Gantry on the same frames: the Python environment
//! (`bench/peers/setup.sh`), OpenCV's `INTER_AREA` through it, and the
//! `fast_image_resize` crate in process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::Percentiles;

/// The peers' Python (`PEER_PYTHON`, else `target/peers-venv`); `None` where it
/// is missing, said once per run on stderr (every Python peer is left out).
pub fn peer_python() -> Option<PathBuf> {
    static SAID: AtomicBool = AtomicBool::new(false);
    let python = match std::env::var("PEER_PYTHON") {
        Ok(p) => PathBuf::from(p),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers-venv/bin/python"),
    };
    if python.is_file() {
        return Some(python);
    }
    if !SAID.swap(true, Ordering::Relaxed) {
        eprintln!(
            "python peers: {} not found (run bench/peers/setup.sh, or set PEER_PYTHON); \
             the Python pipeline's and OpenCV's figures are left out",
            python.display()
        );
    }
    None
}

/// The synthetic frames as raw files for a peer process; removed on drop.
pub struct FramesOnDisk {
    dir: PathBuf,
}

impl FramesOnDisk {
    pub fn write(rgb: &[u8], depth: &[u8]) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("gantry-bench-peer-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("rgb.raw"), rgb)?;
        std::fs::write(dir.join("depth.raw"), depth)?;
        Ok(Self { dir })
    }

    /// `--rgb F --depth F`, the arguments both Python peers take.
    pub fn args(&self) -> [String; 4] {
        let path = |f: &str| self.dir.join(f).display().to_string();
        ["--rgb".into(), path("rgb.raw"), "--depth".into(), path("depth.raw")]
    }
}

impl Drop for FramesOnDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// OpenCV's preprocessing of the same frames (`bench/peers/preprocess.py`).
#[derive(Debug, Clone)]
pub struct OpenCvPreprocess {
    /// `cv2.resize(INTER_AREA)` of the RGB frame alone.
    pub resize_ms: (f64, f64),
    /// Resize, normalise to planar f32 and the depth, as the pipeline peer does.
    pub whole_ms: (f64, f64),
    pub versions: String,
}

/// `None` (with a line on stderr) where the peers' Python is missing.
pub fn opencv_preprocess(
    model: &Path,
    rgb: &[u8],
    depth: &[u8],
    runs: usize,
) -> anyhow::Result<Option<OpenCvPreprocess>> {
    let Some(python) = peer_python() else { return Ok(None) };
    let frames = FramesOnDisk::write(rgb, depth)?;
    let out = Command::new(python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/preprocess.py"))
        .args(frames.args())
        .args(["--model", &model.display().to_string(), "--runs", &runs.to_string()])
        .output()?;
    anyhow::ensure!(out.status.success(), "OpenCV peer failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let pair = |k: &str| (v[k]["p50"].as_f64().unwrap_or(f64::NAN), v[k]["p99"].as_f64().unwrap_or(f64::NAN));
    Ok(Some(OpenCvPreprocess {
        resize_ms: pair("resize_ms"),
        whole_ms: pair("whole_ms"),
        versions: format!(
            "Python: OpenCV {} ({} threads) + numpy {}",
            v["opencv"].as_str().unwrap_or("?"),
            v["threads"].as_u64().unwrap_or(0),
            v["numpy"].as_str().unwrap_or("?")
        ),
    }))
}

/// `fast_image_resize`'s box-filter convolution (its area average; SIMD as
/// the CPU allows) of a `width`×`height` RGB frame to `to`, `runs` times,
/// into a buffer allocated once.
pub fn fir_box_resize(
    rgb: &[u8],
    (width, height): (u32, u32),
    to: (u32, u32),
    runs: usize,
) -> anyhow::Result<Percentiles> {
    let src = Image::from_vec_u8(width, height, rgb.to_vec(), PixelType::U8x3)?;
    let mut dst = Image::new(to.0, to.1, PixelType::U8x3);
    let mut resizer = Resizer::new();
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
    resizer.resize(&src, &mut dst, &options)?;
    let mut failed = None;
    let p = crate::percentiles(runs, || {
        if let Err(e) = resizer.resize(&src, &mut dst, &options) {
            failed = Some(e);
        }
    });
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(p),
    }
}
