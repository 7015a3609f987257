//! A/B rollout on a simulated fleet (`gantry-fleet`'s set-up): ten robots, the
//! baseline in production, a candidate to 20 %: exactly the two robots the
//! registry chose run the candidate, the other eight stay on production, and
//! `/api/robots` shows each robot's version.

use std::time::Duration;

use gantry_config::package;
use gantry_tests::{wait_for, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_to_20_percent_runs_on_exactly_the_chosen_robots() {
    let tmp = tempfile::tempdir().unwrap();
    let key = package::generate_signing_key().unwrap();
    let fleet = Fleet::start(&FleetOptions {
        robots: 10,
        data_dir: tmp.path().to_path_buf(),
        fleet_public_key: package::hex(key.verifying_key().as_bytes()),
        light: true,
        probation_s: 1,
        cloud_http: "127.0.0.1:0".into(),
        cloud_mqtt: "127.0.0.1:0".into(),
    })
    .await
    .unwrap();
    let service = &fleet.service;
    let ids: Vec<String> = (0..10).map(|i| format!("robot-{i}")).collect();
    wait_for("all ten robots known to the cloud", Duration::from_secs(60), || {
        service.catalog.robots().unwrap().len() == 10
    })
    .await;

    // Production: the baseline every robot already runs; the candidate: the
    // same network under a new version.
    let packages = tmp.path().join("packages");
    let baseline = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline"));
    let candidate = packages.join("candidate-1");
    std::fs::create_dir_all(&candidate).unwrap();
    let manifest = std::fs::read_to_string(baseline.join("manifest.toml")).unwrap();
    std::fs::write(candidate.join("manifest.toml"), manifest.replace("\"baseline-2\"", "\"candidate-1\"")).unwrap();
    std::fs::copy(baseline.join("model.onnx"), candidate.join("model.onnx")).unwrap();
    let public = key.verifying_key();
    for dir in [baseline, candidate.as_path()] {
        service.registry.publish(dir, &key, Some(&public), serde_json::Value::Null, "", "test").await.unwrap();
    }
    service.registry.promote("baseline-2", "test", "").unwrap();
    service.registry.set_candidate("candidate-1", 20.0, &[], "test").unwrap();
    service.assignments.poke();
    let chosen = service.registry.plan().unwrap().candidate_set(&ids);
    assert_eq!(chosen.len(), 2, "20 % of ten");

    let http = reqwest::Client::new();
    let url = format!("http://{}/api/robots", service.http_addr);
    let mut last = serde_json::Value::Null;
    let settled = async {
        loop {
            last = http.get(&url).send().await.unwrap().json().await.unwrap();
            let on_candidate: Vec<String> = last
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["model_version"] == "candidate-1")
                .map(|r| r["robot_id"].as_str().unwrap().to_string())
                .collect();
            let rest_on_production = last
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["model_version"] != "candidate-1")
                .all(|r| r["model_version"] == "baseline-2" && r["assigned_model"]["version"] == "baseline-2");
            if on_candidate == chosen && rest_on_production {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(120), settled).await.is_err() {
        panic!("the fleet did not settle on the plan {chosen:?}: {last:#}");
    }
    for (robot, daemon) in ids.iter().zip(&fleet.robots) {
        let report = daemon.view().model.report();
        let want = if chosen.contains(robot) { "candidate-1" } else { "baseline-2" };
        assert_eq!(report.version, want, "{robot}: {report:?}");
    }
    fleet.stop().await;
}
