//! Configuration of the cloud sync service (`gantry-sync`).

use serde::{Deserialize, Serialize};

use crate::problem::{check_broker_url, check_http_url, check_public_key, check_socket_addr, Checker};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    pub service: Service,
    pub broker: Broker,
    pub http: Http,
    pub ingest: Ingest,
    pub storage: Storage,
    pub catalog: Catalog,
    pub uploads: Uploads,
    pub models: Models,
    pub quality: Quality,
    pub lake: Lake,
    pub tasks: Tasks,
    pub factory: Factory,
    pub fleet: Fleet,
    pub alerts: Alerts,
    pub rollout: Rollout,
}

/// The fleet page's targets: each headline figure is shown against one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fleet {
    /// Share of today's finished tasks that succeed.
    pub success_rate_target: f64,
    /// Share of robots green (as each reports itself).
    pub healthy_target: f64,
    /// Frame-to-command latency, p95 over the fleet.
    pub latency_p95_target_ms: f64,
}

impl Default for Fleet {
    fn default() -> Self {
        Self { success_rate_target: 0.98, healthy_target: 0.95, latency_p95_target_ms: 100.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert rule: its condition must hold `for_s` before it fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long the condition must hold before the alert fires.
    pub for_s: u64,
    pub severity: Severity,
    /// The rule's limit, in the unit its name says (see `[alerts]`).
    #[serde(default)]
    pub threshold: f64,
}

fn yes() -> bool {
    true
}

impl AlertRule {
    fn new(for_s: u64, severity: Severity, threshold: f64) -> Self {
        Self { enabled: true, for_s, severity, threshold }
    }
}

/// The operator's alerts: each rule fires once per robot (or fleet, or model)
/// while its condition holds, and resolves when it clears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Alerts {
    /// `http(s)://…` receiving each alert's firing and resolution as a JSON POST
    /// with an `Idempotency-Key` header, retried until a 2xx; empty: none sent.
    pub webhook_url: String,
    /// The rules are evaluated this often.
    pub eval_period_ms: u64,
    /// No word from the robot (threshold unused).
    pub robot_offline: AlertRule,
    /// A task on the robot without progress for `threshold` seconds.
    pub robot_stuck: AlertRule,
    /// Task success rate below `threshold` (0-1) over the last
    /// `success_window_s`, with at least `success_min_tasks` finished; for the
    /// fleet, each robot and each model.
    pub success_rate_low: AlertRule,
    pub success_window_s: u64,
    pub success_min_tasks: u64,
    /// Frame-to-command latency p95 above `threshold` milliseconds.
    pub latency_high: AlertRule,
    /// Broker round trip above `threshold` milliseconds.
    pub network_latency_high: AlertRule,
    /// Free space on the robot's data disk below `threshold` percent.
    pub disk_nearly_full: AlertRule,
    /// The robot is in e-stop (threshold unused).
    pub robot_estop: AlertRule,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            eval_period_ms: 1000,
            robot_offline: AlertRule::new(60, Severity::Critical, 0.0),
            robot_stuck: AlertRule::new(0, Severity::Warning, 60.0),
            success_rate_low: AlertRule::new(300, Severity::Warning, 0.9),
            success_window_s: 3600,
            success_min_tasks: 20,
            latency_high: AlertRule::new(60, Severity::Warning, 100.0),
            network_latency_high: AlertRule::new(120, Severity::Warning, 500.0),
            disk_nearly_full: AlertRule::new(300, Severity::Warning, 10.0),
            robot_estop: AlertRule::new(0, Severity::Critical, 0.0),
        }
    }
}

impl Alerts {
    /// Each rule by its name (the `rule` of an alert).
    pub fn rules(&self) -> [(&'static str, &AlertRule); 7] {
        [
            ("robot_offline", &self.robot_offline),
            ("robot_stuck", &self.robot_stuck),
            ("success_rate_low", &self.success_rate_low),
            ("latency_high", &self.latency_high),
            ("network_latency_high", &self.network_latency_high),
            ("disk_nearly_full", &self.disk_nearly_full),
            ("robot_estop", &self.robot_estop),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decide {
    /// Promote or roll back by itself, and log why.
    Auto,
    /// Log the recommendation; an operator acts on it.
    Recommend,
}

/// The A/B test of a candidate model, decided on task outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rollout {
    pub decide: Decide,
    /// Finished attempts each of candidate and production needs before a verdict.
    pub min_attempts: u64,
    /// Attempts of a task kind on each side before that kind is judged.
    pub min_attempts_per_kind: u64,
    /// The candidate may be at most this much worse (success rate, 0-1):
    /// the confidence interval's lower end of (candidate − production) must
    /// stay above −margin to promote; its upper end below −margin rolls back.
    pub margin: f64,
    /// A task kind on which the candidate does this much worse rolls it back.
    pub max_kind_drop: f64,
    /// Two-sided confidence of the interval on the difference.
    pub confidence: f64,
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            decide: Decide::Auto,
            min_attempts: 40,
            min_attempts_per_kind: 10,
            margin: 0.05,
            max_kind_drop: 0.2,
            confidence: 0.95,
        }
    }
}

/// The task queue and its allocation to robots (`docs/PROTOCOL.md`, "Tasks").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tasks {
    /// A robot working on a task whose progress stands still this long loses it
    /// to another robot.
    pub stuck_after_s: u64,
    /// A robot keeps working on a task this long without hearing from the
    /// broker; only after that (and a margin) is its task given to another.
    pub lease_s: u64,
    /// Attempts (robots) per task before it fails with the last reason.
    pub max_attempts: u32,
    /// A robot in safe stop this long loses its task (an e-stop at once).
    pub safe_stop_grace_s: u64,
}

