//! What the daemon shows of itself: one [`View`] over the live counters of every
//! part, rendered as the contract's `/api/status` JSON and as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gantry_firmware_bridge::link::FirmwareLink;
use gantry_hal::CaptureStats;
use serde_json::{json, Value};

use crate::governor::{Check, GovernorStats, Incident};
use crate::health::HealthSnapshot;
use crate::pipeline::{PipelineStatus, RecentIncidents, LATENCY_BUCKETS_MS};
use crate::record::quota::ImageLevel;
use crate::record::taps::Taps;
use crate::record::RecorderStats;

/// The link to the cloud, as far as the robot knows it.
#[derive(Debug, Default)]
pub struct SyncStatus {
    /// The uplink's MQTT session is up.
    pub connected: AtomicBool,
    /// Log batches in the outbox, waiting for the broker's acknowledgement.
    pub backlog: AtomicU64,
    /// Broker round trip (QoS 1 publish to PUBACK), smoothed, microseconds;
    /// 0 until measured.
    pub rtt_us: AtomicU64,
    /// The routes to the broker, primary first (`uplink.broker_url`, then `uplink.broker_urls`).
    pub routes: std::sync::OnceLock<Vec<String>>,
    /// Index into `routes` of the one last connected.
    pub route: AtomicU64,
    /// Switches to another route after the one in use failed.
    pub failovers: AtomicU64,
}

impl SyncStatus {
    /// The URL of the route last connected ("" before the uplink starts).
    pub fn route_url(&self) -> &str {
        let i = self.route.load(Relaxed) as usize;
        self.routes.get().and_then(|r| r.get(i)).map_or("", String::as_str)
    }
}

pub struct View {
    pub robot_id: String,
    pub started: Instant,
    pub joints: usize,
    pub model: Arc<crate::rollout::ModelState>,
    pub backend: String,
    pub policy_failures: Vec<String>,
    /// What `policy.backend = "auto"` measured at load.
    pub policy_trials: Vec<String>,
    pub pipeline: Arc<PipelineStatus>,
    pub governor: Arc<GovernorStats>,
    pub rgb: Arc<CaptureStats>,
    pub depth: Option<Arc<CaptureStats>>,
    pub link: Arc<FirmwareLink>,
    pub recorder: Arc<RecorderStats>,
    pub taps: Arc<Taps>,
    pub sync: Arc<SyncStatus>,
    pub uploads: Arc<crate::upload::UploadStats>,
    pub recent_incidents: RecentIncidents,
    /// The depth thread's newest workspace reading.
    pub zone: gantry_handoff::Snapshot<crate::zone::ZoneReading>,
    pub separation: gantry_safety::separation::Separation,
    /// `status_http.operator_token_file`; empty: no e-stop reset over HTTP.
    pub operator_token_file: String,
    /// The newest one-second health sample.
    pub health: Mutex<HealthSnapshot>,
    /// The task being worked on (id, progress 0-1), as the last state message said.
    pub task: Mutex<Option<(String, f64)>>,
    /// The latency histogram's counts once a second, the last 11: the page
    /// shows the last 10 s.
    pub latency_window: Mutex<std::collections::VecDeque<Vec<u64>>>,
}

/// A camera or the policy silent this long is reported on the status page.
const STALL_S: f64 = 1.0;
/// A rejection this recent means the arm is held now.
const HELD_WITHIN_NS: u64 = 500_000_000;

impl View {
    /// The newest depth reading in the robot's terms: who is how near, and
    /// how fast that lets the arm move (speed and separation monitoring).
    fn workspace(&self) -> Value {
        let z = self.zone.read_wait();
        let now = gantry_hal::clock::monotonic_ns();
        let nearest_m = (z.nearest_mm != crate::zone::ZoneReading::NONE).then(|| f64::from(z.nearest_mm) / 1e3);
        json!({
            "age_ms": (z.capture_ns != 0).then(|| now.saturating_sub(z.capture_ns) as f64 / 1e6),
            "intrusion": z.intrusion,
            "blind": z.blind,
            "nearest_m": nearest_m,
            "stop_distance_m": self.separation.stop_distance_m(),
            "allowed_speed_m_s": nearest_m.map(|d| self.separation.allowed_speed_m_s(d)),
            "occupied_pixels": z.occupied_pixels,
            "arm_pixels": z.arm_pixels,
            "invalid_pixels": z.invalid_pixels,
            "footprint_pixels": z.footprint_pixels,
        })
    }

