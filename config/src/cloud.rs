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
    pub uploads: Uploads,
    pub models: Models,
    pub quality: Quality,
    pub lake: Lake,
    pub tasks: Tasks,
    pub factory: Factory,
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
}

impl Default for Quality {
    fn default() -> Self {
        Self { max_abs_joint_rad: std::f32::consts::PI, max_motor_temp_c: 80.0 }
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
    /// File of `robot_id = "password"` lines for the embedded broker; empty lets any robot in.
    pub credentials_path: String,
}

impl Default for Broker {
    fn default() -> Self {
        Self {
            mode: BrokerMode::Embedded,
            listen: "127.0.0.1:1883".into(),
            url: "mqtt://127.0.0.1:1883".into(),
            shared_group: "gantry-sync".into(),
            credentials_path: String::new(),
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
        check_public_key(c, "models.fleet_public_key", &self.models.fleet_public_key);
        c.range("tasks.stuck_after_s", self.tasks.stuck_after_s, 1..=86_400);
        c.range("tasks.lease_s", self.tasks.lease_s, 1..=3_600);
        c.range("tasks.max_attempts", self.tasks.max_attempts, 1..=100);
        c.range("tasks.safe_stop_grace_s", self.tasks.safe_stop_grace_s, 0..=3_600);
        check_http_url(c, "factory.webhook_url", &self.factory.webhook_url, true);
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
    }
}
