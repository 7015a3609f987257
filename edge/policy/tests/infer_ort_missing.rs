//! Without the ONNX Runtime library the backend fails cleanly (no panic) and the
//! daemon's policy loading falls back to the baseline on tract. A test binary of
//! its own: ONNX Runtime's environment is process-wide.
#![cfg(feature = "ort")]

use std::path::Path;

use gantry_config::edge::{Backend, ExecutionProvider, Policy};
use gantry_policy::infer::ort::OrtBackend;
use gantry_policy::infer::{load_policy, ExecutionPath, InferError, Trial};
use gantry_policy::model::ModelPackage;

#[test]
fn missing_library_is_an_error_and_the_baseline_runs() {
    let baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/baseline").display().to_string();
    let policy = Policy {
        backend: Backend::Ort,
        model_dir: baseline.clone(),
        baseline_model_dir: baseline.clone(),
        ort_library_path: "/nonexistent/libonnxruntime.so.1.31.1".into(),
        providers: vec![ExecutionProvider::Cpu],
        threads: 1,
        ..Policy::default()
    };
    let model = ModelPackage::load(&baseline).unwrap();
    match OrtBackend::load(&model, &policy) {
        Err(InferError::Backend { backend: "ort", reason }) => {
            assert!(reason.contains("/nonexistent/libonnxruntime.so.1.31.1"), "{reason}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("loaded without a library"),
    }
    let loaded = load_policy(&policy).unwrap();
    assert_eq!(loaded.backend.execution_path(), ExecutionPath::TractCpu);
    assert!(loaded.failures[0].contains("cannot load ONNX Runtime"), "{:?}", loaded.failures);
}

#[test]
fn auto_without_the_library_runs_the_model_on_tract_and_says_why() {
    let baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/baseline").display().to_string();
    let policy = Policy {
        backend: Backend::Auto,
        model_dir: baseline.clone(),
        baseline_model_dir: baseline,
        ort_library_path: "/nonexistent/libonnxruntime.so.1.31.1".into(),
        providers: vec![ExecutionProvider::Cpu],
        threads: 1,
        ..Policy::default()
    };
    let loaded = load_policy(&policy).unwrap();
    assert_eq!(loaded.backend.execution_path(), ExecutionPath::TractCpu);
    // The model runs (not the baseline in its place): nothing failed.
    assert!(loaded.failures.is_empty(), "{:?}", loaded.failures);
    match &loaded.trials[..] {
        [Trial::Ran { path: ExecutionPath::TractCpu, median_ms }, Trial::Unavailable { backend, reason }] => {
            assert_eq!(backend, "ort");
            assert!(median_ms.is_finite() && *median_ms > 0.0, "{median_ms}");
            assert!(reason.contains("/nonexistent/libonnxruntime.so.1.31.1"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
