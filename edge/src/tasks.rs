//! The robot's side of tasks (`docs/PROTOCOL.md`, "Tasks"): it takes one order
//! at a time from the cloud, works on it while the governor lets the arm move,
//! and reports where it is and how each order ended.
//!
//! Progress is the share of the task's work (`params.work_s`, else
//! `tasks.work_s`) done in approved control ticks: a person in the workspace or
//! a pause holds the task, it does not fail it. It fails on an e-stop
//! (`estop`), a firmware fault (`robot_fault`), a hold longer than
//! `tasks.max_hold_s` (`blocked`), no word from the broker for the order's lease
//! (`lease_expired`), the cloud's cancel (`canceled`) or a stop of the daemon
//! (`interrupted`). Finished orders are kept in `DATA_DIR/tasks.json` and
//! repeated in every state message until they fall out, so a result reaches the
//! cloud across a disconnection or a restart.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use gantry_config::task::{
    self as wire, ActionType, ErrorLevel, Order, OrderResult, Phase, RobotError, RobotState, Telemetry,
};

use crate::control::Mode;
use crate::pipeline::PipelineStatus;

pub use gantry_recorder::TaskEvent;

/// How many results `tasks.json` keeps.
const KEPT: usize = wire::MAX_RESULTS;

struct Current {
    order: Order,
    started_unix_ns: u64,
    work_ticks: f64,
    done_ticks: f64,
    paused: bool,
    /// Monotonic time of the last approved tick (or the start).
    last_approved_ns: u64,
}

impl Current {
    /// Work done, 0 to 1 (`done_ticks` only grows from 0; `work_ticks` ≥ 1).
    fn progress(&self) -> f64 {
        (self.done_ticks / self.work_ticks).min(1.0)
    }
}

/// Counters of the control loop at the last sample.
#[derive(Default, Clone, Copy)]
struct Seen {
    ticks: u64,
    incidents: u64,
}

pub struct Executor {
    robot: String,
    kinds: Vec<String>,
    work_s: f64,
    max_hold_ns: u64,
    rate_hz: f64,
    file: PathBuf,
    current: Option<Current>,
    results: VecDeque<OrderResult>,
    seen: Option<Seen>,
    errors: Vec<RobotError>,
    header_id: u64,
    /// The state changed since the last message.
    pub dirty: bool,
    events: Vec<TaskEvent>,
    /// The dashboard's figures, refreshed by the uplink before each state
    /// message; its model version (kept current by the uplink) also marks
    /// each result.
    pub telemetry: Telemetry,
}

