//! One test per alert rule, each through the real service: robots speaking
//! the protocol over the embedded broker, the rule engine, the incident log
//! and the alert webhook (a receiver on loopback). Each shows the robot fine
//! first (no alert), then holds the rule's condition: nothing fires before the
//! rule's `for_s`, exactly one alert fires after it and stays one while the
//! condition lasts, the webhook gets it once; clearing the condition resolves
//! it (the webhook gets that once too) and the incident log has both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_config::CloudConfig;
use gantry_sync::ops::Alert;
use gantry_sync::Service;
use gantry_tests::protocol_robot::{always_succeeds, Behaviour, Knobs, ProtocolRobot};
use gantry_tests::{cloud_config, wait_for, Webhook};

const LIMIT: Duration = Duration::from_secs(40);
/// Every rule here must hold this long before it fires.
const FOR_S: u64 = 2;

struct Rig {
    service: Service,
    hook: Webhook,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(tweak: impl FnOnce(&mut CloudConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hook = Webhook::start().await.unwrap();
        let mut c = cloud_config(dir.path(), "127.0.0.1:0");
        c.alerts.webhook_url = hook.url.clone();
        c.alerts.eval_period_ms = 100;
        c.alerts.robot_offline.for_s = FOR_S;
        c.alerts.robot_stuck.for_s = FOR_S;
        c.alerts.success_rate_low.for_s = FOR_S;
        c.alerts.latency_high.for_s = FOR_S;
        c.alerts.network_latency_high.for_s = FOR_S;
        c.alerts.disk_nearly_full.for_s = FOR_S;
        c.alerts.robot_estop.for_s = FOR_S;
        tweak(&mut c);
        let service = Service::start(&c).await.unwrap();
        Self { service, hook, _dir: dir }
    }

    fn robot(&self, id: &str, knobs: Knobs, behaviour: Behaviour) -> ProtocolRobot {
        ProtocolRobot::start(id, self.service.mqtt_addr.unwrap(), "m-1", knobs, behaviour)
    }

    /// Alerts of `rule` on `subject`, as `GET /api/alerts` lists them.
    async fn alerts(&self, rule: &str, subject: &str) -> Vec<serde_json::Value> {
        let url = format!("http://{}/api/alerts", self.service.http_addr);
        let all: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        all["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rule"] == rule && a["subject"] == subject)
            .cloned()
            .collect()
    }

    fn firing(&self, rule: &str, subject: &str) -> Option<Alert> {
        self.service.journal.firing().unwrap().into_iter().find(|a| a.rule == rule && a.subject == subject)
    }

