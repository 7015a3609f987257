//! The fleet's figures, as the operator reads them first: robots healthy by
//! their own account, today's tasks and success rate, frame-to-command
//! latency, models in use; each against its target. Also each robot's line of
//! the grid, the 7-day trends and today's top failure modes. `GET /api/fleet`,
//! the fleet page and the alert rules all read one [`Snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::sql::Db;
use crate::store::CloudCatalog;
use crate::tasks::{TaskState, Tasks};
use crate::vals;

const NS: u64 = 1_000_000_000;
pub const HOUR_NS: u64 = 3600 * NS;
pub const DAY_NS: u64 = 24 * HOUR_NS;
/// Days of trends kept and shown.
pub const TREND_DAYS: u64 = 7;

/// The hourly trend, in the catalog's database (both engines take this).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fleet_trend (
    hour BIGINT PRIMARY KEY,
    samples BIGINT NOT NULL,
    robots_sum BIGINT NOT NULL,
    healthy_sum BIGINT NOT NULL,
    latency_samples BIGINT NOT NULL,
    latency_mean_sum DOUBLE PRECISION NOT NULL,
    latency_p95_sum DOUBLE PRECISION NOT NULL
)";

/// Taken while creating the table on PostgreSQL, which replicas may do at once.
const SCHEMA_LOCK: i64 = 0x6761_6e74_7279_0030;

/// One robot, as the fleet grid shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RobotLine {
    pub robot_id: String,
    pub site: String,
    pub online: bool,
    /// `green`, `amber`, `red` as the robot reports itself; `offline`; or
    /// `unknown` before its first state message.
    pub state: String,
    /// The daemon's mode (`running`, `degraded`, `safe_stop`, `estop`), or
    /// `offline`.
    pub mode: String,
    pub model_version: Option<String>,
    pub task: Option<String>,
    pub progress: Option<f64>,
    pub latency_mean_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub net_rtt_ms: Option<f64>,
    pub disk_free_pct: Option<f64>,
    pub backlog: Option<u64>,
    pub last_seen_unix_ns: u64,
    /// Tasks this robot finished today (UTC): completed, failed.
    pub completed_today: u64,
    pub failed_today: u64,
    /// Errors the robot reports (VDA 5050 `errors`), in its words.
    pub errors: Vec<String>,
}

/// One hour of the trends.
#[derive(Debug, Clone, Serialize)]
pub struct TrendPoint {
    pub hour_unix_s: u64,
    pub success_rate: Option<f64>,
    pub tasks: u64,
    pub healthy: Option<f64>,
    pub latency_mean_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

/// A model in the registry beside its live figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModelLine {
    pub version: String,
    pub status: String,
    pub robots: u64,
    pub share: f64,
    /// What it was published with (its manifest's or the publisher's).
    pub metrics: Value,
    /// Attempts its robots reported over the last day, and the share that succeeded.
    pub attempts: u64,
    pub success_rate: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub unix_ns: u64,
    pub robots: u64,
    pub online: u64,
    pub healthy: u64,
    pub amber: u64,
    pub red: u64,
    pub offline: u64,
    pub tasks_completed_today: u64,
    pub tasks_failed_today: u64,
    pub tasks_queued: u64,
    pub tasks_running: u64,
    pub success_rate: Option<f64>,
    pub latency_mean_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Model version → robots running it.
    pub models: BTreeMap<String, u64>,
    pub model_lines: Vec<ModelLine>,
    /// Today's failure reasons, most frequent first.
    pub top_failures: Vec<(String, u64)>,
    pub lines: Vec<RobotLine>,
    pub targets: gantry_config::cloud::Fleet,
    /// Queued, assigned and running tasks, as read for this snapshot (the
    /// page lists them, the stuck rule reads their progress).
    pub open_tasks: Vec<crate::tasks::Task>,
}

