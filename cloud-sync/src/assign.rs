//! What the cloud tells each robot, retained on its own topics: its bulk-upload
//! window (`gantry/{robot}/upload-window`) and the model it should run
//! (`gantry/{robot}/model`). Recomputed every few seconds for every robot the
//! catalog knows and published when it changes (and again after every
//! reconnect, so a restarted broker has them, and to a robot each time it
//! comes online, since a broker keeping its session need not resend them).
//!
//! Everything this reads is in the catalog (robots, their "online" times and
//! operators' "upload now"), so among replicas the leader alone publishes
//! and the others answer the HTTP API from the same computation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_config::cloud::Uploads;
use gantry_config::wire::{self, ModelAssignment};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::sync::{watch, Notify};

use crate::models::Registry;
use crate::schedule::{self, UploadWindow};
use crate::store::{CloudCatalog, RobotRow};

/// The current assignments, for the HTTP API and the operator's controls.
#[derive(Default)]
pub struct Assignments {
    windows: Mutex<HashMap<String, UploadWindow>>,
    models: Mutex<HashMap<String, ModelAssignment>>,
    changed: Notify,
}

impl Assignments {
    pub fn window(&self, robot: &str) -> Option<UploadWindow> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).get(robot).cloned()
    }

    pub fn model(&self, robot: &str) -> Option<ModelAssignment> {
        self.models.lock().unwrap_or_else(|e| e.into_inner()).get(robot).cloned()
    }

    /// Recomputes now rather than at the next tick (the registry changed).
    pub fn poke(&self) {
        self.changed.notify_one();
    }

    /// Publishes `robot`'s window and model again at this round (it has
    /// come online and may have missed the retained ones).
    fn resend(&self, robot: &str) {
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).remove(robot);
        self.models.lock().unwrap_or_else(|e| e.into_inner()).remove(robot);
    }

    /// Recomputes every robot's window; returns those that changed.
    fn recompute(&self, u: &Uploads, robots: &[String], rows: &[RobotRow], now: u64) -> Vec<(String, UploadWindow)> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::new();
        for ((robot, row), mut w) in robots.iter().cloned().zip(rows).zip(schedule::windows(u, robots, now)) {
            w.now_until_unix_ns = Some(row.upload_now_until_unix_ns).filter(|t| *t > now).unwrap_or(0);
            if windows.get(&robot) != Some(&w) {
                windows.insert(robot.clone(), w.clone());
                changed.push((robot, w));
            }
        }
        changed
    }

    /// Model assignments that changed.
    fn recompute_models(&self, plan: Vec<(String, ModelAssignment)>) -> Vec<(String, ModelAssignment)> {
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::new();
        for (robot, a) in plan {
            if models.get(&robot) != Some(&a) {
                models.insert(robot.clone(), a.clone());
                changed.push((robot, a));
            }
        }
        changed
    }

    fn forget_published(&self) {
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.models.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Notes each model newly assigned to robots, and logs it (one entry per
/// version) when `log`: the leader's, among replicas sharing one log.
fn log_deployments(
    journal: &crate::ops::Journal,
    deployed: &mut std::collections::HashMap<String, String>,
    plan: &[(String, ModelAssignment)],
    log: bool,
) {
    let mut by_version: std::collections::BTreeMap<(&str, &str), Vec<&str>> = std::collections::BTreeMap::new();
    for (robot, a) in plan {
        if deployed.get(robot) != Some(&a.version) {
            deployed.insert(robot.clone(), a.version.clone());
            by_version.entry((a.version.as_str(), a.status.as_str())).or_default().push(robot);
        }
    }
    for ((version, status), robots) in by_version.into_iter().filter(|_| log) {
        let shown: Vec<&str> = robots.iter().take(10).copied().collect();
        let more = if robots.len() > 10 { format!(" and {} more", robots.len() - 10) } else { String::new() };
        journal.log(
            crate::unix_now_ns(),
            "model.deployed",
            version,
            crate::ops::SERVICE,
            &format!("deployed {version} ({status}) to {} robot(s): {}{more}", robots.len(), shown.join(", ")),
            serde_json::json!({"status": status, "robots": robots}),
        );
    }
}

/// Computes assignments, and publishes them while `leader`, until `stopped`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    assignments: Arc<Assignments>,
    catalog: Arc<dyn CloudCatalog>,
    registry: Arc<Registry>,
    journal: Arc<crate::ops::Journal>,
    uploads: Uploads,
    options: MqttOptions,
    leader: Arc<AtomicBool>,
    mut stopped: watch::Receiver<bool>,
) {
    let (client, mut events) = AsyncClient::new(options, 256);
    // Each robot's "online" time as last seen here, and whether this
    // instance published the last round.
    let mut online: HashMap<String, u64> = HashMap::new();
    let mut was_leading = false;
    // Each robot's model as last logged; the first plan after a start is
    // what was already deployed, not a deployment.
    let mut deployed: Option<std::collections::HashMap<String, String>> = None;
    let mut connected = false;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let mut lost = false;
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
            _ = assignments.changed.notified() => {}
            event = events.poll() => match event {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    connected = true;
                    assignments.forget_published();
                }
                Ok(_) => continue,
                Err(e) => {
                    if connected {
                        tracing::warn!(error = %e, "assignments: lost the broker; reconnecting");
                    }
                    connected = false;
                    lost = true;
                }
            }
        }
        if lost {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = stopped.wait_for(|s| *s) => break,
            }
            continue;
        }
        if !connected {
            continue;
        }
        let rows = match catalog.robots() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "assignments: cannot list robots");
                continue;
            }
        };
        for r in &rows {
            if online.insert(r.robot_id.clone(), r.online_unix_ns).is_some_and(|seen| seen != r.online_unix_ns) {
                assignments.resend(&r.robot_id);
            }
        }
        // A new leader publishes everything: the last one may have died mid-round.
        let leading = leader.load(Relaxed);
        if leading && !was_leading {
            assignments.forget_published();
        }
        was_leading = leading;
        let robots: Vec<String> = rows.iter().map(|r| r.robot_id.clone()).collect();
        let windows = assignments.recompute(&uploads, &robots, &rows, crate::unix_now_ns());
        let models = match registry.assignments(&robots) {
            Ok(plan) => {
                log_deployments(
                    &journal,
                    deployed.get_or_insert_with(|| plan.iter().map(|(r, a)| (r.clone(), a.version.clone())).collect()),
                    &plan,
                    leading,
                );
                assignments.recompute_models(plan)
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "assignments: cannot read the model registry");
                Vec::new()
            }
        };
        let messages = windows
            .into_iter()
            .map(|(robot, w)| (wire::topic(&robot, wire::UPLOAD_WINDOW), serde_json::to_vec(&w)))
            .chain(models.into_iter().map(|(robot, a)| (wire::topic(&robot, wire::MODEL), serde_json::to_vec(&a))));
        if !leading {
            continue;
        }
        for (topic, payload) in messages {
            let payload = payload.expect("assignments serialise");
            if client.try_publish(topic, QoS::AtLeastOnce, true, payload).is_err() {
                // Queue full: publish everything again on the next round.
                assignments.forget_published();
                break;
            }
        }
    }
    let _ = client.try_disconnect();
}
