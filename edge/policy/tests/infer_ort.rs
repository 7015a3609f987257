//! ONNX Runtime on its CPU provider against tract, and the providers that cannot
//! run here (TensorRT, CUDA) failing loudly. Needs the CPU library:
//! `ORT_DYLIB_PATH=$(scripts/fetch-onnxruntime.sh)`.
#![cfg(feature = "ort")]

use std::path::{Path, PathBuf};

use gantry_config::edge::{Backend, ExecutionProvider, Policy};
use gantry_policy::infer::ort::OrtBackend;
use gantry_policy::infer::tract::TractBackend;
use gantry_policy::infer::{load_policy, ExecutionPath, InferError, PolicyBackend, Trial};
use gantry_policy::model::ModelPackage;

fn baseline_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/baseline")
}

fn policy(providers: &[ExecutionProvider]) -> Policy {
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "set ORT_DYLIB_PATH=$(scripts/fetch-onnxruntime.sh) to run the ONNX Runtime tests"
    );
    Policy {
        backend: Backend::Ort,
        model_dir: baseline_dir().display().to_string(),
        baseline_model_dir: baseline_dir().display().to_string(),
        providers: providers.to_vec(),
        threads: 1,
        tensorrt_cache_dir: std::env::temp_dir().join("gantry-trt-cache").display().to_string(),
        ..Policy::default()
    }
}

fn fill(policy: &mut dyn PolicyBackend, seed: u32) {
    let inputs = policy.inputs();
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x as f32 / u32::MAX as f32) * 4.0 - 2.0
    };
    inputs.rgb.iter_mut().for_each(|v| *v = next());
    inputs.depth.iter_mut().for_each(|v| *v = next().abs() / 2.0);
    inputs.joints.iter_mut().for_each(|v| *v = next());
}

#[test]
fn ort_cpu_and_tract_agree_within_1e_4() {
    let model = ModelPackage::load(baseline_dir()).unwrap();
    let (mut ort, failures) = OrtBackend::load(&model, &policy(&[ExecutionProvider::Cpu])).unwrap();
    assert!(failures.is_empty());
    assert_eq!(ort.execution_path(), ExecutionPath::OrtCpu);
    let mut tract = TractBackend::load(&model, 1).unwrap();
    for seed in 0..20 {
        fill(&mut ort, seed);
        fill(&mut tract, seed);
        let a = ort.run().unwrap().to_vec();
        let b = tract.run().unwrap().to_vec();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "seed {seed}: ort {a:?} vs tract {b:?}");
        }
    }
}

#[test]
fn tensorrt_and_cuda_fail_with_the_documented_error() {
    let model = ModelPackage::load(baseline_dir()).unwrap();
    for (provider, name) in [(ExecutionProvider::Tensorrt, "tensorrt"), (ExecutionProvider::Cuda, "cuda")] {
        match OrtBackend::load(&model, &policy(&[provider])) {
            Err(InferError::Provider { provider, reason }) => {
                assert_eq!(provider, name);
                assert!(reason.starts_with(&format!("{name}: ")), "{reason}");
            }
            Err(other) => panic!("{name}: wrong error {other}"),
            Ok((b, _)) => panic!("{name} must not run here, got {}", b.execution_path()),
        }
    }
}

#[test]
fn configured_provider_order_falls_through_to_cpu_and_says_why() {
    let model = ModelPackage::load(baseline_dir()).unwrap();
    let all = [ExecutionProvider::Tensorrt, ExecutionProvider::Cuda, ExecutionProvider::Cpu];
    let (mut backend, failures) = OrtBackend::load(&model, &policy(&all)).unwrap();
    assert_eq!(backend.execution_path(), ExecutionPath::OrtCpu);
    let names: Vec<&str> = failures.iter().map(|f| f.provider).collect();
    assert_eq!(names, ["tensorrt", "cuda"]);
    fill(&mut backend, 1);
    assert_eq!(backend.run().unwrap().len(), 7);
}

/// `policy.preprocess = "cuda"` needs a session on the GPU: on the CPU
/// provider the RGB input stays on the host, the refusal says why, and the
/// model still runs on what the CPU preprocessor writes.
#[test]
fn rgb_on_the_device_needs_a_session_on_the_gpu() {
    let model = ModelPackage::load(baseline_dir()).unwrap();
    let (mut backend, _) = OrtBackend::load(&model, &policy(&[ExecutionProvider::Cpu])).unwrap();
    let reason = backend.bind_rgb_on_device((1920, 1080)).unwrap_err();
    assert!(reason.contains("ort-cpu"), "{reason}");
    let mut image = vec![7u8; 3 * 128 * 128];
    assert!(backend.rgb_on_device(&vec![0u8; 1920 * 1080 * 3], &mut image).is_none());
    assert!(image.iter().all(|&v| v == 7), "nothing written where nothing ran");
    fill(&mut backend, 3);
    let first = backend.run().unwrap().to_vec();
    fill(&mut backend, 4);
    assert_ne!(backend.run().unwrap(), &first[..], "the host inputs are still the ones read");
}

#[test]
fn a_primary_that_cannot_start_falls_back_to_the_baseline_on_tract() {
    let loaded = load_policy(&policy(&[ExecutionProvider::Tensorrt])).unwrap();
    assert_eq!(loaded.backend.execution_path(), ExecutionPath::TractCpu);
    assert_eq!(loaded.failures.len(), 1);
    assert!(loaded.failures[0].contains("tensorrt execution provider is unavailable"), "{:?}", loaded.failures);

    let loaded = load_policy(&policy(&[ExecutionProvider::Cuda, ExecutionProvider::Cpu])).unwrap();
    assert_eq!(loaded.backend.execution_path(), ExecutionPath::OrtCpu);
    assert_eq!(loaded.failures.len(), 1, "{:?}", loaded.failures);
    assert!(loaded.failures[0].starts_with("ort cuda: "));
}

#[test]
fn auto_times_tract_and_ort_and_runs_the_faster() {
    let loaded = load_policy(&Policy { backend: Backend::Auto, ..policy(&[ExecutionProvider::Cpu]) }).unwrap();
    assert!(loaded.failures.is_empty(), "{:?}", loaded.failures);
    let times: Vec<(ExecutionPath, f64)> = loaded
        .trials
        .iter()
        .map(|t| match t {
            Trial::Ran { path, median_ms } => (*path, *median_ms),
            other => panic!("both backends load here: {other}"),
        })
        .collect();
    assert_eq!(times.iter().map(|t| t.0).collect::<Vec<_>>(), [ExecutionPath::TractCpu, ExecutionPath::OrtCpu]);
    let fastest = if times[1].1 < times[0].1 { times[1].0 } else { times[0].0 };
    assert_eq!(loaded.backend.execution_path(), fastest, "{times:?}");
}

#[test]
fn auto_notes_the_providers_that_did_not_start_and_still_measures_the_cpu() {
    let all = [ExecutionProvider::Tensorrt, ExecutionProvider::Cuda, ExecutionProvider::Cpu];
    let loaded = load_policy(&Policy { backend: Backend::Auto, ..policy(&all) }).unwrap();
    assert!(loaded.failures.is_empty(), "{:?}", loaded.failures);
    let lines: Vec<String> = loaded.trials.iter().map(ToString::to_string).collect();
    assert!(lines[0].starts_with("tract-cpu ") && lines[1].starts_with("ort-cpu "), "{lines:?}");
    assert!(lines[2].starts_with("ort tensorrt unavailable: "), "{lines:?}");
    assert!(lines[3].starts_with("ort cuda unavailable: "), "{lines:?}");
}
