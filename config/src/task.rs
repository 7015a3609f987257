//! Tasks between cloud and robot (`docs/PROTOCOL.md`, "Tasks"), in the shape of
//! VDA 5050: the cloud sends an `order` (one task, one attempt), may follow it
//! with `instant-actions` (cancel, pause, resume), and the robot answers with its
//! `state` on every change and at least every [`STATE_PERIOD_S`] seconds.
//!
//! An order id names one attempt of one task (`TASK#ATTEMPT`): a robot's report
//! about an older attempt can never be mistaken for the current one, so the
//! cloud's fencing is a string comparison. Task states follow Open-RMF's:
//! `queued → assigned → running → completed | failed | canceled`.

use serde::{Deserialize, Serialize};

/// Topic leaves under `gantry/{robot}/`.
pub const ORDER: &str = "order";
pub const INSTANT_ACTIONS: &str = "instant-actions";
pub const STATE: &str = "state";

/// The message format of `order`, `instant-actions` and `state`.
pub const PROTOCOL_VERSION: &str = "1.0.0";

/// A robot sends its state at least this often, also when nothing changed.
pub const STATE_PERIOD_S: u64 = 10;

/// How many finished attempts a robot keeps repeating in its state until they
/// fall out: a result reaches the cloud even after a long time offline.
pub const MAX_RESULTS: usize = 16;

/// Task and order ids: `[A-Za-z0-9_.:-]{1,128}` (they appear in URLs and logs).
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Task kinds: `[a-z0-9_-]{1,32}`.
pub fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 32
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
}

/// `TASK#ATTEMPT`.
pub fn order_id(task_id: &str, attempt: u32) -> String {
    format!("{task_id}#{attempt}")
}

/// The task an order id belongs to, and the attempt.
pub fn parse_order_id(order_id: &str) -> Option<(&str, u32)> {
    let (task, attempt) = order_id.rsplit_once('#')?;
    Some((task, attempt.parse().ok()?)).filter(|(t, _)| valid_task_id(t))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    Normal,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Urgent => "urgent",
            Self::High => "high",
            Self::Normal => "normal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Urgent, Self::High, Self::Normal].into_iter().find(|p| p.as_str() == s)
    }

    /// Sorts urgent first.
    pub fn rank(self) -> u8 {
        self as u8
    }
}

/// Every message's header (VDA 5050's, in snake case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Per sender and topic, +1 per message.
    pub header_id: u64,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub version: String,
}

impl Header {
    pub fn new(header_id: u64, unix_ns: u64) -> Self {
        Self { header_id, timestamp: rfc3339(unix_ns), version: PROTOCOL_VERSION.into() }
    }
}

/// `gantry/{robot}/order` (cloud → robot, QoS 1, not retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    #[serde(flatten)]
    pub header: Header,
    pub order_id: String,
    /// +1 each time the cloud changes this order (it never does yet: 0).
    pub order_update_id: u64,
    pub task_id: String,
    pub kind: String,
    #[serde(default)]
    pub params: serde_json::Value,
    /// The robot abandons the order (`lease_expired`) after this long without
    /// hearing from the broker; the cloud waits longer before it reassigns.
    pub lease_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionType {
    /// VDA 5050's `cancelOrder`.
    Cancel,
    /// `startPause`.
    Pause,
    /// `stopPause`.
    Resume,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstantAction {
    pub action_id: String,
    pub action_type: ActionType,
    /// The order it applies to; a robot ignores an action for another order.
    pub order_id: String,
    #[serde(default)]
    pub reason: String,
}

/// `gantry/{robot}/instant-actions` (cloud → robot, QoS 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstantActions {
    #[serde(flatten)]
    pub header: Header,
    pub actions: Vec<InstantAction>,
}

/// Where the robot's current order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No order: the robot accepts one.
    Idle,
    Running,
    /// Paused by the cloud (`pause`); progress stands still.
    Paused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorLevel {
    Warning,
    Fatal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotError {
    pub error_type: String,
    pub error_level: ErrorLevel,
    pub error_description: String,
}

/// How an attempt ended on the robot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderResult {
    pub order_id: String,
    pub task_id: String,
    pub success: bool,
    /// Empty on success; else one of the taxonomy in `docs/PROTOCOL.md`.
    pub reason: String,
    pub started_at: String,
    pub finished_at: String,
    /// The model that ran the attempt (for the A/B comparison); empty from
    /// robots older than this field.
    #[serde(default)]
    pub model_version: String,
}

/// Gantry's addition to the VDA 5050 state: the figures the fleet dashboard
/// and its alert rules read. Absent figures are `null` (never a made-up zero).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Telemetry {
    pub model_version: String,
    /// `robot.site` of the robot's configuration; empty when not set.
    pub site: String,
    /// Frame-to-command latency over the control loop's recent window.
    pub latency_mean_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Broker round trip (a QoS 1 publish to its PUBACK), smoothed.
    pub net_rtt_ms: Option<f64>,
    /// Free space on the data disk, percent.
    pub disk_free_pct: Option<f64>,
}