    pub fn taps_dropped(&self) -> u64 {
        self.taps.dropped.load(Relaxed) + self.taps.thumbs.dropped.load(Relaxed)
    }

    fn health(&self) -> HealthSnapshot {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Red, amber or green now.
    pub fn light(&self) -> &'static str {
        self.state(&self.health()).0
    }

    /// Keeps this second's latency histogram counts (called once a second).
    pub fn note_latency_histogram(&self) {
        let counts: Vec<u64> = self.pipeline.latency_buckets.iter().map(|b| b.load(Relaxed)).collect();
        let mut w = self.latency_window.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() >= 11 {
            w.pop_front();
        }
        w.push_back(counts);
    }

    /// Frames per latency bucket over the last 10 s (since start, for the first 10 s).
    pub fn recent_latency_counts(&self) -> Vec<u64> {
        let w = self.latency_window.lock().unwrap_or_else(|e| e.into_inner());
        let now: Vec<u64> = self.pipeline.latency_buckets.iter().map(|b| b.load(Relaxed)).collect();
        match w.front() {
            Some(first) if w.len() > 1 => now.iter().zip(first).map(|(n, f)| n.saturating_sub(*f)).collect(),
            _ => now,
        }
    }

    /// What the arm is doing, in one word consistent with the banner:
    /// `e-stop`, `safe stop`, `held` (the governor refused the last
    /// commands: a person, a limit, stale evidence) or `running`.
    pub fn activity(&self) -> &'static str {
        match self.pipeline.mode() {
            crate::control::Mode::EStop => "e-stop",
            crate::control::Mode::SafeStop => "safe stop",
            crate::control::Mode::Degraded | crate::control::Mode::Running => {
                let last = self.governor.last_reject_ns.load(Relaxed);
                let held = last != 0 && gantry_hal::clock::monotonic_ns().saturating_sub(last) < HELD_WITHIN_NS;
                if held {
                    "held"
                } else {
                    "running"
                }
            }
        }
    }

    /// Red, amber or green, and why: one sentence per finding saying what
    /// happened, what the arm does and what to do; what stops the arm first.
    pub fn state(&self, h: &HealthSnapshot) -> (&'static str, Vec<String>) {
        let mut red = Vec::new();
        let mut amber = Vec::new();
        match self.pipeline.mode() {
            crate::control::Mode::EStop => {
                let e = self.pipeline.estop();
                red.push(if !e.known {
                    "The motor controller has not reported the e-stop state: check its cable and power; the arm stays still."
                } else if e.pressed {
                    "The e-stop button is pressed: make the cell safe, release the button, then reset the e-stop."
                } else if e.fault_latched {
                    "The motor controller latched a fault: check its display and clear the cause, then reset the e-stop."
                } else {
                    "The e-stop was pressed and is released: once the cell is safe, reset it; the arm stays still until then."
                }
                .to_string());
            }
            crate::control::Mode::SafeStop => red.push(
                "Safe stop: the policy gives no usable action, so the arm holds still; it resumes by itself when actions return."
                    .to_string(),
            ),
            crate::control::Mode::Degraded => amber.push(
                "Degraded: running the baseline policy, as the configured model could not be used (see Model); tasks go on, perhaps slower."
                    .to_string(),
            ),
            crate::control::Mode::Running => {}
        }
        if !self.link.is_alive() {
            red.push(match self.link.status().last_rx_age {
                Some(age) => format!(
                    "Firmware link down for {:.0} s: check the motor controller's power and its serial cable; the arm is stopped.",
                    age.as_secs_f64()
                ),
                None => "Firmware link down since start: check the motor controller's power and serial cable (firmware.port)."
                    .to_string(),
            });
        }
        let now = gantry_hal::clock::monotonic_ns();
        for (thread, since, dead) in self.pipeline.stalled_threads() {
            let for_s = now.saturating_sub(since) as f64 / 1e9;
            let what = if dead { "died" } else { "stalled" };
            red.push(format!(
                "The real-time thread {} {what} {for_s:.1} s ago: the arm is held in safe stop; restart the daemon (systemctl restart gantry-edge) and send its log to support.",
                thread.name()
            ));
        }
        // Silences: measured from start-up until the first frame or output.
        let silent_s = |last_ns: u64| {
            let since =
                if last_ns == 0 { now.saturating_sub(self.started.elapsed().as_nanos() as u64) } else { last_ns };
            Some(now.saturating_sub(since) as f64 / 1e9).filter(|s| *s >= STALL_S)
        };
        if let Some(s) = silent_s(self.rgb.last_capture_ns.load(Relaxed)) {
            red.push(format!("Camera delivering no frames for {s:.1} s: check its cable; the arm holds."));
        }
        if let Some(s) = self.depth.as_ref().and_then(|d| silent_s(d.last_capture_ns.load(Relaxed))) {
            red.push(format!(
                "Depth camera delivering no frames for {s:.1} s: check its cable; without it the arm cannot see people, so it holds."
            ));
        }
        if let Some(s) = silent_s(self.pipeline.last_output_ns.load(Relaxed)) {
            red.push(format!(
                "No policy output for {s:.1} s (inference failing or hung): the arm holds; restart the daemon if it does not recover."
            ));
        }
        if self.recorder.disk_alert.load(Relaxed) {
            red.push(
                "The disk is nearly full of data not yet sent to the cloud: check the network; images are thinned out first."
                    .to_string(),
            );
        }
        // Every check failing now, and every kind of rejection in the last
        // 5 s, in words (an incident is kept once per run of rejections, so
        // a long hold is found by the checks failing now); bad numbers and
        // broken sensors are red, the rest (a person, a limit) amber. The
        // e-stop, the link and the threads are said above already.
        let failing = self.governor.failing_now.load(Relaxed);
        let mut seen = 0u32;
        for i in self.recent_incidents.lock().unwrap_or_else(|e| e.into_inner()).iter().rev() {
            let now_failing = failing & i.check.bit() != 0;
            if !now_failing && now.saturating_sub(i.time_ns) >= 5_000_000_000 {
                continue;
            }
            if seen & i.check.bit() != 0
                || matches!(i.check, Check::RealtimeThreads | Check::EStop | Check::FirmwareLink)
            {
                continue;
            }
            seen |= i.check.bit();
            let reason = crate::words::incident(i);
            if i.check.is_fault() {
                red.push(reason);
            } else {
                amber.push(reason);
            }
        }
        if self.pipeline.rt_degraded.load(Relaxed) {
            amber.push(
                "Real-time scheduling was not granted, so timing may suffer: run the daemon from its systemd unit, which grants it."
                    .to_string(),
            );
        }
        if self.recorder.image_level.load(Relaxed) != ImageLevel::Normal as u8 {
            amber.push(
                "Recording fewer camera images to save disk space until the cloud takes the backlog.".to_string(),
            );
        }
        if !h.net_connected {
            amber.push(
                "Cloud unreachable: the robot works on and keeps its data until the connection returns; check the network if this lasts."
                    .to_string(),
            );
        }
        if self.recorder.failing.load(Relaxed) {
            let lost = self.recorder.dropped.load(Relaxed);
            if self.recorder.disk_full.load(Relaxed) {
                red.push(format!(
                    "Disk full: recording stopped, {lost} records lost so far; free space on the data disk."
                ));
            } else {
                red.push(format!(
                    "The recorder cannot write to disk: recording stopped, {lost} records lost so far; check the data disk."
                ));
            }
        }
        let model = self.model.report();
        if matches!(model.state.as_str(), "refused" | "rolled_back") {
            amber.push(format!(
                "Model {} was {}: {}; the robot runs {}.",
                model.assigned.as_deref().unwrap_or("?"),
                if model.state == "refused" { "refused" } else { "rolled back" },
                model.reason.as_deref().unwrap_or("no reason given"),
                model.version
            ));
        }
        for f in &self.policy_failures {
            let reason = format!("The policy does not run as configured: {f}.");
            if !amber.contains(&reason) {
                amber.push(reason);
            }
        }
        if !red.is_empty() {
            red.extend(amber);
            ("red", red)
        } else if !amber.is_empty() {
            ("amber", amber)
        } else {
            ("green", Vec::new())
        }
    }

    /// The recent incidents by check (and joint), newest first: how many, the
    /// last value against its limit with units, and what it means.
    pub fn incident_groups(&self) -> Vec<Value> {
        let now = gantry_hal::clock::monotonic_ns();
        let recent = self.recent_incidents.lock().unwrap_or_else(|e| e.into_inner());
        let mut groups: Vec<(Incident, u64, u64)> = Vec::new();
        for i in recent.iter().rev() {
            match groups.iter_mut().find(|(g, _, _)| g.check == i.check && g.joint == i.joint && g.measure == i.measure)
            {
                Some(g) => {
                    g.1 += 1;
                    g.2 = i.time_ns;
                }
                None => groups.push((*i, 1, i.time_ns)),
            }
        }
        groups
            .iter()
            .take(12)
            .map(|(i, n, first)| {
                json!({
                    "check": i.check.name(),
                    "joint": i.joint,
                    "count": n,
                    "last_age_s": now.saturating_sub(i.time_ns) as f64 / 1e9,
                    "first_age_s": now.saturating_sub(*first) as f64 / 1e9,
                    "value": i.value.is_finite().then_some(i.value),
                    "limit": i.limit.is_finite().then_some(i.limit),
                    "unit": i.measure.unit(),
                    "reading": (!i.measure.unit().is_empty()).then(|| format!(
                        "{} / {}",
                        crate::words::quantity(i.value, i.measure),
                        crate::words::quantity(i.limit, i.measure)
                    )),
                    "meaning": crate::words::incident(i),
                    "fault": i.check.is_fault(),
                })
            })
            .collect()
    }

    /// The contract's `/api/status` document (and more).
    pub fn api_status(&self) -> Value {
        let p = &self.pipeline;
        let h = self.health();
        let (state, reasons) = self.state(&h);
        let ms = |a: &AtomicU64| a.load(Relaxed) as f64 / 1e6;
        let incidents: Vec<Value> = {
            let recent = self.recent_incidents.lock().unwrap_or_else(|e| e.into_inner());
            let now = gantry_hal::clock::monotonic_ns();
            recent
                .iter()
                .rev()
                .take(20)
                .map(|i| {
                    json!({
                        "check": i.check.name(),
                        "age_s": now.saturating_sub(i.time_ns) as f64 / 1e9,
                        "value": i.value,
                        "limit": i.limit,
                        "unit": i.measure.unit(),
                        "joint": i.joint,
                    })
                })
                .collect()
        };
        let buckets: Vec<Value> = LATENCY_BUCKETS_MS
            .iter()
            .zip(p.latency_buckets.iter())
            .map(|(le, n)| json!({"le_ms": le, "count": n.load(Relaxed)}))
            .collect();
        let per_check: serde_json::Map<String, Value> = Check::ALL
            .iter()
            .map(|c| (c.name().to_string(), json!(self.governor.per_check[*c as usize].load(Relaxed))))
            .collect();
        let r = &self.recorder;
        let model = self.model.report();
        let link = self.link.status();
        let estop = p.estop();
        json!({
            "robot_id": self.robot_id,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "mode": p.mode().as_str(),
            "activity": self.activity(),
            "state": state,
            "estop": {
                "known": estop.known,
                "pressed": estop.pressed,
                "latched": estop.latched,
                "fault_latched": estop.fault_latched,
                "presses": p.estop_presses.load(Relaxed),
                "resets": p.estop_resets.load(Relaxed),
                "resets_refused": p.estop_resets_refused.load(Relaxed),
                "reset_over_http": !self.operator_token_file.is_empty(),
            },
            "reasons": reasons,
            "task": self.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|(id, _)| id.clone()),
            "task_progress": self.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|(_, p)| *p),
            "workspace": self.workspace(),
            "model": {
                "version": model.version,
                "rollout": {"state": model.state, "assigned": model.assigned, "reason": model.reason},
                "backend": self.backend,
                "on_baseline": p.on_baseline.load(Relaxed),
                "failures": self.policy_failures,
                "trials": self.policy_trials,
            },
            "loop": {
                "rate_hz": p.rate_mhz.load(Relaxed) as f64 / 1e3,
                "ticks": p.ticks.load(Relaxed),
                "overruns": p.overruns.load(Relaxed),
                "early_ticks": p.early_ticks.load(Relaxed),
                "early_deferred": p.early_deferred.load(Relaxed),
                "realtime": !p.rt_degraded.load(Relaxed),
                "latency_ms": {"p50": ms(&p.latency_p50_ns), "p99": ms(&p.latency_p99_ns), "max": ms(&p.latency_max_ns)},
                "latency_histogram": buckets,
                "jitter_us": {"p99": p.jitter_p99_ns.load(Relaxed) as f64 / 1e3, "max": p.jitter_max_ns.load(Relaxed) as f64 / 1e3},
                "inferences": p.inferences.load(Relaxed),
                "non_finite_outputs": p.non_finite_outputs.load(Relaxed),
                "skipped_bad_joint_state": p.skipped_bad_joint_state.load(Relaxed),
                "threads": self.threads(),
                "deadline_misses": p.deadline_misses.load(Relaxed),
                "fallbacks": p.fallbacks.load(Relaxed),
                "safe_stops": p.safe_stops.load(Relaxed),
            },
            "governor": {
                "checks": self.governor.checks.load(Relaxed),
                "rejects": self.governor.rejects.load(Relaxed),
                "rejects_by_check": per_check,
                "recent_incidents": incidents,
                "incident_groups": self.incident_groups(),
            },
            "camera": {
                "captured": self.rgb.captured.load(Relaxed),
                "dropped": self.rgb.dropped(),
                "errors": self.rgb.errors.load(Relaxed),
            },
            "firmware": {
                "link_alive": self.link.is_alive(),
                "link_losses": link.losses,
                "frames_ok": link.decode.frames_ok,
                "frames_rejected": link.decode.rejected(),
                "io_errors": link.io_errors,
                "estop": self.link.estop().map(|e| json!({"pressed": e.pressed, "latched": e.latched})),
            },
            "health": {
                "cpu_pct": h.system.cpu_pct,
                "process_cpu_pct": h.system.process_cpu_pct,
                "mem_used_bytes": h.system.mem_used_bytes,
                "mem_total_bytes": h.system.mem_total_bytes,
                "gpu_pct": h.system.gpu_pct,
                "disk_free_bytes": h.system.disk_free_bytes,
                "disk_total_bytes": h.system.disk_total_bytes,
                "net_connected": h.net_connected,
                "motor_temp_c": h.motor_temp_c,
                "gripper_pressure_kpa": h.gripper_pressure_kpa,
            },
            "recorder": {
                "messages": r.messages.load(Relaxed),
                "bytes_today": r.bytes_today.load(Relaxed),
                "unsynced_bytes": r.unsynced_bytes.load(Relaxed),
                "disk_used_bytes": r.disk_used_bytes.load(Relaxed),
                "segments": r.segments_on_disk.load(Relaxed),
                "images": r.images.load(Relaxed),
                "image_level": image_level_name(r.image_level.load(Relaxed)),
                "disk_alert": r.disk_alert.load(Relaxed),
                "dropped": r.dropped.load(Relaxed) + self.taps_dropped(),
                "write_errors": r.write_errors.load(Relaxed),
                "failing": r.failing.load(Relaxed),
                "disk_full": r.disk_full.load(Relaxed),
                "recovered": r.recovered.load(Relaxed),
                "quarantined": r.quarantined.load(Relaxed),
                "lost_unsynced_bytes": r.lost_unsynced_bytes.load(Relaxed),
            },
            "sync": {
                "connected": self.sync.connected.load(Relaxed),
                "backlog": self.sync.backlog.load(Relaxed),
                "route": self.sync.route.load(Relaxed),
                "broker": self.sync.route_url(),
                "failovers": self.sync.failovers.load(Relaxed),
                "uploads": {
                    "window_open": self.uploads.window_open.load(Relaxed),
                    "segments": self.uploads.segments.load(Relaxed),
                    "bytes": self.uploads.bytes.load(Relaxed),
                    "failures": self.uploads.failures.load(Relaxed),
                },
            },
        })
    }

    /// Each real-time thread: how long since it last made progress, and
    /// whether the supervisor holds it stalled or dead.
    fn threads(&self) -> Vec<Value> {
        let p = &self.pipeline;
        let now = gantry_hal::clock::monotonic_ns();
        let stalled = p.stalled.load(Relaxed);
        let dead = p.dead.load(Relaxed);
        crate::pipeline::RtThread::ALL
            .iter()
            .filter(|t| **t != crate::pipeline::RtThread::CaptureDepth || self.depth.is_some())
            .map(|t| {
                let last = match t {
                    crate::pipeline::RtThread::LinkReader => {
                        self.link.reader_progress_ns().map(|l| now.saturating_sub(self.link.now_ns().saturating_sub(l)))
                    }
                    _ => Some(p.progress_ns[*t as usize].load(Relaxed)).filter(|v| *v != 0),
                };
                json!({
                    "name": t.name(),
                    "last_progress_age_s": last.map(|l| now.saturating_sub(l) as f64 / 1e9),
                    "stalled": stalled & t.bit() != 0,
                    "dead": dead & t.bit() != 0,
                })
            })
            .collect()
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn metrics(&self) -> String {
        let p = &self.pipeline;
        let h = self.health();
        let r = &self.recorder;
        let mut m = Metrics(String::with_capacity(8 * 1024));
        let robot = format!("robot=\"{}\"", escape_label(&self.robot_id));
        m.gauge("gantry_up", "1 while the daemon runs.", &[(&robot, 1.0)]);
        m.gauge(
            "gantry_uptime_seconds",
            "Seconds since the daemon started.",
            &[(&robot, self.started.elapsed().as_secs_f64())],
        );
        let mode = p.mode();
        let modes: Vec<(String, f64)> = ["running", "degraded", "safe_stop", "estop"]
            .iter()
            .map(|name| (format!("{robot},mode=\"{name}\""), f64::from(u8::from(mode.as_str() == *name))))
            .collect();
        m.gauge_owned("gantry_mode", "1 for the current mode.", &modes);
        m.gauge("gantry_loop_rate_hz", "Control loop rate.", &[(&robot, p.rate_mhz.load(Relaxed) as f64 / 1e3)]);
        let q: Vec<(String, f64)> = [("0.5", &p.latency_p50_ns), ("0.99", &p.latency_p99_ns)]
            .iter()
            .map(|(q, v)| (format!("{robot},quantile=\"{q}\""), v.load(Relaxed) as f64 / 1e9))
            .collect();
        m.gauge_owned("gantry_frame_to_command_seconds", "Frame-to-command latency quantiles since start.", &q);
        m.counter("gantry_control_ticks_total", "Control ticks.", &[(&robot, p.ticks.load(Relaxed) as f64)]);
        let stalled = p.stalled.load(Relaxed);
        let threads: Vec<(String, f64)> = crate::pipeline::RtThread::ALL
            .iter()
            .map(|t| (format!("{robot},thread=\"{}\"", t.name()), f64::from(u8::from(stalled & t.bit() != 0))))
            .collect();
        m.gauge_owned(
            "gantry_rt_thread_stalled",
            "1 while the supervisor holds a real-time thread stalled or dead.",
            &threads,
        );
        m.counter(
            "gantry_policy_non_finite_outputs_total",
            "Policy actions that were not finite numbers.",
            &[(&robot, p.non_finite_outputs.load(Relaxed) as f64)],
        );
        m.counter(
            "gantry_control_overruns_total",
            "Control ticks started a period late.",
            &[(&robot, p.overruns.load(Relaxed) as f64)],
        );
        m.counter(
            "gantry_control_early_ticks_total",
            "Control ticks taken at once for a new policy output, ahead of their schedule.",
            &[(&robot, p.early_ticks.load(Relaxed) as f64)],
        );
        m.counter("gantry_inferences_total", "Policy inferences.", &[(&robot, p.inferences.load(Relaxed) as f64)]);
        m.counter(
            "gantry_deadline_misses_total",
            "Inferences past their deadline.",
            &[(&robot, p.deadline_misses.load(Relaxed) as f64)],
        );
        m.counter(
            "gantry_fallbacks_total",
            "Switches to the baseline policy.",
            &[(&robot, p.fallbacks.load(Relaxed) as f64)],
        );
        m.counter(
            "gantry_governor_checks_total",
            "Commands checked by the safety governor.",
            &[(&robot, self.governor.checks.load(Relaxed) as f64)],
        );
        let per: Vec<(String, f64)> = Check::ALL
            .iter()
            .map(|c| {
                (format!("{robot},check=\"{}\"", c.name()), self.governor.per_check[*c as usize].load(Relaxed) as f64)
            })
            .collect();
        m.counter_owned("gantry_governor_rejects_total", "Commands rejected, by failed check.", &per);
        m.counter(
            "gantry_governor_policy_rejects_total",
            "Commands rejected for what the policy proposed (what a model on probation is judged by).",
            &[(&robot, self.governor.policy_rejects.load(Relaxed) as f64)],
        );
        m.counter(
            "gantry_frames_captured_total",
            "Camera frames captured.",
            &[(&robot, self.rgb.captured.load(Relaxed) as f64)],
        );
        m.counter("gantry_frames_dropped_total", "Camera frames dropped.", &[(&robot, self.rgb.dropped() as f64)]);
        m.gauge(
            "gantry_firmware_link_up",
            "1 while the firmware link is alive.",
            &[(&robot, f64::from(u8::from(self.link.is_alive())))],
        );
        let temps: Vec<(String, f64)> =
            h.motor_temp_c.iter().enumerate().map(|(j, t)| (format!("{robot},joint=\"{j}\""), f64::from(*t))).collect();
        m.gauge_owned("gantry_motor_temperature_celsius", "Motor temperature.", &temps);
        if let Some(kpa) = h.gripper_pressure_kpa {
            m.gauge("gantry_gripper_pressure_kpa", "Gripper pressure.", &[(&robot, f64::from(kpa))]);
        }
        m.gauge("gantry_cpu_percent", "Machine CPU use, all cores.", &[(&robot, h.system.cpu_pct)]);
        if let Some(gpu) = h.system.gpu_pct {
            m.gauge("gantry_gpu_percent", "GPU utilisation.", &[(&robot, gpu)]);
        }
        m.gauge("gantry_memory_used_bytes", "Machine memory in use.", &[(&robot, h.system.mem_used_bytes as f64)]);
        m.gauge(
            "gantry_disk_free_bytes",
            "Free space on the data directory's disk.",
            &[(&robot, h.system.disk_free_bytes as f64)],
        );
        m.counter(
            "gantry_recorder_bytes_written_total",
            "Bytes written to segments.",
            &[(&robot, r.bytes_written.load(Relaxed) as f64)],
        );
        m.counter("gantry_recorder_messages_total", "Messages recorded.", &[(&robot, r.messages.load(Relaxed) as f64)]);
        m.gauge(
            "gantry_recorder_disk_used_bytes",
            "Bytes of recorded segments on disk.",
            &[(&robot, r.disk_used_bytes.load(Relaxed) as f64)],
        );
        m.gauge(
            "gantry_recorder_unsynced_bytes",
            "Bytes not yet synced to the cloud.",
            &[(&robot, r.unsynced_bytes.load(Relaxed) as f64)],
        );
        m.counter(
            "gantry_recorder_dropped_total",
            "Records lost before reaching disk.",
            &[(&robot, (r.dropped.load(Relaxed) + self.taps_dropped()) as f64)],
        );
        m.counter(
            "gantry_recorder_lost_unsynced_bytes_total",
            "Unsynced bytes evicted by the disk quota.",
            &[(&robot, r.lost_unsynced_bytes.load(Relaxed) as f64)],
        );
        m.gauge(
            "gantry_recorder_disk_alert",
            "1 while the quota is nearly full of unsynced data.",
            &[(&robot, f64::from(u8::from(r.disk_alert.load(Relaxed))))],
        );
        m.gauge(
            "gantry_sync_connected",
            "1 while the cloud is reachable.",
            &[(&robot, f64::from(u8::from(self.sync.connected.load(Relaxed))))],
        );
        m.gauge(
            "gantry_sync_route",
            "Which route to the broker is in use: 0 the primary (uplink.broker_url), N the Nth of uplink.broker_urls.",
            &[(&robot, self.sync.route.load(Relaxed) as f64)],
        );
        m.counter(
            "gantry_sync_failovers_total",
            "Switches to another route to the broker after the one in use failed.",
            &[(&robot, self.sync.failovers.load(Relaxed) as f64)],
        );
        m.gauge(
            "gantry_sync_backlog",
            "Log batches waiting for the cloud.",
            &[(&robot, self.sync.backlog.load(Relaxed) as f64)],
        );
        let u = &self.uploads;
        m.counter(
            "gantry_upload_segments_total",
            "Segments uploaded and verified by the cloud.",
            &[(&robot, u.segments.load(Relaxed) as f64)],
        );
        m.counter("gantry_upload_bytes_total", "Bulk upload bytes sent.", &[(&robot, u.bytes.load(Relaxed) as f64)]);
        m.counter(
            "gantry_upload_failures_total",
            "Bulk upload requests that failed (each resumed).",
            &[(&robot, u.failures.load(Relaxed) as f64)],
        );
        m.0
    }
}

pub fn image_level_name(v: u8) -> &'static str {
    match v {
        0 => ImageLevel::Normal.as_str(),
        1 => ImageLevel::Reduced.as_str(),
        _ => ImageLevel::Off.as_str(),
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The counters already live in atomics across the daemon; a metrics registry
/// would duplicate them, so the exposition is written directly.
struct Metrics(String);

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
        }
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[(&str, f64)]) {
        self.family(name, "gauge", help, samples);
    }

    fn counter(&mut self, name: &str, help: &str, samples: &[(&str, f64)]) {
        self.family(name, "counter", help, samples);
    }

    fn gauge_owned(&mut self, name: &str, help: &str, samples: &[(String, f64)]) {
        let s: Vec<(&str, f64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        self.gauge(name, help, &s);
    }

    fn counter_owned(&mut self, name: &str, help: &str, samples: &[(String, f64)]) {
        let s: Vec<(&str, f64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        self.counter(name, help, &s);
    }
}
