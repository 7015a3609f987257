//! The synthetic scene is deterministic and shows what the governor must see.

use gantry_config::edge::Synthetic;
use gantry_hal::synthetic::{Scene, SyntheticCamera, SyntheticDepth};
use gantry_hal::{FrameSource, Pacing};

fn depth_frames(config: Synthetic, fps: u32, frames: usize) -> Vec<Vec<u16>> {
    let mut src = SyntheticDepth::new(Scene::new(config), 848, 480, fps, Pacing::Max);
    let mut buf = vec![0u8; src.info().frame_bytes()];
    (0..frames)
        .map(|_| {
            src.next_frame(Some(&mut buf)).unwrap();
            buf.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()
        })
        .collect()
}

#[test]
fn same_seed_same_pixels_other_seed_other_pixels() {
    let a = depth_frames(Synthetic::default(), 30, 3);
    let b = depth_frames(Synthetic::default(), 30, 3);
    assert_eq!(a, b);
    let c = depth_frames(Synthetic { seed: 7, ..Synthetic::default() }, 30, 3);
    assert_ne!(a[0], c[0]);

    let mut cam1 = SyntheticCamera::new(Scene::new(Synthetic::default()), 640, 360, 30, Pacing::Max);
    let mut cam2 = SyntheticCamera::new(Scene::new(Synthetic::default()), 640, 360, 30, Pacing::Max);
    let (mut f1, mut f2) = (vec![0u8; 640 * 360 * 3], vec![0u8; 640 * 360 * 3]);
    for _ in 0..3 {
        let m1 = cam1.next_frame(Some(&mut f1)).unwrap();
        let m2 = cam2.next_frame(Some(&mut f2)).unwrap();
        assert_eq!(m1.seq, m2.seq);
        assert_eq!(f1, f2);
    }
}

#[test]
fn depth_shows_the_table_plane() {
    let frame = &depth_frames(Synthetic::default(), 30, 1)[0];
    // Top-left corner: table, ~2500 mm tilted by ≤ 36 mm, noise ≤ 4 mm.
    let corner = frame[10 * 848 + 10];
    assert!((2500..=2545).contains(&corner), "{corner}");
    let bottom = frame[470 * 848 + 10];
    assert!((2455..=2500).contains(&bottom), "{bottom}");
}

#[test]
fn the_person_enters_and_leaves_on_time() {
    let config = Synthetic { person_event: true, person_enter_s: 1.0, person_leave_s: 2.0, ..Synthetic::default() };
    // 10 fps: frame 9 is t = 0.9 s, frame 10 is t = 1.0 s, frame 20 is t = 2.0 s.
    let frames = depth_frames(config.clone(), 10, 21);
    // The top of the person (1.1 m high at x = 0, y = 0.3 m) seen from the
    // camera 2.5 m above the base, looking down: 1.4 m away, 0.3 m above
    // the image centre (y up in the base frame is up in the image).
    let fy = 424.0 / (87f32.to_radians() / 2.0).tan();
    let v = (240.0 - fy * 0.3 / 1.4).round() as usize;
    let top = |f: &Vec<u16>| f[v * 848 + 424];
    let there = |f: &Vec<u16>| (1399..=1401).contains(&top(f));
    assert!(
        !there(&frames[9]) && there(&frames[10]) && there(&frames[19]) && !there(&frames[20]),
        "{}",
        top(&frames[10])
    );
    let scene = Scene::new(config);
    assert!(!scene.person_present(0.99) && scene.person_present(1.0) && !scene.person_present(2.0));
}

#[test]
fn a_wrong_buffer_size_is_an_error_not_a_panic() {
    let mut src = SyntheticDepth::new(Scene::new(Synthetic::default()), 848, 480, 30, Pacing::Max);
    let mut small = vec![0u8; 100];
    let err = src.next_frame(Some(&mut small)).unwrap_err();
    assert!(err.to_string().contains("100 bytes"), "{err}");
}
