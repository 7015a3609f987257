//! Intel RealSense colour and depth-aligned-to-colour (feature `realsense`).
//!
//! librealsense2's C API is loaded at run time with `libloading`, so the build needs
//! neither its headers nor its library; a robot without it gets a clear error. The
//! library is `depth.realsense_library` (default `librealsense2.so.2`); any file
//! exporting the `rs2_*` C API works, including the `pyrealsense2` extension module.
//!
//! One pipeline serves both halves: whichever half needs a new frame waits for the
//! next frameset, aligns depth to colour, and stages both images in buffers
//! allocated at open; each half then copies its own image into the pool's buffer.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::{Arc, Mutex};

use gantry_config::EdgeConfig;
use libloading::Library;

use crate::clock::monotonic_ns;
use crate::frame::{FrameMeta, Intrinsics, PixelFormat, StreamInfo};
use crate::source::{FrameSource, HalError};

type Err = *mut *mut c_void;
type Ptr = *mut c_void;

const RS2_STREAM_DEPTH: c_int = 1;
const RS2_STREAM_COLOR: c_int = 2;
const RS2_FORMAT_Z16: c_int = 1;
const RS2_FORMAT_RGB8: c_int = 5;
const WAIT_TIMEOUT_MS: c_uint = 1000;

#[repr(C)]
#[derive(Default)]
struct Rs2Intrinsics {
    width: c_int,
    height: c_int,
    ppx: f32,
    ppy: f32,
    fx: f32,
    fy: f32,
    model: c_int,
    coeffs: [f32; 5],
}

/// The subset of the C API Gantry uses, resolved once.
struct Api {
    _lib: Library,
    get_api_version: unsafe extern "C" fn(Err) -> c_int,
    get_error_message: unsafe extern "C" fn(*const c_void) -> *const c_char,
    free_error: unsafe extern "C" fn(Ptr),
    create_context: unsafe extern "C" fn(c_int, Err) -> Ptr,
    query_devices: unsafe extern "C" fn(Ptr, Err) -> Ptr,
    get_device_count: unsafe extern "C" fn(Ptr, Err) -> c_int,
    delete_device_list: unsafe extern "C" fn(Ptr),
    create_pipeline: unsafe extern "C" fn(Ptr, Err) -> Ptr,
    create_config: unsafe extern "C" fn(Err) -> Ptr,
    config_enable_stream: unsafe extern "C" fn(Ptr, c_int, c_int, c_int, c_int, c_int, c_int, Err),
    pipeline_start_with_config: unsafe extern "C" fn(Ptr, Ptr, Err) -> Ptr,
    pipeline_wait_for_frames: unsafe extern "C" fn(Ptr, c_uint, Err) -> Ptr,
    pipeline_stop: unsafe extern "C" fn(Ptr, Err),
    create_align: unsafe extern "C" fn(c_int, Err) -> Ptr,
    create_frame_queue: unsafe extern "C" fn(c_int, Err) -> Ptr,
    start_processing_queue: unsafe extern "C" fn(Ptr, Ptr, Err),
    process_frame: unsafe extern "C" fn(Ptr, Ptr, Err),
    wait_for_frame: unsafe extern "C" fn(Ptr, c_uint, Err) -> Ptr,
    embedded_frames_count: unsafe extern "C" fn(Ptr, Err) -> c_int,
    extract_frame: unsafe extern "C" fn(Ptr, c_int, Err) -> Ptr,
    get_frame_stream_profile: unsafe extern "C" fn(Ptr, Err) -> Ptr,
    get_stream_profile_data: unsafe extern "C" fn(Ptr, *mut c_int, *mut c_int, *mut c_int, *mut c_int, *mut c_int, Err),
    get_video_stream_intrinsics: unsafe extern "C" fn(Ptr, *mut Rs2Intrinsics, Err),
    get_frame_data: unsafe extern "C" fn(Ptr, Err) -> *const c_void,
    get_frame_data_size: unsafe extern "C" fn(Ptr, Err) -> c_int,
    get_frame_number: unsafe extern "C" fn(Ptr, Err) -> u64,
    release_frame: unsafe extern "C" fn(Ptr),
}

