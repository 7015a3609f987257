//! The alert rules (`[alerts]`): each evaluated every `alerts.eval_period_ms`
//! over one fleet snapshot. A rule's condition on a subject (a robot, the
//! fleet, a model) that holds for the rule's `for_s` fires one alert; while it
//! fires, the same condition fires nothing more; when the condition clears the
//! alert resolves. Firing and resolution are each an incident log entry and a
//! webhook event, committed together. After a restart, alerts that fired stay
//! firing (and resolve when their condition is found clear); a pending
//! condition starts its `for_s` again, so a restart delays an alert and never
//! brings one early.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gantry_config::cloud::{AlertRule, Alerts};
use tokio::sync::watch;

use crate::fleet::{Fleet, Snapshot};
use crate::ops::{Firing, Journal};
use crate::tasks::{TaskCatalog, TaskState};

const NS: u64 = 1_000_000_000;

/// A rule's condition, found true on one subject now.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub rule: &'static str,
    pub subject: String,
    pub robot_id: Option<String>,
    pub message: String,
    pub value: Option<f64>,
}

/// Every condition true in `snap` (its robots and open tasks) and in the task
/// catalog (success over the window).
pub fn conditions(snap: &Snapshot, catalog: &dyn TaskCatalog, a: &Alerts, now: u64) -> anyhow::Result<Vec<Condition>> {
    let mut found = Vec::new();
    let robot = |rule: &'static str, id: &str, message: String, value: Option<f64>| Condition {
        rule,
        subject: id.to_string(),
        robot_id: Some(id.to_string()),
        message,
        value,
    };
    for l in &snap.lines {
        if !l.online {
            if a.robot_offline.enabled {
                let ago = now.saturating_sub(l.last_seen_unix_ns) as f64 / 1e9;
                let message = if l.last_seen_unix_ns == 0 {
                    format!("{} has not been heard from", l.robot_id)
                } else {
                    format!("{} is offline: last heard {ago:.0} s ago", l.robot_id)
                };
                found.push(robot("robot_offline", &l.robot_id, message, None));
            }
            // An offline robot's other figures are stale: only the offline rule speaks for it.
            continue;
        }
        if a.robot_estop.enabled && l.mode == "estop" {
            found.push(robot("robot_estop", &l.robot_id, format!("{} is in e-stop", l.robot_id), None));
        }
        if let Some(v) = l.latency_p95_ms.filter(|v| a.latency_high.enabled && *v > a.latency_high.threshold) {
            let message = format!(
                "{}: frame-to-command latency p95 {v:.1} ms, above {:.0} ms",
                l.robot_id, a.latency_high.threshold
            );
            found.push(robot("latency_high", &l.robot_id, message, Some(v)));
        }
        if let Some(v) =
            l.net_rtt_ms.filter(|v| a.network_latency_high.enabled && *v > a.network_latency_high.threshold)
        {
            let message = format!(
                "{}: broker round trip {v:.0} ms, above {:.0} ms",
                l.robot_id, a.network_latency_high.threshold
            );
            found.push(robot("network_latency_high", &l.robot_id, message, Some(v)));
        }
        if let Some(v) = l.disk_free_pct.filter(|v| a.disk_nearly_full.enabled && *v < a.disk_nearly_full.threshold) {
            let message =
                format!("{}: data disk {v:.1} % free, below {:.0} %", l.robot_id, a.disk_nearly_full.threshold);
            found.push(robot("disk_nearly_full", &l.robot_id, message, Some(v)));
        }
    }
    if a.robot_stuck.enabled {
        let limit = (a.robot_stuck.threshold * 1e9) as u64;
        for t in &snap.open_tasks {
            let Some(id) = t.robot_id.as_deref() else { continue };
            if t.state == TaskState::Queued || now.saturating_sub(t.progress_unix_ns) <= limit {
                continue;
            }
            let still = now.saturating_sub(t.progress_unix_ns) as f64 / 1e9;
            let message = format!(
                "{id}: task {} ({}) has made no progress for {still:.0} s (at {:.0} %)",
                t.id,
                t.kind,
                100.0 * t.progress
            );
            found.push(robot("robot_stuck", id, message, Some(still)));
        }
    }
    if a.success_rate_low.enabled {
        found.extend(success_conditions(catalog, a, now)?);
    }
    Ok(found)
}

