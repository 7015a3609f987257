//! The policy: preprocessed tensors in, an action out, through one of several
//! backends behind [`PolicyBackend`]. Each backend allocates its input and output
//! tensors when the model is loaded and reports which execution path really runs.

use gantry_config::edge::MAX_JOINTS;
use std::fmt;

use crate::model::{IoShape, Manifest, ModelError};

#[cfg(feature = "ort")]
pub mod ort;
pub mod safety;
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

    /// Binds the RGB input to device memory that the CUDA preprocessing
    /// writes straight into (`policy.preprocess = "cuda"`), for frames of
    /// `source` = (width, height): the tensor never passes through the host.
    /// An error says why not; the CPU preprocessor then fills `inputs().rgb`.
    fn bind_rgb_on_device(&mut self, _source: (u32, u32)) -> Result<(), String> {
        Err(format!("{} reads its inputs from host memory", self.execution_path()))
    }

    /// With the RGB input bound on the device: preprocesses `frame` into it,
    /// leaves the model-resolution RGB8 image in `model_rgb` (the recorder's
    /// copy) and returns `Some`; `None` leaves the RGB input to the CPU preprocessor.
    fn rgb_on_device(&mut self, _frame: &[u8], _model_rgb: &mut [u8]) -> Option<Result<(), InferError>> {
        None
    }
}

/// What the control loop follows, from one action: the joint goal (the
/// positions the policy saw plus its deltas), the gripper, and whether the
/// action held a non-finite value (then the goal is the positions, and must
/// not be followed). The inference thread and `gantry-edge replay` both use
/// this, so a replay computes the very same goal.
pub fn goal_of(positions: &[f32; MAX_JOINTS], action: &[f32], joints: usize) -> ([f32; MAX_JOINTS], f32, bool) {
    let non_finite = action.iter().any(|x| !x.is_finite());
    let mut goal = *positions;
    if !non_finite {
        for (g, delta) in goal.iter_mut().zip(action.iter().take(joints.min(action.len().saturating_sub(1)))) {
            *g += *delta;
        }
    }
    let gripper = if non_finite { 0.0 } else { action.last().copied().unwrap_or(0.0) };
    (goal, gripper, non_finite)
}

/// The policy the daemon runs, and why it is not the configured one if it is not.
pub struct LoadedPolicy {
    pub backend: Box<dyn PolicyBackend>,
    /// Each provider or backend that was tried and failed, in order.
    pub failures: Vec<String>,
    /// What `backend = "auto"` measured at load (empty for the other backends).
    pub trials: Vec<Trial>,
}

/// One backend `backend = "auto"` tried on the model at load.
#[derive(Debug, Clone, PartialEq)]
pub enum Trial {
    /// It loaded; the median of [`TRIAL_RUNS`] runs after [`TRIAL_WARMUP`] warm-up runs.
    Ran { path: ExecutionPath, median_ms: f64 },
    /// It could not load here; the other one runs.
    Unavailable { backend: String, reason: String },
}

impl fmt::Display for Trial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trial::Ran { path, median_ms } => write!(f, "{path} {median_ms:.2} ms"),
            Trial::Unavailable { backend, reason } => write!(f, "{backend} unavailable: {reason}"),
        }
    }
}

/// Warm-up runs before a trial's timed runs (first runs pay for lazy set-up).
pub const TRIAL_WARMUP: usize = 3;
/// Timed runs per backend in a trial.
pub const TRIAL_RUNS: usize = 9;

/// Loads `policy.model_dir` on `policy.backend`; when that fails, falls back to the
/// baseline package on tract and says why. Fails only if the baseline fails too.
pub fn load_policy(policy: &gantry_config::edge::Policy) -> Result<LoadedPolicy, InferError> {
    let mut failures = Vec::new();
    let mut trials = Vec::new();
    let primary = crate::model::ModelPackage::load(&policy.model_dir)
        .map_err(InferError::from)
        .and_then(|model| load_backend_noting(&model, policy, &mut failures, &mut trials));
    match primary {
        Ok(backend) => Ok(LoadedPolicy { backend, failures, trials }),
        Err(e) => {
            failures.push(e.to_string());
            let baseline = load_baseline(&policy.baseline_model_dir, &mut failures)?;
            let backend = Box::new(tract::TractBackend::load(&baseline, policy.threads)?);
            Ok(LoadedPolicy { backend, failures, trials })
        }
    }
}

