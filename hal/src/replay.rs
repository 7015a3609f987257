//! The `replay` sources: a recorded segment's model inputs played back as
//! camera and depth frames, on the recorded clock. The frames are the
//! `/model_input/rgb` (`rgb8`) and `/model_input/depth` (`16UC1`) images the
//! recorder kept (training samples and incident windows), at the model's
//! resolution: run through the same model, preprocessing reads them back
//! unchanged. Read whole at opening, so playback allocates nothing.

use std::path::Path;

use gantry_config::records::foxglove::{CameraCalibration, RawImage};
use gantry_config::records::SampleMsg;
use prost::Message as _;

use crate::clock::monotonic_ns;
use crate::frame::{FrameMeta, Intrinsics, PixelFormat, StreamInfo};
use crate::source::{FrameSource, HalError, Pacing};

/// Which of a recording's model inputs to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Rgb,
    Depth,
}

impl Stream {
    fn topic(self) -> &'static str {
        match self {
            Stream::Rgb => "/model_input/rgb",
            Stream::Depth => "/model_input/depth",
        }
    }
}

pub struct ReplaySource {
    info: StreamInfo,
    /// (recorded log time, pixels), in recorded order.
    frames: Vec<(u64, Vec<u8>)>,
    next: usize,
    pacing: Pacing,
    /// Monotonic time of the first frame played.
    start_ns: Option<u64>,
}

fn err(path: &Path, reason: impl std::fmt::Display) -> HalError {
    HalError::Device { path: path.display().to_string(), reason: reason.to_string() }
}

impl ReplaySource {
    pub fn open(path: &Path, stream: Stream, pacing: Pacing) -> Result<Self, HalError> {
        let data = std::fs::read(path).map_err(|e| err(path, e))?;
        let messages = mcap::MessageStream::new(&data).map_err(|e| err(path, format!("not an MCAP file: {e}")))?;
        let (format, encoding) = match stream {
            Stream::Rgb => (PixelFormat::Rgb8, "rgb8"),
            Stream::Depth => (PixelFormat::Depth16, "16UC1"),
        };
        let mut frames = Vec::new();
        let mut size = None;
        let mut calibration: Option<CameraCalibration> = None;
        let mut depth_unit_mm = 1.0f32;
        for m in messages {
            let m = m.map_err(|e| err(path, e))?;
            match m.channel.topic.as_str() {
                t if t == stream.topic() => {
                    let img = RawImage::decode(&m.data[..]).map_err(|e| err(path, e))?;
                    let bytes = img.width as usize * img.height as usize * format.bytes_per_pixel();
                    // One size per stream: a model swapped mid-segment ends the playable part.
                    if img.encoding != encoding
                        || img.data.len() != bytes
                        || *size.get_or_insert((img.width, img.height)) != (img.width, img.height)
                    {
                        continue;
                    }
                    frames.push((m.log_time, img.data));
                }
                "/camera/calibration" if calibration.is_none() => {
                    calibration = CameraCalibration::decode(&m.data[..]).ok();
                }
                "/samples" if stream == Stream::Depth => {
                    if let Ok(s) = SampleMsg::decode(&m.data[..]) {
                        depth_unit_mm = s.depth_unit_mm;
                    }
                }
                _ => {}
            }
        }
        let Some((width, height)) = size else {
            return Err(err(path, format!("holds no {} images to replay", stream.topic())));
        };
        // The camera's pinhole scaled to the model's resolution.
        let intrinsics = match calibration.filter(|c| c.width > 0 && c.height > 0 && c.k.len() == 9) {
            Some(c) => {
                let (sx, sy) = (width as f64 / c.width as f64, height as f64 / c.height as f64);
                Intrinsics {
                    fx: (c.k[0] * sx) as f32,
                    fy: (c.k[4] * sy) as f32,
                    cx: (c.k[2] * sx) as f32,
                    cy: (c.k[5] * sy) as f32,
                }
            }
            None => Intrinsics { fx: width as f32, fy: width as f32, cx: width as f32 / 2.0, cy: height as f32 / 2.0 },
        };
        let span = frames.last().map_or(0, |l| l.0).saturating_sub(frames.first().map_or(0, |f| f.0));
        let fps = ((frames.len() as u64 - 1) * 1_000_000_000).checked_div(span).map_or(30, |f| f.clamp(1, 240) as u32);
        let info = StreamInfo { width, height, format, fps, intrinsics, depth_unit_mm };
        Ok(Self { info, frames, next: 0, pacing, start_ns: None })
    }

    /// Frames the recording holds.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

impl FrameSource for ReplaySource {
    fn info(&self) -> StreamInfo {
        self.info
    }

    /// The next recorded frame, stamped on the recorded clock (the first at
    /// the time it is played); with real-time pacing, not before that time.
    /// After the last: `Stopped`.
    fn next_frame(&mut self, dst: Option<&mut [u8]>) -> Result<FrameMeta, HalError> {
        let Some((t, pixels)) = self.frames.get(self.next) else {
            return Err(HalError::Stopped("the recording has no more frames".into()));
        };
        let first = self.frames.first().map_or(*t, |f| f.0);
        let start = *self.start_ns.get_or_insert_with(monotonic_ns);
        let capture_ns = start + (t - first);
        if self.pacing == Pacing::RealTime {
            let now = monotonic_ns();
            if capture_ns > now {
                std::thread::sleep(std::time::Duration::from_nanos(capture_ns - now));
            }
        }
        if let Some(dst) = dst {
            if dst.len() != pixels.len() {
                return Err(HalError::BufferSize { got: dst.len(), want: pixels.len() });
            }
            dst.copy_from_slice(pixels);
        }
        self.next += 1;
        Ok(FrameMeta { seq: self.next as u64 - 1, capture_ns })
    }
}
