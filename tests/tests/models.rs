//! Signed model rollout, robot side and cloud side together: packages that are
//! unsigned, signed by another key or tampered with are refused and reported
//! (on the robot's page and in the cloud's `/api/robots`); a good one is
//! swapped in between two frames with no deadline miss; a model that turns out
//! slow, or whose commands the governor rejects, is rolled back on its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use gantry_config::package;
use gantry_edge::daemon::Daemon;
use gantry_edge::infer::{ExecutionPath, InferError, Inputs, PolicyBackend};
use gantry_edge::model::{IoShape, Manifest, ModelPackage};
use gantry_edge::pipeline::Options;
use gantry_edge::rollout::Rollout;
use gantry_sync::Service;
use gantry_tests::{cloud_config, robot_config, wait_for, Fault, FaultProxy};

const ROBOT: &str = "robot-1";

fn baseline_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline"))
}

/// The baseline package under a new version name.
fn package_as(dir: &Path, version: &str) -> PathBuf {
    let out = dir.join(version);
    std::fs::create_dir_all(&out).unwrap();
    let manifest = std::fs::read_to_string(baseline_dir().join("manifest.toml")).unwrap();
    let manifest = manifest.replace("version = \"baseline-2\"", &format!("version = \"{version}\""));
    assert!(manifest.contains(version));
    std::fs::write(out.join("manifest.toml"), manifest).unwrap();
    std::fs::copy(baseline_dir().join("model.onnx"), out.join("model.onnx")).unwrap();
    out
}

fn archive_of(dir: &Path, signature: Option<&str>) -> Vec<u8> {
    let manifest = std::fs::read(dir.join("manifest.toml")).unwrap();
    let model = std::fs::read(dir.join("model.onnx")).unwrap();
    let mut entries: Vec<(&str, &[u8])> = vec![(package::MANIFEST, &manifest), (package::MODEL, &model)];
    if let Some(s) = signature {
        entries.push((package::SIGNATURE, s.as_bytes()));
    }
    package::archive(&entries).unwrap()
}

async fn publish(service: &Service, archive: Vec<u8>) -> String {
    service.registry.publish_archive(archive, None, serde_json::Value::Null, "", "test").await.unwrap().version
}

