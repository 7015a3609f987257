//! A robot written by someone else, speaking only the protocol (MQTT `status`,
//! `state`, `order`, `model`): it takes every order, works for `work` and
//! reports the outcome its `behaviour` decides for the model it was assigned.
//! Its mode, health and telemetry are set by the test. Used where many robots
//! or a chosen outcome are needed and the real daemon's physics would only be
//! in the way (A/B verdicts, alert rules).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_config::task::{self, Order, OrderResult, RobotState, Telemetry};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

/// Success and failure reason of an attempt of `order` by `model`.
pub type Behaviour = Arc<dyn Fn(&Order, &str) -> (bool, &'static str) + Send + Sync>;

/// What the test sets.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub mode: String,
    pub health: String,
    pub telemetry: Telemetry,
    pub kinds: Vec<String>,
    /// Time an order takes.
    pub work: Duration,
    /// Keep the current order without progress (a stuck robot).
    pub stall: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            mode: "running".into(),
            health: "green".into(),
            telemetry: Telemetry {
                latency_mean_ms: Some(9.0),
                latency_p95_ms: Some(14.0),
                net_rtt_ms: Some(2.0),
                disk_free_pct: Some(60.0),
                ..Telemetry::default()
            },
            kinds: vec!["pick".into(), "place".into()],
            work: Duration::from_millis(100),
            stall: false,
        }
    }
}

pub struct ProtocolRobot {
    pub id: String,
    pub knobs: Arc<Mutex<Knobs>>,
    /// The model version the cloud assigned (retained `model` topic).
    pub model: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProtocolRobot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProtocolRobot {
    /// Connects to the broker at `mqtt` as `id` (no password) and runs until dropped.
    pub fn start(id: &str, mqtt: std::net::SocketAddr, model: &str, knobs: Knobs, behaviour: Behaviour) -> Self {
        let mut o = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(o, 256);
        let knobs = Arc::new(Mutex::new(knobs));
        let model = Arc::new(Mutex::new(model.to_string()));
        let (k, m, id_) = (knobs.clone(), model.clone(), id.to_string());
        let task = tokio::spawn(async move {
            let id = id_;
            let mut results: Vec<OrderResult> = Vec::new();
            let mut current: Option<(Order, tokio::time::Instant, f64)> = None;
            let mut header = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                let publish = tokio::select! {
                    _ = tick.tick() => true,
                    e = events.poll() => match e {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                            for leaf in ["order", "model"] {
                                let _ = client.try_subscribe(format!("gantry/{id}/{leaf}"), QoS::AtLeastOnce);
                            }
                            let version = m.lock().unwrap().clone();
                            let status = serde_json::json!({"state": "online", "robot_id": id, "mode": "running", "model_version": version});
                            let _ = client.try_publish(format!("gantry/{id}/status"), QoS::AtLeastOnce, true, status.to_string());
                            true
                        }
                        Ok(Event::Incoming(Incoming::Publish(p))) => {
                            if p.topic.ends_with("/model") {
                                if let Ok(a) = serde_json::from_slice::<gantry_config::wire::ModelAssignment>(&p.payload) {
                                    *m.lock().unwrap() = a.version;
                                }
                            } else if let Ok(order) = serde_json::from_slice::<Order>(&p.payload) {
                                let known = results.iter().any(|r| r.order_id == order.order_id)
                                    || current.as_ref().is_some_and(|(o, _, _)| o.order_id == order.order_id);
                                if !known && current.is_none() {
                                    current = Some((order, tokio::time::Instant::now(), 0.0));
                                }
                            }
                            true
                        }
                        Ok(_) => false,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            false
                        }
                    }
                };
                if !publish {
                    continue;
                }
                let knobs = k.lock().unwrap().clone();
                let version = m.lock().unwrap().clone();
                let now_ns = gantry_hal::clock::unix_ns();
                if let Some((order, started, progress)) = current.as_mut() {
                    if !knobs.stall {
                        *progress = (started.elapsed().as_secs_f64() / knobs.work.as_secs_f64().max(1e-3)).min(1.0);
                    }
                    if *progress >= 1.0 {
                        let (success, reason) = behaviour(order, &version);
                        results.push(OrderResult {
                            order_id: order.order_id.clone(),
                            task_id: order.task_id.clone(),
                            success,
                            reason: if success { String::new() } else { reason.into() },
                            started_at: task::rfc3339(now_ns),
                            finished_at: task::rfc3339(now_ns),
                            model_version: version.clone(),
                        });
                        current = None;
                    }
                }
                header += 1;
                let tail = results.len().saturating_sub(task::MAX_RESULTS);
                let (order_id, task_id, phase, progress) = match &current {
                    Some((o, _, p)) => (o.order_id.clone(), o.task_id.clone(), task::Phase::Running, *p),
                    None => (String::new(), String::new(), task::Phase::Idle, 0.0),
                };
                let state = RobotState {
                    header: task::Header::new(header, now_ns),
                    robot_id: id.clone(),
                    order_id,
                    order_update_id: 0,
                    task_id,
                    phase,
                    progress,
                    operating_mode: if knobs.mode == "running" { "automatic" } else { "service" }.into(),
                    mode: knobs.mode.clone(),
                    health: knobs.health.clone(),
                    kinds: knobs.kinds.clone(),
                    errors: vec![],
                    results: results[tail..].to_vec(),
                    telemetry: Telemetry { model_version: version, ..knobs.telemetry.clone() },
                };
                let _ = client.try_publish(
                    format!("gantry/{id}/state"),
                    QoS::AtLeastOnce,
                    false,
                    serde_json::to_vec(&state).unwrap_or_default(),
                );
            }
        });
        Self { id: id.to_string(), knobs, model, task }
    }

    /// Changes what the robot reports from now on.
    pub fn set(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut self.knobs.lock().unwrap());
    }
}

/// Every attempt succeeds.
pub fn always_succeeds() -> Behaviour {
    Arc::new(|_, _| (true, ""))
}
