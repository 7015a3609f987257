//! The A/B test decided on task outcomes, on a simulated fleet: ten robots
//! speaking the protocol, the model each runs set by cloud sync's retained
//! assignments, tasks from the task API.
//!
//! 1. Candidate `cand-2` misses six grasps in ten on `pick` and does `place`
//!    as well as production: the fleet rule rolls it back (every robot returns
//!    to production), and the incident log says why with the numbers.
//! 2. Candidate `cand-3`, as good as production: promoted, and every robot
//!    ends on it.
//!
//! The registry keeps the metrics each model was published with (from its
//! manifest); `/api/fleet` shows them beside the model's live success.

use std::sync::Arc;
use std::time::Duration;

use gantry_config::package;
use gantry_sync::Service;
use gantry_tests::protocol_robot::{Behaviour, Knobs, ProtocolRobot};
use gantry_tests::{cloud_config, wait_for};

const LIMIT: Duration = Duration::from_secs(120);

/// A package of the baseline network under `version`, with an evaluation in
/// its manifest.
fn package_as(dir: &std::path::Path, version: &str, pick_accuracy: f64) -> Vec<u8> {
    let baseline = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline"));
    let out = dir.join(version);
    std::fs::create_dir_all(&out).unwrap();
    let manifest = std::fs::read_to_string(baseline.join("manifest.toml")).unwrap();
    let manifest = format!(
        "{}\n[metrics]\npick_accuracy = {pick_accuracy}\nplace_accuracy = 0.99\n",
        manifest.replace("\"baseline-2\"", &format!("\"{version}\""))
    );
    std::fs::write(out.join("manifest.toml"), manifest).unwrap();
    std::fs::copy(baseline.join("model.onnx"), out.join("model.onnx")).unwrap();
    package::pack(&out, &package::generate_signing_key().unwrap()).unwrap()
}

