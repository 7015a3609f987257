//! Is the workspace clear? Counts the depth pixels whose 3-D point falls inside
//! the safety zone. Runs once per depth frame.

/// A pinhole camera's intrinsics, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Intrinsics {
    pub fx: f32,
    pub fy: f32,
    pub cx: f32,
    pub cy: f32,
}

/// What one depth frame says about the safety zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZoneReading {
    /// Capture time of the depth frame (the robot's monotonic clock); 0 = none yet.
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
    /// A box from `min_mm` to `max_mm` (camera frame); `min_pixels` points
    /// inside it make it occupied.
    pub fn new(min_mm: [f64; 3], max_mm: [f64; 3], min_pixels: u32) -> Self {
        let f = |v: [f64; 3]| [v[0] as f32, v[1] as f32, v[2] as f32];
        Self { min_mm: f(min_mm), max_mm: f(max_mm), min_pixels }
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
        for (v, row) in depth.chunks_exact(width.max(1)).enumerate() {
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
