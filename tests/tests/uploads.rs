//! Bulk uploads of recorded segments: resumable through a network that cuts
//! connections at random byte offsets and corrupts a chunk in transit; the
//! cloud stores identical bytes, refuses corrupted chunks and unverifiable
//! segments, and the robot marks a segment synced only after verification.
//! End to end: an operator's "upload now" reaches the robot over MQTT and its
//! finished segments arrive, and reaches it again after it restarts.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use gantry_edge::daemon::Daemon;
use gantry_edge::pipeline::Options;
use gantry_edge::record::catalog::{Catalog, SegmentRow};
use gantry_edge::record::segment::Encoding;
use gantry_edge::record::{Recorder, Settings};
use gantry_edge::upload::{UploadStats, Uploader};
use gantry_sync::Service;
use gantry_tests::{cloud_config, robot_config, wait_for, Fault, FaultProxy};

const ROBOT: &str = "robot-1";
const PASSWORD: &str = "pw-1";

/// Incompressible bytes, reproducible from `seed`.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Records `count` closed segments of about `bytes` each (incompressible images).
fn record_segments(dir: &std::path::Path, count: usize, bytes: u64) -> Vec<SegmentRow> {
    let settings = Settings {
        robot_id: ROBOT.into(),
        data_dir: dir.to_path_buf(),
        segment_max_bytes: bytes,
        segment_max_age: Duration::from_secs(3600),
        quota_bytes: 1 << 40,
        encoding: Encoding { zstd_level: 1, chunk_bytes: 64 * 1024 },
        image_every_n: 1,
        jpeg_quality: 70,
        preroll: Duration::ZERO,
        flush_every: Duration::from_secs(3600),
        episode: Duration::ZERO,
        joints: 6,
        model_version: "test-1".into(),
        sample_hz: 0.0,
        config_toml: String::new(),
        rig: Default::default(),
        batch_max_bytes: 64_000,
        batch_period: Duration::from_secs(5),
        outbox_max_bytes: 100_000_000,
    };
    let (mut rec, _) = Recorder::open(settings).unwrap();
    let mut n = 0u64;
    while rec.catalog().all().unwrap().len() < count {
        n += 1;
        rec.write_image(1_700_000_000_000_000_000 + n * 1_000_000, n, &noise(20_000, n));
    }
    drop(rec);
    Catalog::open(&dir.join("catalog.sqlite")).unwrap().all().unwrap()
}

/// A seeded xorshift: the fault offsets are random but reproducible.
fn offsets(seed: u64, count: usize, below: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % below
        })
        .collect()
}

async fn cloud(tmp: &std::path::Path) -> Service {
    let creds = tmp.join("robots.toml");
    std::fs::write(&creds, format!("[robots]\n{ROBOT} = \"{PASSWORD}\"\n")).unwrap();
    let mut config = cloud_config(&tmp.join("cloud"), "127.0.0.1:0");
    config.broker.credentials_path = creds.display().to_string();
    Service::start(&config).await.unwrap()
}

fn robot_creds(tmp: &std::path::Path) -> String {
    let path = tmp.join("robot-creds.toml");
    std::fs::write(&path, format!("username = \"{ROBOT}\"\npassword = \"{PASSWORD}\"\n")).unwrap();
    path.display().to_string()
}