/// Submits pick and place tasks (alternating), keeping at most 20 open, until
/// `done` says so.
async fn feed(service: &Service, tag: &str, done: impl Fn() -> bool) {
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/tasks", service.http_addr);
    let deadline = std::time::Instant::now() + LIMIT;
    let mut n = 0u64;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "no verdict on {tag} after {n} tasks");
        if service.task_service.catalog().open_tasks().unwrap().len() < 20 {
            let kind = if n.is_multiple_of(2) { "pick" } else { "place" };
            let body = serde_json::json!({"id": format!("{tag}-{kind}-{n}"), "kind": kind});
            assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 201);
            n += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn logged(service: &Service, kind: &str, subject: &str) -> Option<gantry_sync::ops::Entry> {
    service.journal.entries(0, 10_000).unwrap().into_iter().find(|e| e.kind == kind && e.subject == subject)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_worse_on_picks_is_rolled_back_and_an_equal_one_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cloud_config(&dir.path().join("cloud"), "127.0.0.1:0");
    config.tasks.max_attempts = 1;
    config.rollout.min_attempts = 30;
    config.rollout.min_attempts_per_kind = 10;
    config.rollout.margin = 0.1;
    let service = Service::start(&config).await.unwrap();
    let mqtt = service.mqtt_addr.unwrap();

    // cand-2 misses the grasp on 6 picks in 10; everything else succeeds.
    let behaviour: Behaviour = Arc::new(|order, model| {
        let n: u64 = order.task_id.rsplit('-').next().and_then(|v| v.parse().ok()).unwrap_or(0);
        if model == "cand-2" && order.kind == "pick" && (n / 2) % 10 < 6 {
            (false, "task_failed")
        } else {
            (true, "")
        }
    });
    let robots: Vec<ProtocolRobot> = (0..10)
        .map(|i| {
            let knobs = Knobs { work: Duration::from_millis(50), ..Knobs::default() };
            ProtocolRobot::start(&format!("ab-{i}"), mqtt, "prod-1", knobs, behaviour.clone())
        })
        .collect();
    wait_for("ten robots known", LIMIT, || service.catalog.robots().unwrap().len() == 10).await;

    let packages = dir.path().join("packages");
    for (version, acc) in [("prod-1", 0.97), ("cand-2", 0.98), ("cand-3", 0.97)] {
        service
            .registry
            .publish_archive(package_as(&packages, version, acc), None, serde_json::Value::Null, "", "ci")
            .await
            .unwrap();
    }
    service.registry.promote("prod-1", "ci", "").unwrap();
    service.registry.set_candidate("cand-2", 50.0, &[], "ci").unwrap();
    service.assignments.poke();
    let chosen =
        service.registry.plan().unwrap().candidate_set(&(0..10).map(|i| format!("ab-{i}")).collect::<Vec<_>>());
    assert_eq!(chosen.len(), 5);
    wait_for("the candidate's robots on it", LIMIT, || {
        robots.iter().filter(|r| *r.model.lock().unwrap() == "cand-2").count() == 5
    })
    .await;

    // 1. Worse on picks: rolled back by the fleet rule.
    feed(&service, "ab", || logged(&service, "rollout.rolled_back", "cand-2").is_some()).await;
    let why = logged(&service, "rollout.rolled_back", "cand-2").unwrap();
    eprintln!("incident log: {}", why.message);
    assert_eq!(why.who, "gantry-sync");
    assert!(why.message.contains("on pick tasks the candidate cand-2 succeeded"), "{}", why.message);
    assert!(why.message.contains("rollout.max_kind_drop"), "{}", why.message);
    let eval = &why.details["evaluation"]["by_kind"];
    let (cand, prod) = (&eval["pick"][0], &eval["pick"][1]);
    let rate = |t: &serde_json::Value| t["successes"].as_f64().unwrap() / t["attempts"].as_f64().unwrap();
    assert!(cand["attempts"].as_u64().unwrap() >= 10 && prod["attempts"].as_u64().unwrap() >= 10, "{eval}");
    assert!(rate(prod) - rate(cand) > 0.2, "{eval}");
    assert!(
        why.message.contains(&format!("{} of {}", cand["successes"], cand["attempts"])),
        "the numbers: {}",
        why.message
    );
    let plan = service.registry.plan().unwrap();
    assert_eq!((plan.production.as_deref(), plan.candidate.as_deref()), (Some("prod-1"), None));
    wait_for("every robot back on production", LIMIT, || robots.iter().all(|r| *r.model.lock().unwrap() == "prod-1"))
        .await;
    assert!(logged(&service, "model.candidate_ended", "cand-2").is_some());

    // The published evaluation beside the live success.
    let fleet: serde_json::Value =
        reqwest::get(format!("http://{}/api/fleet", service.http_addr)).await.unwrap().json().await.unwrap();
    let line = |v: &str| fleet["model_lines"].as_array().unwrap().iter().find(|m| m["version"] == v).unwrap().clone();
    let (cand, prod) = (line("cand-2"), line("prod-1"));
    assert_eq!(cand["metrics"]["pick_accuracy"], 0.98);
    // Its live success, below what it was published with and below
    // production's over the same test (how far below depends on the mix of
    // picks and places the test happened to run).
    let live = |l: &serde_json::Value| l["success_rate"].as_f64().unwrap();
    assert!(live(&cand) < 0.98 && live(&cand) < live(&prod), "{cand} beside {prod}");

    // 2. As good as production: promoted.
    service.registry.set_candidate("cand-3", 50.0, &[], "ci").unwrap();
    service.assignments.poke();
    feed(&service, "eq", || logged(&service, "rollout.promoted", "cand-3").is_some()).await;
    let why = logged(&service, "rollout.promoted", "cand-3").unwrap();
    eprintln!("incident log: {}", why.message);
    assert!(why.message.contains("not worse overall") && why.message.contains("interval"), "{}", why.message);
    assert_eq!(service.registry.plan().unwrap().production.as_deref(), Some("cand-3"));
    wait_for("every robot on the new production", LIMIT, || {
        robots.iter().all(|r| *r.model.lock().unwrap() == "cand-3")
    })
    .await;
    assert!(logged(&service, "model.promoted", "cand-3").is_some_and(|e| e.who == "gantry-sync"));
    assert!(logged(&service, "model.deployed", "cand-3").is_some());
    drop(robots);
    service.stop().await;
}
