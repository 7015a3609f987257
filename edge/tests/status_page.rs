//! The whole daemon on the simulator: the status page answers on a free loopback
//! port, `/api/status` carries the contract's fields, `/metrics` parses as
//! Prometheus text, headless Chromium renders `/` with the robot id and mode,
//! and a clean stop leaves finalized segments holding every live channel.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use gantry_config::EdgeConfig;
use gantry_edge::daemon::Daemon;
use gantry_edge::pipeline::Options;
use gantry_edge::record::catalog::Catalog;

const ROBOT: &str = "robot-page-test";

fn config(dir: &std::path::Path) -> EdgeConfig {
    let mut c = EdgeConfig::default();
    c.robot.id = ROBOT.into();
    c.robot.data_dir = dir.display().to_string();
    c.status_http.listen = "127.0.0.1:0".into();
    c.policy.model_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline").into();
    c.policy.baseline_model_dir = c.policy.model_dir.clone();
    // Asked for, but tract reads from host memory: the CPU preprocesses, and the page says so.
    c.policy.preprocess = gantry_config::edge::Preprocess::Cuda;
    c.realtime.lock_memory = false;
    c.health.period_s = 1;
    // No task system here: the work is cut into fixed episodes instead.
    c.recorder.episode_s = 60;
    // Nothing listens here: the page must say the cloud is unreachable.
    c.uplink.broker_url = "mqtt://127.0.0.1:9".into();
    c
}