/// `model` on `policy.backend` (no fallback).
pub fn load_backend(
    model: &crate::model::ModelPackage,
    policy: &gantry_config::edge::Policy,
) -> Result<Box<dyn PolicyBackend>, InferError> {
    load_backend_noting(model, policy, &mut Vec::new(), &mut Vec::new())
}

/// As [`load_backend`]; execution providers that failed on the way are noted in
/// `failures`, what `auto` measured in `trials`.
fn load_backend_noting(
    model: &crate::model::ModelPackage,
    policy: &gantry_config::edge::Policy,
    failures: &mut Vec<String>,
    trials: &mut Vec<Trial>,
) -> Result<Box<dyn PolicyBackend>, InferError> {
    use gantry_config::edge::Backend;
    match policy.backend {
        Backend::Tract => Ok(Box::new(tract::TractBackend::load(model, policy.threads)?)),
        Backend::Ort => load_ort(model, policy, failures),
        Backend::Auto => {
            let mut best: Box<dyn PolicyBackend> = Box::new(tract::TractBackend::load(model, policy.threads)?);
            let best_ms = median_run_ms(best.as_mut())?;
            trials.push(Trial::Ran { path: best.execution_path(), median_ms: best_ms });
            let mut ort_failures = Vec::new();
            match load_ort(model, policy, &mut ort_failures).and_then(|mut b| Ok((median_run_ms(b.as_mut())?, b))) {
                Ok((ms, ort)) => {
                    trials.push(Trial::Ran { path: ort.execution_path(), median_ms: ms });
                    if ms < best_ms {
                        best = ort;
                    }
                }
                Err(e) => trials.push(Trial::Unavailable { backend: "ort".into(), reason: e.to_string() }),
            }
            // Providers that failed before one started say why the measured path
            // is not a faster one; they are facts of the trial, not failures.
            trials.extend(ort_failures.iter().map(|line| {
                let (backend, reason) = line.split_once(": ").unwrap_or(("ort", line));
                Trial::Unavailable { backend: backend.into(), reason: reason.into() }
            }));
            Ok(best)
        }
    }
}

#[cfg(feature = "ort")]
fn load_ort(
    model: &crate::model::ModelPackage,
    policy: &gantry_config::edge::Policy,
    failures: &mut Vec<String>,
) -> Result<Box<dyn PolicyBackend>, InferError> {
    let (backend, tried) = ort::OrtBackend::load(model, policy)?;
    failures.extend(tried.into_iter().map(|f| format!("ort {}: {}", f.provider, f.reason)));
    Ok(Box::new(backend))
}

#[cfg(not(feature = "ort"))]
fn load_ort(
    _model: &crate::model::ModelPackage,
    _policy: &gantry_config::edge::Policy,
    _failures: &mut Vec<String>,
) -> Result<Box<dyn PolicyBackend>, InferError> {
    Err(InferError::Backend {
        backend: "ort",
        reason: "not built in: rebuild gantry-edge with `--features ort`".into(),
    })
}

/// The median wall time of a run on constant mid-range inputs, after warm-up.
/// The policy's cost does not depend on the values, so any valid input measures it.
fn median_run_ms(backend: &mut dyn PolicyBackend) -> Result<f64, InferError> {
    let inputs = backend.inputs();
    inputs.rgb.fill(0.0);
    inputs.depth.fill(0.5);
    inputs.joints.fill(0.0);
    for _ in 0..TRIAL_WARMUP {
        backend.run()?;
    }
    let mut times = [0.0; TRIAL_RUNS];
    for t in &mut times {
        let start = std::time::Instant::now();
        backend.run()?;
        *t = start.elapsed().as_secs_f64() * 1e3;
    }
    times.sort_by(f64::total_cmp);
    Ok(times[TRIAL_RUNS / 2])
}

/// The baseline package from `dir`, or the one built into the binary when `dir`
/// cannot be used (noted in `failures`).
pub fn load_baseline(dir: &str, failures: &mut Vec<String>) -> Result<crate::model::ModelPackage, InferError> {
    match crate::model::ModelPackage::load(dir) {
        Ok(p) => Ok(p),
        Err(e) => {
            failures.push(format!("{e}; using the built-in baseline"));
            Ok(crate::model::ModelPackage::embedded_baseline()?)
        }
    }
}
