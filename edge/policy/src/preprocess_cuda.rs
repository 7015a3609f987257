//! RGB preprocessing on the GPU (feature `cuda`): the same area-average resize and
//! lookup-table normalisation as [`crate::preprocess`], as one NVRTC-compiled
//! kernel, into a device buffer allocated once (or a session's input tensor).
//! The kernel also leaves the model-resolution RGB8 image the recorder keeps
//! (what [`crate::preprocess::Preprocessor::model_rgb`] holds on the CPU path).
//!
//! libcuda and NVRTC are loaded at run time (cudarc `dynamic-loading`); their
//! presence is checked before any call, because cudarc panics on a missing library.
//! The integer arithmetic matches the CPU path, so both give the same values.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use crate::model::{IoShape, ModelError, ModelPackage};

const KERNEL: &str = r#"
extern "C" __global__ void rgb_area_normalize(
    const unsigned char* src, int w, int h, float* out, unsigned char* small, int ow, int oh, const float* lut)
{
    int ox = blockIdx.x * blockDim.x + threadIdx.x;
    int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= ow || oy >= oh) return;
    int x0 = ox * w / ow, x1 = (ox + 1) * w / ow;
    int y0 = oy * h / oh, y1 = (oy + 1) * h / oh;
    if (x1 <= x0) x1 = x0 + 1;
    if (y1 <= y0) y1 = y0 + 1;
    if (x1 > w) x1 = w;
    if (y1 > h) y1 = h;
    unsigned int r = 0, g = 0, b = 0;
    for (int y = y0; y < y1; ++y) {
        const unsigned char* row = src + ((long long)y * w + x0) * 3;
        for (int x = 0; x < x1 - x0; ++x) {
            r += row[3 * x];
            g += row[3 * x + 1];
            b += row[3 * x + 2];
        }
    }
    unsigned int n = (unsigned int)((y1 - y0) * (x1 - x0));
    int i = oy * ow + ox, plane = ow * oh;
    unsigned int ar = (r + n / 2) / n, ag = (g + n / 2) / n, ab = (b + n / 2) / n;
    out[i] = lut[ar];
    out[plane + i] = lut[256 + ag];
    out[2 * plane + i] = lut[512 + ab];
    small[3 * i] = (unsigned char)ar;
    small[3 * i + 1] = (unsigned char)ag;
    small[3 * i + 2] = (unsigned char)ab;
}
"#;

#[derive(Debug, thiserror::Error)]
pub enum CudaPreprocessError {
    #[error("CUDA preprocessing unavailable: {0} (set policy.preprocess = \"cpu\")")]
    Unavailable(String),
    #[error("CUDA: {0}")]
    Driver(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("frame of {got} bytes, expected {want}")]
    FrameSize { got: usize, want: usize },
    #[error("model-resolution image of {got} bytes, expected {want}")]
    ImageSize { got: usize, want: usize },
}

fn driver(e: impl std::fmt::Debug) -> CudaPreprocessError {
    CudaPreprocessError::Driver(format!("{e:?}"))
}

/// The RGB frame → normalised planar tensor step on the GPU.
pub struct CudaPreprocessor {
    stream: Arc<CudaStream>,
    kernel: CudaFunction,
    frame: CudaSlice<u8>,
    tensor: CudaSlice<f32>,
    /// The model-resolution RGB8 image, interleaved.
    small: CudaSlice<u8>,
    lut: CudaSlice<f32>,
    src: (usize, usize),
    io: IoShape,
}

impl CudaPreprocessor {
    /// Compiles the kernel and allocates the device buffers for `rgb_src` = (width, height) frames.
    pub fn new(model: &ModelPackage, rgb_src: (u32, u32)) -> Result<Self, CudaPreprocessError> {
        // SAFETY: these only try to dlopen the libraries; no CUDA call is made.
        let (cuda, nvrtc) =
            unsafe { (cudarc::driver::sys::is_culib_present(), cudarc::nvrtc::sys::is_culib_present()) };
        if !cuda {
            return Err(CudaPreprocessError::Unavailable("libcuda (the NVIDIA driver) was not found".into()));
        }
        if !nvrtc {
            return Err(CudaPreprocessError::Unavailable("libnvrtc (the CUDA runtime compiler) was not found".into()));
        }
        let io = model.io_shape()?;
        let spec = model.rgb()?;
        let mut lut = vec![0f32; 3 * 256];
        for c in 0..3 {
            for v in 0..256 {
                lut[c * 256 + v] = (v as f32 / 255.0 - spec.mean[c]) / spec.std[c];
            }
        }
        let ctx = CudaContext::new(0).map_err(driver)?;
        let stream = ctx.default_stream();
        let ptx = cudarc::nvrtc::compile_ptx(KERNEL).map_err(driver)?;
        let module = ctx.load_module(ptx).map_err(driver)?;
        let kernel = module.load_function("rgb_area_normalize").map_err(driver)?;
        let (w, h) = (rgb_src.0 as usize, rgb_src.1 as usize);
        let (oh, ow) = io.rgb;
        Ok(Self {
            frame: stream.alloc_zeros::<u8>(w * h * 3).map_err(driver)?,
            tensor: stream.alloc_zeros::<f32>(3 * oh * ow).map_err(driver)?,
            small: stream.alloc_zeros::<u8>(3 * oh * ow).map_err(driver)?,
            lut: stream.clone_htod(&lut).map_err(driver)?,
            stream,
            kernel,
            src: (w, h),
            io,
        })
    }