impl Api {
    fn load(path: &str) -> Result<Self, HalError> {
        let lib_err = |reason: String| HalError::Library { library: path.to_owned(), reason };
        // SAFETY: loading runs the library's initialisers; librealsense2 has no
        // unusual ones. The symbols are typed from its C header (rs.h, API 2.x).
        unsafe {
            let lib = Library::new(path).map_err(|e| lib_err(error_chain(&e)))?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get(concat!($name, "\0").as_bytes()).map_err(|e| lib_err(format!("missing {}: {e}", $name)))?
                };
            }
            Ok(Self {
                get_api_version: sym!("rs2_get_api_version"),
                get_error_message: sym!("rs2_get_error_message"),
                free_error: sym!("rs2_free_error"),
                create_context: sym!("rs2_create_context"),
                query_devices: sym!("rs2_query_devices"),
                get_device_count: sym!("rs2_get_device_count"),
                delete_device_list: sym!("rs2_delete_device_list"),
                create_pipeline: sym!("rs2_create_pipeline"),
                create_config: sym!("rs2_create_config"),
                config_enable_stream: sym!("rs2_config_enable_stream"),
                pipeline_start_with_config: sym!("rs2_pipeline_start_with_config"),
                pipeline_wait_for_frames: sym!("rs2_pipeline_wait_for_frames"),
                pipeline_stop: sym!("rs2_pipeline_stop"),
                create_align: sym!("rs2_create_align"),
                create_frame_queue: sym!("rs2_create_frame_queue"),
                start_processing_queue: sym!("rs2_start_processing_queue"),
                process_frame: sym!("rs2_process_frame"),
                wait_for_frame: sym!("rs2_wait_for_frame"),
                embedded_frames_count: sym!("rs2_embedded_frames_count"),
                extract_frame: sym!("rs2_extract_frame"),
                get_frame_stream_profile: sym!("rs2_get_frame_stream_profile"),
                get_stream_profile_data: sym!("rs2_get_stream_profile_data"),
                get_video_stream_intrinsics: sym!("rs2_get_video_stream_intrinsics"),
                get_frame_data: sym!("rs2_get_frame_data"),
                get_frame_data_size: sym!("rs2_get_frame_data_size"),
                get_frame_number: sym!("rs2_get_frame_number"),
                release_frame: sym!("rs2_release_frame"),
                _lib: lib,
            })
        }
    }

    /// Runs one C call with an error out-parameter and turns a set error into text.
    fn call<T>(&self, what: &str, f: impl FnOnce(Err) -> T) -> Result<T, HalError> {
        let mut e: Ptr = std::ptr::null_mut();
        let out = f(&mut e);
        if e.is_null() {
            return Ok(out);
        }
        // SAFETY: e is an rs2_error the library just returned; we free it once.
        let msg = unsafe { CStr::from_ptr((self.get_error_message)(e)).to_string_lossy().into_owned() };
        unsafe { (self.free_error)(e) };
        Err(HalError::Device { path: "realsense".into(), reason: format!("{what}: {msg}") })
    }
}

/// libloading keeps dlerror's text in the error's source.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

struct Staged {
    color: Box<[u8]>,
    depth: Box<[u8]>,
    seq: u64,
    capture_ns: u64,
    color_fresh: bool,
    depth_fresh: bool,
}

struct Device {
    api: Api,
    pipeline: Ptr,
    align: Ptr,
    aligned: Ptr,
    color_info: StreamInfo,
    depth_info: StreamInfo,
    staged: Mutex<Staged>,
}

// SAFETY: librealsense2's pipeline and processing blocks are thread-safe; the
// staging buffers are behind the mutex.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.api.call("stop", |e| unsafe { (self.api.pipeline_stop)(self.pipeline, e) });
    }
}

/// An opened RealSense camera; split it into its colour and depth sources.
pub struct RealSense {
    device: Arc<Device>,
}

