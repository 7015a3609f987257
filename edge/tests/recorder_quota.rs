//! The disk quota on a small quota: synced segments are evicted first; with only
//! unsynced data left the recorder lowers its image policy, then raises the
//! alert, and only at the quota itself evicts unsynced data, counting the loss.

mod common;

use std::sync::atomic::Ordering::Relaxed;

use gantry_edge::record::catalog::SegmentState;
use gantry_edge::record::quota::ImageLevel;
use gantry_edge::record::Recorder;

// Each segment also carries ~18 kB of schemas (header and summary): about
// 4 % of the quota per segment, less than the narrowest band of the plan
// (95–100 %), so every band is seen.
const SEGMENT: u64 = 60_000;
const QUOTA: u64 = 2_000_000;

/// Writes incompressible images until one segment of about `SEGMENT` bytes closes.
fn fill_one_segment(rec: &mut Recorder, next: &mut u64) -> String {
    let before = rec.catalog().all().unwrap().len();
    loop {
        *next += 1;
        rec.write_image(*next * 1_000_000, *next, &common::noise(8_000, *next));
        let rows = rec.catalog().all().unwrap();
        if rows.len() > before {
            return rows.into_iter().max_by_key(|r| r.created_unix_ns).unwrap().id;
        }
    }
}

fn on_disk(rec: &Recorder) -> Vec<(String, bool)> {
    rec.catalog().on_disk().unwrap().into_iter().map(|r| (r.id, r.synced)).collect()
}

#[test]
fn synced_data_goes_first_and_unsynced_data_survives_until_the_last_resort() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut rec, _) = Recorder::open(common::settings(tmp.path(), SEGMENT, QUOTA)).unwrap();
    let stats = rec.stats();
    let mut n = 0;

    // Six segments (~25 %), the odd ones synced.
    let mut ids = Vec::new();
    for k in 0..6 {
        let id = fill_one_segment(&mut rec, &mut n);
        if k % 2 == 1 {
            assert!(rec.catalog().mark_synced(&id).unwrap());
        }
        ids.push(id);
    }
    assert_eq!(on_disk(&rec).len(), 6, "nothing evicted below 90 %");

    // Up to just over 90 %: only synced segments go, oldest first.
    let mut evicted_synced = Vec::new();
    while stats.segments_on_disk.load(Relaxed) >= on_disk(&rec).len() as u64 && evicted_synced.is_empty() {
        let id = fill_one_segment(&mut rec, &mut n);
        ids.push(id);
        let rows = rec.catalog().all().unwrap();
        evicted_synced = rows.iter().filter(|r| r.state == SegmentState::Evicted).map(|r| r.id.clone()).collect();
    }
    let rows = rec.catalog().all().unwrap();
    for r in rows.iter().filter(|r| r.state == SegmentState::Evicted) {
        assert!(r.synced, "{} was evicted while unsynced", r.id);
        assert!(!tmp.path().join("segments").join(&r.file).exists(), "evicted file deleted");
    }
    assert_eq!(evicted_synced[0], ids[1], "the oldest synced segment goes first");
    assert_eq!(stats.lost_unsynced_segments.load(Relaxed), 0);

    // Keep recording without syncing: the image policy drops first, then the
    // alert, and every unsynced segment survives until the quota is reached.
    let mut saw_reduced_before_loss = false;
    let mut saw_alert_before_loss = false;
    loop {
        fill_one_segment(&mut rec, &mut n);
        let lost = stats.lost_unsynced_segments.load(Relaxed);
        if lost == 0 {
            saw_reduced_before_loss |= rec.image_level() >= ImageLevel::Reduced;
            saw_alert_before_loss |= stats.disk_alert.load(Relaxed);
            let synced_left = on_disk(&rec).iter().filter(|(_, s)| *s).count();
            if rec.image_level() > ImageLevel::Normal {
                assert_eq!(synced_left, 0, "images are lowered only when no synced data is left");
            }
        } else {
            assert_eq!(lost, 1, "the last resort evicts as little as it can");
            break;
        }
        assert!(n < 10_000, "the quota never reached its last resort");
    }
    assert!(saw_reduced_before_loss, "the image policy was lowered before any loss");
    assert!(saw_alert_before_loss, "the alert was raised before any loss");
    assert!(stats.disk_alert.load(Relaxed));
    let lost: Vec<_> =
        rec.catalog().all().unwrap().into_iter().filter(|r| r.state == SegmentState::Evicted && !r.synced).collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].id, ids[0], "the oldest unsynced segment is the one lost");
    assert_eq!(stats.lost_unsynced_bytes.load(Relaxed), lost[0].bytes);
    assert!(stats.disk_used_bytes.load(Relaxed) <= QUOTA, "the data directory stays within its quota");

    // Syncing frees space again: back to normal images, alert cleared.
    for (id, _) in on_disk(&rec) {
        rec.catalog().mark_synced(&id).unwrap();
    }
    rec.maintain();
    assert_eq!(rec.image_level(), ImageLevel::Normal);
    assert!(!stats.disk_alert.load(Relaxed));
}
