//! Is the workspace clear? Counts the depth pixels whose 3-D point falls inside the
//! configured safety zone. Runs once per depth frame, on the depth capture thread.

use gantry_config::edge::Governor as GovernorConfig;
use gantry_hal::frame::Intrinsics;

/// What one depth frame says about the safety zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZoneReading {
    /// Capture time of the depth frame ([`gantry_hal::clock::monotonic_ns`]); 0 = none yet.
    pub capture_ns: u64,
    pub frame_seq: u64,
    pub occupied_pixels: u32,
    pub clear: bool,
}

/// The zone in the depth camera's frame and the threshold, ready to test pixels.
#[derive(Debug, Clone, Copy)]
pub struct Zone {
    min_mm: [f32; 3],
    max_mm: [f32; 3],
    min_pixels: u32,
}

impl Zone {
    pub fn new(g: &GovernorConfig) -> Self {
        let f = |v: [f64; 3]| [v[0] as f32, v[1] as f32, v[2] as f32];
        Self { min_mm: f(g.zone_min_mm), max_mm: f(g.zone_max_mm), min_pixels: g.zone_min_pixels }
    }

    /// Reads a depth frame (`u16` device units of `unit_mm` millimetres).
    pub fn read(
        &self,
        depth: &[u16],
        width: usize,
        k: Intrinsics,
        unit_mm: f32,
        capture_ns: u64,
        frame_seq: u64,
    ) -> ZoneReading {
        let mut occupied = 0u32;
        let (zmin, zmax) = (self.min_mm[2], self.max_mm[2]);
        for (v, row) in depth.chunks_exact(width).enumerate() {
            let y_per_z = (v as f32 - k.cy) / k.fy;
            for (u, &d) in row.iter().enumerate() {
                let z = f32::from(d) * unit_mm;
                // 0 is "no reading", not "touching the lens".
                if d == 0 || z < zmin || z > zmax {
                    continue;
                }
                let x = (u as f32 - k.cx) / k.fx * z;
                let y = y_per_z * z;
                if x >= self.min_mm[0] && x <= self.max_mm[0] && y >= self.min_mm[1] && y <= self.max_mm[1] {
                    occupied += 1;
                }
            }
        }
        ZoneReading { capture_ns, frame_seq, occupied_pixels: occupied, clear: occupied < self.min_pixels }
    }
}