fn chromium() -> String {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{bin} not found: install Debian's chromium (`apt-get install -y chromium`; .ci/run does) or set CHROMIUM"
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_api_metrics_and_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(tmp.path()), gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    let addr = daemon.status_addr;
    let view = daemon.view();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Running: control ticks, inferences, a health sample with a CPU reading.
    while view.pipeline.ticks.load(Relaxed) < 300
        || view.pipeline.inferences.load(Relaxed) < 20
        || view.recorder.messages.load(Relaxed) < 100
        // A first chunk written out (chunks are flushed every `recorder.flush_s`).
        || view.recorder.bytes_written.load(Relaxed) == 0
        || view.health.lock().unwrap().uptime_s < 2.0
    {
        assert!(Instant::now() < deadline, "the daemon did not get going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (code, _, body) = tokio::task::spawn_blocking(move || common::http_get(addr, "/healthz")).await.unwrap();
    assert_eq!((code, body.trim()), (200, "ok"));

    let (code, ctype, body) = tokio::task::spawn_blocking(move || common::http_get(addr, "/api/status")).await.unwrap();
    assert_eq!(code, 200);
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["robot_id"], ROBOT);
    // The configured policy (the baseline) runs on time, nothing holds the robot.
    assert_eq!(s["mode"], "running", "{s:#}");
    assert_eq!(s["model"]["version"], "baseline-2");
    assert_eq!(s["model"]["backend"], "tract-cpu");
    let failures = s["model"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let f = failures[0].as_str().unwrap();
    assert!(f.contains("preprocessing on the CPU") && f.contains("tract-cpu reads its inputs from host memory"), "{f}");
    assert!(s["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains(f)), "{s:#}");
    assert!(s["uptime_s"].as_f64().unwrap() > 0.0);
    assert!(s["loop"]["rate_hz"].as_f64().unwrap() > 50.0, "{}", s["loop"]);
    assert!(s["loop"]["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(s["loop"]["latency_ms"]["p99"].as_f64().unwrap() >= s["loop"]["latency_ms"]["p50"].as_f64().unwrap());
    assert!(s["loop"]["deadline_misses"].is_u64());
    assert!(s["governor"]["checks"].as_u64().unwrap() >= 300);
    assert!(s["governor"]["rejects"].is_u64());
    let h = &s["health"];
    assert!(h["cpu_pct"].is_number() && h["disk_free_bytes"].as_u64().unwrap() > 0);
    assert!(h["gpu_pct"].is_null(), "no GPU here");
    assert_eq!(h["net_connected"], false);
    assert_eq!(h["motor_temp_c"].as_array().unwrap().len(), 6, "one temperature per joint");
    assert!(h["gripper_pressure_kpa"].is_number());
    assert!(s["recorder"]["bytes_today"].as_u64().unwrap() > 0);
    assert!(s["recorder"]["unsynced_bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["sync"]["connected"], false);
    assert!(s["sync"]["backlog"].is_u64());
    assert!(s["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("Cloud unreachable")));

    let (code, ctype, body) = tokio::task::spawn_blocking(move || common::http_get(addr, "/metrics")).await.unwrap();
    assert_eq!(code, 200);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
    assert!(scrape.samples.len() > 30, "{} samples", scrape.samples.len());
    assert!(scrape.samples.iter().all(|s| s.metric.starts_with("gantry_")), "every name is prefixed gantry_");
    let value = |name: &str| match scrape.samples.iter().find(|s| s.metric == name).map(|s| &s.value) {
        Some(
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v),
        ) => *v,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(value("gantry_up"), 1.0);
    assert!(value("gantry_control_ticks_total") >= 300.0);
    assert!(value("gantry_recorder_bytes_written_total") > 0.0);
    assert!(scrape.docs.contains_key("gantry_governor_rejects_total"), "families carry HELP");

    // Headless Chromium: the rendered DOM (after the page's script has fetched
    // /api/status) and a screenshot.
    let bin = chromium();
    let shot = tmp.path().join("status.png");
    let profile = tmp.path().join("chromium-profile");
    let url = format!("http://{addr}/");
    let common_args = |extra: &[String]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=4000",
            "--window-size=1280,1100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(format!("--user-data-dir={}", profile.display()));
        a.extend_from_slice(extra);
        a.push(url.clone());
        a
    };
    let dom_args = common_args(&["--dump-dom".to_string()]);
    let shot_args = common_args(&[format!("--screenshot={}", shot.display())]);
    let (dom, shot_status) = tokio::task::spawn_blocking({
        let bin = bin.clone();
        move || {
            let dom = Command::new(&bin).args(&dom_args).output().unwrap();
            let shot = Command::new(&bin).args(&shot_args).output().unwrap();
            (dom, shot)
        }
    })
    .await
    .unwrap();
    assert!(dom.status.success(), "chromium --dump-dom: {}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains(&format!("<h1 id=\"robot\">{ROBOT}</h1>")), "robot id on the page:\n{dom}");
    assert!(dom.contains("<b id=\"mode\">running</b>"), "mode on the page:\n{dom}");
    // Rendered on the robot: live figures and the cloud's state in words.
    assert!(dom.contains(" Hz, jitter p99 "), "the page has live figures:\n{dom}");
    assert!(dom.contains("unreachable, keeping data locally"), "the page says the cloud is unreachable");
    assert!(shot_status.status.success(), "chromium --screenshot: {}", String::from_utf8_lossy(&shot_status.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "a rendered page, not a blank one: {} bytes", png.len());
    if let Ok(keep) = std::env::var("GANTRY_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }

    // Clean stop: the open segment is closed and every live channel was recorded.
    let closed = daemon.stop().await.expect("the open segment is closed at shutdown");
    let catalog = Catalog::open(&tmp.path().join("catalog.sqlite")).unwrap();
    let rows = catalog.all().unwrap();
    assert!(rows.iter().any(|r| r.id == closed.id));
    let mut topics = BTreeSet::new();
    for row in &rows {
        let data = std::fs::read(tmp.path().join("segments").join(&row.file)).unwrap();
        for m in mcap::MessageStream::new(&data).unwrap() {
            topics.insert(m.unwrap().channel.topic.clone());
        }
    }
    for t in ["/control", "/joint_states", "/frames", "/health", "/camera/image", "/episodes"] {
        assert!(topics.contains(t), "{t} recorded: {topics:?}");
    }
}