impl RealSense {
    pub fn open(config: &EdgeConfig) -> Result<Self, HalError> {
        let api = Api::load(&config.depth.realsense_library)?;
        let cam = &config.camera;
        let depth = &config.depth;
        // SAFETY (all calls below): C API calls on handles the library gave us,
        // with out-parameters that live across the call.
        unsafe {
            let version = api.call("api version", |e| (api.get_api_version)(e))?;
            let ctx = api.call("create context", |e| (api.create_context)(version, e))?;
            let list = api.call("query devices", |e| (api.query_devices)(ctx, e))?;
            let count = api.call("count devices", |e| (api.get_device_count)(list, e))?;
            (api.delete_device_list)(list);
            if count == 0 {
                return Err(HalError::Device {
                    path: "realsense".into(),
                    reason: "no RealSense device connected (check the USB 3 cable and udev rules)".into(),
                });
            }
            let pipeline = api.call("create pipeline", |e| (api.create_pipeline)(ctx, e))?;
            let rs_config = api.call("create config", |e| (api.create_config)(e))?;
            let (cw, ch, cf) = (cam.width as c_int, cam.height as c_int, cam.fps as c_int);
            api.call("enable colour", |e| {
                (api.config_enable_stream)(rs_config, RS2_STREAM_COLOR, 0, cw, ch, RS2_FORMAT_RGB8, cf, e)
            })?;
            let (dw, dh, df) = (depth.width as c_int, depth.height as c_int, depth.fps as c_int);
            api.call("enable depth", |e| {
                (api.config_enable_stream)(rs_config, RS2_STREAM_DEPTH, 0, dw, dh, RS2_FORMAT_Z16, df, e)
            })?;
            api.call("start pipeline", |e| (api.pipeline_start_with_config)(pipeline, rs_config, e))?;
            let align = api.call("create align", |e| (api.create_align)(RS2_STREAM_COLOR, e))?;
            let aligned = api.call("create queue", |e| (api.create_frame_queue)(1, e))?;
            api.call("start align", |e| (api.start_processing_queue)(align, aligned, e))?;

            // Aligned depth has the colour stream's geometry and intrinsics.
            let color_info = StreamInfo {
                width: cam.width,
                height: cam.height,
                format: PixelFormat::Rgb8,
                fps: cam.fps,
                intrinsics: Intrinsics { fx: 0.0, fy: 0.0, cx: 0.0, cy: 0.0 },
                depth_unit_mm: 0.0,
            };
            let depth_info =
                StreamInfo { format: PixelFormat::Depth16, depth_unit_mm: depth.unit_mm as f32, ..color_info };
            let mut device = Device {
                staged: Mutex::new(Staged {
                    color: vec![0; color_info.frame_bytes()].into_boxed_slice(),
                    depth: vec![0; depth_info.frame_bytes()].into_boxed_slice(),
                    seq: 0,
                    capture_ns: 0,
                    color_fresh: false,
                    depth_fresh: false,
                }),
                api,
                pipeline,
                align,
                aligned,
                color_info,
                depth_info,
            };
            let intrinsics = device.first_frameset()?;
            device.color_info.intrinsics = intrinsics;
            device.depth_info.intrinsics = intrinsics;
            Ok(Self { device: Arc::new(device) })
        }
    }

    pub fn color(&self) -> RealSenseHalf {
        RealSenseHalf { device: self.device.clone(), depth: false }
    }

    pub fn depth(&self) -> RealSenseHalf {
        RealSenseHalf { device: self.device.clone(), depth: true }
    }
}

impl Device {
    /// Pulls one frameset to learn the colour intrinsics and fill the staging buffers.
    fn first_frameset(&self) -> Result<Intrinsics, HalError> {
        let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        let mut intr = Rs2Intrinsics::default();
        // SAFETY: as in `open`.
        unsafe {
            let profile = self.pull(&mut staged, true)?;
            self.api.call("intrinsics", |e| (self.api.get_video_stream_intrinsics)(profile, &mut intr, e))?;
        }
        Ok(Intrinsics { fx: intr.fx, fy: intr.fy, cx: intr.ppx, cy: intr.ppy })
    }