    /// The robot is online and green in the fleet's eyes, with no alert.
    async fn fine(&self, robot: &str, rule: &str) {
        wait_for("the robot online and green", LIMIT, || {
            let s = self.service.fleet.snapshot(gantry_hal::clock::unix_ns()).unwrap();
            s.lines.iter().any(|l| l.robot_id == robot && l.online && l.state == "green")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(self.alerts(rule, robot).await.is_empty(), "{rule} fired on a fine robot");
    }

    /// Waits for the alert `condition_at` brought about and checks its first
    /// half of the lifecycle: not before `for_s`, once, delivered once.
    async fn fired(&self, rule: &str, subject: &str, condition_at: Instant) -> Alert {
        let deadline = Instant::now() + LIMIT;
        let alert = loop {
            if let Some(a) = self.firing(rule, subject) {
                break a;
            }
            assert!(Instant::now() < deadline, "{rule} on {subject} never fired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            condition_at.elapsed() >= Duration::from_secs(FOR_S),
            "{rule} fired {:?} after its condition, before for_s = {FOR_S} s",
            condition_at.elapsed()
        );
        assert!(alert.fired_unix_ns - alert.since_unix_ns >= FOR_S * 1_000_000_000, "{alert:?}");
        // Still holding a while later: still one alert.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let listed = self.alerts(rule, subject).await;
        assert_eq!(listed.len(), 1, "one alert while the condition holds: {listed:#?}");
        assert_eq!(listed[0]["state"], "firing");
        assert_eq!(listed[0]["id"], alert.id);
        let key = format!("alert-{}-firing", alert.id);
        wait_for("the firing delivered", LIMIT, || self.hook.keys().contains_key(&key)).await;
        alert
    }

    /// The second half: resolved after the condition cleared, delivered once,
    /// both ends in the incident log.
    async fn resolved(&self, alert: &Alert) {
        let id = alert.id;
        wait_for("the alert resolved", LIMIT, || self.firing(&alert.rule, &alert.subject).is_none()).await;
        let listed = self.alerts(&alert.rule, &alert.subject).await;
        assert_eq!(listed.len(), 1, "{listed:#?}");
        assert_eq!(listed[0]["state"], "resolved");
        assert!(listed[0]["resolved_at"].is_string());
        let key = format!("alert-{id}-resolved");
        wait_for("the resolution delivered", LIMIT, || self.hook.keys().contains_key(&key)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let keys = self.hook.keys();
        assert_eq!(keys.get(&format!("alert-{id}-firing")), Some(&1), "{keys:?}");
        assert_eq!(keys.get(&key), Some(&1), "{keys:?}");
        let log = self.service.journal.entries(0, 1000).unwrap();
        let ends: Vec<&str> = log.iter().filter(|e| e.alert_id == Some(id)).map(|e| e.kind.as_str()).collect();
        assert_eq!(ends, ["alert.resolved", "alert.fired"], "newest first");
    }

    async fn stop(self) {
        self.service.stop().await;
    }
}

/// The whole lifecycle of a rule whose condition a robot's knobs set.
async fn knob_rule(rule: &str, apply: impl FnOnce(&mut Knobs), clear: impl FnOnce(&mut Knobs)) {
    let rig = Rig::start(|_| {}).await;
    let id = format!("robot-{}", rule.replace('_', "-"));
    let robot = rig.robot(&id, Knobs::default(), always_succeeds());
    rig.fine(&id, rule).await;
    robot.set(apply);
    let at = Instant::now();
    let alert = rig.fired(rule, &id, at).await;
    assert_eq!(alert.robot_id.as_deref(), Some(id.as_str()));
    robot.set(clear);
    rig.resolved(&alert).await;
    drop(robot);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_estop() {
    knob_rule(
        "robot_estop",
        |k| {
            k.mode = "estop".into();
            k.health = "red".into();
        },
        |k| {
            k.mode = "running".into();
            k.health = "green".into();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_high() {
    knob_rule(
        "latency_high",
        |k| k.telemetry.latency_p95_ms = Some(250.0),
        |k| k.telemetry.latency_p95_ms = Some(14.0),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_latency_high() {
    knob_rule("network_latency_high", |k| k.telemetry.net_rtt_ms = Some(900.0), |k| k.telemetry.net_rtt_ms = Some(2.0))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_nearly_full() {
    knob_rule(
        "disk_nearly_full",
        |k| k.telemetry.disk_free_pct = Some(4.0),
        |k| k.telemetry.disk_free_pct = Some(60.0),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_offline() {
    let rig = Rig::start(|c| c.ingest.offline_after_s = 2).await;
    let id = "robot-gone";
    let robot = rig.robot(id, Knobs::default(), always_succeeds());
    rig.fine(id, "robot_offline").await;
    // Gone without a word (power cut): no last will, just silence.
    drop(robot);
    let at = Instant::now();
    let alert = rig.fired("robot_offline", id, at).await;
    assert!(alert.message.contains("offline"), "{alert:?}");
    let back = rig.robot(id, Knobs::default(), always_succeeds());
    rig.resolved(&alert).await;
    drop(back);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_stuck() {
    let rig = Rig::start(|c| c.alerts.robot_stuck.threshold = 2.0).await;
    let id = "robot-stuck";
    let robot = rig.robot(id, Knobs { work: Duration::from_millis(300), ..Knobs::default() }, always_succeeds());
    rig.fine(id, "robot_stuck").await;
    let submit = |task: &str| {
        let body = serde_json::json!({"id": task, "kind": "pick"});
        let url = format!("http://{}/api/tasks", rig.service.http_addr);
        async move { reqwest::Client::new().post(url).json(&body).send().await.unwrap().status() }
    };
    // Working normally first: a task done.
    assert_eq!(submit("t-ok").await, 201);
    wait_for("the first task done", LIMIT, || {
        rig.service.task_service.catalog().task("t-ok").unwrap().is_some_and(|t| t.success == Some(true))
    })
    .await;
    robot.set(|k| k.stall = true);
    assert_eq!(submit("t-stuck").await, 201);
    let at = Instant::now();
    let alert = rig.fired("robot_stuck", id, at).await;
    assert!(alert.message.contains("t-stuck") && alert.message.contains("no progress"), "{alert:?}");
    // Moving again: the task finishes, nothing is stuck.
    robot.set(|k| k.stall = false);
    rig.resolved(&alert).await;
    assert_eq!(rig.service.task_service.catalog().task("t-stuck").unwrap().unwrap().success, Some(true));
    drop(robot);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_rate_low_for_the_fleet_a_robot_and_a_model() {
    let rig = Rig::start(|c| {
        c.alerts.success_rate_low.threshold = 0.5;
        c.alerts.success_min_tasks = 3;
        c.tasks.max_attempts = 1;
    })
    .await;
    let id = "robot-clumsy";
    // Misses the grasp on tasks that say so.
    let behaviour: Behaviour =
        Arc::new(|order, _| if order.params["miss"] == true { (false, "task_failed") } else { (true, "") });
    let robot = rig.robot(id, Knobs::default(), behaviour);
    rig.fine(id, "success_rate_low").await;
    let http = reqwest::Client::new();
    let run = |n: usize, miss: bool, tag: &'static str| {
        let http = http.clone();
        let url = format!("http://{}/api/tasks", rig.service.http_addr);
        async move {
            for k in 0..n {
                let body = serde_json::json!({"id": format!("{tag}-{k}"), "kind": "pick", "params": {"miss": miss}});
                assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 201);
            }
        }
    };
    run(3, true, "miss").await;
    let at = Instant::now();
    let subjects = ["fleet", id, "model:m-1"];
    let mut alerts = Vec::new();
    for s in subjects {
        let a = rig.fired("success_rate_low", s, at).await;
        assert!(a.message.contains("0.0 % (0 of 3)"), "{a:?}");
        alerts.push(a);
    }
    assert_eq!(alerts[0].robot_id, None);
    assert_eq!(alerts[1].robot_id.as_deref(), Some(id));
    // Four good picks: 4 of 7 is above 50 %.
    run(4, false, "good").await;
    for a in &alerts {
        rig.resolved(a).await;
    }
    drop(robot);
    rig.stop().await;
}
