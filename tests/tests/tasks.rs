//! Tasks end to end: the factory's queue through cloud sync to robots on the
//! simulator and back, with the factory's webhook receiving the outcomes.
//!
//! - 60 tasks of mixed priority on 3 robots: every task ends completed, failed
//!   with a reason of the taxonomy, or canceled; no robot runs two at once and
//!   no task runs on two robots at once; once urgent tasks wait, no normal
//!   task is assigned before them; episodes and analytics are the tasks'.
//! - A robot killed mid-task: its task completes on another robot, once.
//! - A robot cut off from the broker mid-task finishes it and reports once; with
//!   a short lease the cloud moves the task meanwhile, and the duplicate attempt
//!   is canceled when the first robot's result arrives.
//! - The factory's webhook: every event delivered once per key through an
//!   outage of the receiver and a restart of cloud sync.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use gantry_config::task::parse_rfc3339;
use gantry_config::EdgeConfig;
use gantry_edge::daemon::Daemon;
use gantry_sync::Service;
use gantry_tests::protocol_robot::{always_succeeds, Knobs, ProtocolRobot};
use gantry_tests::{cloud_config, robot_config, wait_for, Partition, Webhook};
use serde_json::{json, Value};

/// Each scenario runs several daemons with real-time threads on what may be 2
/// cores; they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const KILLED_ENV: &str = "GANTRY_TASKS_KILLED_ROBOT";

fn task_robot(id: &str, dir: &Path, broker: &str, http: &str) -> EdgeConfig {
    let mut c = robot_config(id, &dir.join(id), broker);
    c.uplink.http_url = format!("http://{http}");
    // Episodes are the tasks only.
    c.recorder.episode_s = 0;
    (c.camera.width, c.camera.height) = (320, 240);
    (c.depth.width, c.depth.height) = (424, 240);
    c
}

