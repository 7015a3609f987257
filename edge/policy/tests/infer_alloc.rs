//! Steady-state preprocessing allocates nothing; tract's own per-run allocations
//! are counted, constant, and stay on the inference thread.

use std::path::Path;

use gantry_config::edge::Synthetic;
use gantry_hal::alloc_count::{count as alloc_count, counting, set_role, CountingAllocator};
use gantry_hal::synthetic::{Scene, SyntheticCamera, SyntheticDepth};
use gantry_hal::{FrameSource, Pacing};
use gantry_policy::infer::tract::TractBackend;
use gantry_policy::infer::PolicyBackend;
use gantry_policy::model::ModelPackage;
use gantry_policy::preprocess::{Preprocessor, RgbHelper};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// The allocation-counting role of the RGB helper's thread.
const HELPER_ROLE: u8 = 2;

/// Allocations `f` makes on this thread.
fn count(f: impl FnOnce()) -> u64 {
    counting(1, f).1
}

/// The ceiling on tract's allocations per run of the baseline (68 measured with
/// tract 0.23.9: its intermediate tensors); per-pixel or per-frame growth blows past it.
const TRACT_ALLOCATIONS_PER_RUN_MAX: u64 = 80;

#[test]
fn steady_state_preprocessing_allocates_nothing_and_tract_a_constant_amount() {
    let package = ModelPackage::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/baseline")).unwrap();
    let mut pre = Preprocessor::new(&package, (1920, 1080), (848, 480)).unwrap();
    let mut policy = TractBackend::load(&package, 1).unwrap();
    let scene = Scene::new(Synthetic::default());
    let mut camera = SyntheticCamera::new(scene.clone(), 1920, 1080, 30, Pacing::Max);
    let mut depth = SyntheticDepth::new(scene, 848, 480, 30, Pacing::Max);
    let mut rgb_frame = vec![0u8; camera.info().frame_bytes()];
    let mut depth_frame = vec![0u8; depth.info().frame_bytes()];

    // The helper that takes half the rows counts its allocations as role 2.
    let mut helper = RgbHelper::spawn(1920 * 3, || set_role(HELPER_ROLE)).unwrap();
    let mut frames = 0u32;
    let mut step = |pre: &mut Preprocessor, policy: &mut TractBackend| -> (u64, u64) {
        camera.next_frame(Some(&mut rgb_frame)).unwrap();
        depth.next_frame(Some(&mut depth_frame)).unwrap();
        frames += 1;
        let pre_allocs = count(|| {
            let inputs = policy.inputs();
            // Both ways: alone, and with half the rows on the helper.
            if frames.is_multiple_of(2) {
                pre.rgb(&rgb_frame, inputs.rgb).unwrap();
            } else {
                pre.rgb_split(&rgb_frame, inputs.rgb, &mut helper).unwrap();
            }
            pre.depth(&depth_frame, 1.0, inputs.depth).unwrap();
            pre.joints(&[0.0; 6], &[0.0; 6], inputs.joints).unwrap();
        });
        let mut action = [0f32; 7];
        let infer_allocs = count(|| action.copy_from_slice(policy.run().unwrap()));
        assert!(action[6] >= 0.0 && action[6] <= 1.0);
        (pre_allocs, infer_allocs)
    };

    // Warm-up: the resizer sizes its scratch buffers, tract its state.
    for _ in 0..5 {
        step(&mut pre, &mut policy);
    }
    let mut per_run = Vec::new();
    let helper_before = alloc_count(HELPER_ROLE);
    for _ in 0..200 {
        let (pre_allocs, infer_allocs) = step(&mut pre, &mut policy);
        assert_eq!(pre_allocs, 0, "preprocessing allocated in steady state");
        per_run.push(infer_allocs);
    }
    assert_eq!(alloc_count(HELPER_ROLE) - helper_before, 0, "the RGB helper allocated in steady state");
    let first = per_run[0];
    assert!(per_run.iter().all(|&n| n == first), "tract's allocations per run vary: {per_run:?}");
    assert!(first <= TRACT_ALLOCATIONS_PER_RUN_MAX, "tract allocates {first} times per run");
    println!("tract allocations per run (baseline): {first}");
}
