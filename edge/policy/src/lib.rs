//! Gantry's policy stage: from a camera and a depth frame to the policy's action.
//!
//! - [`model`]: model packages (a directory with `manifest.toml` and
//!   `model.onnx`, or the baseline built into this crate), checked against
//!   their manifest and sha256;
//! - [`preprocess`]: 1080p RGB and depth to the model's normalised input
//!   tensors, in place, without allocating; [`preprocess_cuda`] on the GPU
//!   (feature `cuda`); [`split`]: a second thread for half of the RGB rows;
//! - [`infer`]: the backends behind one trait, tract on the CPU and ONNX
//!   Runtime with its TensorRT, CUDA or CPU providers (feature `ort`), and
//!   the governor's learned [`infer::safety`] model.
//!
//! `gantry-edge` runs it on the inference thread (and places the split's
//! helper thread); its tests and benchmarks run it alone.

// The inference thread runs this: no unwrap, expect or panic outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod infer;
pub mod model;
pub mod preprocess;
#[cfg(feature = "cuda")]
pub mod preprocess_cuda;
pub mod split;
