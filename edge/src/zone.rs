//! The safety zone on the depth capture thread: `gantry-safety`'s geometry,
//! with the box and threshold from the configuration and the camera's
//! intrinsics from the frame source.

use gantry_config::edge::Governor as GovernorConfig;
pub use gantry_safety::zone::{Zone, ZoneReading};

/// The zone the configuration names.
pub fn configured(g: &GovernorConfig) -> Zone {
    Zone::new(g.zone_min_mm, g.zone_max_mm, g.zone_min_pixels)
}

/// A source's intrinsics in the safety kernel's terms.
pub fn intrinsics(k: gantry_hal::frame::Intrinsics) -> gantry_safety::zone::Intrinsics {
    gantry_safety::zone::Intrinsics { fx: k.fx, fy: k.fy, cx: k.cx, cy: k.cy }
}
