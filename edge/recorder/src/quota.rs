//! The disk quota, as a pure decision over the catalog so it can be tested
//! exhaustively. In order, as the data directory fills:
//!
//! | used (of quota) | action |
//! | --- | --- |
//! | > 90 % | evict the oldest **synced** segments until ≤ 80 % |
//! | > 90 % with nothing synced left | record fewer images (every 4 × N-th, no incident pre-roll) |
//! | > 95 % | record no images; raise the disk alert (status page, health, log) |
//! | ≥ 100 % | last resort: evict the oldest **unsynced** segments until below the quota, counted as lost: as little as possible |
//! | < 80 % | back to the configured image policy; alert cleared |

use super::catalog::{SegmentRow, SegmentState};

/// How many images the recorder keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ImageLevel {
    /// As configured, with full-rate images around incidents.
    Normal = 0,
    /// A quarter of the configured rate, no pre-roll.
    Reduced = 1,
    Off = 2,
}

impl ImageLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageLevel::Normal => "normal",
            ImageLevel::Reduced => "reduced",
            ImageLevel::Off => "off",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Segments to evict, oldest first.
    pub evict: Vec<String>,
    /// How many of those were not synced (data lost for good).
    pub evict_unsynced: usize,
    pub image_level: ImageLevel,
    pub alert: bool,
}

/// Decides what to do with `used` bytes on disk, `segments` the evictable
/// files oldest first (the open segment excluded).
pub fn plan(quota: u64, mut used: u64, segments: &[SegmentRow], level: ImageLevel) -> Plan {
    let pct = |f: f64| (quota as f64 * f) as u64;
    let mut evict = Vec::new();
    let on_disk = |s: &&SegmentRow| s.state != SegmentState::Evicted;
    if used > pct(0.90) {
        for s in segments.iter().filter(on_disk).filter(|s| s.synced) {
            if used <= pct(0.80) {
                break;
            }
            evict.push(s.id.clone());
            used = used.saturating_sub(s.bytes);
        }
    }
    let mut evict_unsynced = 0;
    if used >= quota {
        for s in segments.iter().filter(on_disk).filter(|s| !s.synced) {
            if used < quota {
                break;
            }
            evict.push(s.id.clone());
            evict_unsynced += 1;
            used = used.saturating_sub(s.bytes);
        }
    }
    let (image_level, alert) = if used > pct(0.95) {
        (ImageLevel::Off, true)
    } else if used > pct(0.90) {
        (level.max(ImageLevel::Reduced), level == ImageLevel::Off)
    } else if used < pct(0.80) {
        (ImageLevel::Normal, false)
    } else {
        // Between the marks: keep what was decided last (hysteresis).
        (level, level == ImageLevel::Off)
    };
    Plan { evict, evict_unsynced, image_level, alert }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: &str, bytes: u64, synced: bool) -> SegmentRow {
        SegmentRow {
            id: id.into(),
            file: format!("{id}.mcap"),
            state: SegmentState::Finalized,
            start_unix_ns: 0,
            end_unix_ns: 0,
            bytes,
            sha256: String::new(),
            messages: 1,
            synced,
            created_unix_ns: 0,
        }
    }

    #[test]
    fn synced_segments_go_first_and_only_down_to_the_low_mark() {
        let segs = [seg("a", 10, false), seg("b", 10, true), seg("c", 10, true), seg("d", 10, true)];
        let p = plan(100, 95, &segs, ImageLevel::Normal);
        assert_eq!(p.evict, ["b", "c"]);
        assert_eq!(p.evict_unsynced, 0);
        assert_eq!(p.image_level, ImageLevel::Normal);
        assert!(!p.alert);
    }

    #[test]
    fn unsynced_data_lowers_images_then_alerts_then_is_evicted() {
        let segs = [seg("a", 10, false), seg("b", 10, false)];
        let p = plan(100, 91, &segs, ImageLevel::Normal);
        assert!(p.evict.is_empty());
        assert_eq!((p.image_level, p.alert), (ImageLevel::Reduced, false));
        let p = plan(100, 96, &segs, p.image_level);
        assert!(p.evict.is_empty());
        assert_eq!((p.image_level, p.alert), (ImageLevel::Off, true));
        let p = plan(100, 100, &segs, p.image_level);
        assert_eq!(p.evict, ["a"]);
        assert_eq!(p.evict_unsynced, 1);
        // 90 % after the eviction: still reduced, and the alert holds while images are off.
        assert_eq!((p.image_level, p.alert), (ImageLevel::Off, true));
        let p = plan(100, 70, &segs, p.image_level);
        assert_eq!((p.image_level, p.alert), (ImageLevel::Normal, false));
    }
}
