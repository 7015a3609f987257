//! Frame → tensor, on the CPU, with no allocation per frame.
//!
//! RGB is downscaled by area averaging (each output pixel is the mean of the
//! source pixels it covers, like OpenCV's `INTER_AREA`), then normalised through a
//! per-channel lookup table into the model's planar `f32` input. Depth is resampled
//! by nearest neighbour, since averaging across an edge invents surfaces that are
//! not there. Every table is built once, for the configured frame sizes.
//!
//! fast_image_resize was tried first: it recomputes its filter coefficients on
//! every call (about 260 allocations per 1080p frame), which the real-time path
//! cannot afford.

use crate::model::{IoShape, ModelError, ModelPackage};
pub use crate::split::RgbHelper;

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("frame of {got} bytes, expected {want} ({what})")]
    FrameSize { got: usize, want: usize, what: &'static str },
    #[error("tensor of {got} values, the model takes {want}")]
    TensorSize { got: usize, want: usize },
}

/// Source index ranges `[start, end)` covered by each output index.
fn spans(src: usize, dst: usize) -> Vec<(usize, usize)> {
    (0..dst)
        .map(|i| {
            let start = i * src / dst;
            let end = ((i + 1) * src / dst).max(start + 1).min(src);
            (start, end)
        })
        .collect()
}

/// The source index nearest to each output index's centre.
fn nearest(src: usize, dst: usize) -> Vec<usize> {
    (0..dst).map(|i| ((2 * i + 1) * src / (2 * dst)).min(src - 1)).collect()
}

/// Per-byte sums over a band of rows (see [`Preprocessor`]'s `band`).
pub(crate) enum Band {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl Band {
    /// Sums for `len` bytes of a row, in `u16` when `narrow`.
    pub(crate) fn new(narrow: bool, len: usize) -> Self {
        if narrow {
            Band::Narrow(vec![0; len])
        } else {
            Band::Wide(vec![0; len])
        }
    }
}

/// `band[i]` = the sum of byte `i` over `rows`.
#[inline(always)]
fn sum_rows<A: Copy + From<u8> + std::ops::AddAssign>(band: &mut [A], mut rows: std::slice::ChunksExact<'_, u8>) {
    if let Some(first) = rows.next() {
        for (a, &v) in band.iter_mut().zip(first) {
            *a = A::from(v);
        }
    }
    for row in rows {
        for (a, &v) in band.iter_mut().zip(row) {
            *a += A::from(v);
        }
    }
}

/// R, G and B summed over interleaved band sums.
#[inline(always)]
fn sum_columns<A: Copy + Into<u32>>(band: &[A]) -> [u32; 3] {
    let mut sum = [0u32; 3];
    for px in band.chunks_exact(3) {
        sum[0] += px[0].into();
        sum[1] += px[1].into();
        sum[2] += px[2].into();
    }
    sum
}

/// The RGB area average for one frame size and model: the spans each output
/// pixel covers and the normalisation table. Built once; read by the
/// inference thread and, for the other half of the rows, by an [`RgbHelper`].
pub(crate) struct Geometry {
    rows: Vec<(usize, usize)>,
    cols: Vec<(usize, usize)>,
    /// `(v / 255 - mean[c]) / std[c]` for every byte value, per channel.
    lut: [[f32; 256]; 3],
    /// Bytes per source row.
    pub(crate) stride: usize,
    ow: usize,
    /// No band is taller than 257 rows: the row sums fit `u16` (257 × 255).
    pub(crate) narrow: bool,
    /// The CPU has AVX2: the AVX2 build runs.
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
}

impl Geometry {
    /// Output rows `first..` (as many as `planes` hold) of the planar tensor,
    /// `planes` being those rows of each channel's plane, and the same rows
    /// of RGB8 in `rgb_u8`. `band` holds at least a source row.
    pub(crate) fn rows_into(
        &self,
        frame: &[u8],
        band: &mut Band,
        first: usize,
        planes: [&mut [f32]; 3],
        rgb_u8: &mut [u8],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is true only where the CPU reported AVX2.
            unsafe { self.rows_avx2(frame, band, first, planes, rgb_u8) };
            return;
        }
        self.rows_portable(frame, band, first, planes, rgb_u8)
    }

