//! The health snapshot: the machine (CPU, memory, GPU, disk, network), the
//! robot (motor temperatures, gripper pressure, link) and the daemon (loop
//! latency, deadline misses, governor rejects, recorder and sync backlog).
//! Sampled every second for the status page; every `health.period_s` recorded
//! and handed to the uplink.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::status::View;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthSnapshot {
    pub unix_ns: u64,
    pub robot_id: String,
    pub uptime_s: f64,
    pub mode: String,
    /// The machine: CPU, memory, GPU, disk.
    #[serde(flatten)]
    pub system: SystemSample,
    /// The broker is reachable.
    pub net_connected: bool,
    pub link_alive: bool,
    pub motor_temp_c: Vec<f32>,
    pub gripper_pressure_kpa: Option<f32>,
    pub loop_rate_hz: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub jitter_p99_us: f64,
    pub deadline_misses: u64,
    pub fallbacks: u64,
    pub governor_checks: u64,
    pub governor_rejects: u64,
    pub frames_captured: u64,
    pub frames_dropped: u64,
    pub recorder_disk_used_bytes: u64,
    pub recorder_unsynced_bytes: u64,
    pub recorder_dropped: u64,
    pub disk_alert: bool,
    pub sync_backlog: u64,
}

impl HealthSnapshot {
    /// The snapshot as the recorder writes it (flat; the recorder adds the keys).
    pub fn to_record(&self) -> gantry_recorder::messages::HealthMsg {
        let s = &self.system;
        gantry_recorder::messages::HealthMsg {
            boot_id: String::new(),
            task_id: None,
            unix_ns: self.unix_ns,
            robot_id: self.robot_id.clone(),
            uptime_s: self.uptime_s,
            mode: self.mode.clone(),
            cpu_pct: s.cpu_pct,
            process_cpu_pct: s.process_cpu_pct,
            mem_used_bytes: s.mem_used_bytes,
            mem_total_bytes: s.mem_total_bytes,
            process_rss_bytes: s.process_rss_bytes,
            gpu_pct: s.gpu_pct,
            gpu_mem_used_bytes: s.gpu_mem_used_bytes,
            disk_free_bytes: s.disk_free_bytes,
            disk_total_bytes: s.disk_total_bytes,
            net_connected: self.net_connected,
            link_alive: self.link_alive,
            motor_temp_c: self.motor_temp_c.clone(),
            gripper_pressure_kpa: self.gripper_pressure_kpa,
            loop_rate_hz: self.loop_rate_hz,
            latency_p50_ms: self.latency_p50_ms,
            latency_p99_ms: self.latency_p99_ms,
            latency_max_ms: self.latency_max_ms,
            jitter_p99_us: self.jitter_p99_us,
            deadline_misses: self.deadline_misses,
            fallbacks: self.fallbacks,
            governor_checks: self.governor_checks,
            governor_rejects: self.governor_rejects,
            frames_captured: self.frames_captured,
            frames_dropped: self.frames_dropped,
            recorder_disk_used_bytes: self.recorder_disk_used_bytes,
            recorder_unsynced_bytes: self.recorder_unsynced_bytes,
            recorder_dropped: self.recorder_dropped,
            disk_alert: self.disk_alert,
            sync_backlog: self.sync_backlog,
        }
    }
}

/// CPU and memory from `/proc`, as deltas between two samples.
pub struct SystemSampler {
    data_dir: PathBuf,
    prev_cpu: Option<(u64, u64)>,
    prev_proc: Option<(u64, std::time::Instant)>,
    ticks_per_s: f64,
    page: u64,
    gpu: Gpu,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemSample {
    /// Whole machine, all cores, over the last sample interval.
    pub cpu_pct: f64,
    /// This daemon, in percent of one core.
    pub process_cpu_pct: f64,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    pub process_rss_bytes: u64,
    /// `null` without a GPU (or without the `nvml` feature).
    pub gpu_pct: Option<f64>,
    pub gpu_mem_used_bytes: Option<u64>,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
}

impl SystemSampler {
    pub fn new(data_dir: &Path) -> Self {
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        Self {
            data_dir: data_dir.to_path_buf(),
            prev_cpu: None,
            prev_proc: None,
            ticks_per_s: if ticks > 0 { ticks as f64 } else { 100.0 },
            page: if page > 0 { page as u64 } else { 4096 },
            gpu: Gpu::open(),
        }
    }

