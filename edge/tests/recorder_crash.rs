//! The recorder's process is killed (SIGKILL) mid-write, again and again, and
//! restarted: every segment finalized before a kill is intact (SHA-256 as
//! catalogued), the unfinished one is recovered from its complete chunks or
//! quarantined, and the catalog agrees with the files.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use gantry_edge::record::catalog::SegmentState;
use gantry_edge::record::segment::hash_file;
use gantry_edge::record::Recorder;

const CHILD_ENV: &str = "GANTRY_RECORDER_CRASH_CHILD";

/// The child: records as fast as it can, announcing each finalized segment
/// (`finalized ID SHA256`) and its progress (`progress N`) on stdout.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let (mut rec, _) = Recorder::open(common::settings(Path::new(&dir), 256 * 1024, u64::MAX)).unwrap();
    let stats = rec.stats();
    let mut seen = stats.segments_on_disk.load(std::sync::atomic::Ordering::Relaxed);
    let mut i = 0u64;
    loop {
        rec.record_control(&common::tick(i));
        if i.is_multiple_of(7) {
            rec.write_image(1_000_000_000 + i * 10_000_000, i, &common::noise(4096, i));
        }
        i += 1;
        let now = stats.segments_on_disk.load(std::sync::atomic::Ordering::Relaxed);
        if now != seen {
            seen = now;
            let last = rec.catalog().all().unwrap().into_iter().max_by_key(|r| r.created_unix_ns).unwrap();
            println!("finalized {} {}", last.id, last.sha256);
        }
        if i.is_multiple_of(500) {
            println!("progress {i}");
        }
    }
}

/// Starts the child, lets it finalize `segments` more segments and make
/// `progress` more progress reports, then kills it. Returns what it finalized.
fn run_and_kill(dir: &Path, segments: usize, progress: usize) -> BTreeMap<String, String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut finalized = BTreeMap::new();
    let mut progress_seen = 0;
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("finalized ") {
            let (id, sha) = rest.split_once(' ').unwrap();
            finalized.insert(id.to_string(), sha.to_string());
        } else if line.starts_with("progress ") && finalized.len() >= segments {
            progress_seen += 1;
        }
        if finalized.len() >= segments && progress_seen >= progress {
            break;
        }
    }
    // SIGKILL: no destructor, no flush, no finish.
    child.kill().unwrap();
    child.wait().unwrap();
    finalized
}

#[test]
fn sigkill_mid_write_loses_no_finalized_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut all_finalized = BTreeMap::new();
    let mut recovered = 0;
    let mut quarantined = 0;
    for round in 0..5 {
        let finalized = run_and_kill(dir, 2, round % 3);
        assert!(finalized.len() >= 2, "round {round}: the child finalized {finalized:?}");
        all_finalized.extend(finalized);
        let partials: Vec<String> = std::fs::read_dir(dir.join("segments"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".mcap.partial"))
            .collect();
        assert!(partials.len() <= 1, "one unfinished segment at most: {partials:?}");

        // Restart: recovery runs in open().
        let (rec, report) = Recorder::open(common::settings(dir, 256 * 1024, u64::MAX)).unwrap();
        assert_eq!(
            report.recovered.len() + report.quarantined.len(),
            partials.len(),
            "round {round}: the unfinished segment is recovered or quarantined: {report:?}"
        );
        recovered += report.recovered.len();
        quarantined += report.quarantined.len();
        for row in &report.recovered {
            assert!(row.messages > 0);
            let data = std::fs::read(dir.join("segments").join(&row.file)).unwrap();
            let n = mcap::MessageStream::new(&data).unwrap().inspect(|m| assert!(m.is_ok())).count() as u64;
            assert_eq!(n, row.messages, "a recovered segment is a complete MCAP file");
        }
        check_catalog_agrees(dir, &rec, &all_finalized);
        drop(rec);
    }
    // Chunks are 32 kB and images 4 kB, so a kill after progress reports finds
    // complete chunks in the open segment: most rounds recover data.
    assert!(recovered >= 1, "recovered {recovered}, quarantined {quarantined}");
    println!("5 kills: {} segments finalized, {recovered} recovered, {quarantined} quarantined", all_finalized.len());
}

fn check_catalog_agrees(dir: &Path, rec: &Recorder, finalized: &BTreeMap<String, String>) {
    let rows = rec.catalog().all().unwrap();
    let by_id: BTreeMap<&str, _> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    for (id, sha) in finalized {
        let row = by_id.get(id.as_str()).unwrap_or_else(|| panic!("finalized segment {id} is catalogued"));
        assert_eq!(row.state, SegmentState::Finalized);
        assert_eq!(&row.sha256, sha, "{id}: catalogued hash is the one announced at finalization");
    }
    let segments = dir.join("segments");
    let mut files: Vec<String> = std::fs::read_dir(&segments)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    files.sort();
    assert!(files.iter().all(|f| f.ends_with(".mcap")), "only finished files after start-up: {files:?}");
    for row in &rows {
        let path = segments.join(&row.file);
        match row.state {
            SegmentState::Evicted => assert!(!path.exists()),
            _ => {
                let (bytes, sha) = hash_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!((bytes, &sha), (row.bytes, &row.sha256), "{} matches its catalog row", row.file);
            }
        }
    }
    for f in &files {
        assert!(rows.iter().any(|r| &r.file == f), "{f} is catalogued");
    }
}