    #[inline(always)]
    fn rows_portable(&self, frame: &[u8], band: &mut Band, first: usize, planes: [&mut [f32]; 3], rgb_u8: &mut [u8]) {
        let [p0, p1, p2] = planes;
        let count = p0.len().checked_div(self.ow).unwrap_or(0);
        for (k, &(y0, y1)) in self.rows.iter().skip(first).take(count).enumerate() {
            let rows = frame[y0 * self.stride..y1 * self.stride].chunks_exact(self.stride);
            match band {
                Band::Narrow(band) => sum_rows(band, rows),
                Band::Wide(band) => sum_rows(band, rows),
            }
            for (ox, &(x0, x1)) in self.cols.iter().enumerate() {
                let sum = match band {
                    Band::Narrow(band) => sum_columns(&band[x0 * 3..x1 * 3]),
                    Band::Wide(band) => sum_columns(&band[x0 * 3..x1 * 3]),
                };
                let n = ((y1 - y0) * (x1 - x0)) as u32;
                let i = k * self.ow + ox;
                let mean = sum.map(|s| (s + n / 2) / n);
                rgb_u8[i * 3..i * 3 + 3].copy_from_slice(&mean.map(|m| m as u8));
                p0[i] = self.lut[0][mean[0] as usize];
                p1[i] = self.lut[1][mean[1] as usize];
                p2[i] = self.lut[2][mean[2] as usize];
            }
        }
    }

    /// [`Self::rows_portable`] compiled for AVX2: the row sums, the bulk of
    /// the work, take 32 bytes a step instead of SSE2's 16. The compiler
    /// vectorises the same source; the portable build targets SSE2 only.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_avx2(
        &self,
        frame: &[u8],
        band: &mut Band,
        first: usize,
        planes: [&mut [f32]; 3],
        rgb_u8: &mut [u8],
    ) {
        self.rows_portable(frame, band, first, planes, rgb_u8)
    }
}

/// `out`'s three planes of `plane` values each, from output row `first` on
/// (`ow` values a row).
fn planes_from(out: &mut [f32], plane: usize, first: usize, ow: usize) -> [&mut [f32]; 3] {
    let (p0, rest) = out.split_at_mut(plane);
    let (p1, p2) = rest.split_at_mut(plane);
    [&mut p0[first * ow..], &mut p1[first * ow..], &mut p2[first * ow..]]
}

/// Turns camera, depth and joint readings into the policy's input tensors.
pub struct Preprocessor {
    io: IoShape,
    rgb_src: (usize, usize),
    depth_src: (usize, usize),
    geometry: Geometry,
    /// Per byte of a source row: its sum over the band of rows one output
    /// row covers. Summing whole rows first is a straight, vectorised pass
    /// over the frame at memory speed; the columns are then summed once per
    /// band, over a single row's worth of values. In `u16` (twice the lanes)
    /// when no band is taller than 257 rows (257 × 255 fits), else `u32`.
    band: Band,
    depth_cols: Vec<usize>,
    depth_rows: Vec<usize>,
    depth_scale_mm: f32,
    /// The last frame at the model's resolution, before normalisation:
    /// interleaved RGB8 and depth in the camera's units. What a training
    /// sample records, and what a replay feeds back in.
    rgb_u8: Vec<u8>,
    depth_u16: Vec<u16>,
}

