//! Model packages, preprocessing and the tract backend on the committed baseline.

use std::path::{Path, PathBuf};

use gantry_policy::infer::tract::TractBackend;
use gantry_policy::infer::{ExecutionPath, PolicyBackend};
use gantry_policy::model::{sha256_hex, ModelError, ModelPackage};
use gantry_policy::preprocess::Preprocessor;

fn baseline_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/baseline")
}

/// A copy of the baseline package with its manifest edited by `edit`.
fn edited_package(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(baseline_dir().join("model.onnx"), dir.path().join("model.onnx")).unwrap();
    let manifest = std::fs::read_to_string(baseline_dir().join("manifest.toml")).unwrap();
    std::fs::write(dir.path().join("manifest.toml"), edit(manifest)).unwrap();
    dir
}

#[test]
fn baseline_package_loads_and_verifies() {
    let p = ModelPackage::load(baseline_dir()).unwrap();
    assert_eq!(p.manifest.name, "baseline");
    assert_eq!(p.manifest.sha256, sha256_hex(&p.onnx));
    let io = p.io_shape().unwrap();
    assert_eq!((io.rgb, io.depth, io.joints, io.action), ((128, 128), (128, 128), 12, 7));
    assert!(p.onnx.len() < 1_000_000, "the committed baseline stays under 1 MB");
}