    /// Uploads `frame`, runs the kernel and leaves the tensor on the device.
    pub fn run(&mut self, frame: &[u8]) -> Result<(), CudaPreprocessError> {
        let cfg = self.upload(frame)?;
        let (w, h, ow, oh) = self.dims();
        let mut launch = self.stream.launch_builder(&self.kernel);
        launch.arg(&self.frame).arg(&w).arg(&h).arg(&mut self.tensor).arg(&mut self.small).arg(&ow).arg(&oh);
        launch.arg(&self.lut);
        // SAFETY: the argument list matches the kernel's signature and every buffer
        // is sized for the launch grid.
        unsafe { launch.launch(cfg) }.map_err(driver)?;
        Ok(())
    }

    /// As [`Self::run`], but the kernel writes the tensor to `out`, device
    /// memory that someone else owns (ONNX Runtime's input tensor, allocated
    /// by its CUDA allocator), and the model-resolution image comes back to
    /// `model_rgb` (the recorder's copy, 3 bytes a pixel). Returns once both
    /// are done: the session that reads `out` runs on a stream of its own.
    ///
    /// # Safety
    /// `out` must be the address of at least [`Self::tensor_len`] `f32` on
    /// device 0, allocated in its primary context (where the CUDA runtime,
    /// and so ONNX Runtime, allocates), and stay allocated during the call.
    pub unsafe fn run_into(&mut self, frame: &[u8], out: u64, model_rgb: &mut [u8]) -> Result<(), CudaPreprocessError> {
        if model_rgb.len() != self.small.len() {
            return Err(CudaPreprocessError::ImageSize { got: model_rgb.len(), want: self.small.len() });
        }
        let cfg = self.upload(frame)?;
        let (w, h, ow, oh) = self.dims();
        let mut launch = self.stream.launch_builder(&self.kernel);
        // A device pointer is passed to a kernel as its 64-bit address.
        launch.arg(&self.frame).arg(&w).arg(&h).arg(&out).arg(&mut self.small).arg(&ow).arg(&oh).arg(&self.lut);
        // SAFETY: as in `run`, with `out` sized and alive as the caller promised.
        unsafe { launch.launch(cfg) }.map_err(driver)?;
        self.stream.memcpy_dtoh(&self.small, model_rgb).map_err(driver)?;
        self.stream.synchronize().map_err(driver)
    }

    /// The tensor's length in `f32`: 3 planes of the model's RGB input.
    pub fn tensor_len(&self) -> usize {
        3 * self.io.rgb.0 * self.io.rgb.1
    }

    /// Checks `frame`'s size, copies it to the device and returns the launch grid.
    fn upload(&mut self, frame: &[u8]) -> Result<LaunchConfig, CudaPreprocessError> {
        let (w, h) = self.src;
        if frame.len() != w * h * 3 {
            return Err(CudaPreprocessError::FrameSize { got: frame.len(), want: w * h * 3 });
        }
        self.stream.memcpy_htod(frame, &mut self.frame).map_err(driver)?;
        let (oh, ow) = self.io.rgb;
        Ok(LaunchConfig {
            grid_dim: (ow.div_ceil(16) as u32, oh.div_ceil(16) as u32, 1),
            block_dim: (16, 16, 1),
            shared_mem_bytes: 0,
        })
    }

    /// The kernel's size arguments: source width and height, output width and height.
    fn dims(&self) -> (i32, i32, i32, i32) {
        let (oh, ow) = self.io.rgb;
        (self.src.0 as i32, self.src.1 as i32, ow as i32, oh as i32)
    }

    /// Copies the tensor and the model-resolution image to the host (for
    /// CPU-side backends) and waits for them.
    pub fn download(&mut self, out: &mut [f32], model_rgb: &mut [u8]) -> Result<(), CudaPreprocessError> {
        self.stream.memcpy_dtoh(&self.tensor, out).map_err(driver)?;
        self.stream.memcpy_dtoh(&self.small, model_rgb).map_err(driver)?;
        self.stream.synchronize().map_err(driver)
    }
}