impl Default for Tasks {
    fn default() -> Self {
        Self { stuck_after_s: 120, lease_s: 60, max_attempts: 3, safe_stop_grace_s: 10 }
    }
}

/// The factory's systems: where task outcomes and robot failures are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Factory {
    /// `http(s)://…` receiving `task.completed`, `task.failed` and
    /// `robot.failure` as JSON POSTs with an `Idempotency-Key` header, retried
    /// until a 2xx; empty: none sent.
    pub webhook_url: String,
}

/// The Parquet export for data lakes (`lake/` in the object store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lake {
    /// Newly stored batches are exported this often.
    pub export_period_s: u64,
}

impl Default for Lake {
    fn default() -> Self {
        Self { export_period_s: 60 }
    }
}

/// Limits of the data quality checks run at ingestion (flags, never drops).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quality {
    /// A commanded joint position beyond ± this is out of the workspace.
    pub max_abs_joint_rad: f32,
    /// A motor hotter than this makes the robot unhealthy.
    pub max_motor_temp_c: f32,
    /// A policy goal that moves a joint further than this from the previous
    /// tick's goal is an outlier.
    pub max_goal_step_rad: f32,
    /// A recorded image whose sharpness (variance of the Laplacian of its
    /// luma) is below this is flagged `blurred`.
    pub min_blur_score: f32,
}