impl Snapshot {
    /// The contract's `GET /api/fleet` (and more).
    pub fn to_json(&self, alerts_firing: usize, trends: &[TrendPoint]) -> Value {
        json!({
            "robots": self.robots,
            "online": self.online,
            "healthy": self.healthy,
            "amber": self.amber,
            "red": self.red,
            "offline": self.offline,
            "tasks_completed_today": self.tasks_completed_today,
            "tasks_failed_today": self.tasks_failed_today,
            "tasks_queued": self.tasks_queued,
            "tasks_running": self.tasks_running,
            "success_rate": self.success_rate,
            "latency_ms": {"mean": self.latency_mean_ms, "p95": self.latency_p95_ms},
            "models": self.models,
            "model_lines": self.model_lines,
            "top_failures": self.top_failures.iter().map(|(r, n)| json!({"reason": r, "tasks": n})).collect::<Vec<_>>(),
            "alerts_firing": alerts_firing,
            "targets": {
                "success_rate": self.targets.success_rate_target,
                "healthy": self.targets.healthy_target,
                "latency_p95_ms": self.targets.latency_p95_target_ms,
            },
            "trends": trends,
            "at": gantry_config::task::rfc3339(self.unix_ns),
        })
    }
}

/// The `q`-quantile (0-1) of `values` by nearest rank; `None` when empty.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

pub struct Fleet {
    /// The catalog's database: the hourly trend, and the tasks it counts.
    db: Db,
    /// Robots as ingestion knows them (SQLite, or PostgreSQL shared by replicas).
    pub robots: Arc<dyn CloudCatalog>,
    pub tasks: Arc<Tasks>,
    pub registry: Arc<crate::models::Registry>,
    pub targets: gantry_config::cloud::Fleet,
    pub offline_after_ns: u64,
}

impl Fleet {
    pub fn new(
        db: Db,
        robots: Arc<dyn CloudCatalog>,
        tasks: Arc<Tasks>,
        registry: Arc<crate::models::Registry>,
        targets: gantry_config::cloud::Fleet,
        offline_after_ns: u64,
    ) -> anyhow::Result<Self> {
        db.transaction(|tx| {
            tx.serialize(SCHEMA_LOCK)?;
            tx.execute(SCHEMA, &[]).map(drop)
        })?;
        Ok(Self { db, robots, tasks, registry, targets, offline_after_ns })
    }

    /// When a robot was last heard (status, log batches or state messages),
    /// and whether it is online: heard within `ingest.offline_after_s`, and
    /// its last word was not `offline`.
    pub fn presence(&self, now: u64, r: &crate::store::RobotRow, seen: Option<&crate::tasks::Seen>) -> (u64, bool) {
        let heard = seen.map_or(0, |s| s.received_unix_ns).max(r.last_seen_unix_ns);
        let online = now.saturating_sub(heard) < self.offline_after_ns
            && r.state != "offline"
            && !seen.is_some_and(|s| s.offline);
        (heard, online)
    }