    pub fn sample(&mut self) -> SystemSample {
        let mut s = SystemSample::default();
        if let Some((busy, total)) = read_cpu() {
            if let Some((pb, pt)) = self.prev_cpu {
                let dt = total.saturating_sub(pt).max(1);
                s.cpu_pct = 100.0 * busy.saturating_sub(pb) as f64 / dt as f64;
            }
            self.prev_cpu = Some((busy, total));
        }
        if let Some(ticks) = read_process_ticks() {
            let now = std::time::Instant::now();
            if let Some((prev, at)) = self.prev_proc {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                s.process_cpu_pct = 100.0 * ticks.saturating_sub(prev) as f64 / self.ticks_per_s / secs;
            }
            self.prev_proc = Some((ticks, now));
        }
        if let Some((total, available)) = read_meminfo() {
            s.mem_total_bytes = total;
            s.mem_used_bytes = total.saturating_sub(available);
        }
        s.process_rss_bytes = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|t| t.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
            .map_or(0, |pages| pages * self.page);
        if let Some((free, total)) = disk_space(&self.data_dir) {
            s.disk_free_bytes = free;
            s.disk_total_bytes = total;
        }
        (s.gpu_pct, s.gpu_mem_used_bytes) = self.gpu.sample();
        s
    }
}

/// (busy, total) jiffies over all CPUs.
fn read_cpu() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn read_process_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn read_meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|v| v * 1024)
    };
    Some((kb("MemTotal:")?, kb("MemAvailable:")?))
}

/// (free for unprivileged users, total) bytes of the file system holding `path`.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated; st is a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

#[cfg(feature = "nvml")]
struct Gpu(Option<nvml_wrapper::Nvml>);

#[cfg(feature = "nvml")]
impl Gpu {
    fn open() -> Self {
        match nvml_wrapper::Nvml::init() {
            Ok(nvml) => Gpu(Some(nvml)),
            Err(e) => {
                tracing::warn!(error = %e, "NVML unavailable (no NVIDIA driver?); GPU utilisation not reported");
                Gpu(None)
            }
        }
    }

    fn sample(&mut self) -> (Option<f64>, Option<u64>) {
        let Some(device) = self.0.as_ref().and_then(|n| n.device_by_index(0).ok()) else {
            return (None, None);
        };
        (device.utilization_rates().ok().map(|u| f64::from(u.gpu)), device.memory_info().ok().map(|m| m.used))
    }
}

#[cfg(not(feature = "nvml"))]
struct Gpu;

#[cfg(not(feature = "nvml"))]
impl Gpu {
    fn open() -> Self {
        Gpu
    }

    fn sample(&mut self) -> (Option<f64>, Option<u64>) {
        (None, None)
    }
}

/// One snapshot from a system sample and the daemon's live counters.
pub fn snapshot(view: &View, sys: SystemSample) -> HealthSnapshot {
    use std::sync::atomic::Ordering::Relaxed;
    let p = &view.pipeline;
    let ms = |ns: &std::sync::atomic::AtomicU64| ns.load(Relaxed) as f64 / 1e6;
    let telemetry = view.link.telemetry();
    let rec = &view.recorder;
    HealthSnapshot {
        unix_ns: gantry_hal::clock::unix_ns(),
        robot_id: view.robot_id.clone(),
        uptime_s: view.started.elapsed().as_secs_f64(),
        mode: p.mode().as_str().to_string(),
        system: sys,
        net_connected: view.sync.connected.load(Relaxed),
        link_alive: view.link.is_alive(),
        motor_temp_c: telemetry.map(|t| t.motor_temp_c[..view.joints].to_vec()).unwrap_or_default(),
        gripper_pressure_kpa: telemetry.map(|t| t.gripper_pressure_kpa),
        loop_rate_hz: p.rate_mhz.load(Relaxed) as f64 / 1e3,
        latency_p50_ms: ms(&p.latency_p50_ns),
        latency_p99_ms: ms(&p.latency_p99_ns),
        latency_max_ms: ms(&p.latency_max_ns),
        jitter_p99_us: p.jitter_p99_ns.load(Relaxed) as f64 / 1e3,
        deadline_misses: p.deadline_misses.load(Relaxed),
        fallbacks: p.fallbacks.load(Relaxed),
        governor_checks: view.governor.checks.load(Relaxed),
        governor_rejects: view.governor.rejects.load(Relaxed),
        frames_captured: view.rgb.captured.load(Relaxed),
        frames_dropped: view.rgb.dropped(),
        recorder_disk_used_bytes: rec.disk_used_bytes.load(Relaxed),
        recorder_unsynced_bytes: rec.unsynced_bytes.load(Relaxed),
        recorder_dropped: rec.dropped.load(Relaxed) + view.taps_dropped(),
        disk_alert: rec.disk_alert.load(Relaxed),
        sync_backlog: view.sync.backlog.load(Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sample_reads_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let mut sampler = SystemSampler::new(dir.path());
        sampler.sample();
        // A few clock ticks of work between the samples, so the process has CPU
        // time to show (it is counted in 10 ms ticks).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let s = sampler.sample();
        assert!(s.mem_total_bytes > s.mem_used_bytes && s.mem_used_bytes > 0, "{s:?}");
        assert!(s.process_rss_bytes > 0);
        assert!(s.disk_total_bytes >= s.disk_free_bytes && s.disk_free_bytes > 0);
        assert!((0.0..=100.0).contains(&s.cpu_pct), "{s:?}");
        assert!(s.process_cpu_pct > 0.0, "{s:?}");
        // No NVIDIA driver on a test machine: no figure rather than a made-up one.
        assert_eq!(s.gpu_pct, None);
    }
}
