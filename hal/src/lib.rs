//! Gantry's senses: camera and depth sources behind one interface.
//!
//! Frames enter from a [`FrameSource`] (synthetic, V4L2 or RealSense), are written
//! into buffers of a [`FramePool`] allocated once at start-up, and leave through a
//! lock-free [`FrameQueue`] as [`FrameBuf`] handles: the pixels are never copied,
//! and a buffer returns to its pool when the last consumer drops it. When every
//! buffer is held, the [`Capture`] driver drops the new frame and counts it rather
//! than allocate.

pub mod alloc_count;
pub mod capture;
pub mod clock;
pub mod frame;
pub mod open;
#[cfg(feature = "realsense")]
pub mod realsense;
pub mod replay;
pub mod source;
pub mod synthetic;
#[cfg(feature = "v4l")]
pub mod v4l;

pub use capture::{Capture, CaptureStats};
pub use frame::{FrameBuf, FrameMeta, FramePool, FrameQueue, PixelFormat, StreamInfo};
pub use open::{open_camera, open_depth, open_sources};
pub use source::{FrameSource, HalError, Pacing};