    pub fn snapshot(&self, now: u64) -> anyhow::Result<Snapshot> {
        let seen = self.tasks.robots();
        let today = now - now % DAY_NS;
        let mut per_robot: HashMap<String, (u64, u64)> = HashMap::new();
        let mut failures: HashMap<String, u64> = HashMap::new();
        let (mut completed, mut failed) = (0, 0);
        for c in self.tasks.catalog().finished_counts(today)? {
            let entry = per_robot.entry(c.robot_id).or_default();
            if c.success {
                completed += c.tasks;
                entry.0 += c.tasks;
            } else {
                failed += c.tasks;
                entry.1 += c.tasks;
                *failures.entry(c.reason).or_default() += c.tasks;
            }
        }
        let open = self.tasks.catalog().open_tasks()?;
        let queued = open.iter().filter(|t| t.state == TaskState::Queued).count() as u64;
        let mut lines = Vec::new();
        for r in self.robots.robots()? {
            let s = seen.get(&r.robot_id);
            let (heard, online) = self.presence(now, &r, s);
            let t = s.map(|s| &s.state.telemetry);
            let (state, mode) = match (online, s) {
                (false, _) => ("offline".to_string(), "offline".to_string()),
                (true, Some(s)) => (s.state.health.clone(), s.state.mode.clone()),
                (true, None) => ("unknown".to_string(), r.mode.clone().unwrap_or_else(|| "unknown".into())),
            };
            let (done, fail) = per_robot.get(r.robot_id.as_str()).copied().unwrap_or_default();
            let model = t.map(|t| t.model_version.clone()).filter(|v| !v.is_empty()).or(r.model_version.clone());
            lines.push(RobotLine {
                site: t.map(|t| t.site.clone()).unwrap_or_default(),
                online,
                state,
                mode,
                model_version: model,
                task: s.and_then(|s| (!s.state.task_id.is_empty()).then(|| s.state.task_id.clone())),
                progress: s.and_then(|s| (!s.state.task_id.is_empty()).then_some(s.state.progress)),
                latency_mean_ms: t.and_then(|t| t.latency_mean_ms),
                latency_p95_ms: t.and_then(|t| t.latency_p95_ms),
                net_rtt_ms: t.and_then(|t| t.net_rtt_ms),
                disk_free_pct: t.and_then(|t| t.disk_free_pct),
                backlog: r.backlog,
                last_seen_unix_ns: heard,
                completed_today: done,
                failed_today: fail,
                errors: s
                    .map(|s| s.state.errors.iter().map(|e| e.error_description.clone()).collect())
                    .unwrap_or_default(),
                robot_id: r.robot_id,
            });
        }
        let count = |state: &str| lines.iter().filter(|l| l.state == state).count() as u64;
        let live: Vec<&RobotLine> = lines.iter().filter(|l| l.online).collect();
        let means: Vec<f64> = live.iter().filter_map(|l| l.latency_mean_ms).collect();
        let mut p95s: Vec<f64> = live.iter().filter_map(|l| l.latency_p95_ms).collect();
        let mut models: BTreeMap<String, u64> = BTreeMap::new();
        for l in &live {
            if let Some(v) = &l.model_version {
                *models.entry(v.clone()).or_default() += 1;
            }
        }
        let mut top_failures: Vec<(String, u64)> = failures.into_iter().collect();
        top_failures.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top_failures.truncate(10);
        let model_lines = self.model_lines(now, &models, live.len() as u64)?;
        Ok(Snapshot {
            unix_ns: now,
            robots: lines.len() as u64,
            online: live.len() as u64,
            healthy: live.iter().filter(|l| l.state == "green").count() as u64,
            amber: count("amber"),
            red: count("red"),
            offline: count("offline"),
            tasks_completed_today: completed,
            tasks_failed_today: failed,
            tasks_queued: queued,
            tasks_running: open.len() as u64 - queued,
            success_rate: (completed + failed > 0).then(|| completed as f64 / (completed + failed) as f64),
            latency_mean_ms: (!means.is_empty()).then(|| means.iter().sum::<f64>() / means.len() as f64),
            latency_p95_ms: quantile(&mut p95s, 0.95),
            models,
            model_lines,
            top_failures,
            lines,
            targets: self.targets.clone(),
            open_tasks: open,
        })
    }

    /// Registry models (newest first) with the robots on each and their
    /// reported success over the last day.
    fn model_lines(&self, now: u64, models: &BTreeMap<String, u64>, online: u64) -> anyhow::Result<Vec<ModelLine>> {
        let mut live: HashMap<String, (u64, u64)> = HashMap::new();
        for o in self.tasks.catalog().outcome_counts(now.saturating_sub(DAY_NS))? {
            if !crate::rollout::counts(&o.reason, o.success) {
                continue;
            }
            let e = live.entry(o.model_version).or_default();
            e.0 += o.attempts;
            if o.success {
                e.1 += o.attempts;
            }
        }
        let mut rows = self.registry.models()?;
        rows.sort_by_key(|m| std::cmp::Reverse(m.published_unix_ns));
        let mut lines: Vec<ModelLine> = rows
            .into_iter()
            .map(|m| {
                let (attempts, ok) = live.get(&m.version).copied().unwrap_or_default();
                let robots = models.get(&m.version).copied().unwrap_or(0);
                ModelLine {
                    share: if online > 0 { robots as f64 / online as f64 } else { 0.0 },
                    robots,
                    attempts,
                    success_rate: (attempts > 0).then(|| ok as f64 / attempts as f64),
                    status: m.status,
                    metrics: m.metrics,
                    version: m.version,
                }
            })
            .collect();
        // Models robots run that the registry does not know (a built-in baseline).
        for (version, robots) in models {
            if !lines.iter().any(|l| &l.version == version) {
                let (attempts, ok) = live.get(version).copied().unwrap_or_default();
                lines.push(ModelLine {
                    version: version.clone(),
                    status: "not in the registry".into(),
                    robots: *robots,
                    share: if online > 0 { *robots as f64 / online as f64 } else { 0.0 },
                    metrics: Value::Null,
                    attempts,
                    success_rate: (attempts > 0).then(|| ok as f64 / attempts as f64),
                });
            }
        }
        Ok(lines)
    }

