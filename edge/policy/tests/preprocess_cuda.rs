//! GPU preprocessing against the CPU path. On a machine without an NVIDIA driver
//! it checks the clean error instead; on one with a GPU it compares values.
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};

use gantry_policy::model::ModelPackage;
use gantry_policy::preprocess::Preprocessor;
use gantry_policy::preprocess_cuda::{CudaPreprocessError, CudaPreprocessor};

#[test]
fn cuda_matches_cpu_or_reports_the_missing_driver() {
    // `GANTRY_MODELS`: the packages when this runs away from its checkout (`bench/gpu.sh run`).
    let models = std::env::var_os("GANTRY_MODELS")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"), PathBuf::from);
    let model = ModelPackage::load(models.join("baseline")).unwrap();
    let (w, h) = (1920u32, 1080u32);
    let frame: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7 + i / 5791) % 251) as u8).collect();
    let mut gpu = match CudaPreprocessor::new(&model, (w, h)) {
        Ok(gpu) => gpu,
        Err(CudaPreprocessError::Unavailable(reason)) => {
            assert!(reason.contains("not found"), "{reason}");
            eprintln!("no GPU here: {reason}");
            return;
        }
        Err(e) => panic!("CUDA present but failed: {e}"),
    };
    let mut cpu = Preprocessor::new(&model, (w, h), (848, 480)).unwrap();
    let mut expected = vec![0f32; 3 * 128 * 128];
    cpu.rgb(&frame, &mut expected).unwrap();
    let mut got = vec![0f32; 3 * 128 * 128];
    let mut image = vec![0u8; 3 * 128 * 128];
    gpu.run(&frame).unwrap();
    gpu.download(&mut got, &mut image).unwrap();
    let worst = expected.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-3, "largest difference {worst}");
    // The image the recorder keeps is the CPU path's, byte for byte.
    assert_eq!(image, cpu.model_rgb());
    assert!(image.iter().any(|&v| v != image[0]), "a constant image says nothing");
}