impl Telemetry {
    /// Whether every figure present is a finite, non-negative number.
    pub fn is_valid(&self) -> bool {
        [self.latency_mean_ms, self.latency_p95_ms, self.net_rtt_ms, self.disk_free_pct]
            .iter()
            .flatten()
            .all(|v| v.is_finite() && *v >= 0.0)
    }

    /// The figures that are valid; the others become absent (a bad reading
    /// must not be shown as a number, nor cost the rest of the message).
    pub fn sanitized(&self) -> Self {
        let ok = |v: Option<f64>| v.filter(|v| v.is_finite() && *v >= 0.0);
        Self {
            latency_mean_ms: ok(self.latency_mean_ms),
            latency_p95_ms: ok(self.latency_p95_ms),
            net_rtt_ms: ok(self.net_rtt_ms),
            disk_free_pct: ok(self.disk_free_pct),
            ..self.clone()
        }
    }
}

/// `gantry/{robot}/state` (robot → cloud, QoS 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobotState {
    #[serde(flatten)]
    pub header: Header,
    pub robot_id: String,
    /// The order being worked on; empty when idle.
    pub order_id: String,
    pub order_update_id: u64,
    pub task_id: String,
    pub phase: Phase,
    /// Share of the task's work done, 0 to 1.
    pub progress: f64,
    /// VDA 5050's operating mode: `automatic` while the control loop runs the
    /// policy, `service` while the arm is held (safe stop, e-stop, start-up).
    pub operating_mode: String,
    /// The daemon's mode (`running`, `safe_stop`, `estop`, …) and its own
    /// green/amber/red state, as on its status page.
    pub mode: String,
    pub health: String,
    /// The task kinds this robot does.
    pub kinds: Vec<String>,
    pub errors: Vec<RobotError>,
    /// The last finished attempts, newest last, repeated until they fall out
    /// (at most [`MAX_RESULTS`]); the cloud applies each once.
    pub results: Vec<OrderResult>,
    #[serde(default)]
    pub telemetry: Telemetry,
}

/// `unix_ns` as RFC 3339 UTC with milliseconds.
pub fn rfc3339(unix_ns: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns)).to_string()
}

/// RFC 3339 (any offset) to Unix nanoseconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(text.trim()).ok()?;
    u64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_name_task_and_attempt() {
        assert_eq!(parse_order_id(&order_id("pick-17", 3)), Some(("pick-17", 3)));
        assert_eq!(parse_order_id("a#b#2"), None);
        assert_eq!(parse_order_id("pick-17"), None);
        assert_eq!(parse_order_id("#2"), None);
    }

    #[test]
    fn telemetry_refuses_non_finite_and_negative_figures() {
        let ok = Telemetry { latency_p95_ms: Some(14.0), disk_free_pct: Some(0.0), ..Telemetry::default() };
        assert!(ok.is_valid());
        assert!(Telemetry::default().is_valid(), "absent figures are fine");
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let t = Telemetry { net_rtt_ms: Some(bad), ..ok.clone() };
            assert!(!t.is_valid(), "{bad}");
            assert_eq!(t.sanitized(), Telemetry { net_rtt_ms: None, ..ok.clone() }, "only the bad figure goes");
        }
        // A robot older than the field: the state still parses.
        let old = r#"{"header_id":1,"timestamp":"2026-12-05T00:00:00Z","version":"1","robot_id":"r","order_id":"","order_update_id":0,"task_id":"","phase":"idle","progress":0,"operating_mode":"automatic","mode":"running","health":"green","kinds":[],"errors":[],"results":[]}"#;
        let s: RobotState = serde_json::from_str(old).unwrap();
        assert_eq!(s.telemetry, Telemetry::default());
    }

    #[test]
    fn rfc3339_round_trips_to_the_millisecond() {
        let t = 1_796_601_600_123_000_000;
        assert_eq!(rfc3339(t), "2026-12-07T00:00:00.123Z");
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn a_state_message_reads_back() {
        let s = RobotState {
            header: Header::new(7, 1_796_601_600_000_000_000),
            robot_id: "robot-0".into(),
            order_id: order_id("t1", 1),
            order_update_id: 0,
            task_id: "t1".into(),
            phase: Phase::Running,
            progress: 0.5,
            operating_mode: "automatic".into(),
            mode: "running".into(),
            health: "green".into(),
            kinds: vec!["pick".into()],
            errors: vec![],
            results: vec![],
            telemetry: Telemetry::default(),
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"header_id\":7"), "{json}");
        assert_eq!(serde_json::from_str::<RobotState>(&json).unwrap(), s);
    }
}
