//! V4L2 cameras (feature `v4l`): YUYV or MJPEG capture through memory-mapped
//! driver buffers, converted to RGB8 straight into the pool's buffer.

use v4l::buffer::Type;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture as _;
use v4l::{Device, FourCC};

use crate::clock::monotonic_ns;
use crate::frame::{FrameMeta, Intrinsics, PixelFormat, StreamInfo};
use crate::source::{FrameSource, HalError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Yuyv,
    Mjpeg,
}

pub struct V4lCamera {
    path: String,
    stream: MmapStream<'static>,
    wire: Wire,
    info: StreamInfo,
}

impl V4lCamera {
    /// Opens `path` at `width`×`height`, preferring YUYV (no decode) over MJPEG.
    pub fn open(path: &str, width: u32, height: u32, fps: u32) -> Result<Self, HalError> {
        let err = |reason: String| HalError::Device { path: path.to_owned(), reason };
        let dev = Device::with_path(path).map_err(|e| err(format!("cannot open: {e} (is the camera plugged in?)")))?;
        let offered: Vec<FourCC> = dev
            .enum_formats()
            .map_err(|e| err(format!("cannot list formats: {e}")))?
            .iter()
            .map(|f| f.fourcc)
            .collect();
        let wire = if offered.contains(&FourCC::new(b"YUYV")) {
            Wire::Yuyv
        } else if offered.contains(&FourCC::new(b"MJPG")) {
            Wire::Mjpeg
        } else {
            return Err(err(format!("offers none of YUYV, MJPG (offers {offered:?})")));
        };
        let mut fmt = dev.format().map_err(|e| err(format!("cannot read format: {e}")))?;
        fmt.width = width;
        fmt.height = height;
        fmt.fourcc = FourCC::new(if wire == Wire::Yuyv { b"YUYV" } else { b"MJPG" });
        let fmt = dev.set_format(&fmt).map_err(|e| err(format!("cannot set {width}x{height}: {e}")))?;
        if fmt.width != width || fmt.height != height {
            return Err(err(format!(
                "cannot capture {width}x{height}; the driver offers {}x{}",
                fmt.width, fmt.height
            )));
        }
        dev.set_params(&v4l::video::capture::Parameters::with_fps(fps))
            .map_err(|e| err(format!("cannot set {fps} fps: {e}")))?;
        let stream = MmapStream::with_buffers(&dev, Type::VideoCapture, 4)
            .map_err(|e| err(format!("cannot map capture buffers: {e}")))?;
        let fx = width as f32 / 2.0 / (69f32.to_radians() / 2.0).tan();
        let info = StreamInfo {
            width,
            height,
            format: PixelFormat::Rgb8,
            fps,
            intrinsics: Intrinsics { fx, fy: fx, cx: width as f32 / 2.0, cy: height as f32 / 2.0 },
            depth_unit_mm: 0.0,
        };
        Ok(Self { path: path.to_owned(), stream, wire, info })
    }
}

impl FrameSource for V4lCamera {
    fn info(&self) -> StreamInfo {
        self.info
    }

    fn next_frame(&mut self, dst: Option<&mut [u8]>) -> Result<FrameMeta, HalError> {
        let (data, meta) = self
            .stream
            .next()
            .map_err(|e| HalError::Device { path: self.path.clone(), reason: format!("capture failed: {e}") })?;
        let meta = FrameMeta { seq: u64::from(meta.sequence), capture_ns: monotonic_ns() };
        if let Some(dst) = dst {
            if dst.len() != self.info.frame_bytes() {
                return Err(HalError::BufferSize { got: dst.len(), want: self.info.frame_bytes() });
            }
            match self.wire {
                Wire::Yuyv => yuyv_to_rgb(data, dst),
                // zune-jpeg allocates its scratch per decode; prefer YUYV where the
                // camera offers it (the default) to keep capture allocation-free.
                Wire::Mjpeg => {
                    let mut decoder = zune_jpeg::JpegDecoder::new(data);
                    decoder.decode_into(dst).map_err(|e| HalError::Device {
                        path: self.path.clone(),
                        reason: format!("corrupt MJPEG frame {}: {e:?}", meta.seq),
                    })?;
                }
            }
        }
        Ok(meta)
    }
}

/// YUYV 4:2:2 (BT.601, limited range) to RGB8.
pub fn yuyv_to_rgb(src: &[u8], dst: &mut [u8]) {
    for (yuyv, rgb) in src.chunks_exact(4).zip(dst.chunks_exact_mut(6)) {
        let (y0, u, y1, v) =
            (i32::from(yuyv[0]), i32::from(yuyv[1]) - 128, i32::from(yuyv[2]), i32::from(yuyv[3]) - 128);
        for (k, y) in [y0, y1].into_iter().enumerate() {
            let c = 298 * (y - 16);
            let px = &mut rgb[k * 3..k * 3 + 3];
            px[0] = ((c + 409 * v + 128) >> 8).clamp(0, 255) as u8;
            px[1] = ((c - 100 * u - 208 * v + 128) >> 8).clamp(0, 255) as u8;
            px[2] = ((c + 516 * u + 128) >> 8).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_known_colours() {
        // Black, white, and BT.601 red (Y=81, U=90, V=240).
        let src = [16, 128, 235, 128, 81, 90, 81, 240];
        let mut dst = [0u8; 12];
        yuyv_to_rgb(&src, &mut dst);
        assert_eq!(&dst[..6], &[0, 0, 0, 255, 255, 255]);
        assert!(dst[6] > 250 && dst[7] < 5 && dst[8] < 5, "{:?}", &dst[6..9]);
    }

    #[test]
    fn missing_device_names_the_path() {
        let err = V4lCamera::open("/dev/video-does-not-exist", 1920, 1080, 30).err().unwrap();
        assert!(err.to_string().contains("/dev/video-does-not-exist"), "{err}");
    }
}