#[test]
fn tampered_model_is_refused() {
    let dir = edited_package(|m| m);
    let mut bytes = std::fs::read(dir.path().join("model.onnx")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(dir.path().join("model.onnx"), bytes).unwrap();
    match ModelPackage::load(dir.path()) {
        Err(ModelError::Checksum { expected, actual, .. }) => assert_ne!(expected, actual),
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn manifest_that_disagrees_with_the_graph_is_refused() {
    let dir = edited_package(|m| m.replace("shape = [1, 3, 128, 128]", "shape = [1, 3, 96, 96]"));
    let package = ModelPackage::load(dir.path()).unwrap();
    let err = TractBackend::load(&package, 1).err().expect("mismatch accepted").to_string();
    assert!(err.contains("\"rgb\" has shape") && err.contains("[1, 3, 96, 96] in the manifest"), "{err}");

    let dir = edited_package(|m| m.replace("name = \"joints\"", "name = \"joint_state\""));
    let package = ModelPackage::load(dir.path()).unwrap();
    let err = TractBackend::load(&package, 1).err().expect("unknown input accepted").to_string();
    assert!(err.contains("\"joint_state\" is not in the graph"), "{err}");

    let dir = edited_package(|m| m.replace("shape = [1, 7]", "shape = [1, 9]"));
    let err = ModelPackage::load(dir.path()).expect_err("bad action shape accepted").to_string();
    assert!(err.contains("output \"action\" has shape [1, 9]"), "{err}");

    let dir = edited_package(|m| m.replace("format_version = 1", "format_version = 2"));
    let err = ModelPackage::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("format_version 2 is not supported"), "{err}");
}

#[test]
fn preprocessing_gives_known_values_on_a_known_image() {
    let package = ModelPackage::load(baseline_dir()).unwrap();
    let (w, h) = (1920u32, 1080u32);
    let mut pre = Preprocessor::new(&package, (w, h), (848, 480)).unwrap();
    let frame: Vec<u8> = [255u8, 0, 128].iter().copied().cycle().take((w * h * 3) as usize).collect();
    let mut rgb = vec![0f32; 3 * 128 * 128];
    pre.rgb(&frame, &mut rgb).unwrap();
    let expect = [(1.0f32 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128.0 / 255.0 - 0.406) / 0.225];
    for (c, e) in expect.iter().enumerate() {
        let plane = &rgb[c * 128 * 128..(c + 1) * 128 * 128];
        assert!(plane.iter().all(|v| (v - e).abs() < 1e-6), "channel {c}: {} vs {e}", plane[0]);
    }

    // Left half 1000 mm, right half 3000 mm, no reading in the first 8 columns.
    let (dw, dh) = (848u32, 480u32);
    let mut depth = vec![0u8; (dw * dh * 2) as usize];
    for y in 0..dh {
        for x in 0..dw {
            let mm: u16 = if x < 8 {
                0
            } else if x < dw / 2 {
                1000
            } else {
                3000
            };
            let i = ((y * dw + x) * 2) as usize;
            depth[i..i + 2].copy_from_slice(&mm.to_le_bytes());
        }
    }
    let mut d = vec![0f32; 128 * 128];
    pre.depth(&depth, 1.0, &mut d).unwrap();
    assert_eq!(d[128 * 64], 0.0, "no reading stays 0");
    assert_eq!(d[128 * 64 + 32], 0.5, "1000 mm / 2000 mm");
    assert_eq!(d[128 * 64 + 100], 1.0, "3000 mm clips to 1");

    let mut j = vec![0f32; 12];
    pre.joints(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[-1.0; 6], &mut j).unwrap();
    assert_eq!(j, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0]);

    assert!(pre.rgb(&frame[..100], &mut rgb).is_err(), "short frame is an error");
}

#[test]
fn area_average_is_exact_on_a_checkerboard() {
    let package = ModelPackage::load(baseline_dir()).unwrap();
    // 256x256 source, 2x2 blocks of black and white: every output pixel averages
    // one black and one white column pair → 127.5, rounded to 128.
    let mut pre = Preprocessor::new(&package, (256, 256), (256, 256)).unwrap();
    let frame: Vec<u8> = (0..256 * 256).flat_map(|i| if (i % 256) % 2 == 0 { [0u8; 3] } else { [255u8; 3] }).collect();
    let mut rgb = vec![0f32; 3 * 128 * 128];
    pre.rgb(&frame, &mut rgb).unwrap();
    let e = (128.0f32 / 255.0 - 0.485) / 0.229;
    assert!(rgb[..128 * 128].iter().all(|v| (v - e).abs() < 1e-6), "{}", rgb[0]);
}

#[test]
fn area_average_of_bands_taller_than_u16_sums_hold() {
    let package = ModelPackage::load(baseline_dir()).unwrap();
    // 300 source rows per output row: 300 × 255 overflows a u16 sum, so the
    // preprocessor must sum these bands wider; the means stay exact.
    let (w, h) = (128u32, 128 * 300);
    let mut pre = Preprocessor::new(&package, (w, h), (256, 256)).unwrap();
    let frame: Vec<u8> = (0..w * h).flat_map(|_| [255u8, 0, 128]).collect();
    let mut rgb = vec![0f32; 3 * 128 * 128];
    pre.rgb(&frame, &mut rgb).unwrap();
    assert!(pre.model_rgb().chunks_exact(3).all(|px| px == [255, 0, 128]), "{:?}", &pre.model_rgb()[..3]);
}

#[test]
fn tract_runs_the_baseline_deterministically_within_the_action_bounds() {
    let package = ModelPackage::load(baseline_dir()).unwrap();
    let mut policy = TractBackend::load(&package, 1).unwrap();
    assert_eq!(policy.execution_path(), ExecutionPath::TractCpu);
    let fill = |policy: &mut TractBackend, k: f32| {
        let inputs = policy.inputs();
        for (i, v) in inputs.rgb.iter_mut().enumerate() {
            *v = ((i % 97) as f32 / 97.0 - 0.5) * k;
        }
        inputs.depth.fill(0.6);
        inputs.joints.copy_from_slice(&[0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    };
    fill(&mut policy, 1.0);
    let a = policy.run().unwrap().to_vec();
    fill(&mut policy, 1.0);
    let b = policy.run().unwrap().to_vec();
    assert_eq!(a, b);
    assert_eq!(a.len(), 7);
    assert!(a[..6].iter().all(|d| d.abs() <= 0.05 + 1e-6), "{a:?}");
    assert!((0.0..=1.0).contains(&a[6]), "{a:?}");
    fill(&mut policy, 3.0);
    let c = policy.run().unwrap().to_vec();
    assert_ne!(a, c, "the output depends on the image");
}
