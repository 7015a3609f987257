//! The ONNX Runtime backend (feature `ort`): TensorRT, CUDA or CPU execution
//! providers, tried in the configured order.
//!
//! The library is loaded at run time (`load-dynamic`) from
//! `policy.ort_library_path`, else `ORT_DYLIB_PATH`; nothing is downloaded at
//! build time, and a missing library is an error, not a panic. Every provider is
//! registered with `error_on_failure`, so a provider that cannot start is reported
//! and the next one in the list is tried — never a silent fall back to the CPU.
//! Inputs and the output are bound once (`IoBinding`) to tensors allocated at load.
//! With feature `cuda` and a session on the GPU, the RGB input can instead be
//! a tensor in the GPU memory of ONNX Runtime's CUDA allocator, which the CUDA
//! preprocessing kernel writes straight into ([`OrtBackend::bind_rgb_on_device`]).

use std::sync::OnceLock;

use gantry_config::edge::{ExecutionProvider, Policy};
use ort::environment::Environment;
use ort::ep::{ExecutionProviderDispatch, TensorRT, CPU, CUDA};
use ort::memory::Allocator;
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use super::{ExecutionPath, InferError, Inputs, PolicyBackend};
use crate::model::{GraphPort, IoShape, Manifest, ModelPackage};

/// A provider that was asked for and could not run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderFailure {
    pub provider: &'static str,
    pub reason: String,
}

/// ONNX Runtime allows one environment per process; the first library loaded wins.
static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

fn environment(library: &str) -> Result<&'static Environment, InferError> {
    let env = ENVIRONMENT.get_or_init(|| {
        let path =
            if library.is_empty() { std::env::var("ORT_DYLIB_PATH").unwrap_or_default() } else { library.to_owned() };
        if path.is_empty() {
            return Err("no ONNX Runtime library: set policy.ort_library_path or ORT_DYLIB_PATH".to_owned());
        }
        ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {path}: {e}"))?
            .with_name("gantry")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {path}: {e}"))
    });
    env.as_ref().map_err(|reason| InferError::Backend { backend: "ort", reason: reason.clone() })
}

fn provider_name(p: ExecutionProvider) -> &'static str {
    match p {
        ExecutionProvider::Tensorrt => "tensorrt",
        ExecutionProvider::Cuda => "cuda",
        ExecutionProvider::Cpu => "cpu",
    }
}

fn dispatch(p: ExecutionProvider, policy: &Policy) -> (ExecutionProviderDispatch, ExecutionPath) {
    match p {
        ExecutionProvider::Tensorrt => (
            TensorRT::default()
                .with_fp16(policy.tensorrt_fp16)
                .with_engine_cache(true)
                .with_engine_cache_path(&policy.tensorrt_cache_dir)
                .build()
                .error_on_failure(),
            ExecutionPath::OrtTensorRt,
        ),
        ExecutionProvider::Cuda => (CUDA::default().build().error_on_failure(), ExecutionPath::OrtCuda),
        ExecutionProvider::Cpu => (CPU::default().build().error_on_failure(), ExecutionPath::OrtCpu),
    }
}

pub struct OrtBackend {
    manifest: Manifest,
    io: IoShape,
    path: ExecutionPath,
    session: Session,
    binding: IoBinding,
    rgb: Tensor<f32>,
    depth: Tensor<f32>,
    joints: Tensor<f32>,
    output_name: String,
    action: Vec<f32>,
    /// The RGB input on the GPU and the kernel that fills it, once bound.
    #[cfg(feature = "cuda")]
    device_rgb: Option<DeviceRgb>,
}

/// The RGB input tensor in device memory that ONNX Runtime allocated (so its
/// binding reads that very buffer, where a borrowed one would be copied at
/// bind time), and the preprocessing that writes it.
#[cfg(feature = "cuda")]
struct DeviceRgb {
    tensor: Tensor<f32>,
    pre: crate::preprocess_cuda::CudaPreprocessor,
}

fn ort_error(e: impl std::fmt::Display) -> InferError {
    InferError::Backend { backend: "ort", reason: e.to_string() }
}

impl OrtBackend {
    /// Loads `model` on the first of `policy.providers` that starts. Returns the
    /// backend and every provider that was tried and failed before it; if none
    /// starts, the error names each provider and its reason.
    pub fn load(model: &ModelPackage, policy: &Policy) -> Result<(Self, Vec<ProviderFailure>), InferError> {
        let env = environment(&policy.ort_library_path)?;
        let io = model.io_shape()?;
        let mut failures = Vec::new();
        for &p in &policy.providers {
            let (ep, path) = dispatch(p, policy);
            let session = Session::builder(env)
                .map_err(|e| e.to_string())
                .and_then(|b| b.with_execution_providers([ep]).map_err(|e| e.to_string()))
                .and_then(|b| b.with_intra_threads(policy.threads).map_err(|e| e.to_string()))
                .and_then(|mut b| b.commit_from_memory(&model.onnx).map_err(|e| e.to_string()));
            match session {
                Ok(session) => return Ok((Self::bind(model, io, session, path)?, failures)),
                Err(reason) => failures.push(ProviderFailure { provider: provider_name(p), reason }),
            }
        }
        let reason = failures.iter().map(|f| format!("{}: {}", f.provider, f.reason)).collect::<Vec<_>>().join("; ");
        let provider = failures.last().map_or("none configured", |f| f.provider);
        Err(InferError::Provider { provider, reason })
    }