/// Points the robot at `version` and waits for its report to settle on `state`.
async fn assign(service: &Service, robot: &Daemon, version: &str, state: &str) -> gantry_config::wire::ModelReport {
    service.registry.set_candidate(version, 0.0, &[ROBOT.to_string()], "test").unwrap();
    service.assignments.poke();
    let view = robot.view();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = view.model.report();
        if r.state == state && (r.assigned.as_deref() == Some(version) || r.version == version) {
            return r;
        }
        assert!(Instant::now() < deadline, "waiting for {version} → {state}; report {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packages_are_refused_and_a_good_one_swaps_in_without_a_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = package::generate_signing_key().unwrap();
    let other = package::generate_signing_key().unwrap();
    let service = Service::start(&cloud_config(&tmp.path().join("cloud"), "127.0.0.1:0")).await.unwrap();
    let mut config = robot_config(ROBOT, &tmp.path().join("robot"), &format!("mqtt://{}", service.mqtt_addr.unwrap()));
    // One download per assignment below; the last one (good-1) is cut half-way
    // and must resume where it stopped.
    let faults = vec![Fault::Clean, Fault::Clean, Fault::Clean, Fault::CutReply(150_000)];
    let proxy = FaultProxy::start(service.http_addr, faults).await.unwrap();
    config.uplink.http_url = format!("http://{}", proxy.addr);
    config.models.fleet_public_key = package::hex(fleet.verifying_key().as_bytes());
    config.models.probation_s = 2;
    let robot = Daemon::start(&config, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    wait_for("the cloud knows the robot", Duration::from_secs(30), || {
        service.catalog.robots().unwrap().iter().any(|r| r.robot_id == ROBOT)
    })
    .await;
    let packages = tmp.path().join("packages");

    // Unsigned.
    let v = publish(&service, archive_of(&package_as(&packages, "unsigned-1"), None)).await;
    let r = assign(&service, &robot, &v, "refused").await;
    assert!(r.reason.as_deref().unwrap().contains("not signed"), "{r:?}");
    assert_eq!(r.version, "baseline-2", "still running the old model");

    // Signed by another key.
    let dir = package_as(&packages, "other-key-1");
    let v = publish(&service, package::pack(&dir, &other).unwrap()).await;
    let r = assign(&service, &robot, &v, "refused").await;
    assert!(r.reason.as_deref().unwrap().contains("does not verify"), "{r:?}");

    // Tampered after signing: the manifest says something the fleet never signed.
    let dir = package_as(&packages, "tampered-1");
    let manifest = std::fs::read(dir.join("manifest.toml")).unwrap();
    let signature = package::hex(&ed25519_sign(&fleet, &manifest));
    let text = String::from_utf8(manifest).unwrap().replace("latency_budget_ms = 10.0", "latency_budget_ms = 99.0");
    std::fs::write(dir.join("manifest.toml"), text).unwrap();
    let v = publish(&service, archive_of(&dir, Some(&signature))).await;
    let r = assign(&service, &robot, &v, "refused").await;
    assert!(r.reason.as_deref().unwrap().contains("does not verify"), "{r:?}");

    // The cloud shows the last refusal.
    wait_for("the cloud shows the refusal", Duration::from_secs(30), || {
        service.catalog.robots().unwrap().iter().any(|r| {
            r.robot_id == ROBOT
                && r.model_report.as_ref().is_some_and(|m| m["state"] == "refused" && m["assigned"] == "tampered-1")
        })
    })
    .await;

    // A good one: swapped between two frames, no deadline missed around it.
    let status = robot.pipeline().status();
    let slot = robot.pipeline().policy_slot();
    let misses_before = status.deadline_misses.load(Relaxed);
    let dir = package_as(&packages, "good-1");
    let v = publish(&service, package::pack(&dir, &fleet).unwrap()).await;
    assign(&service, &robot, &v, "probation").await;
    assert_eq!(slot.swaps.load(Relaxed), 1);
    let r = assign(&service, &robot, &v, "running").await;
    assert_eq!(r.version, "good-1");
    assert_eq!(status.deadline_misses.load(Relaxed), misses_before, "no deadline missed during the swap");
    assert_eq!(
        std::fs::read(tmp.path().join("robot/models/good-1/model.onnx")).unwrap(),
        std::fs::read(baseline_dir().join("model.onnx")).unwrap(),
        "installed intact"
    );
    assert!(proxy.connections.load(Relaxed) >= 5, "the cut download resumed on a new connection");
    assert_eq!(std::fs::read_to_string(tmp.path().join("robot/models/active")).unwrap(), "good-1");
    wait_for("the cloud shows the new version", Duration::from_secs(30), || {
        service
            .catalog
            .robots()
            .unwrap()
            .iter()
            .any(|r| r.robot_id == ROBOT && r.model_version.as_deref() == Some("good-1"))
    })
    .await;
    robot.stop().await;
    service.stop().await;
}

fn ed25519_sign(key: &ed25519_dalek::SigningKey, data: &[u8]) -> [u8; 64] {
    use ed25519_dalek::Signer;
    key.sign(data).to_bytes()
}

/// Another policy, made slow or reckless.
struct Misbehaving {
    inner: Box<dyn PolicyBackend>,
    delay: Duration,
    /// Added to every joint delta: drives the arm into its limits.
    bias: f32,
    out: Vec<f32>,
    manifest: Manifest,
}

impl PolicyBackend for Misbehaving {
    fn execution_path(&self) -> ExecutionPath {
        self.inner.execution_path()
    }
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    fn io(&self) -> IoShape {
        self.inner.io()
    }
    fn inputs(&mut self) -> Inputs<'_> {
        self.inner.inputs()
    }
    fn run(&mut self) -> Result<&[f32], InferError> {
        std::thread::sleep(self.delay);
        let action = self.inner.run()?;
        self.out.clear();
        let n = action.len();
        self.out.extend(action.iter().enumerate().map(|(i, a)| if i + 1 < n { a + self.bias } else { *a }));
        Ok(&self.out)
    }
}

async fn rolled_back(delay: Duration, bias: f32, expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = robot_config(ROBOT, &tmp.path().join("robot"), "mqtt://127.0.0.1:1");
    config.models.probation_s = 20;
    let robot = Daemon::start(&config, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    let view = robot.view();
    wait_for("frames flowing", Duration::from_secs(20), || robot.pipeline().status().inferences.load(Relaxed) > 30)
        .await;
    let (reports, _rx) = tokio::sync::watch::channel(view.model.report());
    let rollout = Rollout {
        config: config.clone(),
        slot: robot.pipeline().policy_slot(),
        pipeline: robot.pipeline().status(),
        governor: robot.pipeline().governor.clone(),
        state: view.model.clone(),
        reports,
    };
    let package = ModelPackage::load(baseline_dir()).unwrap();
    let mut manifest = package.manifest.clone();
    manifest.version = "misbehaving-1".into();
    let inner = gantry_edge::infer::load_backend(&package, &config.policy).unwrap();
    let bad = Misbehaving { inner, delay, bias, out: Vec::with_capacity(16), manifest };
    let backup = rollout.swap(Box::new(bad)).await.unwrap();
    assert_eq!(backup.manifest().version, "baseline-2");
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let reason = rollout.probation("misbehaving-1", backup, stopped).await.unwrap();
    let g = robot.pipeline().governor.clone();
    let p = robot.pipeline().status();
    let reason = reason.unwrap_or_else(|| {
        panic!(
            "not rolled back: {} rejects of {} checks, {} misses of {} inferences, {} fallbacks",
            g.rejects.load(Relaxed),
            g.checks.load(Relaxed),
            p.deadline_misses.load(Relaxed),
            p.inferences.load(Relaxed),
            p.fallbacks.load(Relaxed)
        )
    });
    assert!(reason.contains(expect), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(20), "caught before the probation ended");
    let report = view.model.report();
    assert_eq!((report.version.as_str(), report.state.as_str()), ("baseline-2", "rolled_back"));
    assert!(report.reason.unwrap().contains("misbehaving-1"));
    assert_eq!(robot.pipeline().policy_slot().swaps.load(Relaxed), 2, "swapped in, then back");
    robot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_model_is_rolled_back() {
    rolled_back(Duration::from_millis(150), 0.0, "missed the inference deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reckless_model_is_rolled_back() {
    rolled_back(Duration::ZERO, 0.05, "governor rejected").await;
}
