//! The safety zone on the depth capture thread: `gantry-safety`'s geometry,
//! with the box, the camera's extrinsics and the thresholds from the
//! configuration and the camera's intrinsics from the frame source.

use gantry_config::EdgeConfig;
use gantry_hal::frame::StreamInfo;
pub use gantry_safety::zone::{Pose, Zone, ZoneReading, ZoneSpec};

/// The zone the configuration names, before it meets a camera.
pub fn spec(config: &EdgeConfig) -> ZoneSpec {
    let g = &config.governor;
    ZoneSpec {
        min_m: g.zone_min_m,
        max_m: g.zone_max_m,
        camera: Pose::from_xyz_rpy(g.camera_position_m, g.camera_rpy_rad),
        min_fraction: g.zone_min_fraction,
        invalid_max_fraction: g.zone_invalid_max_fraction,
        link_radius_m: config.arm.link_radius_m,
        filter_margin_m: config.arm.self_filter_margin_m,
    }
}

/// The configured zone as seen by the depth stream `info` (counts the zone's
/// footprint in the image once).
pub fn configured(config: &EdgeConfig, info: &StreamInfo) -> Zone {
    Zone::new(&spec(config), intrinsics(info.intrinsics), info.width as usize, info.height as usize, info.depth_unit_mm)
}

/// A source's intrinsics in the safety kernel's terms.
pub fn intrinsics(k: gantry_hal::frame::Intrinsics) -> gantry_safety::zone::Intrinsics {
    gantry_safety::zone::Intrinsics { fx: k.fx, fy: k.fy, cx: k.cx, cy: k.cy }
}
