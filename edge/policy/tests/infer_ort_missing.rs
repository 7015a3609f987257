//! Without the ONNX Runtime library the backend fails cleanly (no panic) and the
//! daemon's policy loading falls back to the baseline on tract. A test binary of
//! its own: ONNX Runtime's environment is process-wide.
#![cfg(feature = "ort")]

use std::path::Path;

use gantry_config::edge::{Backend, ExecutionProvider, Policy};
use gantry_policy::infer::ort::OrtBackend;
use gantry_policy::infer::{load_policy, ExecutionPath, InferError, Trial};
use gantry_policy::model::ModelPackage;

const MISSING: &str = "/nonexistent/libonnxruntime.so.1.31.1";

fn baseline() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/baseline").display().to_string()
}

/// The baseline on `backend`, with an ONNX Runtime library that is not there.
fn policy(backend: Backend) -> Policy {
    Policy {
        backend,
        model_dir: baseline(),
        baseline_model_dir: baseline(),
        ort_library_path: MISSING.into(),
        providers: vec![ExecutionProvider::Cpu],
        threads: 1,
        ..Policy::default()
    }
}

#[test]
fn missing_library_is_an_error_and_the_baseline_runs() {
    let policy = policy(Backend::Ort);
    let model = ModelPackage::load(baseline()).unwrap();
    match OrtBackend::load(&model, &policy) {
        Err(InferError::Backend { backend: "ort", reason }) => {
            assert!(reason.contains(MISSING), "{reason}")
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
    let loaded = load_policy(&policy(Backend::Auto)).unwrap();
    assert_eq!(loaded.backend.execution_path(), ExecutionPath::TractCpu);
    // The model runs (not the baseline in its place): nothing failed.
    assert!(loaded.failures.is_empty(), "{:?}", loaded.failures);
    match &loaded.trials[..] {
        [Trial::Ran { path: ExecutionPath::TractCpu, median_ms }, Trial::Unavailable { backend, reason }] => {
            assert_eq!(backend, "ort");
            assert!(median_ms.is_finite() && *median_ms > 0.0, "{median_ms}");
            assert!(reason.contains(MISSING), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
