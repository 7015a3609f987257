//! The policy: preprocessed tensors in, an action out, through one of several
//! backends behind [`PolicyBackend`]. Each backend allocates its input and output
//! tensors when the model is loaded and reports which execution path really runs.

use std::fmt;

use crate::model::{IoShape, Manifest, ModelError};

pub mod tract;

/// Where inference actually runs, as opposed to what was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionPath {
    TractCpu,
    OrtTensorRt,
    OrtCuda,
    OrtCpu,
}

impl ExecutionPath {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionPath::TractCpu => "tract-cpu",
            ExecutionPath::OrtTensorRt => "ort-tensorrt",
            ExecutionPath::OrtCuda => "ort-cuda",
            ExecutionPath::OrtCpu => "ort-cpu",
        }
    }
}

impl fmt::Display for ExecutionPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{backend}: {reason}")]
    Backend { backend: &'static str, reason: String },
    #[error("{provider} execution provider is unavailable: {reason}")]
    Provider { provider: &'static str, reason: String },
}

/// The three input tensors, as mutable slices into the backend's own buffers.
pub struct Inputs<'a> {
    /// `[3, H, W]`, normalised.
    pub rgb: &'a mut [f32],
    /// `[1, H, W]`, 0..1.
    pub depth: &'a mut [f32],
    /// J positions then J velocities.
    pub joints: &'a mut [f32],
}

/// A loaded policy, ready to run.
pub trait PolicyBackend: Send {
    fn execution_path(&self) -> ExecutionPath;

    fn manifest(&self) -> &Manifest;

    fn io(&self) -> IoShape;

    /// The input tensors, to be filled before [`PolicyBackend::run`].
    fn inputs(&mut self) -> Inputs<'_>;

    /// Runs the policy on the current inputs; the action is J joint deltas and the gripper.
    fn run(&mut self) -> Result<&[f32], InferError>;
}