    /// Waits for a frameset, aligns it and copies both images into `staged`.
    /// Returns the colour stream profile (valid while the library lives).
    unsafe fn pull(&self, staged: &mut Staged, want_profile: bool) -> Result<Ptr, HalError> {
        let api = &self.api;
        unsafe {
            let frames =
                api.call("wait for frames", |e| (api.pipeline_wait_for_frames)(self.pipeline, WAIT_TIMEOUT_MS, e))?;
            api.call("align", |e| (api.process_frame)(self.align, frames, e))?;
            let set = api.call("aligned frames", |e| (api.wait_for_frame)(self.aligned, WAIT_TIMEOUT_MS, e))?;
            let n = api.call("frame count", |e| (api.embedded_frames_count)(set, e))?;
            let mut profile = std::ptr::null_mut();
            for i in 0..n {
                let f = api.call("extract", |e| (api.extract_frame)(set, i, e))?;
                let p = api.call("profile", |e| (api.get_frame_stream_profile)(f, e))?;
                let (mut stream, mut format, mut index, mut uid, mut fps) = (0, 0, 0, 0, 0);
                api.call("profile data", |e| {
                    (api.get_stream_profile_data)(p, &mut stream, &mut format, &mut index, &mut uid, &mut fps, e)
                })?;
                let data = api.call("data", |e| (api.get_frame_data)(f, e))? as *const u8;
                let size = api.call("size", |e| (api.get_frame_data_size)(f, e))? as usize;
                let src = std::slice::from_raw_parts(data, size);
                let dst = if stream == RS2_STREAM_COLOR { &mut staged.color } else { &mut staged.depth };
                let len = dst.len().min(src.len());
                dst[..len].copy_from_slice(&src[..len]);
                if stream == RS2_STREAM_COLOR {
                    staged.seq = api.call("frame number", |e| (api.get_frame_number)(f, e))?;
                    if want_profile {
                        profile = p;
                    }
                }
                (api.release_frame)(f);
            }
            (api.release_frame)(set);
            staged.capture_ns = monotonic_ns();
            staged.color_fresh = true;
            staged.depth_fresh = true;
            Ok(profile)
        }
    }
}

/// The colour or the aligned-depth stream of one [`RealSense`].
pub struct RealSenseHalf {
    device: Arc<Device>,
    depth: bool,
}

impl FrameSource for RealSenseHalf {
    fn info(&self) -> StreamInfo {
        if self.depth {
            self.device.depth_info
        } else {
            self.device.color_info
        }
    }

    fn next_frame(&mut self, dst: Option<&mut [u8]>) -> Result<FrameMeta, HalError> {
        // Both halves wait for the same frameset, so holding the lock while one
        // of them waits for the device costs the other nothing.
        let mut staged = self.device.staged.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = if self.depth { staged.depth_fresh } else { staged.color_fresh };
        if !fresh {
            // SAFETY: the device outlives this call (Arc); staging is locked.
            unsafe { self.device.pull(&mut staged, false)? };
        }
        let staged = &mut *staged;
        let (src, flag) = if self.depth {
            (&staged.depth, &mut staged.depth_fresh)
        } else {
            (&staged.color, &mut staged.color_fresh)
        };
        *flag = false;
        if let Some(dst) = dst {
            if dst.len() != src.len() {
                return Err(HalError::BufferSize { got: dst.len(), want: src.len() });
            }
            dst.copy_from_slice(src);
        }
        Ok(FrameMeta { seq: staged.seq, capture_ns: staged.capture_ns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_a_clear_error() {
        let mut config = EdgeConfig::default();
        config.depth.realsense_library = "/nonexistent/librealsense2.so.2".into();
        let err = RealSense::open(&config).err().expect("opened without a library");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/librealsense2.so.2") && msg.contains("could not be loaded"), "{msg}");
    }

    /// With a real librealsense2 (REALSENSE_LIBRARY=path) and no camera attached,
    /// opening reports the missing device rather than failing to load.
    #[test]
    fn real_library_without_a_camera_reports_no_device() {
        let Ok(path) = std::env::var("REALSENSE_LIBRARY") else {
            return;
        };
        let mut config = EdgeConfig::default();
        config.depth.realsense_library = path;
        let err = RealSense::open(&config).err().expect("no camera is attached");
        assert!(err.to_string().contains("no RealSense device connected"), "{err}");
    }
}
