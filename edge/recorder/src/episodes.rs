//! Episodes: one per task, with its outcome. The cloud's tasks delimit them
//! (`tasks.rs` says when one starts and how it ended); a robot without tasks
//! may cut its work into stretches of `recorder.episode_s` instead.
//!
//! A task's outcome is the task's: a person walking past holds it and does not
//! fail it. A fixed stretch fails with the first reason met, in this order of
//! precedence as they happen — `estop`, `safe_stop`, `governor:CHECK` (a
//! rejected command) — else succeeds. An episode cut short by shutdown is a
//! failure, `interrupted`.

use std::time::Duration;

use gantry_safety::mode::Mode;

use super::messages::{failed_checks, EpisodeMsg};
use super::taps::ControlRecord;

pub struct Episodes {
    robot_id: String,
    boot_id: String,
    model_version: String,
    period_ns: u64,
    open: Option<OpenEpisode>,
}

struct OpenEpisode {
    /// (task id, kind) of a task; `None` for a fixed stretch.
    task: Option<(String, String)>,
    start_mono_ns: u64,
    start_unix_ns: u64,
    last_unix_ns: u64,
    ticks: u64,
    rejects: u64,
    failure: Option<String>,
}

impl OpenEpisode {
    fn new(task: Option<(String, String)>, start_mono_ns: u64, start_unix_ns: u64) -> Self {
        Self { task, start_mono_ns, start_unix_ns, last_unix_ns: start_unix_ns, ticks: 0, rejects: 0, failure: None }
    }
}

impl Episodes {
    pub fn new(robot_id: &str, model_version: &str, boot_id: &str, period: Duration) -> Self {
        Self {
            robot_id: robot_id.to_string(),
            boot_id: boot_id.to_string(),
            model_version: model_version.to_string(),
            period_ns: period.as_nanos() as u64,
            open: None,
        }
    }

    /// Accounts one control tick; returns the fixed stretch it completed, if any.
    pub fn on_control(&mut self, r: &ControlRecord, unix_ns: u64) -> Option<EpisodeMsg> {
        if self.open.is_none() && self.period_ns > 0 {
            self.open = Some(OpenEpisode::new(None, r.t_ns, unix_ns));
        }
        let ep = self.open.as_mut()?;
        ep.ticks += 1;
        ep.last_unix_ns = unix_ns;
        let reason = match Mode::from_u8(r.mode) {
            Mode::EStop => Some("estop".to_string()),
            Mode::SafeStop => Some("safe_stop".to_string()),
            _ if !r.approved => failed_checks(r.failed).first().map(|c| format!("governor:{c}")),
            _ => None,
        };
        if !r.approved {
            ep.rejects += 1;
        }
        if ep.failure.is_none() {
            ep.failure = reason;
        }
        if ep.task.is_none() && r.t_ns.saturating_sub(ep.start_mono_ns) >= self.period_ns {
            let ep = self.open.take()?;
            return Some(self.finish(ep, unix_ns, None));
        }
        None
    }

    /// A task starts: the open fixed stretch (if any) ends here, as it stood.
    pub fn begin_task(&mut self, task_id: &str, kind: &str, mono_ns: u64, unix_ns: u64) -> Option<EpisodeMsg> {
        let before = match self.open.take() {
            Some(ep) if ep.task.is_none() => Some(self.finish(ep, unix_ns, None)),
            Some(ep) => Some(self.finish(ep, unix_ns, Some("interrupted"))),
            None => None,
        };
        self.open = Some(OpenEpisode::new(Some((task_id.to_string(), kind.to_string())), mono_ns, unix_ns));
        before
    }

    /// The task `task_id` ended with the task's own outcome.
    pub fn end_task(&mut self, task_id: &str, success: bool, reason: &str, unix_ns: u64) -> Option<EpisodeMsg> {
        if self.open.as_ref().is_none_or(|ep| ep.task.as_ref().is_none_or(|(id, _)| id != task_id)) {
            return None;
        }
        let mut ep = self.open.take()?;
        ep.failure = (!success).then(|| reason.to_string());
        let end = unix_ns.max(ep.last_unix_ns);
        Some(self.finish(ep, end, None))
    }

