//! The interface every camera and depth source implements.

use crate::frame::{FrameMeta, StreamInfo};

/// Where frames come from. A source is driven by one capture thread.
pub trait FrameSource: Send {
    fn info(&self) -> StreamInfo;

    /// Blocks until the next frame and writes its pixels into `dst` (exactly
    /// `info().frame_bytes()` long). With `None` the frame is consumed and thrown
    /// away — the pool had no free buffer. Must not allocate.
    fn next_frame(&mut self, dst: Option<&mut [u8]>) -> Result<FrameMeta, HalError>;
}

/// Whether a simulated or replayed source keeps real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// One frame per `1/fps` (or the recorded spacing).
    RealTime,
    /// As fast as the consumer takes them: tests and benchmarks.
    Max,
}

#[derive(Debug, thiserror::Error)]
pub enum HalError {
    #[error("camera device {path}: {reason}")]
    Device { path: String, reason: String },
    #[error("{library} could not be loaded: {reason} (install it, or choose another source in the configuration)")]
    Library { library: String, reason: String },
    #[error("{source_name} source is not built in: rebuild with `--features {feature}`")]
    NotBuilt { source_name: &'static str, feature: &'static str },
    #[error("{0}")]
    Unsupported(String),
    #[error("source stopped: {0}")]
    Stopped(String),
    #[error("frame buffer of {got} bytes, source delivers {want}")]
    BufferSize { got: usize, want: usize },
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn info(&self) -> StreamInfo {
        (**self).info()
    }

    fn next_frame(&mut self, dst: Option<&mut [u8]>) -> Result<FrameMeta, HalError> {
        (**self).next_frame(dst)
    }
}