impl Default for Quality {
    fn default() -> Self {
        Self {
            max_abs_joint_rad: std::f32::consts::PI,
            max_motor_temp_c: 80.0,
            max_goal_step_rad: 0.5,
            min_blur_score: 20.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Service {
    pub data_dir: String,
}

impl Default for Service {
    fn default() -> Self {
        Self { data_dir: "./gantry-data/cloud".into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// rumqttd inside the service, listening on `broker.listen`.
    Embedded,
    /// Mosquitto, EMQX or another MQTT v5 broker at `broker.url`.
    External,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Broker {
    pub mode: BrokerMode,
    pub listen: String,
    pub url: String,
    /// MQTT v5 shared-subscription group, so several instances split the ingest.
    pub shared_group: String,
    /// This instance's MQTT client id on an external broker (its sessions keep
    /// the id across restarts, so what the broker queued meanwhile is
    /// delivered): one per replica.
    pub client_id: String,
    /// File of `robot_id = "password"` lines for the embedded broker; empty lets any robot in.
    pub credentials_path: String,
    /// The embedded broker's front closes a connection whose CONNECT has not
    /// arrived whole within this long.
    pub connect_timeout_ms: u64,
    /// Connections still before their CONNECT, at most; more are closed at once.
    pub max_pending_connects: u32,
    /// PEM file of the CA that signed the external broker's certificate (`mqtts://`).
    pub ca_path: String,
    /// PEM certificate and key cloud sync presents, for a broker that
    /// authenticates clients by certificate (both or neither).
    pub client_cert_path: String,
    pub client_key_path: String,
}

impl Default for Broker {
    fn default() -> Self {
        Self {
            mode: BrokerMode::Embedded,
            listen: "127.0.0.1:1883".into(),
            url: "mqtt://127.0.0.1:1883".into(),
            shared_group: "gantry-sync".into(),
            client_id: "gantry-sync".into(),
            credentials_path: String::new(),
            connect_timeout_ms: 5_000,
            max_pending_connects: 512,
            ca_path: String::new(),
            client_cert_path: String::new(),
            client_key_path: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    pub listen: String,
}

impl Default for Http {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8090".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ingest {
    pub max_payload_kb: u64,
    /// A robot not heard from for this long is shown offline.
    pub offline_after_s: u64,
}

impl Default for Ingest {
    fn default() -> Self {
        Self { max_payload_kb: 1024, offline_after_s: 90 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// `file://PATH` (relative paths are under service.data_dir) or `s3://BUCKET/PREFIX`.
    pub object_store_url: String,
}

impl Default for Storage {
    fn default() -> Self {
        Self { object_store_url: "file://objects".into() }
    }
}

/// Where the catalog of stored batches, uploads and robots lives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Catalog {
    /// Empty: SQLite in service.data_dir (one instance). `postgres://USER@HOST:PORT/DB`:
    /// PostgreSQL, shared by several replicas.
    pub url: String,
    /// The PEM file of the CA that signed the PostgreSQL server's
    /// certificate. Set: the connection is TLS (never plain) and the server
    /// must present a certificate for the URL's host signed by it.
    pub ca_path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// The weekly bulk upload: every robot gets a slot inside this window, staggered so
/// the fleet stays under `fleet_bandwidth_mbps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Uploads {
    pub window_day: Weekday,
    pub window_start_hour: u32,
    pub window_hours: u32,
    pub fleet_bandwidth_mbps: f64,
    pub robot_bandwidth_mbps: f64,
    pub chunk_kb: u64,
}

impl Default for Uploads {
    fn default() -> Self {
        Self {
            window_day: Weekday::Sunday,
            window_start_hour: 22,
            window_hours: 8,
            fleet_bandwidth_mbps: 1000.0,
            robot_bandwidth_mbps: 100.0,
            chunk_kb: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Models {
    /// The ed25519 public key robots verify model packages with (hex or file path); empty until set.
    pub fleet_public_key: String,
}

impl CloudConfig {
    /// Checks ranges and cross-field rules.
    pub fn check(&self, c: &mut Checker) {
        c.non_empty("service.data_dir", &self.service.data_dir, "a directory path");
        c.file("broker.credentials_path", &self.broker.credentials_path, "a file of robot passwords, or \"\"");
        c.range("broker.connect_timeout_ms", self.broker.connect_timeout_ms, 100..=120_000);
        c.range("broker.max_pending_connects", u64::from(self.broker.max_pending_connects), 1..=100_000);
        let b = &self.broker;
        c.file("broker.ca_path", &b.ca_path, "the PEM file of the broker's CA, or \"\"");
        c.file("broker.client_cert_path", &b.client_cert_path, "a PEM certificate, or \"\"");
        c.file("broker.client_key_path", &b.client_key_path, "a PEM private key, or \"\"");
        c.rule(
            b.client_cert_path.is_empty() == b.client_key_path.is_empty(),
            "broker.client_cert_path",
            "set without broker.client_key_path (or the other way round)",
            "both a certificate and its key, or neither",
        );
        let tls = b.url.starts_with("mqtts://") || b.url.starts_with("ssl://");
        c.rule(
            b.mode != BrokerMode::External || !tls || !b.ca_path.is_empty(),
            "broker.ca_path",
            format!("empty, but broker.url {:?} is mqtts://", b.url),
            "the PEM file of the CA that signed the broker's certificate",
        );
        check_public_key(c, "models.fleet_public_key", &self.models.fleet_public_key);
        c.range("tasks.stuck_after_s", self.tasks.stuck_after_s, 1..=86_400);
        c.range("tasks.lease_s", self.tasks.lease_s, 1..=3_600);
        c.range("tasks.max_attempts", self.tasks.max_attempts, 1..=100);
        c.range("tasks.safe_stop_grace_s", self.tasks.safe_stop_grace_s, 0..=3_600);
        check_http_url(c, "factory.webhook_url", &self.factory.webhook_url, true);
        check_http_url(c, "alerts.webhook_url", &self.alerts.webhook_url, true);
        c.range_f64("fleet.success_rate_target", self.fleet.success_rate_target, 0.0..=1.0);
        c.range_f64("fleet.healthy_target", self.fleet.healthy_target, 0.0..=1.0);
        c.range_f64("fleet.latency_p95_target_ms", self.fleet.latency_p95_target_ms, 0.1..=60_000.0);
        let a = &self.alerts;
        c.range("alerts.eval_period_ms", a.eval_period_ms, 50..=60_000);
        c.range("alerts.success_window_s", a.success_window_s, 60..=30 * 86_400);
        c.range("alerts.success_min_tasks", a.success_min_tasks, 1..=1_000_000);
        for (name, rule) in a.rules() {
            c.range(&format!("alerts.{name}.for_s"), rule.for_s, 0..=7 * 86_400);
        }
        c.range_f64("alerts.robot_stuck.threshold", a.robot_stuck.threshold, 1.0..=86_400.0);
        c.range_f64("alerts.success_rate_low.threshold", a.success_rate_low.threshold, 0.0..=1.0);
        c.range_f64("alerts.latency_high.threshold", a.latency_high.threshold, 0.1..=60_000.0);
        c.range_f64("alerts.network_latency_high.threshold", a.network_latency_high.threshold, 0.1..=600_000.0);
        c.range_f64("alerts.disk_nearly_full.threshold", a.disk_nearly_full.threshold, 0.0..=100.0);
        let r = &self.rollout;
        c.range("rollout.min_attempts", r.min_attempts, 1..=10_000_000);
        c.range("rollout.min_attempts_per_kind", r.min_attempts_per_kind, 1..=10_000_000);
        c.range_f64("rollout.margin", r.margin, 0.0..=1.0);
        c.range_f64("rollout.max_kind_drop", r.max_kind_drop, 0.0..=1.0);
        c.range_f64("rollout.confidence", r.confidence, 0.5..=0.9999);
        match self.broker.mode {
            BrokerMode::Embedded => check_socket_addr(c, "broker.listen", &self.broker.listen),
            BrokerMode::External => check_broker_url(c, "broker.url", &self.broker.url),
        }
        c.non_empty("broker.shared_group", &self.broker.shared_group, "a subscription group name");
        check_socket_addr(c, "http.listen", &self.http.listen);
        if self.broker.mode == BrokerMode::Embedded {
            c.rule(
                // Port 0 asks the OS for a free port each time: no clash.
                self.http.listen != self.broker.listen || self.http.listen.ends_with(":0"),
                "http.listen",
                format!("{} is also broker.listen", self.http.listen),
                "an address other than the embedded broker's",
            );
        }
        c.range("ingest.max_payload_kb", self.ingest.max_payload_kb, 1..=65_536);
        c.range("ingest.offline_after_s", self.ingest.offline_after_s, 1..=86_400);
        let url = &self.storage.object_store_url;
        c.rule(
            url.starts_with("file://") || url.starts_with("s3://"),
            "storage.object_store_url",
            format!("{url:?} has no supported scheme"),
            "file://PATH or s3://BUCKET/PREFIX",
        );
        let url = &self.catalog.url;
        c.rule(
            url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "catalog.url",
            format!("{url:?} has no supported scheme"),
            "\"\" (SQLite in service.data_dir) or postgres://USER[:PASSWORD]@HOST:PORT/DATABASE",
        );
        c.file("catalog.ca_path", &self.catalog.ca_path, "the PEM file of the PostgreSQL server's CA, or \"\"");
        c.rule(
            self.catalog.ca_path.is_empty() || !url.is_empty(),
            "catalog.ca_path",
            "set, but catalog.url is empty (SQLite needs no TLS)",
            "\"\" with the embedded SQLite catalog, or a CA file with a postgres:// catalog.url",
        );
        let id = &self.broker.client_id;
        c.rule(
            !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
            "broker.client_id",
            format!("{id:?} is not a client id"),
            "1 to 64 of a-z, A-Z, 0-9, '-' and '_', one per replica",
        );
        let u = &self.uploads;
        c.range("uploads.window_start_hour", u.window_start_hour, 0..=23);
        c.range("uploads.window_hours", u.window_hours, 1..=168);
        c.range_f64("uploads.fleet_bandwidth_mbps", u.fleet_bandwidth_mbps, 0.1..=1e6);
        c.range_f64("uploads.robot_bandwidth_mbps", u.robot_bandwidth_mbps, 0.1..=1e6);
        c.rule(
            u.robot_bandwidth_mbps <= u.fleet_bandwidth_mbps,
            "uploads.robot_bandwidth_mbps",
            format!("{} exceeds uploads.fleet_bandwidth_mbps = {}", u.robot_bandwidth_mbps, u.fleet_bandwidth_mbps),
            "a per-robot cap no larger than the fleet cap",
        );
        c.range("uploads.chunk_kb", u.chunk_kb, 4..=65_536);
        c.range_f64("quality.max_abs_joint_rad", f64::from(self.quality.max_abs_joint_rad), 0.01..=100.0);
        c.range("lake.export_period_s", self.lake.export_period_s, 1..=86_400);
        c.range_f64("quality.max_motor_temp_c", f64::from(self.quality.max_motor_temp_c), 0.0..=300.0);
        c.range_f64("quality.max_goal_step_rad", f64::from(self.quality.max_goal_step_rad), 0.001..=100.0);
        c.range_f64("quality.min_blur_score", f64::from(self.quality.min_blur_score), 0.0..=100_000.0);
    }
}