    /// Ends the open episode at shutdown.
    pub fn interrupt(&mut self, unix_ns: u64) -> Option<EpisodeMsg> {
        let ep = self.open.take()?;
        let end = unix_ns.max(ep.last_unix_ns);
        Some(self.finish(ep, end, Some("interrupted")))
    }

    fn finish(&self, ep: OpenEpisode, end_unix_ns: u64, cut: Option<&str>) -> EpisodeMsg {
        let failure = ep.failure.or(cut.map(str::to_string));
        let (task_id, kind) = match ep.task {
            Some(t) => t,
            None => (format!("{}-{}", self.robot_id, ep.start_unix_ns / 1_000_000), String::new()),
        };
        EpisodeMsg {
            boot_id: self.boot_id.clone(),
            task_id,
            kind,
            robot_id: self.robot_id.clone(),
            model_version: self.model_version.clone(),
            start_unix_ns: ep.start_unix_ns,
            end_unix_ns,
            success: failure.is_none(),
            failure_reason: failure,
            ticks: ep.ticks,
            rejects: ep.rejects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_safety::governor::Check;

    fn tick(t_s: f64, approved: bool, mode: Mode) -> ControlRecord {
        ControlRecord {
            t_ns: (t_s * 1e9) as u64,
            approved,
            failed: if approved { 0 } else { 1 << (Check::WorkspaceClear as u16) },
            mode: mode as u8,
            ..ControlRecord::default()
        }
    }

    #[test]
    fn an_episode_fails_with_its_first_reason_and_the_next_starts_clean() {
        let mut e = Episodes::new("r", "v1", "b", Duration::from_secs(10));
        assert!(e.on_control(&tick(0.0, true, Mode::Running), 1).is_none());
        assert!(e.on_control(&tick(1.0, false, Mode::Running), 2).is_none());
        assert!(e.on_control(&tick(2.0, true, Mode::SafeStop), 3).is_none());
        let done = e.on_control(&tick(10.0, true, Mode::Running), 4).expect("10 s episode ends");
        assert!(!done.success);
        assert_eq!(done.failure_reason.as_deref(), Some("governor:workspace_clear"));
        assert_eq!((done.ticks, done.rejects), (4, 1));
        assert!(e.on_control(&tick(10.01, true, Mode::Running), 5).is_none());
        let done = e.on_control(&tick(20.01, true, Mode::Running), 6).expect("second episode ends");
        assert!(done.success, "{done:?}");
        assert!(e.on_control(&tick(20.02, true, Mode::Running), 7).is_none());
        let cut = e.interrupt(8).expect("open episode");
        assert_eq!(cut.failure_reason.as_deref(), Some("interrupted"));
    }

    #[test]
    fn a_task_is_one_episode_with_the_task_s_outcome() {
        let mut e = Episodes::new("r", "v1", "b", Duration::ZERO);
        assert!(e.on_control(&tick(0.0, true, Mode::Running), 1).is_none());
        assert!(e.begin_task("t-1", "pick", 1_000_000_000, 2).is_none());
        // A person walked past: rejections inside a task that still succeeded.
        for t in 1..5 {
            assert!(e.on_control(&tick(f64::from(t), t % 2 == 0, Mode::Running), 2 + t as u64).is_none());
        }
        assert!(e.end_task("t-0", true, "", 9).is_none(), "another task's end is not this one's");
        let done = e.end_task("t-1", true, "", 10).expect("the task's episode");
        assert_eq!((done.task_id.as_str(), done.kind.as_str(), done.success), ("t-1", "pick", true));
        assert_eq!((done.ticks, done.rejects, done.failure_reason), (4, 2, None));
        assert!(e.begin_task("t-2", "place", 11_000_000_000, 11).is_none());
        let failed = e.end_task("t-2", false, "blocked", 12).expect("the second task");
        assert_eq!(failed.failure_reason.as_deref(), Some("blocked"));
    }
}