    /// Adds `s` to its hour of the trends (and forgets hours past the window);
    /// whether it did (a fleet of no robots is not a point of the trend).
    pub fn sample_trend(&self, s: &Snapshot) -> anyhow::Result<bool> {
        if s.robots == 0 {
            return Ok(false);
        }
        let hour = s.unix_ns / HOUR_NS;
        let latency = s.latency_mean_ms.zip(s.latency_p95_ms);
        let params = vals![
            hour,
            s.robots,
            s.healthy,
            latency.is_some(),
            latency.map_or(0.0, |l| l.0),
            latency.map_or(0.0, |l| l.1),
            hour.saturating_sub(TREND_DAYS * 24)
        ];
        self.db.transaction(move |tx| {
            tx.execute(
                "INSERT INTO fleet_trend (hour, samples, robots_sum, healthy_sum, latency_samples, latency_mean_sum, \
                 latency_p95_sum) VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (hour) DO UPDATE SET \
                 samples = fleet_trend.samples + 1, robots_sum = fleet_trend.robots_sum + excluded.robots_sum, \
                 healthy_sum = fleet_trend.healthy_sum + excluded.healthy_sum, \
                 latency_samples = fleet_trend.latency_samples + excluded.latency_samples, \
                 latency_mean_sum = fleet_trend.latency_mean_sum + excluded.latency_mean_sum, \
                 latency_p95_sum = fleet_trend.latency_p95_sum + excluded.latency_p95_sum",
                &params[..6],
            )?;
            tx.execute("DELETE FROM fleet_trend WHERE hour < ?1", &params[6..])?;
            Ok(true)
        })
    }

    /// The last 7 days by hour, oldest first (hours without data left out).
    pub fn trends(&self, now: u64) -> anyhow::Result<Vec<TrendPoint>> {
        let from_hour = now / HOUR_NS - TREND_DAYS * 24 + 1;
        let mut points: BTreeMap<u64, TrendPoint> = BTreeMap::new();
        let rows = self.db.query(
            "SELECT hour, samples, robots_sum, healthy_sum, latency_samples, latency_mean_sum, latency_p95_sum \
             FROM fleet_trend WHERE hour >= ?1",
            &vals![from_hour],
        )?;
        for r in &rows {
            let (hour, robots, healthy, lat_n) = (r.u64(0)?, r.real(2)?, r.real(3)?, r.real(4)?);
            let (mean_sum, p95_sum) = (r.real(5)?, r.real(6)?);
            points.insert(
                hour,
                TrendPoint {
                    hour_unix_s: hour * 3600,
                    success_rate: None,
                    tasks: 0,
                    healthy: (robots > 0.0).then(|| healthy / robots),
                    latency_mean_ms: (lat_n > 0.0).then(|| mean_sum / lat_n),
                    latency_p95_ms: (lat_n > 0.0).then(|| p95_sum / lat_n),
                },
            );
        }
        let rows = self.db.query(
            "SELECT finished_unix_ns / ?1 AS h, SUM(CASE WHEN state = 'completed' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) FROM tasks \
             WHERE finished_unix_ns >= ?2 AND state IN ('completed', 'failed') GROUP BY h",
            &vals![HOUR_NS, from_hour * HOUR_NS],
        )?;
        for r in &rows {
            let (hour, ok, bad) = (r.u64(0)?, r.u64(1)?, r.u64(2)?);
            let p = points.entry(hour).or_insert(TrendPoint {
                hour_unix_s: hour * 3600,
                success_rate: None,
                tasks: 0,
                healthy: None,
                latency_mean_ms: None,
                latency_p95_ms: None,
            });
            p.tasks = ok + bad;
            p.success_rate = (ok + bad > 0).then(|| ok as f64 / (ok + bad) as f64);
        }
        Ok(points.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.95), Some(95.0));
        assert_eq!(quantile(&mut v, 0.5), Some(50.0));
        assert_eq!(quantile(&mut [7.0], 0.95), Some(7.0));
        assert_eq!(quantile(&mut [], 0.95), None);
    }
}