/// Success rate below the threshold over the window: fleet (tasks), each
/// robot (tasks it finished) and each model (attempts its robots reported).
fn success_conditions(catalog: &dyn TaskCatalog, a: &Alerts, now: u64) -> anyhow::Result<Vec<Condition>> {
    let since = now.saturating_sub(a.success_window_s * NS);
    let mut fleet = (0u64, 0u64);
    let mut robots: HashMap<String, (u64, u64)> = HashMap::new();
    for c in catalog.finished_counts(since)? {
        fleet.0 += c.tasks;
        let e = robots.entry(c.robot_id).or_default();
        e.0 += c.tasks;
        if c.success {
            fleet.1 += c.tasks;
            e.1 += c.tasks;
        }
    }
    robots.remove("");
    let mut models: HashMap<String, (u64, u64)> = HashMap::new();
    for o in catalog.outcome_counts(since)? {
        if o.model_version.is_empty() || !crate::rollout::counts(&o.reason, o.success) {
            continue;
        }
        let e = models.entry(o.model_version).or_default();
        e.0 += o.attempts;
        if o.success {
            e.1 += o.attempts;
        }
    }
    let threshold = a.success_rate_low.threshold;
    let window = format!("{} min", a.success_window_s / 60);
    let low = |(n, ok): (u64, u64)| {
        let rate = ok as f64 / n.max(1) as f64;
        (n >= a.success_min_tasks && rate < threshold).then_some(rate)
    };
    let mut found = Vec::new();
    if let Some(rate) = low(fleet) {
        found.push(Condition {
            rule: "success_rate_low",
            subject: "fleet".into(),
            robot_id: None,
            message: format!(
                "fleet task success {:.1} % ({} of {}) over the last {window}, below {:.0} %",
                100.0 * rate,
                fleet.1,
                fleet.0,
                100.0 * threshold
            ),
            value: Some(rate),
        });
    }
    let mut robots: Vec<_> = robots.into_iter().collect();
    robots.sort();
    for (id, t) in robots {
        if let Some(rate) = low(t) {
            found.push(Condition {
                rule: "success_rate_low",
                subject: id.clone(),
                message: format!(
                    "{id}: task success {:.1} % ({} of {}) over the last {window}, below {:.0} %",
                    100.0 * rate,
                    t.1,
                    t.0,
                    100.0 * threshold
                ),
                robot_id: Some(id),
                value: Some(rate),
            });
        }
    }
    let mut models: Vec<_> = models.into_iter().collect();
    models.sort();
    for (version, t) in models {
        if let Some(rate) = low(t) {
            found.push(Condition {
                rule: "success_rate_low",
                subject: format!("model:{version}"),
                robot_id: None,
                message: format!(
                    "model {version}: attempt success {:.1} % ({} of {}) over the last {window}, below {:.0} %",
                    100.0 * rate,
                    t.1,
                    t.0,
                    100.0 * threshold
                ),
                value: Some(rate),
            });
        }
    }
    Ok(found)
}

/// The rule engine's memory: since when each condition has held.
pub struct Engine {
    journal: Arc<Journal>,
    config: Alerts,
    pending: HashMap<(&'static str, String), u64>,
}

impl Engine {
    pub fn new(journal: Arc<Journal>, config: Alerts) -> Self {
        Self { journal, config, pending: HashMap::new() }
    }

    fn rule(&self, name: &str) -> Option<&AlertRule> {
        self.config.rules().into_iter().find(|(n, _)| *n == name).map(|(_, r)| r)
    }

    /// One evaluation: fires what held long enough, resolves what cleared.
    pub fn step(&mut self, found: Vec<Condition>, now: u64) -> anyhow::Result<()> {
        let firing = self.journal.firing()?;
        let mut holding: HashSet<(String, String)> = HashSet::new();
        let mut still: HashMap<(&'static str, String), u64> = HashMap::new();
        for c in found {
            holding.insert((c.rule.to_string(), c.subject.clone()));
            let key = (c.rule, c.subject.clone());
            let since = self.pending.get(&key).copied().unwrap_or(now);
            still.insert(key, since);
            let Some(rule) = self.rule(c.rule) else { continue };
            if now.saturating_sub(since) < rule.for_s * NS
                || firing.iter().any(|f| f.rule == c.rule && f.subject == c.subject)
            {
                continue;
            }
            let f = Firing {
                rule: c.rule,
                subject: &c.subject,
                robot_id: c.robot_id.as_deref(),
                severity: rule.severity.as_str(),
                since_unix_ns: since,
                message: &c.message,
                value: c.value,
            };
            if let Some(alert) = self.journal.fire(&f, now)? {
                tracing::warn!(rule = %alert.rule, subject = %alert.subject, severity = %alert.severity, message = %alert.message, "alert firing");
            }
        }
        self.pending = still;
        for f in firing {
            if !holding.contains(&(f.rule.clone(), f.subject.clone())) {
                let for_s = now.saturating_sub(f.fired_unix_ns) as f64 / 1e9;
                if self.journal.resolve(f.id, now, &format!("the condition cleared after {for_s:.0} s"))?.is_some() {
                    tracing::info!(rule = %f.rule, subject = %f.subject, "alert resolved");
                }
            }
        }
        Ok(())
    }
}

/// The operations loop: alert rules every `alerts.eval_period_ms`, the A/B
/// review every 5 s, a trend sample every minute.
pub async fn run(
    fleet: Arc<Fleet>,
    journal: Arc<Journal>,
    config: gantry_config::CloudConfig,
    leader: Arc<std::sync::atomic::AtomicBool>,
    mut stopped: watch::Receiver<bool>,
) {
    let engine = Arc::new(std::sync::Mutex::new(Engine::new(journal.clone(), config.alerts.clone())));
    let config = Arc::new(config);
    let mut tick = tokio::time::interval(Duration::from_millis(config.alerts.eval_period_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_review, mut last_sample) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        // Among replicas, the leader evaluates, samples the trend and reviews the rollout.
        if !leader.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let now = crate::unix_now_ns();
        let review = now.saturating_sub(last_review) >= 5 * NS;
        let sample = now.saturating_sub(last_sample) >= 60 * NS;
        let (fleet, journal, engine, config) = (fleet.clone(), journal.clone(), engine.clone(), config.clone());
        // SQLite calls block: off the runtime's worker threads.
        let result = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
            let snap = fleet.snapshot(now)?;
            let sampled = sample && fleet.sample_trend(&snap)?;
            if review {
                crate::rollout::review(&fleet.registry, &journal, fleet.tasks.catalog(), &config.rollout, now)?;
            }
            let found = conditions(&snap, fleet.tasks.catalog(), &config.alerts, now)?;
            engine.lock().unwrap_or_else(|e| e.into_inner()).step(found, now)?;
            Ok(sampled)
        })
        .await;
        match result {
            Ok(Ok(sampled)) => {
                if review {
                    last_review = now;
                }
                if sampled {
                    last_sample = now;
                }
            }
            Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "fleet evaluation failed; retrying next period"),
            Err(e) => tracing::error!(error = %e, "fleet evaluation panicked; retrying next period"),
        }
    }
}