    fn bind(model: &ModelPackage, io: IoShape, session: Session, path: ExecutionPath) -> Result<Self, InferError> {
        let ports = |outlets: &[ort::value::Outlet]| -> Vec<GraphPort> {
            outlets
                .iter()
                .map(|o| {
                    let shape = o
                        .dtype()
                        .tensor_shape()
                        .map(|s| s.iter().map(|&d| usize::try_from(d).ok()).collect())
                        .unwrap_or_default();
                    (o.name().to_owned(), shape)
                })
                .collect()
        };
        model.check_graph(&ports(session.inputs()), &ports(session.outputs()))?;
        let alloc = Allocator::default();
        let tensor = |shape: &[usize]| -> Result<Tensor<f32>, InferError> {
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            Tensor::<f32>::new(&alloc, shape).map_err(ort_error)
        };
        let rgb = tensor(&model.rgb()?.shape)?;
        let depth = tensor(&model.depth()?.shape)?;
        let joints = tensor(&model.joints()?.shape)?;
        let output = tensor(&model.manifest.output.shape)?;
        let mut binding = session.create_binding().map_err(ort_error)?;
        binding.bind_input(&model.rgb()?.name, &rgb).map_err(ort_error)?;
        binding.bind_input(&model.depth()?.name, &depth).map_err(ort_error)?;
        binding.bind_input(&model.joints()?.name, &joints).map_err(ort_error)?;
        let output_name = model.manifest.output.name.clone();
        binding.bind_output(&output_name, output).map_err(ort_error)?;
        Ok(Self {
            manifest: model.manifest.clone(),
            io,
            path,
            session,
            binding,
            rgb,
            depth,
            joints,
            output_name,
            action: vec![0.0; io.action],
            #[cfg(feature = "cuda")]
            device_rgb: None,
        })
    }
}

impl PolicyBackend for OrtBackend {
    fn execution_path(&self) -> ExecutionPath {
        self.path
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn io(&self) -> IoShape {
        self.io
    }

    fn inputs(&mut self) -> Inputs<'_> {
        // The binding holds these tensors by reference: writing them in place
        // is what the next run reads.
        Inputs {
            rgb: self.rgb.extract_tensor_mut().1,
            depth: self.depth.extract_tensor_mut().1,
            joints: self.joints.extract_tensor_mut().1,
        }
    }

    fn run(&mut self) -> Result<&[f32], InferError> {
        let outputs = self.session.run_binding(&self.binding).map_err(ort_error)?;
        let value = outputs.get(&self.output_name).ok_or_else(|| ort_error("the bound output is missing"))?;
        let (_, data) = value.try_extract_tensor::<f32>().map_err(ort_error)?;
        if data.len() != self.action.len() {
            return Err(ort_error(format!("output has {} values, expected {}", data.len(), self.action.len())));
        }
        self.action.copy_from_slice(data);
        Ok(&self.action)
    }

    #[cfg(feature = "cuda")]
    fn bind_rgb_on_device(&mut self, source: (u32, u32)) -> Result<(), String> {
        use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
        if !matches!(self.path, ExecutionPath::OrtCuda | ExecutionPath::OrtTensorRt) {
            return Err(format!("the session runs on {}, not on the GPU", self.path));
        }
        let model = ModelPackage::from_manifest(self.manifest.clone());
        let pre = crate::preprocess_cuda::CudaPreprocessor::new(&model, source).map_err(|e| e.to_string())?;
        let spec = model.rgb().map_err(|e| e.to_string())?;
        // Device 0, where the CUDA preprocessing runs and ONNX Runtime's providers start by default.
        let info = MemoryInfo::new(AllocationDevice::CUDA, 0, AllocatorType::Device, MemoryType::Default)
            .map_err(|e| format!("ONNX Runtime's CUDA memory: {e}"))?;
        let alloc = Allocator::new(&self.session, info).map_err(|e| format!("ONNX Runtime's CUDA allocator: {e}"))?;
        let shape: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
        let tensor = Tensor::<f32>::new(&alloc, shape).map_err(|e| format!("the RGB input on the GPU: {e}"))?;
        if tensor.shape().num_elements() != pre.tensor_len() {
            return Err(format!(
                "the RGB input holds {} values, the kernel writes {}",
                tensor.shape().num_elements(),
                pre.tensor_len()
            ));
        }
        self.binding.bind_input(&spec.name, &tensor).map_err(|e| format!("binding the RGB input on the GPU: {e}"))?;
        self.device_rgb = Some(DeviceRgb { tensor, pre });
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn rgb_on_device(&mut self, frame: &[u8], model_rgb: &mut [u8]) -> Option<Result<(), InferError>> {
        let d = self.device_rgb.as_mut()?;
        let out = d.tensor.data_ptr_mut() as u64;
        // SAFETY: `out` is ONNX Runtime's allocation of the RGB input on
        // device 0 (its CUDA allocator, the primary context), of the
        // kernel's size (checked when bound), alive as long as `d`.
        Some(unsafe { d.pre.run_into(frame, out, model_rgb) }.map_err(ort_error))
    }
}