impl Executor {
    /// Reads the kept results from `data_dir/tasks.json` (a damaged file is
    /// set aside and reported, never fatal).
    pub fn open(config: &gantry_config::EdgeConfig) -> Self {
        let file = Path::new(&config.robot.data_dir).join("tasks.json");
        let results = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice::<VecDeque<OrderResult>>(&bytes).unwrap_or_else(|e| {
                let aside = file.with_extension("json.damaged");
                tracing::warn!(error = %e, file = %file.display(), aside = %aside.display(), "task results unreadable; set aside, starting empty");
                let _ = std::fs::rename(&file, &aside);
                VecDeque::new()
            }),
            Err(_) => VecDeque::new(),
        };
        Self {
            robot: config.robot.id.clone(),
            kinds: config.tasks.kinds.clone(),
            work_s: config.tasks.work_s,
            max_hold_ns: (config.tasks.max_hold_s * 1e9) as u64,
            rate_hz: f64::from(config.control.rate_hz),
            file,
            current: None,
            results,
            seen: None,
            errors: Vec::new(),
            header_id: 0,
            dirty: true,
            events: Vec::new(),
            telemetry: Telemetry::default(),
        }
    }

    /// The current task's id and progress (0-1), if any.
    pub fn current(&self) -> Option<(String, f64)> {
        self.current.as_ref().map(|c| (c.order.task_id.clone(), c.progress()))
    }

    /// Start and end of tasks since the last call, for the recorder.
    pub fn take_events(&mut self) -> Vec<TaskEvent> {
        std::mem::take(&mut self.events)
    }

    /// An order from the cloud. Taken only when idle; the same order again is
    /// ignored, and one already finished is answered by its kept result.
    pub fn on_order(&mut self, order: Order, now_mono: u64, now_unix: u64) {
        if self.current.as_ref().is_some_and(|c| c.order.order_id == order.order_id)
            || self.results.iter().any(|r| r.order_id == order.order_id)
        {
            return;
        }
        if let Some(c) = &self.current {
            self.error(
                "order_rejected",
                ErrorLevel::Warning,
                format!("order {} refused: busy with {}", order.order_id, c.order.order_id),
            );
            return;
        }
        if !self.kinds.contains(&order.kind) {
            self.refuse(&order, now_unix, "unsupported_kind");
            return;
        }
        let work_s = match order.params.get("work_s") {
            None => self.work_s,
            Some(v) => match v.as_f64().filter(|s| s.is_finite() && (0.1..=3_600.0).contains(s)) {
                Some(s) => s,
                None => {
                    self.refuse(&order, now_unix, "invalid_params");
                    return;
                }
            },
        };
        tracing::info!(order = %order.order_id, kind = %order.kind, work_s, "task started");
        self.events.push(TaskEvent::Started { task_id: order.task_id.clone(), kind: order.kind.clone() });
        self.current = Some(Current {
            order,
            started_unix_ns: now_unix,
            work_ticks: (work_s * self.rate_hz).max(1.0),
            done_ticks: 0.0,
            paused: false,
            last_approved_ns: now_mono,
        });
        self.errors.clear();
        self.dirty = true;
    }

    /// Cancel, pause or resume, for the current order only.
    pub fn on_actions(&mut self, actions: &wire::InstantActions, now_unix: u64) {
        for a in &actions.actions {
            let Some(c) = self.current.as_mut().filter(|c| c.order.order_id == a.order_id) else { continue };
            match a.action_type {
                ActionType::Cancel => {
                    tracing::info!(order = %a.order_id, reason = %a.reason, "task canceled by the cloud");
                    self.finish(now_unix, false, "canceled");
                }
                ActionType::Pause => {
                    c.paused = true;
                    self.dirty = true;
                }
                ActionType::Resume => {
                    c.paused = false;
                    self.dirty = true;
                }
            }
        }
    }

    /// Accounts the control ticks since the last call. `silent_ns`: how long the
    /// broker has not been heard from.
    pub fn sample(&mut self, status: &PipelineStatus, link_fault: bool, silent_ns: u64, now_mono: u64, now_unix: u64) {
        let now = Seen { ticks: status.ticks.load(Relaxed), incidents: status.incidents.load(Relaxed) };
        let before = self.seen.replace(now).unwrap_or(now);
        let Some(c) = self.current.as_mut() else { return };
        let ticks = now.ticks.saturating_sub(before.ticks);
        let rejected = now.incidents.saturating_sub(before.incidents);
        let approved = ticks.saturating_sub(rejected);
        let mode = status.mode();
        let failure = if mode == Mode::EStop {
            Some("estop")
        } else if link_fault {
            Some("robot_fault")
        } else if silent_ns > c.order.lease_s.saturating_mul(1_000_000_000) {
            Some("lease_expired")
        } else {
            None
        };
        if let Some(why) = failure {
            self.finish(now_unix, false, why);
            return;
        }
        if c.paused {
            c.last_approved_ns = now_mono;
            return;
        }
        if approved > 0 && mode != Mode::SafeStop {
            c.last_approved_ns = now_mono;
            let before = (c.done_ticks / c.work_ticks * 10.0) as u64;
            c.done_ticks += approved as f64;
            // A state message per tenth of the work (and the periodic one) is
            // what the cloud's stuck detection needs.
            self.dirty |= (c.done_ticks / c.work_ticks * 10.0) as u64 != before;
            if c.done_ticks >= c.work_ticks {
                self.finish(now_unix, true, "");
            }
        } else if now_mono.saturating_sub(c.last_approved_ns) > self.max_hold_ns {
            self.finish(now_unix, false, "blocked");
        }
    }

    /// Ends the current order at shutdown.
    pub fn interrupt(&mut self, now_unix: u64) {
        if self.current.is_some() {
            self.finish(now_unix, false, "interrupted");
        }
    }

    fn finish(&mut self, now_unix: u64, success: bool, reason: &str) {
        let Some(c) = self.current.take() else { return };
        tracing::info!(order = %c.order.order_id, success, reason, "task finished");
        self.events.push(TaskEvent::Finished { task_id: c.order.task_id.clone(), success, reason: reason.to_string() });
        self.record(&c.order, c.started_unix_ns, now_unix, success, reason);
    }

    /// An order refused before any work: an episode of no length, so the
    /// data shows every task the robot was given.
    fn refuse(&mut self, order: &Order, now_unix: u64, reason: &str) {
        tracing::info!(order = %order.order_id, kind = %order.kind, reason, "task refused");
        self.events.push(TaskEvent::Started { task_id: order.task_id.clone(), kind: order.kind.clone() });
        self.events.push(TaskEvent::Finished { task_id: order.task_id.clone(), success: false, reason: reason.into() });
        self.record(order, now_unix, now_unix, false, reason);
    }

    fn record(&mut self, order: &Order, started: u64, finished: u64, success: bool, reason: &str) {
        if self.results.len() >= KEPT {
            self.results.pop_front();
        }
        self.results.push_back(OrderResult {
            order_id: order.order_id.clone(),
            task_id: order.task_id.clone(),
            success,
            reason: reason.to_string(),
            started_at: wire::rfc3339(started),
            finished_at: wire::rfc3339(finished),
            model_version: self.telemetry.model_version.clone(),
        });
        if let Err(e) = self.persist() {
            // The result still goes out in this run's state messages.
            tracing::error!(error = %e, file = %self.file.display(), "cannot keep task results on disk");
        }
        self.dirty = true;
    }

    /// Writes the results atomically: a crash leaves the old file or the new.
    fn persist(&self) -> std::io::Result<()> {
        let tmp = self.file.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&self.results).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.file)?;
        if let Some(dir) = self.file.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn error(&mut self, kind: &str, level: ErrorLevel, description: String) {
        tracing::warn!(%description, "{kind}");
        self.errors.push(RobotError { error_type: kind.into(), error_level: level, error_description: description });
        if self.errors.len() > 8 {
            self.errors.remove(0);
        }
        self.dirty = true;
    }

    /// The `state` message now; `health` is the page's green/amber/red.
    pub fn state(&mut self, mode: Mode, health: &str, now_unix: u64) -> RobotState {
        self.header_id += 1;
        self.dirty = false;
        let (order_id, task_id, phase, progress) = match &self.current {
            Some(c) => (
                c.order.order_id.clone(),
                c.order.task_id.clone(),
                if c.paused { Phase::Paused } else { Phase::Running },
                c.progress(),
            ),
            None => (String::new(), String::new(), Phase::Idle, 0.0),
        };
        RobotState {
            header: wire::Header::new(self.header_id, now_unix),
            robot_id: self.robot.clone(),
            order_id,
            order_update_id: 0,
            task_id,
            phase,
            progress,
            operating_mode: if matches!(mode, Mode::Running | Mode::Degraded) { "automatic" } else { "service" }.into(),
            mode: mode.as_str().into(),
            health: health.into(),
            kinds: self.kinds.clone(),
            errors: self.errors.clone(),
            results: self.results.iter().cloned().collect(),
            telemetry: self.telemetry.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> gantry_config::EdgeConfig {
        let mut c = gantry_config::EdgeConfig::default();
        c.robot.data_dir = dir.display().to_string();
        c.tasks.work_s = 1.0;
        c.tasks.max_hold_s = 2.0;
        c
    }

    fn order(id: &str, kind: &str) -> Order {
        Order {
            header: wire::Header::new(1, 0),
            order_id: wire::order_id(id, 1),
            order_update_id: 0,
            task_id: id.into(),
            kind: kind.into(),
            params: serde_json::json!({}),
            lease_s: 60,
        }
    }

    /// `ticks` control ticks of which `rejected` were held, 10 ms apart.
    fn run(e: &mut Executor, status: &PipelineStatus, ticks: u64, rejected: u64, t: &mut u64) {
        status.ticks.fetch_add(ticks, Relaxed);
        status.incidents.fetch_add(rejected, Relaxed);
        *t += ticks * 10_000_000;
        e.sample(status, false, 0, *t, *t);
    }

    #[test]
    fn a_person_walking_past_holds_the_task_without_failing_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Executor::open(&config(dir.path()));
        let status = PipelineStatus::default();
        let mut t = 1_000_000_000;
        e.sample(&status, false, 0, t, t);
        e.on_order(order("t1", "pick"), t, t);
        run(&mut e, &status, 50, 0, &mut t);
        assert!((e.state(Mode::Running, "green", t).progress - 0.5).abs() < 1e-9);
        // 1.5 s held (under max_hold_s): no progress, no failure.
        run(&mut e, &status, 150, 150, &mut t);
        let s = e.state(Mode::Running, "amber", t);
        assert_eq!((s.phase, s.results.len()), (Phase::Running, 0));
        assert!((s.progress - 0.5).abs() < 1e-9);
        run(&mut e, &status, 50, 0, &mut t);
        let s = e.state(Mode::Running, "green", t);
        assert_eq!(s.phase, Phase::Idle);
        assert_eq!(s.results.len(), 1);
        assert!(s.results[0].success, "{:?}", s.results);
        assert_eq!(
            e.take_events(),
            vec![
                TaskEvent::Started { task_id: "t1".into(), kind: "pick".into() },
                TaskEvent::Finished { task_id: "t1".into(), success: true, reason: String::new() }
            ]
        );
    }

    #[test]
    fn a_hold_past_the_limit_an_estop_and_a_silent_broker_fail_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Executor::open(&config(dir.path()));
        let status = PipelineStatus::default();
        let mut t = 1_000_000_000;
        e.sample(&status, false, 0, t, t);
        e.on_order(order("held", "pick"), t, t);
        run(&mut e, &status, 100, 100, &mut t);
        run(&mut e, &status, 110, 110, &mut t);
        e.on_order(order("stopped", "pick"), t, t);
        status.mode.store(Mode::EStop as u8, Relaxed);
        run(&mut e, &status, 1, 1, &mut t);
        status.mode.store(Mode::Running as u8, Relaxed);
        e.on_order(order("cut-off", "pick"), t, t);
        e.sample(&status, false, 61_000_000_000, t, t);
        e.on_order(order("weld", "weld"), t, t);
        let reasons: Vec<_> = e.state(Mode::Running, "green", t).results.iter().map(|r| r.reason.clone()).collect();
        assert_eq!(reasons, ["blocked", "estop", "lease_expired", "unsupported_kind"]);
    }

    #[test]
    fn results_survive_a_restart_and_an_order_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let status = PipelineStatus::default();
        let mut t = 1_000_000_000;
        {
            let mut e = Executor::open(&config(dir.path()));
            e.sample(&status, false, 0, t, t);
            e.on_order(order("t1", "place"), t, t);
            run(&mut e, &status, 100, 0, &mut t);
        }
        let mut e = Executor::open(&config(dir.path()));
        let s = e.state(Mode::Running, "green", t);
        assert_eq!(s.results.iter().map(|r| (r.task_id.as_str(), r.success)).collect::<Vec<_>>(), [("t1", true)]);
        // The cloud sends the finished order again: it is not run twice.
        e.on_order(order("t1", "place"), t, t);
        assert_eq!(e.state(Mode::Running, "green", t).phase, Phase::Idle);
        assert!(e.take_events().is_empty());
    }
}