fn stored_bytes(tmp: &std::path::Path, service: &Service, segment: &str) -> Vec<u8> {
    let row = service.catalog.upload(ROBOT, segment).unwrap().expect("catalogued");
    std::fs::read(tmp.join("cloud/objects").join(&row.object_key)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_and_corrupted_uploads_complete_with_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let robot_dir = tmp.path().join("robot");
    let segments = record_segments(&robot_dir, 3, 600_000);
    assert_eq!(segments.len(), 3);
    let service = cloud(tmp.path()).await;

    // Each new connection meets the next fault: cuts at random offsets within
    // its first ~2 chunks, then one flipped byte inside a chunk (the client
    // keeps that connection, so it comes last; 1.8 MB leave room for them all).
    let seed = 0x5EED_2026_1124;
    let mut faults: Vec<Fault> = offsets(seed, 5, 150_000).into_iter().map(Fault::Cut).collect();
    faults.push(Fault::Flip(offsets(seed ^ 7, 1, 60_000)[0] + 2_000));
    let injected = faults.len() as u64;
    eprintln!("seed {seed:#x}: faults {faults:?}");
    let proxy = FaultProxy::start(service.http_addr, faults).await.unwrap();

    let mut config = robot_config(ROBOT, &robot_dir, "mqtt://127.0.0.1:1");
    config.uplink.http_url = format!("http://{}", proxy.addr);
    config.uplink.upload_chunk_kb = 64;
    config.uplink.credentials_path = robot_creds(tmp.path());
    let stats = Arc::new(UploadStats::default());
    let uploader = Uploader::new(&config, stats.clone()).unwrap();
    let catalog = Catalog::open(&robot_dir.join("catalog.sqlite")).unwrap();

    let mut failures = 0u64;
    for seg in uploader.pending().unwrap() {
        loop {
            match uploader.upload(&seg, 1e9).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    eprintln!("{}: {e:#}", seg.id);
                    assert!(!catalog.get(&seg.id).unwrap().unwrap().synced, "not synced before verification");
                    assert!(failures <= injected, "more failures than faults: something else broke");
                }
            }
        }
        assert!(catalog.get(&seg.id).unwrap().unwrap().synced, "synced after verification");
        let local = std::fs::read(seg.path(&robot_dir)).unwrap();
        assert_eq!(stored_bytes(tmp.path(), &service, &seg.id), local, "{}: identical bytes", seg.id);
        // Its "images" are noise, not JPEGs: stored, and flagged.
        let row = service.catalog.upload(ROBOT, &seg.id).unwrap().unwrap();
        assert!(row.flags.iter().any(|f| f == "video_corrupted"), "{:?}", row.flags);
    }
    // A cut between two requests may be retried by the HTTP client on its own
    // (the request was never sent), so some faults cost no failure; none costs two.
    assert!((1..=injected).contains(&failures), "{failures} failures for {injected} faults");
    assert!(proxy.connections.load(Relaxed) >= injected, "every fault met a connection");
    assert_eq!(service.uploads.stats.chunks_refused.load(Relaxed), 1, "the corrupted chunk was refused");
    assert_eq!(service.uploads.stats.completed.load(Relaxed), 3);
    assert!(uploader.pending().unwrap().is_empty());

    // A data team lists the recordings (two pages) and fetches each: the
    // robot's bytes, with the SHA-256 the listing gave.
    let http = reqwest::Client::new();
    let base = format!("http://{}", service.http_addr);
    let mut listed = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let page: serde_json::Value = http
            .get(format!("{base}/api/recordings?since={cursor}&limit=2"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = page["recordings"].as_array().unwrap().clone();
        if rows.is_empty() {
            break;
        }
        cursor = page["next_cursor"].as_str().unwrap().to_string();
        listed.extend(rows);
    }
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, segments.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), "oldest first, each once");
    for (r, seg) in listed.iter().zip(&segments) {
        assert_eq!(r["sha256"], seg.sha256);
        let got = http.get(format!("{base}{}", r["url"].as_str().unwrap())).send().await.unwrap();
        assert_eq!(got.headers()["x-gantry-sha256"].to_str().unwrap(), seg.sha256);
        let bytes = got.bytes().await.unwrap();
        assert_eq!(gantry_config::wire::sha256_hex(&bytes), seg.sha256, "{}", seg.id);
    }
    let missing = http.get(format!("{base}/api/recordings/no-such-segment")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_fails_verification_stays_unsynced() {
    let tmp = tempfile::tempdir().unwrap();
    let robot_dir = tmp.path().join("robot");
    let seg = record_segments(&robot_dir, 1, 150_000).remove(0);
    let service = cloud(tmp.path()).await;
    let mut config = robot_config(ROBOT, &robot_dir, "mqtt://127.0.0.1:1");
    config.uplink.http_url = format!("http://{}", service.http_addr);
    config.uplink.upload_chunk_kb = 64;
    config.uplink.credentials_path = robot_creds(tmp.path());
    let uploader = Uploader::new(&config, Arc::new(UploadStats::default())).unwrap();
    let catalog = Catalog::open(&robot_dir.join("catalog.sqlite")).unwrap();

    // The file changed on disk after it was catalogued: the cloud's SHA-256 disagrees.
    let wrong = SegmentRow { sha256: "0".repeat(64), ..seg.clone() };
    let e = uploader.upload(&wrong, 1e9).await.unwrap_err();
    assert!(format!("{e:#}").contains("verification"), "{e:#}");
    assert!(!catalog.get(&seg.id).unwrap().unwrap().synced);
    assert_eq!(service.uploads.stats.verification_failures.load(Relaxed), 1);
    assert!(service.catalog.upload(ROBOT, &seg.id).unwrap().is_none(), "nothing stored");

    // Corrupted chunk, sent directly: refused, and the upload does not advance.
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/uploads/{ROBOT}/{}", service.http_addr, seg.id);
    let r = http
        .put(format!("{url}?offset=0"))
        .basic_auth(ROBOT, Some(PASSWORD))
        .header("x-gantry-chunk-sha256", "0".repeat(64))
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: serde_json::Value =
        http.get(&url).basic_auth(ROBOT, Some(PASSWORD)).send().await.unwrap().json().await.unwrap();
    assert_eq!(p["offset"], 0);
    // Another robot's login, or none, is refused.
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&url).basic_auth("robot-2", Some(PASSWORD)).send().await.unwrap().status(), 401);

    uploader.upload(&seg, 1e9).await.unwrap();
    assert!(catalog.get(&seg.id).unwrap().unwrap().synced);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_now_reaches_the_robot_and_its_segments_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cloud_cfg = cloud_config(&tmp.path().join("cloud"), "127.0.0.1:0");
    cloud_cfg.uploads.window_hours = 1;
    let service = Service::start(&cloud_cfg).await.unwrap();
    let robot_dir = tmp.path().join("robot");
    let mut config = robot_config(ROBOT, &robot_dir, &format!("mqtt://{}", service.mqtt_addr.unwrap()));
    config.uplink.http_url = format!("http://{}", service.http_addr);
    config.recorder.segment_max_s = 2;
    let robot = Daemon::start(&config, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    let view = robot.view();

    // The cloud learns of the robot and assigns it a window; Sunday night is not now.
    let http = reqwest::Client::new();
    let robots_url = format!("http://{}/api/robots", service.http_addr);
    wait_for("a window on /api/robots", Duration::from_secs(30), || {
        service.catalog.robots().unwrap().iter().any(|r| r.robot_id == ROBOT)
    })
    .await;
    let mut window = serde_json::Value::Null;
    for _ in 0..300 {
        let list: serde_json::Value = http.get(&robots_url).send().await.unwrap().json().await.unwrap();
        window = list[0]["upload_window"].clone();
        if !window.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(window["start_unix_ns"].as_u64().unwrap() > 0, "window shown: {window}");
    wait_for("two closed segments", Duration::from_secs(30), || {
        Catalog::open(&robot_dir.join("catalog.sqlite")).unwrap().all().unwrap().len() >= 2
    })
    .await;
    let synced =
        || Catalog::open(&robot_dir.join("catalog.sqlite")).unwrap().all().unwrap().iter().filter(|s| s.synced).count();
    let now = gantry_hal::clock::unix_ns();
    let w: gantry_config::wire::UploadWindow = serde_json::from_value(window).unwrap();
    if !w.open(now, false) {
        assert_eq!(synced(), 0, "nothing uploads outside the window");
    }

    let r = http.post(format!("http://{}/api/robots/{ROBOT}/upload-now", service.http_addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_for("segments uploaded", Duration::from_secs(60), || synced() >= 2).await;
    for seg in Catalog::open(&robot_dir.join("catalog.sqlite")).unwrap().all().unwrap().iter().filter(|s| s.synced) {
        let row = service.catalog.upload(ROBOT, &seg.id).unwrap().expect("in the cloud catalog");
        assert_eq!(row.sha256, seg.sha256);
        assert!(!row.flags.iter().any(|f| f == "video_corrupted"), "real thumbnails are whole JPEGs: {:?}", row.flags);
        assert_eq!(row.bytes, seg.bytes);
    }
    assert!(view.uploads.segments.load(Relaxed) >= 2);
    assert!(view.uploads.window_open.load(Relaxed));
    robot.stop().await;

    // Restarted, the robot keeps its broker session, so the broker does not
    // send it the retained window again; the cloud does, the operator's
    // "upload now" included.
    let robot = Daemon::start(&config, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    let view = robot.view();
    wait_for("the window open again after a restart", Duration::from_secs(30), || {
        view.uploads.window_open.load(Relaxed)
    })
    .await;
    robot.stop().await;
    service.stop().await;
}
