//! Gantry's policy stage: from a camera and a depth frame to the policy's action.
//!
//! - [`model`]: model packages (a directory with `manifest.toml` and
//!   `model.onnx`, or the baseline built into this crate), checked against
//!   their manifest and sha256;
//! - [`preprocess`]: 1080p RGB and depth to the model's normalised input
//!   tensors, in place, without allocating; [`preprocess_cuda`] on the GPU
//!   (feature `cuda`);
//! - [`infer`]: the backends behind one trait, tract on the CPU and ONNX
//!   Runtime with its TensorRT, CUDA or CPU providers (feature `ort`), and
//!   the governor's learned [`infer::safety`] model.
//!
//! Nothing here knows threads or clocks: `gantry-edge` runs it on the
//! inference thread, and its tests and benchmarks run it alone.

// The inference thread runs this: no unwrap, expect or panic outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod infer;
pub mod model;
pub mod preprocess;
#[cfg(feature = "cuda")]
pub mod preprocess_cuda;