impl Preprocessor {
    /// Tables for RGB frames of `rgb_src` = (width, height) and depth frames of `depth_src`.
    pub fn new(model: &ModelPackage, rgb_src: (u32, u32), depth_src: (u32, u32)) -> Result<Self, ModelError> {
        let io = model.io_shape()?;
        let rgb = model.rgb()?;
        let mut rgb_lut = [[0f32; 256]; 3];
        for (c, lut) in rgb_lut.iter_mut().enumerate() {
            for (v, out) in lut.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - rgb.mean[c]) / rgb.std[c];
            }
        }
        let (rw, rh) = (rgb_src.0 as usize, rgb_src.1 as usize);
        let (dw, dh) = (depth_src.0 as usize, depth_src.1 as usize);
        let (oh, ow) = io.rgb;
        let (odh, odw) = io.depth;
        let rows = spans(rh.max(1), oh);
        let narrow = rows.iter().all(|(y0, y1)| y1 - y0 <= 257);
        let band = Band::new(narrow, rw * 3);
        let geometry = Geometry {
            rows,
            cols: spans(rw.max(1), ow),
            lut: rgb_lut,
            stride: rw * 3,
            ow,
            narrow,
            #[cfg(target_arch = "x86_64")]
            avx2: std::arch::is_x86_feature_detected!("avx2"),
        };
        Ok(Self {
            io,
            rgb_src: (rw, rh),
            depth_src: (dw, dh),
            geometry,
            band,
            depth_cols: nearest(dw.max(1), odw),
            depth_rows: nearest(dh.max(1), odh),
            depth_scale_mm: model.depth()?.scale_mm.unwrap_or(1.0),
            rgb_u8: vec![0; oh * ow * 3],
            depth_u16: vec![0; odh * odw],
        })
    }

    pub fn io(&self) -> IoShape {
        self.io
    }

    /// RGB8 interleaved frame → planar normalised `[3, H, W]`.
    pub fn rgb(&mut self, frame: &[u8], out: &mut [f32]) -> Result<(), PreprocessError> {
        let plane = self.check_rgb(frame, out)?;
        let planes = planes_from(out, plane, 0, self.geometry.ow);
        self.geometry.rows_into(frame, &mut self.band, 0, planes, &mut self.rgb_u8);
        Ok(())
    }

    /// As [`Self::rgb`], the lower half of the rows on `helper`'s thread while
    /// this one does the upper half: twice the memory bandwidth where the
    /// frame comes from memory, as a camera's does. The same result, bit for bit.
    pub fn rgb_split(&mut self, frame: &[u8], out: &mut [f32], helper: &mut RgbHelper) -> Result<(), PreprocessError> {
        let plane = self.check_rgb(frame, out)?;
        let g = &self.geometry;
        if !helper.fits(g) {
            return self.rgb(frame, out);
        }
        let half = self.io.rgb.0 / 2;
        let [p0, p1, p2] = planes_from(out, plane, 0, g.ow);
        let (t0, b0) = p0.split_at_mut(half * g.ow);
        let (t1, b1) = p1.split_at_mut(half * g.ow);
        let (t2, b2) = p2.split_at_mut(half * g.ow);
        let (top_u8, bottom_u8) = self.rgb_u8.split_at_mut(half * g.ow * 3);
        let pending = helper.begin(g, frame, half, [b0, b1, b2], bottom_u8);
        g.rows_into(frame, &mut self.band, 0, [t0, t1, t2], top_u8);
        drop(pending);
        Ok(())
    }

    /// The frame's and the tensor's sizes; the size of one plane.
    fn check_rgb(&self, frame: &[u8], out: &[f32]) -> Result<usize, PreprocessError> {
        let (w, h) = self.rgb_src;
        if frame.len() != w * h * 3 {
            return Err(PreprocessError::FrameSize { got: frame.len(), want: w * h * 3, what: "RGB8" });
        }
        let (oh, ow) = self.io.rgb;
        if out.len() != 3 * oh * ow {
            return Err(PreprocessError::TensorSize { got: out.len(), want: 3 * oh * ow });
        }
        Ok(oh * ow)
    }

    /// Depth frame of little-endian `u16` (`unit_mm` millimetres per unit) →
    /// `[1, H, W]` of `mm / scale_mm` clipped to 0..1; 0 (no reading) stays 0.
    pub fn depth(&mut self, frame: &[u8], unit_mm: f32, out: &mut [f32]) -> Result<(), PreprocessError> {
        let (w, h) = self.depth_src;
        if frame.len() != w * h * 2 {
            return Err(PreprocessError::FrameSize { got: frame.len(), want: w * h * 2, what: "depth u16" });
        }
        let (oh, ow) = self.io.depth;
        if out.len() != oh * ow {
            return Err(PreprocessError::TensorSize { got: out.len(), want: oh * ow });
        }
        let k = unit_mm / self.depth_scale_mm;
        for (oy, &y) in self.depth_rows.iter().enumerate() {
            let row = &frame[y * w * 2..(y + 1) * w * 2];
            for (ox, &x) in self.depth_cols.iter().enumerate() {
                let mm = u16::from_le_bytes([row[2 * x], row[2 * x + 1]]);
                self.depth_u16[oy * ow + ox] = mm;
                out[oy * ow + ox] = (f32::from(mm) * k).min(1.0);
            }
        }
        Ok(())
    }

    /// The last [`Self::rgb`] frame at the model's resolution, RGB8 interleaved.
    pub fn model_rgb(&self) -> &[u8] {
        &self.rgb_u8
    }

    /// Where a preprocessing elsewhere (the GPU's, `crate::preprocess_cuda`)
    /// leaves the frame's model-resolution RGB8 image, for [`Self::model_rgb`]
    /// to give the recorder as if this preprocessor had made it.
    pub fn model_rgb_mut(&mut self) -> &mut [u8] {
        &mut self.rgb_u8
    }

    /// The last [`Self::depth`] frame at the model's resolution, camera units.
    pub fn model_depth(&self) -> &[u16] {
        &self.depth_u16
    }

    /// Model-resolution RGB8 (as [`Self::model_rgb`] gives it) → the model's
    /// tensor: exactly what [`Self::rgb`] computes from the full frame.
    pub fn rgb_from_model_res(&self, rgb: &[u8], out: &mut [f32]) -> Result<(), PreprocessError> {
        let (oh, ow) = self.io.rgb;
        if rgb.len() != oh * ow * 3 || out.len() != 3 * oh * ow {
            return Err(PreprocessError::TensorSize { got: rgb.len(), want: oh * ow * 3 });
        }
        let plane = oh * ow;
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = self.geometry.lut[c][usize::from(px[c])];
            }
        }
        Ok(())
    }

    /// Model-resolution depth (as [`Self::model_depth`] gives it) → the
    /// model's tensor: exactly what [`Self::depth`] computes from the full frame.
    pub fn depth_from_model_res(&self, depth: &[u16], unit_mm: f32, out: &mut [f32]) -> Result<(), PreprocessError> {
        let (oh, ow) = self.io.depth;
        if depth.len() != oh * ow || out.len() != oh * ow {
            return Err(PreprocessError::TensorSize { got: depth.len(), want: oh * ow });
        }
        let k = unit_mm / self.depth_scale_mm;
        for (o, &mm) in out.iter_mut().zip(depth) {
            *o = (f32::from(mm) * k).min(1.0);
        }
        Ok(())
    }

    /// Joint positions then velocities, as the model takes them.
    pub fn joints(&self, positions: &[f32], velocities: &[f32], out: &mut [f32]) -> Result<(), PreprocessError> {
        let j = self.io.joints / 2;
        if out.len() != 2 * j {
            return Err(PreprocessError::TensorSize { got: out.len(), want: 2 * j });
        }
        if positions.len() < j || velocities.len() < j {
            return Err(PreprocessError::TensorSize { got: positions.len().min(velocities.len()), want: j });
        }
        out[..j].copy_from_slice(&positions[..j]);
        out[j..].copy_from_slice(&velocities[..j]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, mut x: u32) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// Two preprocessors of the baseline for 1080p, a helper whose band sums
    /// hold `row_bytes`, and a tensor for each (the split one starts as NaN,
    /// so a value it never writes shows).
    fn split_pair(row_bytes: usize) -> (Preprocessor, Preprocessor, RgbHelper, Vec<f32>, Vec<f32>) {
        let model = ModelPackage::embedded_baseline().unwrap();
        let alone = Preprocessor::new(&model, (1920, 1080), (848, 480)).unwrap();
        let split = Preprocessor::new(&model, (1920, 1080), (848, 480)).unwrap();
        let helper = RgbHelper::spawn(row_bytes, || {}).unwrap();
        let (h, w) = alone.io().rgb;
        (alone, split, helper, vec![0f32; 3 * h * w], vec![f32::NAN; 3 * h * w])
    }

    /// Half the rows on the helper thread make the same bytes and tensor,
    /// bit for bit, frame after frame (every hand-off a fresh job), as the
    /// inference thread alone; and the frames differ, so a stale half shows.
    #[test]
    fn split_rows_agree_with_one_thread_frame_after_frame() {
        let (mut alone, mut split, mut helper, mut a, mut b) = split_pair(1920 * 3);
        let mut previous = Vec::new();
        for seed in 1..=20u32 {
            let frame = noise(1920 * 1080 * 3, seed.wrapping_mul(0x9e37_79b9));
            alone.rgb(&frame, &mut a).unwrap();
            split.rgb_split(&frame, &mut b, &mut helper).unwrap();
            assert_eq!(alone.model_rgb(), split.model_rgb(), "frame {seed}");
            assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()), "frame {seed}");
            assert_ne!(previous, split.model_rgb(), "frame {seed} repeats the one before");
            previous = split.model_rgb().to_vec();
        }
    }

    /// A helper whose band sums are narrower than the frame's rows is not
    /// used: the inference thread does every row, and the result is whole.
    #[test]
    fn a_helper_too_narrow_for_the_frame_is_left_out() {
        let (mut alone, mut split, mut helper, mut a, mut b) = split_pair(640 * 3);
        let frame = noise(1920 * 1080 * 3, 7);
        alone.rgb(&frame, &mut a).unwrap();
        split.rgb_split(&frame, &mut b, &mut helper).unwrap();
        assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    /// The AVX2 build and the portable one make the same bytes and the same
    /// tensor, bit for bit, from a frame with no pattern to hide an indexing slip.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_builds_agree() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("this CPU has no AVX2: only the portable build runs here");
            return;
        }
        let model = ModelPackage::embedded_baseline().unwrap();
        let frame = noise(1920 * 1080 * 3, 0x9e37_79b9);
        let mut simd = Preprocessor::new(&model, (1920, 1080), (848, 480)).unwrap();
        let mut portable = Preprocessor::new(&model, (1920, 1080), (848, 480)).unwrap();
        assert!(simd.geometry.avx2);
        portable.geometry.avx2 = false;
        let (h, w) = simd.io().rgb;
        let (mut a, mut b) = (vec![0f32; 3 * h * w], vec![0f32; 3 * h * w]);
        simd.rgb(&frame, &mut a).unwrap();
        portable.rgb(&frame, &mut b).unwrap();
        assert_eq!(simd.model_rgb(), portable.model_rgb());
        assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()));
        // Not a constant: the random frame averages to different values.
        assert!(simd.model_rgb().iter().any(|&v| v != simd.model_rgb()[0]));
    }
}