async fn start_robot(c: &EdgeConfig) -> Daemon {
    Daemon::start(c, gantry_hal::Pacing::RealTime, Default::default()).await.unwrap()
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(service: &Service) -> Self {
        Self { http: reqwest::Client::new(), base: format!("http://{}", service.http_addr) }
    }

    async fn submit(&self, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}/api/tasks", self.base)).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn task(&self, id: &str) -> Value {
        self.http.get(format!("{}/api/tasks/{id}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    async fn cancel(&self, id: &str) -> u16 {
        self.http.post(format!("{}/api/tasks/{id}/cancel", self.base)).send().await.unwrap().status().as_u16()
    }

    /// Every task, through the cursor.
    async fn all(&self) -> Vec<Value> {
        let (mut out, mut since) = (BTreeMap::new(), "0".to_string());
        loop {
            let page: Value = self
                .http
                .get(format!("{}/api/tasks?since={since}&limit=7", self.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let tasks = page["tasks"].as_array().unwrap();
            if tasks.is_empty() {
                return out.into_values().collect();
            }
            for t in tasks {
                out.insert(t["id"].as_str().unwrap().to_string(), t.clone());
            }
            since = page["next_cursor"].as_str().unwrap().to_string();
        }
    }

    async fn robots(&self) -> Vec<Value> {
        self.http.get(format!("{}/api/robots", self.base)).send().await.unwrap().json().await.unwrap()
    }

    async fn until(&self, what: &str, limit: Duration, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let all = self.all().await;
            if cond(&all) {
                return all;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {all:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn until_task(&self, id: &str, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let t = self.task(id).await;
            if cond(&t) {
                return t;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {t:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Cloud sync on free ports with the factory's webhook receiver, its
/// configuration adjusted by `tune`.
struct Cloud {
    hook: Webhook,
    service: Service,
    api: Api,
    /// `mqtt://…` of the embedded broker, and cloud sync's HTTP address.
    broker: String,
    http: String,
}

impl Cloud {
    async fn start(dir: &Path, tune: impl FnOnce(&mut gantry_config::CloudConfig)) -> Self {
        let hook = Webhook::start().await.unwrap();
        let mut cloud = cloud_config(&dir.join("cloud"), "127.0.0.1:0");
        cloud.factory.webhook_url = hook.url.clone();
        tune(&mut cloud);
        let service = Service::start(&cloud).await.unwrap();
        let api = Api::new(&service);
        let broker = format!("mqtt://{}", service.mqtt_addr.unwrap());
        let http = service.http_addr.to_string();
        Self { hook, service, api, broker, http }
    }
}

fn ns(v: &Value) -> u64 {
    v.as_str().and_then(parse_rfc3339).unwrap_or(u64::MAX)
}

fn state(t: &Value) -> &str {
    t["state"].as_str().unwrap()
}

fn terminal(t: &Value) -> bool {
    matches!(state(t), "completed" | "failed" | "canceled")
}

/// The taxonomy of failure reasons (`docs/PROTOCOL.md`, "Tasks").
const REASONS: [&str; 12] = [
    "invalid_params",
    "unsupported_kind",
    "estop",
    "robot_fault",
    "blocked",
    "lease_expired",
    "interrupted",
    "robot_offline",
    "robot_estop",
    "robot_safe_stop",
    "stuck",
    "order_lost",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_tasks_of_mixed_priority_on_three_robots() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Cloud { hook, service, api, broker, http } = Cloud::start(dir.path(), |c| c.lake.export_period_s = 1).await;
    let mut robots = Vec::new();
    for i in 0..3 {
        let mut c = task_robot(&format!("robot-{i}"), dir.path(), &broker, &http);
        c.tasks.work_s = 0.4;
        robots.push(start_robot(&c).await);
    }

    // A first wave of normal tasks keeps the robots busy...
    let kinds = ["pick", "place", "inspect"];
    let mut expected = BTreeMap::new();
    for i in 0..24 {
        let id = format!("normal-{i}");
        let (code, t) = api.submit(json!({"id": id, "kind": kinds[i % 3], "priority": "normal"})).await;
        assert_eq!((code, state(&t)), (201, "queued"), "{t}");
        expected.insert(id, "normal");
    }
    api.until("the robots working", Duration::from_secs(60), |all| {
        all.iter().filter(|t| state(t) == "completed").count() >= 3
    })
    .await;
    // ...then urgent and high ones arrive; some picks carry params no robot
    // accepts; three tasks are canceled.
    for i in 0..12 {
        let id = format!("urgent-{i}");
        let params = if i % 4 == 0 { json!({"work_s": -1}) } else { json!({}) };
        api.submit(json!({"id": id, "kind": "pick", "priority": "urgent", "params": params})).await;
        expected.insert(id, "urgent");
    }
    for i in 0..24 {
        let id = format!("high-{i}");
        api.submit(json!({"id": id, "kind": kinds[(i + 1) % 3], "priority": "high", "params": {"work_s": 0.3}})).await;
        expected.insert(id, "high");
    }
    // The same id again is the same task (idempotent), not a second one.
    let (code, again) = api.submit(json!({"id": "high-0", "kind": "pick", "priority": "normal"})).await;
    assert_eq!((code, again["kind"].as_str(), again["priority"].as_str()), (200, Some("place"), Some("high")));
    let (code, bad) = api.submit(json!({"kind": "pick", "priority": "asap"})).await;
    assert_eq!(code, 400, "{bad}");
    let mut canceled = BTreeSet::new();
    for id in ["normal-23", "normal-22", "high-23"] {
        if api.cancel(id).await == 200 {
            canceled.insert(id.to_string());
        }
    }
    assert!(!canceled.is_empty(), "the last-queued tasks were still cancelable");
    assert_eq!(api.cancel("normal-0").await, 409, "a completed task cannot be canceled");

    let all = api
        .until("all 60 tasks finished", Duration::from_secs(180), |all| all.len() == 60 && all.iter().all(terminal))
        .await;
    let by_id: BTreeMap<&str, &Value> = all.iter().map(|t| (t["id"].as_str().unwrap(), t)).collect();
    let mut counts = BTreeMap::new();
    for t in &all {
        *counts.entry(state(t)).or_insert(0) += 1;
        match state(t) {
            "completed" => assert_eq!(t["outcome"]["success"], true, "{t}"),
            "failed" => {
                let reason = t["outcome"]["reason"].as_str().unwrap();
                assert!(REASONS.contains(&reason), "{reason} is not in the taxonomy: {t}");
            }
            _ => assert!(canceled.contains(t["id"].as_str().unwrap()), "{t}"),
        }
    }
    // The urgent picks with bad params failed, and only they.
    for i in (0..12).step_by(4) {
        let t = by_id[format!("urgent-{i}").as_str()];
        assert_eq!((state(t), t["outcome"]["reason"].as_str()), ("failed", Some("invalid_params")), "{t}");
    }
    assert_eq!(counts.get("failed"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("completed"), Some(&(60 - 3 - canceled.len())), "{counts:?}");

    // Attempts as intervals: per robot and per task they never overlap.
    let mut per_robot: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
    for t in &all {
        let mut spans = Vec::new();
        for a in t["history"].as_array().unwrap() {
            let span = (ns(&a["assigned_at"]), ns(&a["ended_at"]));
            assert!(span.0 <= span.1, "{t}");
            per_robot.entry(a["robot_id"].as_str().unwrap().into()).or_default().push((
                span.0,
                span.1,
                t["id"].as_str().unwrap().into(),
            ));
            spans.push(span);
        }
        spans.sort();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "task on two robots at once: {t}");
    }
    assert_eq!(per_robot.len(), 3, "every robot worked: {:?}", per_robot.keys());
    for (robot, mut spans) in per_robot {
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "{robot} ran {} and {} at once", w[0].2, w[1].2);
        }
    }
    // Priority: after the last urgent task arrived, no normal task was
    // assigned before every urgent one was.
    let last_urgent_in = (0..12).map(|i| ns(&by_id[format!("urgent-{i}").as_str()]["created_at"])).max().unwrap();
    let last_urgent_assigned =
        (0..12).map(|i| ns(&by_id[format!("urgent-{i}").as_str()]["history"][0]["assigned_at"])).max().unwrap();
    for t in all.iter().filter(|t| t["priority"] == "normal") {
        for a in t["history"].as_array().unwrap() {
            let at = ns(&a["assigned_at"]);
            assert!(
                at <= last_urgent_in || at >= last_urgent_assigned,
                "{} assigned while urgent tasks waited: {t}",
                t["id"]
            );
        }
    }

    // The factory heard of every completion and failure once.
    let want: BTreeSet<String> = all
        .iter()
        .filter(|t| matches!(state(t), "completed" | "failed"))
        .map(|t| format!("task.{}:{}", state(t), t["id"].as_str().unwrap()))
        .collect();
    wait_for("the webhook deliveries", Duration::from_secs(30), || {
        hook.keys().keys().filter(|k| k.starts_with("task.")).cloned().collect::<BTreeSet<_>>() == want
    })
    .await;
    assert!(hook.keys().values().all(|n| *n == 1), "{:?}", hook.keys());

    // Robots say they are idle, and the episodes are the tasks: by kind (the
    // failures were all picks), not by robot.
    let robots_now = api.robots().await;
    assert!(robots_now.iter().all(|r| r["idle"] == true && r["task"].is_null()), "{robots_now:#?}");
    let lake_done = api_analytics(&http, 60 - canceled.len() as u64).await;
    assert_ne!(
        lake_done["success_rate_by_task"], lake_done["success_rate_by_robot"],
        "success by kind is not success by robot"
    );
    let by_task: BTreeMap<String, (u64, u64)> = lake_done["success_rate_by_task"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["key"].as_str().unwrap().into(), (r["episodes"].as_u64().unwrap(), r["successes"].as_u64().unwrap()))
        })
        .collect();
    assert_eq!(by_task.keys().cloned().collect::<Vec<_>>(), ["inspect", "pick", "place"], "{lake_done:#}");
    assert_eq!(by_task["pick"].0 - by_task["pick"].1, 3, "{lake_done:#}");
    assert_eq!(by_task["place"].0, by_task["place"].1, "{lake_done:#}");
    let by_robot = lake_done["success_rate_by_robot"].as_array().unwrap();
    assert_eq!(by_robot.len(), 3, "{lake_done:#}");

    // Every lake row carries the boot that made it, and rows made during a
    // task carry its id: one boot per robot here, and the tasks' ids.
    let lake = dir.path().join("cloud/objects/lake");
    for table in ["actions", "frames", "tasks", "observations"] {
        let (boots, tasks) = keys_of(&lake.join(table));
        assert_eq!(boots.len(), 3, "{table}: one boot per robot: {boots:?}");
        assert!(!tasks.is_empty() && tasks.iter().all(|t| by_id.contains_key(t.as_str())), "{table}: {tasks:?}");
    }

    for r in robots {
        r.stop().await;
    }
    service.stop().await;
}

/// The distinct `boot_id`s and `task_id`s of a lake table's Parquet files.
fn keys_of(dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    let (mut boots, mut tasks) = (BTreeSet::new(), BTreeSet::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()) {
            if entry.is_dir() {
                stack.push(entry);
                continue;
            }
            let file = std::fs::File::open(&entry).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let boot = batch.column_by_name("boot_id").unwrap().as_string::<i32>().clone();
                let task = batch.column_by_name("task_id").unwrap().as_string::<i32>().clone();
                for i in 0..batch.num_rows() {
                    assert!(!boot.is_null(i) && !boot.value(i).is_empty(), "{}: a row without a boot", entry.display());
                    boots.insert(boot.value(i).to_string());
                    if !task.is_null(i) {
                        tasks.insert(task.value(i).to_string());
                    }
                }
            }
        }
    }
    (boots, tasks)
}

/// `/api/analytics` once the lake holds `episodes` task episodes.
async fn api_analytics(http: &str, episodes: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a: Value = reqwest::get(format!("http://{http}/api/analytics")).await.unwrap().json().await.unwrap();
        let n: u64 = a["success_rate_by_task"]
            .as_array()
            .map_or(0, |rows| rows.iter().filter_map(|r| r["episodes"].as_u64()).sum());
        if n >= episodes {
            return a;
        }
        assert!(std::time::Instant::now() < deadline, "the lake has {n} of {episodes} episodes: {a:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The killed robot's child: a daemon on the simulator with long tasks.
#[test]
fn child_killed_robot() {
    let Ok(v) = std::env::var(KILLED_ENV) else { return };
    gantry_tests::child::die_with_parent();
    let mut parts = v.split(' ');
    let (dir, broker, http) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = task_robot("robot-killed", Path::new(dir), broker, http);
        c.tasks.work_s = 60.0;
        let _daemon = start_robot(&c).await;
        println!("ready");
        std::future::pending::<()>().await;
    });
}

fn spawn_killed_robot(dir: &Path, broker: &str, http: &str) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_killed_robot", "--nocapture", "--test-threads", "1"])
        .env(KILLED_ENV, format!("{} {broker} {http}", dir.display()))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    gantry_tests::child::wait_ready(&mut c, "the robot");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_robot_killed_mid_task_loses_it_to_another_and_it_completes_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Cloud { hook, service, api, broker, http } = Cloud::start(dir.path(), |c| c.tasks.lease_s = 3).await;
    let mut killed = spawn_killed_robot(dir.path(), &broker, &http);
    wait_until_idle(&api, &["robot-killed"]).await;

    api.submit(json!({"id": "long-pick", "kind": "pick"})).await;
    let t = api
        .until_task("long-pick", "the robot working on it", Duration::from_secs(30), |t| {
            state(t) == "running" && t["progress"].as_f64() > Some(0.02)
        })
        .await;
    assert_eq!(t["robot_id"], "robot-killed");
    killed.kill().unwrap();
    killed.wait().unwrap();

    // The survivor starts after the kill: the task can only move to it.
    let mut c = task_robot("robot-survivor", dir.path(), &broker, &http);
    c.tasks.work_s = 1.0;
    let survivor = start_robot(&c).await;
    let t = api.until_task("long-pick", "the task completed elsewhere", Duration::from_secs(90), terminal).await;
    assert_eq!(
        (state(&t), t["robot_id"].as_str(), t["attempts"].as_u64()),
        ("completed", Some("robot-survivor"), Some(2)),
        "{t:#}"
    );
    let history = t["history"].as_array().unwrap();
    assert_eq!(history[0]["robot_id"], "robot-killed");
    assert_eq!(history[0]["reason"], "robot_offline", "{t:#}");
    wait_for("the completion delivered", Duration::from_secs(30), || {
        hook.keys().get("task.completed:long-pick") == Some(&1)
    })
    .await;
    assert!(hook.keys().keys().any(|k| k.starts_with("robot.failure:robot-killed:robot_offline")), "{:?}", hook.keys());
    assert_eq!(hook.keys().keys().filter(|k| k.starts_with("task.")).count(), 1, "{:?}", hook.keys());
    survivor.stop().await;
    service.stop().await;
}

async fn wait_until_idle(api: &Api, robots: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rs = api.robots().await;
        let ok = robots.iter().all(|id| {
            rs.iter()
                .any(|r| r["robot_id"] == *id && r["idle"] == true && r["health"] == "green" && r["online"] == true)
        });
        if ok {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "robots {robots:?} not idle and green: {rs:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A robot behind a network cut: `lease_s` of the cloud decides whether the
/// task moves meanwhile.
async fn cut_off_mid_task(lease_s: u64) -> (Value, BTreeMap<String, u32>) {
    const CUT: Duration = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let Cloud { hook, service, api, broker, http } = Cloud::start(dir.path(), |c| c.tasks.lease_s = lease_s).await;
    let mqtt = service.mqtt_addr.unwrap();
    let net = Partition::start(mqtt).await.unwrap();
    let mut c = task_robot("robot-far", dir.path(), &format!("mqtt://{}", net.addr), &http);
    c.tasks.work_s = 8.0;
    let far = start_robot(&c).await;
    wait_until_idle(&api, &["robot-far"]).await;
    api.submit(json!({"id": "far-pick", "kind": "pick"})).await;
    api.until_task("far-pick", "the far robot working", Duration::from_secs(30), |t| {
        state(t) == "running" && t["robot_id"] == "robot-far"
    })
    .await;
    // Another robot joins once the task is taken: the one a moved task goes to.
    let mut c = task_robot("robot-near", dir.path(), &broker, &http);
    c.tasks.work_s = 20.0;
    let near = start_robot(&c).await;
    // Cut halfway through the work: what is left takes less than the lease.
    let far_view = far.view();
    wait_for("the far robot halfway", Duration::from_secs(30), || {
        far_view.task.lock().unwrap().as_ref().is_some_and(|(_, p)| *p >= 0.5)
    })
    .await;
    net.cut.store(true, Relaxed);
    let cut_at = std::time::Instant::now();
    // The far robot finishes while cut off.
    wait_for("the far robot done offline", Duration::from_secs(30), || {
        far_view.task.lock().unwrap().is_none() && cut_at.elapsed() > Duration::from_secs(1)
    })
    .await;
    tokio::time::sleep(CUT.saturating_sub(cut_at.elapsed())).await;
    net.cut.store(false, Relaxed);
    let t = api.until_task("far-pick", "the far robot's report", Duration::from_secs(60), terminal).await;
    // The near robot is idle again either way.
    wait_until_idle(&api, &["robot-near"]).await;
    wait_for("the completion delivered", Duration::from_secs(30), || {
        hook.keys().contains_key("task.completed:far-pick")
    })
    .await;
    let keys = hook.keys();
    far.stop().await;
    near.stop().await;
    service.stop().await;
    (t, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_robot_cut_off_for_30_s_finishes_its_task_and_it_is_run_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // The default lease outlasts the cut: the task never moves.
    let (t, keys) = cut_off_mid_task(gantry_config::cloud::Tasks::default().lease_s).await;
    assert_eq!(
        (state(&t), t["robot_id"].as_str(), t["attempts"].as_u64()),
        ("completed", Some("robot-far"), Some(1)),
        "{t:#}"
    );
    assert_eq!(keys.get("task.completed:far-pick"), Some(&1), "{keys:?}");
    assert_eq!(keys.keys().filter(|k| k.starts_with("task.")).count(), 1, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_moved_from_a_cut_off_robot_that_finished_anyway_is_canceled_on_the_other() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // A lease of 11 s: the far robot finishes its 8 s task before giving it
    // up, and the cloud moves it 11 + 10 + 5 s after its last word, before
    // the 30 s cut ends.
    let (t, keys) = cut_off_mid_task(11).await;
    assert_eq!(
        (state(&t), t["robot_id"].as_str(), t["attempts"].as_u64()),
        ("completed", Some("robot-far"), Some(2)),
        "{t:#}"
    );
    let history = t["history"].as_array().unwrap();
    assert_eq!(history[1]["robot_id"], "robot-near", "{t:#}");
    assert_eq!(history[1]["reason"], "completed_by_another_attempt", "{t:#}");
    assert_eq!(keys.get("task.completed:far-pick"), Some(&1), "{keys:?}");
    assert_eq!(keys.keys().filter(|k| k.starts_with("task.")).count(), 1, "{keys:?}");
}

/// A robot written by someone else, speaking only the protocol: it takes every
/// order and reports it done at once.
fn protocol_robot(id: &str, mqtt: std::net::SocketAddr) -> ProtocolRobot {
    let knobs = Knobs { kinds: vec!["pick".into()], work: Duration::ZERO, ..Knobs::default() };
    ProtocolRobot::start(id, mqtt, "", knobs, always_succeeds())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_webhooks_arrive_once_per_key_through_an_outage_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Webhook::start().await.unwrap();
    let port = gantry_tests::free_port();
    let mut cloud = cloud_config(&dir.path().join("cloud"), &format!("127.0.0.1:{port}"));
    cloud.factory.webhook_url = hook.url.clone();
    let service = Service::start(&cloud).await.unwrap();
    let api = Api::new(&service);
    let robot = protocol_robot("robot-proto", service.mqtt_addr.unwrap());
    hook.down.store(true, Relaxed);
    for i in 0..10 {
        api.submit(json!({"id": format!("w-{i}"), "kind": "pick"})).await;
    }
    api.until("10 tasks done during the outage", Duration::from_secs(60), |all| {
        all.iter().filter(|t| state(t) == "completed").count() == 10
    })
    .await;
    wait_for("a refused delivery", Duration::from_secs(30), || hook.refused.load(Relaxed) > 0).await;
    assert!(hook.keys().is_empty());
    service.stop().await;
    drop(robot);

    // Cloud sync restarts on the same catalog; the receiver comes back.
    let mut cloud = cloud_config(&dir.path().join("cloud"), &format!("127.0.0.1:{port}"));
    cloud.factory.webhook_url = hook.url.clone();
    let service = Service::start(&cloud).await.unwrap();
    let api = Api::new(&service);
    let robot = protocol_robot("robot-proto", service.mqtt_addr.unwrap());
    for i in 10..15 {
        api.submit(json!({"id": format!("w-{i}"), "kind": "pick"})).await;
    }
    hook.down.store(false, Relaxed);
    let want: BTreeSet<String> = (0..15).map(|i| format!("task.completed:w-{i}")).collect();
    wait_for("every event delivered", Duration::from_secs(60), || {
        hook.keys().keys().cloned().collect::<BTreeSet<_>>() == want
    })
    .await;
    // Nothing is left to send (so nothing more can arrive), nothing was
    // delivered twice, and nothing ran twice.
    wait_for("the outbox empty", Duration::from_secs(10), || {
        service.task_service.catalog().pending_events(1).unwrap().is_empty()
    })
    .await;
    assert!(hook.keys().values().all(|n| *n == 1), "{:?}", hook.keys());
    let all = api.all().await;
    assert!(all.iter().all(|t| t["attempts"] == 1 && state(t) == "completed"), "{all:#?}");
    drop(robot);
    service.stop().await;
}
