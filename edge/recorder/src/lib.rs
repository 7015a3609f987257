//! The recorder: everything the robot does, as MCAP segments on the local disk,
//! with a SQLite catalog, a disk quota, crash recovery and the uplink's outbox
//! of log batches.
//!
//! Data enters through [`taps::Taps`], which the real-time threads fill with
//! fixed-size records and preallocated images (wait-free, never blocking
//! them), and through [`Command`]s from the daemon (health, task edges). It
//! runs on its own thread (`gantry-recorder`, normal priority). Data leaves as
//! segment files in `DATA_DIR/segments/` (catalogued in
//! `DATA_DIR/catalog.sqlite`, uploaded in bulk) and as log batches in the
//! catalog's outbox, which the daemon's uplink publishes.

pub mod batch;
pub mod catalog;
pub mod episodes;
pub mod messages;
pub mod quota;
pub mod replay;
pub mod segment;
pub mod taps;

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gantry_config::EdgeConfig;
use gantry_hal::clock::{monotonic_ns, unix_ns};

use catalog::{Catalog, SegmentRow, SegmentState};
use episodes::Episodes;
use gantry_config::wire::BatchKind;
use gantry_safety::governor::Incident;
use messages::foxglove;
use quota::ImageLevel;
use segment::{Encoding, Recovered, SegmentWriter};
use taps::{ControlRecord, FrameRecord, SampleBuf, Taps, Thumb};

/// What the recorder hears about tasks, to cut episodes at their edges.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Started { task_id: String, kind: String },
    Finished { task_id: String, success: bool, reason: String },
}

/// Channel indices into [`messages::ALL`].
pub const CH_CONTROL: usize = 0;
pub const CH_JOINTS: usize = 1;
pub const CH_FRAMES: usize = 2;
pub const CH_INCIDENTS: usize = 3;
pub const CH_EPISODES: usize = 4;
pub const CH_HEALTH: usize = 5;
pub const CH_IMAGES: usize = 6;
pub const CH_TF: usize = 7;
pub const CH_TF_STATIC: usize = 8;
pub const CH_SAMPLES: usize = 9;
pub const CH_MODEL_RGB: usize = 10;
pub const CH_MODEL_DEPTH: usize = 11;
pub const CH_CAMERA_CALIBRATION: usize = 12;
pub const CH_DEPTH_CALIBRATION: usize = 13;
pub const CH_ARM: usize = 14;
pub const CH_REPLAY_TICKS: usize = 15;
pub const CH_CONFIG: usize = 16;

/// The arm's transforms are recorded on every this many control ticks (10 Hz
/// at 100 Hz): smooth in Foxglove's 3D panel, a fraction of the joint states.
const TF_EVERY_TICKS: u32 = 10;

/// Samples waiting for the control tick that followed their frame are
/// written without a command after this long (a stopped control loop).
const SAMPLE_WAIT_NS: u64 = 500_000_000;

/// After a full-rate image window around an incident, the next incident opens
/// another only after this long.
const INCIDENT_COOLDOWN: Duration = Duration::from_secs(30);
/// How much longer than the pre-roll a frame waits for its image: the
/// thumbnail comes from the inference thread after the frame's record.
const FRAME_HOLD: Duration = Duration::from_millis(500);
/// A bound on the waiting frames (and remembered images) whatever the clocks
/// say: 30 s at 30 fps.
const MAX_PENDING_FRAMES: usize = 900;

/// What the recorder needs to know, copied out of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub robot_id: String,
    pub data_dir: PathBuf,
    pub segment_max_bytes: u64,
    pub segment_max_age: Duration,
    pub quota_bytes: u64,
    pub encoding: Encoding,
    pub image_every_n: u32,
    pub jpeg_quality: u8,
    pub preroll: Duration,
    pub flush_every: Duration,
    pub episode: Duration,
    pub joints: usize,
    pub model_version: String,
    /// Training samples per second during a task (0: none).
    pub sample_hz: f64,
    pub rig: messages::Rig,
    /// The configuration as TOML, recorded at the start of every segment.
    pub config_toml: String,
    pub batch_max_bytes: u64,
    pub batch_period: Duration,
    pub outbox_max_bytes: u64,
}

impl Settings {
    pub fn from_config(config: &EdgeConfig, model_version: &str) -> Self {
        let r = &config.recorder;
        Self {
            robot_id: config.robot.id.clone(),
            data_dir: PathBuf::from(&config.robot.data_dir),
            segment_max_bytes: r.segment_max_mb * 1_000_000,
            segment_max_age: Duration::from_secs(r.segment_max_s),
            quota_bytes: (r.quota_gb * 1e9) as u64,
            // Chunks of up to 8 MB uncompressed: zstd finds what repeats from
            // one second to the next (the samples' images), and the periodic
            // flush (`recorder.flush_s`), not the size, bounds what a crash loses.
            encoding: Encoding { zstd_level: r.zstd_level, chunk_bytes: 8 << 20 },
            image_every_n: r.image_every_n,
            jpeg_quality: r.jpeg_quality,
            preroll: Duration::from_secs_f64(r.incident_preroll_s),
            flush_every: Duration::from_secs(r.flush_s),
            episode: Duration::from_secs(r.episode_s),
            joints: config.firmware.joints.min(gantry_config::edge::MAX_JOINTS),
            model_version: model_version.to_string(),
            sample_hz: r.sample_hz,
            rig: messages::Rig {
                rgb: None,
                depth: None,
                camera_position_m: config.governor.camera_position_m,
                camera_rpy_rad: config.governor.camera_rpy_rad,
                dh: config.arm.dh.clone(),
                tool_offset_m: config.arm.tool_offset_m,
                position_min_rad: config.governor.joint_min_rad.clone(),
                position_max_rad: config.governor.joint_max_rad.clone(),
                velocity_max_rad_s: config.governor.max_velocity_rad_s.clone(),
            },
            config_toml: toml::to_string(config).unwrap_or_default(),
            batch_max_bytes: config.uplink.batch_max_kb * 1000,
            batch_period: Duration::from_secs(config.uplink.batch_period_s),
            outbox_max_bytes: config.uplink.outbox_max_mb * 1_000_000,
        }
    }

    /// The camera and depth streams, for the calibration each segment starts with.
    pub fn with_streams(mut self, rgb: gantry_hal::StreamInfo, depth: Option<gantry_hal::StreamInfo>) -> Self {
        self.rig.rgb = Some(rgb);
        self.rig.depth = depth;
        self
    }

    /// How often the inference thread should thumbnail a frame at `level`.
    pub fn thumb_every_n(&self, level: ImageLevel) -> u32 {
        match level {
            _ if self.image_every_n == 0 => 0,
            ImageLevel::Normal if !self.preroll.is_zero() => 1,
            ImageLevel::Normal => self.image_every_n,
            ImageLevel::Reduced => self.image_every_n.saturating_mul(4),
            ImageLevel::Off => 0,
        }
    }
}

/// Live counters, for the status page and the health snapshot.
#[derive(Debug, Default)]
pub struct RecorderStats {
    pub messages: AtomicU64,
    /// Message bytes before compression.
    pub payload_bytes: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Bytes of segments created today (UTC), including the open one.
    pub bytes_today: AtomicU64,
    pub disk_used_bytes: AtomicU64,
    pub unsynced_bytes: AtomicU64,
    pub segments_on_disk: AtomicU64,
    pub images: AtomicU64,
    /// Training samples written, and those written without a command.
    pub samples: AtomicU64,
    pub samples_without_command: AtomicU64,
    pub image_level: AtomicU8,
    pub disk_alert: AtomicBool,
    /// Messages lost to write errors (disk full, I/O errors).
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
    /// The last write failed and none has reached the disk since.
    pub failing: AtomicBool,
    /// ... because the disk is full (ENOSPC).
    pub disk_full: AtomicBool,
    pub recovered: AtomicU64,
    pub quarantined: AtomicU64,
    pub lost_unsynced_segments: AtomicU64,
    pub lost_unsynced_bytes: AtomicU64,
    /// Log batches queued for the uplink, in total.
    pub batches: AtomicU64,
    /// Bulk-log batches dropped from a full outbox.
    pub outbox_dropped: AtomicU64,
}

/// What start-up found.
#[derive(Debug, Default)]
pub struct StartupReport {
    pub recovered: Vec<SegmentRow>,
    pub quarantined: Vec<(SegmentRow, String)>,
    /// Finished files the catalog did not know (crash between rename and insert).
    pub adopted: Vec<SegmentRow>,
    /// Catalogued files that were gone; marked evicted.
    pub missing: Vec<String>,
    /// Files of evicted segments left behind by a crash; deleted.
    pub orphans_deleted: Vec<String>,
}

pub struct Recorder {
    s: Settings,
    dir: PathBuf,
    catalog: Catalog,
    seg: Option<Open>,
    stats: Arc<RecorderStats>,
    level: ImageLevel,
    /// Wall clock minus monotonic clock, refreshed at each roll.
    unix_offset: i128,
    preroll: VecDeque<(u64, u64, Vec<u8>)>,
    post_roll_until_ns: u64,
    last_image_seq: Option<u64>,
    /// Frames wait here until their camera image's fate is known (written
    /// when due, or with the pre-roll if an incident follows), so that each
    /// says whether its image is in the recording.
    pending_frames: VecDeque<messages::FrameMsg>,
    /// Frame numbers of the images written while their frames may still wait, ascending.
    kept_images: VecDeque<u64>,
    /// The newest capture time seen (monotonic): what ages the waiting frames.
    newest_capture_ns: u64,
    /// A roll in progress: its last writes must not start another.
    rolling: bool,
    /// Recent samples (all frames), for the full-rate window around an incident.
    sample_preroll: VecDeque<Box<SampleBuf>>,
    /// Samples kept, waiting for the tick that followed their frame.
    pending_samples: VecDeque<(Box<SampleBuf>, &'static str)>,
    /// The first tick that followed each recent frame: (frame_seq, record).
    first_ticks: VecDeque<ControlRecord>,
    next_sample_ns: u64,
    last_sample_seq: Option<u64>,
    /// When the current task started (monotonic): pre-roll samples from
    /// before it are not the task's.
    task_since_ns: u64,
    /// A tick has been approved since the start: before, a rejection is the
    /// start-up hold (the firmware has not yet reported its e-stop), not an
    /// interruption of work worth a full-rate window.
    worked: bool,
    /// Recent ticks, for the replay window around an incident.
    tick_preroll: VecDeque<ControlRecord>,
    last_tick_ns: u64,
    /// Sample buffers to give back to the tap: boxed because the tap's pool
    /// moves them between its queues without copying.
    #[allow(clippy::vec_box)]
    spent_samples: Vec<Box<SampleBuf>>,
    ticks: u32,
    episodes: Episodes,
    /// The keys every message carries (boot, current task).
    keys: messages::Keys,
    buf: Vec<u8>,
    next_index: u64,
    retry_at: Option<Instant>,
    last_log: Option<Instant>,
    /// Segments a write failure left as `.partial`, to rebuild once the disk allows.
    unrecovered: Vec<String>,
    batchers: [batch::Batcher; 3],
    last_segment_id: String,
}

struct Open {
    w: SegmentWriter,
    opened: Instant,
    created_unix_ns: u64,
    last_flush: Instant,
}

impl Recorder {
    /// Opens the catalog and brings it and the files into agreement.
    pub fn open(s: Settings) -> anyhow::Result<(Self, StartupReport)> {
        let dir = s.data_dir.join("segments");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let catalog_path = s.data_dir.join("catalog.sqlite");
        let catalog =
            Catalog::open(&catalog_path).with_context(|| format!("opening the catalog {}", catalog_path.display()))?;
        let report = reconcile(&s.data_dir, &dir, &catalog, s.encoding)?;
        let stats = Arc::new(RecorderStats::default());
        let keys = messages::Keys::new_boot();
        let episodes = Episodes::new(&s.robot_id, &s.model_version, &keys.boot_id, s.episode);
        let batcher = |k| batch::Batcher::new(k, s.batch_max_bytes, s.batch_period);
        let batchers = [batcher(BatchKind::Incidents), batcher(BatchKind::Health), batcher(BatchKind::Logs)];
        let mut rec = Self {
            dir,
            catalog,
            seg: None,
            stats,
            level: ImageLevel::Normal,
            unix_offset: clock_offset(),
            preroll: VecDeque::new(),
            post_roll_until_ns: 0,
            last_image_seq: None,
            pending_frames: VecDeque::new(),
            kept_images: VecDeque::new(),
            newest_capture_ns: 0,
            rolling: false,
            sample_preroll: VecDeque::new(),
            pending_samples: VecDeque::new(),
            first_ticks: VecDeque::new(),
            next_sample_ns: 0,
            last_sample_seq: None,
            task_since_ns: 0,
            spent_samples: Vec::new(),
            tick_preroll: VecDeque::new(),
            last_tick_ns: 0,
            worked: false,
            ticks: 0,
            episodes,
            keys,
            buf: Vec::with_capacity(64 * 1024),
            next_index: 0,
            retry_at: None,
            last_log: None,
            unrecovered: Vec::new(),
            batchers,
            last_segment_id: String::new(),
            s,
        };
        rec.refresh()?;
        Ok((rec, report))
    }

    pub fn stats(&self) -> Arc<RecorderStats> {
        self.stats.clone()
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn image_level(&self) -> ImageLevel {
        self.level
    }

    fn unix(&self, mono_ns: u64) -> u64 {
        (i128::from(mono_ns) + self.unix_offset).max(0) as u64
    }

    pub fn record_control(&mut self, r: &ControlRecord) {
        let unix = self.unix(r.t_ns);
        self.write_proto(CH_CONTROL, unix, &messages::control_msg(r, unix, &self.keys));
        if let Some(js) = messages::joint_state_msg(r, unix, &self.keys) {
            self.write_proto(CH_JOINTS, unix, &js);
            self.ticks = self.ticks.wrapping_add(1);
            if self.ticks.is_multiple_of(TF_EVERY_TICKS) {
                let tf = self.s.rig.arm_transforms(&r.positions_rad[..usize::from(r.joints)], unix);
                self.write_proto(CH_TF, unix, &tf);
            }
        }
        if let Some(ep) = self.episodes.on_control(r, unix) {
            self.write_proto(CH_EPISODES, unix, &ep);
        }
        self.worked |= r.approved;
        if r.t_ns <= self.post_roll_until_ns && self.level == ImageLevel::Normal {
            self.write_tick(r);
        } else if self.level == ImageLevel::Normal && !self.s.preroll.is_zero() {
            keep_recent(&mut self.tick_preroll, *r, r.t_ns, self.s.preroll, |t| t.t_ns, drop);
        }
        if self.first_ticks.back().is_none_or(|t| t.frame_seq != r.frame_seq) {
            if self.first_ticks.len() >= 256 {
                self.first_ticks.pop_front();
            }
            self.first_ticks.push_back(*r);
        }
        self.flush_samples(false);
    }

    /// A task's start or end: the episode's edge.
    pub fn record_task(&mut self, event: &TaskEvent) {
        self.record_task_at(event, monotonic_ns());
    }

    /// [`Self::record_task`] at a given time on the monotonic clock.
    pub fn record_task_at(&mut self, event: &TaskEvent, now: u64) {
        let unix = self.unix(now);
        let done = match event {
            TaskEvent::Started { task_id, kind } => {
                self.keys.task_id = Some(task_id.clone());
                self.task_since_ns = now;
                self.episodes.begin_task(task_id, kind, now, unix)
            }
            TaskEvent::Finished { task_id, success, reason } => {
                self.keys.task_id = None;
                self.episodes.end_task(task_id, *success, reason, unix)
            }
        };
        if let Some(ep) = done {
            self.write_proto(CH_EPISODES, ep.end_unix_ns, &ep);
        }
    }

    pub fn record_frame(&mut self, r: &FrameRecord) {
        let unix = self.unix(r.done_ns);
        self.pending_frames.push_back(messages::frame_msg(r, unix, &self.keys));
        self.newest_capture_ns = self.newest_capture_ns.max(r.capture_ns);
        self.release_frames(false);
    }

    /// Writes the frames whose image can no longer be kept (older than the
    /// pre-roll, with a margin for the thumbnail's later arrival), or all.
    fn release_frames(&mut self, all: bool) {
        let hold = (self.s.preroll + FRAME_HOLD).as_nanos() as u64;
        let horizon = self.newest_capture_ns.saturating_sub(hold);
        while let Some(f) = self.pending_frames.front() {
            if !all && f.capture_mono_ns > horizon && self.pending_frames.len() < MAX_PENDING_FRAMES {
                break;
            }
            let Some(mut f) = self.pending_frames.pop_front() else { break };
            while self.kept_images.front().is_some_and(|&k| k < f.frame_seq) {
                self.kept_images.pop_front();
            }
            f.has_image = self.kept_images.front() == Some(&f.frame_seq);
            self.write_proto(CH_FRAMES, f.unix_ns, &f);
        }
    }

    /// Records the incident and the pre-roll of images before it; images keep
    /// coming at full rate for as long again after it.
    pub fn record_incident(&mut self, i: &Incident) {
        let unix = self.unix(i.time_ns);
        self.write_proto(CH_INCIDENTS, unix, &messages::incident_msg(i, self.s.joints, unix, &self.keys));
        // One full-rate window per burst: a robot held by the governor for
        // minutes would otherwise record video the whole time.
        let cooled = i.time_ns > self.post_roll_until_ns + INCIDENT_COOLDOWN.as_nanos() as u64;
        if self.level == ImageLevel::Normal && !self.s.preroll.is_zero() && cooled && self.worked {
            self.post_roll_until_ns = i.time_ns + self.s.preroll.as_nanos() as u64;
            for (capture_ns, seq, jpeg) in std::mem::take(&mut self.preroll) {
                self.write_image(capture_ns, seq, &jpeg);
            }
            for sample in std::mem::take(&mut self.sample_preroll) {
                self.keep_sample(sample, "incident");
            }
            for tick in std::mem::take(&mut self.tick_preroll) {
                self.write_tick(&tick);
            }
        }
    }

    /// A tick's complete inputs and verdict, for replay; once each.
    fn write_tick(&mut self, r: &ControlRecord) {
        if r.t_ns <= self.last_tick_ns {
            return;
        }
        self.last_tick_ns = r.t_ns;
        let unix = self.unix(r.t_ns);
        let msg = messages::ReplayTickMsg {
            boot_id: self.keys.boot_id.clone(),
            unix_ns: unix,
            mono_ns: r.t_ns,
            frame_seq: r.frame_seq,
            approved: r.approved,
            encoding: replay::ENCODING.to_string(),
            data: replay::ReplayTick::of(r).encode(),
        };
        self.write_proto(CH_REPLAY_TICKS, unix, &msg);
    }

    /// A frame's policy inputs and action: kept at `sample_hz` during a task
    /// and at full rate around an incident; else held for the pre-roll.
    pub fn record_sample(&mut self, s: Box<SampleBuf>) {
        let in_window = s.capture_ns <= self.post_roll_until_ns;
        let due = self.keys.task_id.is_some()
            && self.s.sample_hz > 0.0
            && self.level == ImageLevel::Normal
            && s.capture_ns >= self.next_sample_ns;
        if in_window && self.level == ImageLevel::Normal {
            self.keep_sample(s, "incident");
        } else if due {
            self.next_sample_ns = s.capture_ns + (1e9 / self.s.sample_hz) as u64;
            self.keep_sample(s, "rate");
        } else if self.level == ImageLevel::Normal && !self.s.preroll.is_zero() {
            let (t, spent) = (s.capture_ns, &mut self.spent_samples);
            keep_recent(&mut self.sample_preroll, s, t, self.s.preroll, |p| p.capture_ns, |old| spent.push(old));
        } else {
            self.spent_samples.push(s);
        }
    }

    /// Sample buffers done with, for the tap to reuse ([`Self::drain`] hands
    /// them back itself).
    pub fn take_spent_samples(&mut self) -> impl Iterator<Item = Box<SampleBuf>> + '_ {
        self.spent_samples.drain(..)
    }

    fn keep_sample(&mut self, s: Box<SampleBuf>, reason: &'static str) {
        if self.last_sample_seq.is_some_and(|seq| seq >= s.frame_seq) {
            self.spent_samples.push(s);
            return;
        }
        self.last_sample_seq = Some(s.frame_seq);
        self.pending_samples.push_back((s, reason));
        self.flush_samples(false);
    }

    /// Writes the kept samples whose frame's first tick is known (or, with
    /// `all`, or after [`SAMPLE_WAIT_NS`], without one).
    fn flush_samples(&mut self, all: bool) {
        let latest = self.first_ticks.back().map(|t| (t.frame_seq, t.t_ns));
        while let Some((s, _)) = self.pending_samples.front() {
            let tick = self.first_ticks.iter().find(|t| t.frame_seq == s.frame_seq).copied();
            let passed = latest.is_some_and(|(seq, t)| seq > s.frame_seq || t > s.capture_ns + SAMPLE_WAIT_NS);
            if tick.is_none() && !passed && !all {
                break;
            }
            let Some((s, reason)) = self.pending_samples.pop_front() else { break };
            self.write_sample(&s, tick.as_ref(), reason);
            self.spent_samples.push(s);
        }
    }

    fn write_sample(&mut self, s: &SampleBuf, tick: Option<&ControlRecord>, reason: &str) {
        let unix = self.unix(s.capture_ns);
        let stamp = Some(foxglove::Timestamp::from_unix_ns(unix));
        let (w, h) = s.rgb_size;
        let rgb = foxglove::RawImage {
            timestamp: stamp,
            frame_id: messages::CAMERA_FRAME.to_string(),
            width: w,
            height: h,
            encoding: "rgb8".to_string(),
            step: w * 3,
            data: s.rgb().to_vec(),
        };
        self.write_proto(CH_MODEL_RGB, unix, &rgb);
        let has_depth = s.depth_len > 0;
        if has_depth {
            let (w, h) = s.depth_size;
            let depth = foxglove::RawImage {
                timestamp: stamp,
                frame_id: messages::CAMERA_FRAME.to_string(),
                width: w,
                height: h,
                encoding: "16UC1".to_string(),
                step: w * 2,
                data: s.depth().iter().flat_map(|d| d.to_le_bytes()).collect(),
            };
            self.write_proto(CH_MODEL_DEPTH, unix, &depth);
        }
        let n = usize::from(s.joints);
        let task_id = self.keys.task_id.clone().filter(|_| s.capture_ns >= self.task_since_ns);
        let msg = messages::SampleMsg {
            boot_id: self.keys.boot_id.clone(),
            task_id,
            unix_ns: unix,
            frame_seq: s.frame_seq,
            model_version: self.s.model_version.clone(),
            has_depth,
            depth_unit_mm: s.depth_unit_mm,
            joint_positions_rad: s.positions_rad[..n].to_vec(),
            joint_velocities_rad_s: s.velocities_rad_s[..n].to_vec(),
            goal_rad: s.goal_rad[..n].to_vec(),
            goal_gripper: s.goal_gripper,
            from_baseline: s.from_baseline,
            has_command: tick.is_some(),
            approved: tick.is_some_and(|t| t.approved),
            rejected_by: tick.map_or_else(Vec::new, |t| messages::failed_checks(t.failed)),
            command_rad: tick.map_or_else(Vec::new, |t| t.command_rad[..usize::from(t.joints)].to_vec()),
            command_gripper: tick.map_or(0.0, |t| t.command_gripper),
            reason: reason.to_string(),
        };
        self.write_proto(CH_SAMPLES, unix, &msg);
        self.stats.samples.fetch_add(1, Relaxed);
        if tick.is_none() {
            self.stats.samples_without_command.fetch_add(1, Relaxed);
        }
    }

    /// Records the daemon's health snapshot, with this boot's keys.
    pub fn record_health(&mut self, h: &messages::HealthMsg) {
        let keyed =
            messages::HealthMsg { boot_id: self.keys.boot_id.clone(), task_id: self.keys.task_id.clone(), ..h.clone() };
        self.write_proto(CH_HEALTH, h.unix_ns, &keyed);
    }

    /// Encodes a thumbnail and writes it (or keeps it in the pre-roll ring) per
    /// the image policy.
    pub fn record_thumb(&mut self, t: &Thumb) {
        let every = match self.level {
            ImageLevel::Normal => self.s.image_every_n,
            ImageLevel::Reduced => self.s.image_every_n.saturating_mul(4),
            ImageLevel::Off => 0,
        };
        if every == 0 {
            return;
        }
        let due = t.frame_seq.is_multiple_of(u64::from(every)) || t.capture_ns <= self.post_roll_until_ns;
        let keep = self.level == ImageLevel::Normal && !self.s.preroll.is_zero();
        if !due && !keep {
            return;
        }
        let mut jpeg = Vec::with_capacity(t.rgb.len() / 8);
        let encoder = jpeg_encoder::Encoder::new(&mut jpeg, self.s.jpeg_quality);
        if encoder.encode(&t.rgb, t.width as u16, t.height as u16, jpeg_encoder::ColorType::Rgb).is_err() {
            return;
        }
        if due {
            self.write_image(t.capture_ns, t.frame_seq, &jpeg);
        } else {
            let item = (t.capture_ns, t.frame_seq, jpeg);
            keep_recent(&mut self.preroll, item, t.capture_ns, self.s.preroll, |(c, _, _)| *c, drop);
        }
    }

    /// Writes an already-encoded JPEG image.
    pub fn write_image(&mut self, capture_ns: u64, frame_seq: u64, jpeg: &[u8]) {
        if self.last_image_seq.is_some_and(|s| s >= frame_seq) {
            return;
        }
        self.last_image_seq = Some(frame_seq);
        if self.kept_images.len() >= MAX_PENDING_FRAMES {
            self.kept_images.pop_front();
        }
        self.kept_images.push_back(frame_seq);
        let unix = self.unix(capture_ns);
        let msg = foxglove::CompressedImage {
            timestamp: Some(foxglove::Timestamp::from_unix_ns(unix)),
            frame_id: messages::CAMERA_FRAME.into(),
            data: jpeg.to_vec(),
            format: "jpeg".into(),
        };
        self.write_proto(CH_IMAGES, unix, &msg);
        self.stats.images.fetch_add(1, Relaxed);
    }

    fn write_proto<M: prost::Message>(&mut self, channel: usize, unix_ns: u64, msg: &M) {
        self.buf.clear();
        if msg.encode(&mut self.buf).is_err() {
            return;
        }
        let data = std::mem::take(&mut self.buf);
        self.write_raw(channel, unix_ns, &data);
        self.buf = data;
    }

    /// Writes one message, opening a segment when none is open and rolling when
    /// it is full. A failing disk drops the message, counted, and never stops
    /// the recorder.
    pub fn write_raw(&mut self, channel: usize, unix_ns: u64, data: &[u8]) {
        // The uplink's copy first: a full disk must not silence the cloud.
        if let Some(kind) = batch::kind_of(channel) {
            if self.batchers[kind as usize].add(channel, unix_ns, data).is_err() {
                self.stats.dropped.fetch_add(1, Relaxed);
            }
        }
        if self.seg.is_none() && !self.try_open() {
            self.stats.dropped.fetch_add(1, Relaxed);
            return;
        }
        let Some(open) = self.seg.as_mut() else { return };
        let before = open.w.bytes();
        match open.w.write(channel, unix_ns, data) {
            Ok(()) => {
                let grown = open.w.bytes().saturating_sub(before);
                self.stats.messages.fetch_add(1, Relaxed);
                self.stats.payload_bytes.fetch_add(data.len() as u64, Relaxed);
                self.stats.bytes_written.fetch_add(grown, Relaxed);
                self.stats.bytes_today.fetch_add(grown, Relaxed);
                if open.w.bytes() >= self.s.segment_max_bytes && !self.rolling {
                    self.roll();
                }
            }
            Err(e) => self.fail(e),
        }
    }

    fn try_open(&mut self) -> bool {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let now = unix_ns();
        let id = loop {
            let id = segment_id(&self.s.robot_id, now, self.next_index);
            self.next_index += 1;
            if !self.dir.join(format!("{id}{}", segment::PARTIAL)).exists()
                && !self.dir.join(format!("{id}{}", segment::FINAL)).exists()
            {
                break id;
            }
        };
        match SegmentWriter::create(&self.dir, &id, self.s.encoding) {
            Ok(w) => {
                self.retry_at = None;
                self.last_segment_id = id.clone();
                self.seg = Some(Open { w, opened: Instant::now(), created_unix_ns: now, last_flush: Instant::now() });
                self.write_calibration(now);
                true
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    /// What every segment starts with, so each can be read (and replayed)
    /// alone: the cameras' intrinsics, the camera's place on the robot, the
    /// arm and the configuration.
    fn write_calibration(&mut self, unix_ns: u64) {
        let rig = self.s.rig.clone();
        if let Some(rgb) = &rig.rgb {
            self.write_proto(CH_CAMERA_CALIBRATION, unix_ns, &messages::Rig::calibration(rgb, unix_ns));
        }
        if let Some(depth) = &rig.depth {
            self.write_proto(CH_DEPTH_CALIBRATION, unix_ns, &messages::Rig::calibration(depth, unix_ns));
        }
        self.write_proto(CH_TF_STATIC, unix_ns, &rig.camera_transform(unix_ns));
        let arm = rig.arm_model(&self.keys.boot_id, &self.s.robot_id, &self.s.model_version, unix_ns);
        self.write_proto(CH_ARM, unix_ns, &arm);
        let config = messages::RobotConfigMsg {
            boot_id: self.keys.boot_id.clone(),
            unix_ns,
            robot_id: self.s.robot_id.clone(),
            model_version: self.s.model_version.clone(),
            toml: self.s.config_toml.clone(),
        };
        self.write_proto(CH_CONFIG, unix_ns, &config);
    }

    /// A write failed: keep what the open segment holds (its complete chunks),
    /// and retry on a fresh segment after a pause.
    fn fail(&mut self, e: anyhow::Error) {
        self.stats.write_errors.fetch_add(1, Relaxed);
        let full = e
            .chain()
            .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.raw_os_error() == Some(libc::ENOSPC)));
        self.stats.disk_full.store(full, Relaxed);
        self.stats.failing.store(true, Relaxed);
        self.stats.dropped.fetch_add(1, Relaxed);
        if self.last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            self.last_log = Some(Instant::now());
            tracing::error!(error = %format!("{e:#}"), "recorder write failed; dropping records until the disk recovers");
        }
        if let Some(open) = self.seg.take() {
            let id = open.w.id().to_string();
            drop(open);
            self.unrecovered.push(id);
            self.recover_pending();
        }
        self.retry_at = Some(Instant::now() + Duration::from_secs(5));
        let _ = self.enforce_quota();
    }

    /// A chunk reached the disk: a past write failure is over. (A write into
    /// the open chunk proves nothing: it stays in memory until the chunk is
    /// flushed.)
    fn writing_again(&mut self) {
        self.stats.failing.store(false, Relaxed);
        self.stats.disk_full.store(false, Relaxed);
        self.recover_pending();
    }

    /// Rebuilds the segments a write failure left unfinished; one that cannot
    /// be rebuilt yet (the disk still full) waits for the next chance.
    fn recover_pending(&mut self) {
        let ids = std::mem::take(&mut self.unrecovered);
        for id in ids {
            match segment::recover(&self.dir, &id, self.s.encoding, unix_ns()) {
                Ok(r) => self.register_recovery(r),
                Err(_) => self.unrecovered.push(id),
            }
        }
    }

    fn register_recovery(&mut self, r: Recovered) {
        match r {
            Recovered::Kept(row) => {
                self.stats.recovered.fetch_add(1, Relaxed);
                let _ = self.catalog.insert(&row).and_then(|_| self.catalog.bump(catalog::RECOVERED, 1));
            }
            Recovered::Quarantined(row, _) => {
                self.stats.quarantined.fetch_add(1, Relaxed);
                let _ = self.catalog.insert(&row).and_then(|_| self.catalog.bump(catalog::QUARANTINED, 1));
            }
        }
    }

    /// Closes the open segment (if any): finished, durable, catalogued.
    pub fn roll(&mut self) -> Option<SegmentRow> {
        // The waiting frames go with the images already in this segment.
        if self.seg.is_some() {
            self.rolling = true;
            self.release_frames(true);
            self.rolling = false;
        }
        let open = self.seg.take()?;
        // The wall clock is followed from segment to segment, never within
        // one: a frame and its image are timed alike (the lake pairs them by
        // capture time).
        self.unix_offset = clock_offset();
        let id = open.w.id().to_string();
        match open.w.finish(open.created_unix_ns) {
            Ok(row) => match self.catalog.insert(&row) {
                Ok(()) => {
                    self.writing_again();
                    let _ = self.enforce_quota();
                    Some(row)
                }
                Err(e) => {
                    // The file is final and durable; the next start adopts it.
                    tracing::error!(segment = %id, error = %e, "could not catalogue a finished segment");
                    None
                }
            },
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// Periodic work: roll by age, write out the open chunk, apply the quota.
    pub fn maintain(&mut self) {
        // Frames keep ageing when the camera has stopped.
        self.newest_capture_ns = self.newest_capture_ns.max(monotonic_ns());
        self.release_frames(false);
        if let Some(open) = self.seg.as_mut() {
            if open.last_flush.elapsed() >= self.s.flush_every {
                open.last_flush = Instant::now();
                match open.w.flush_chunk() {
                    Ok(()) => self.writing_again(),
                    Err(e) => self.fail(e),
                }
            }
        }
        if self.seg.as_ref().is_some_and(|o| o.opened.elapsed() >= self.s.segment_max_age) {
            self.roll();
        }
        if let Err(e) = self.enforce_quota() {
            tracing::error!(error = %e, "disk quota check failed");
        }
    }

    /// Applies [`quota::plan`] and refreshes the counters.
    pub fn enforce_quota(&mut self) -> anyhow::Result<()> {
        let segments = self.catalog.on_disk()?;
        let open = self.seg.as_ref().map_or(0, |o| o.w.bytes());
        let used = segments.iter().map(|s| s.bytes).sum::<u64>() + open;
        let plan = quota::plan(self.s.quota_bytes, used, &segments, self.level);
        for id in &plan.evict {
            let Some(row) = segments.iter().find(|s| &s.id == id) else { continue };
            self.catalog.mark_evicted(id, unix_ns())?;
            let path = row.path(&self.s.data_dir);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::error!(file = %path.display(), error = %e, "could not delete an evicted segment");
                }
            }
            if !row.synced {
                tracing::error!(segment = %id, bytes = row.bytes, "disk quota: evicted a segment that was never synced");
            }
        }
        if plan.image_level != self.level {
            tracing::warn!(
                from = self.level.as_str(),
                to = plan.image_level.as_str(),
                "disk quota: image policy changed"
            );
            self.level = plan.image_level;
            if self.level != ImageLevel::Normal {
                self.preroll.clear();
                self.post_roll_until_ns = 0;
            }
        }
        if plan.alert && !self.stats.disk_alert.load(Relaxed) {
            tracing::error!(used, quota = self.s.quota_bytes, "disk quota nearly full of unsynced data");
        }
        self.stats.disk_alert.store(plan.alert, Relaxed);
        self.stats.image_level.store(self.level as u8, Relaxed);
        self.refresh()
    }

    /// Recomputes the disk counters from the catalog.
    fn refresh(&mut self) -> anyhow::Result<()> {
        let all = self.catalog.all()?;
        let open = self.seg.as_ref().map_or(0, |o| o.w.bytes());
        let on_disk: Vec<&SegmentRow> = all.iter().filter(|s| s.state != SegmentState::Evicted).collect();
        let st = &self.stats;
        st.disk_used_bytes.store(on_disk.iter().map(|s| s.bytes).sum::<u64>() + open, Relaxed);
        st.unsynced_bytes.store(on_disk.iter().filter(|s| !s.synced).map(|s| s.bytes).sum::<u64>() + open, Relaxed);
        st.segments_on_disk.store(on_disk.len() as u64, Relaxed);
        st.lost_unsynced_segments.store(self.catalog.counter(catalog::LOST_SEGMENTS)?, Relaxed);
        st.lost_unsynced_bytes.store(self.catalog.counter(catalog::LOST_BYTES)?, Relaxed);
        st.recovered.store(self.catalog.counter(catalog::RECOVERED)?, Relaxed);
        st.quarantined.store(self.catalog.counter(catalog::QUARANTINED)?, Relaxed);
        let today_start = unix_ns() / 86_400_000_000_000 * 86_400_000_000_000;
        let closed_today: u64 = all
            .iter()
            .filter(|s| s.created_unix_ns >= today_start && s.state != SegmentState::Quarantined)
            .map(|s| s.bytes)
            .sum();
        let open_today = self.seg.as_ref().filter(|o| o.created_unix_ns >= today_start).map_or(0, |o| o.w.bytes());
        st.bytes_today.store(closed_today + open_today, Relaxed);
        Ok(())
    }

    /// Queues every batch that is due (all of them with `force`) in the outbox.
    pub fn cut_batches(&mut self, force: bool) {
        for i in 0..self.batchers.len() {
            if !(force || self.batchers[i].due()) {
                continue;
            }
            let cut = match self.batchers[i].cut() {
                Ok(Some(cut)) => cut,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "could not finish a log batch");
                    continue;
                }
            };
            let (robot, segment) = (self.s.robot_id.clone(), self.last_segment_id.clone());
            let pushed = self.catalog.outbox_push(cut.kind as u8, unix_ns(), |seq| cut.encode(&robot, &segment, seq));
            match pushed {
                Ok(_) => {
                    self.stats.batches.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    self.stats.dropped.fetch_add(cut.messages, Relaxed);
                    tracing::error!(error = %e, "could not queue a log batch");
                }
            }
        }
        if let Ok(n) = self.catalog.outbox_trim(self.s.outbox_max_bytes, BatchKind::Logs as u8) {
            if n > 0 {
                self.stats.outbox_dropped.fetch_add(n, Relaxed);
                tracing::warn!(batches = n, "uplink outbox full: dropped the oldest bulk-log batches");
            }
        }
    }

    /// Ends the open episode, queues the open batches and closes the open
    /// segment: the clean shutdown.
    pub fn close(mut self) -> Option<SegmentRow> {
        let now = monotonic_ns();
        self.flush_samples(true);
        self.release_frames(true);
        if let Some(ep) = self.episodes.interrupt(self.unix(now)) {
            let unix = ep.end_unix_ns;
            self.write_proto(CH_EPISODES, unix, &ep);
        }
        self.cut_batches(true);
        self.roll()
    }

    /// Drains everything the real-time threads queued.
    pub fn drain(&mut self, taps: &Taps) -> usize {
        let mut n = 0;
        while let Some(i) = taps.incidents.pop() {
            self.record_incident(&i);
            n += 1;
        }
        while let Some(r) = taps.control.pop() {
            self.record_control(&r);
            n += 1;
        }
        while let Some(r) = taps.frames.pop() {
            self.record_frame(&r);
            n += 1;
        }
        while let Some(t) = taps.thumbs.take() {
            self.record_thumb(&t);
            taps.thumbs.recycle(t);
            n += 1;
        }
        while let Some(s) = taps.samples.take() {
            self.record_sample(s);
            n += 1;
        }
        for s in self.take_spent_samples() {
            taps.samples.recycle(s);
        }
        taps.thumbs.set_every_n(self.s.thumb_every_n(self.level));
        self.cut_batches(false);
        n
    }
}

/// Appends `item` (of time `t_ns`) to a pre-roll ring, first handing `expired`
/// every item older than `preroll` before it.
fn keep_recent<T>(
    ring: &mut VecDeque<T>,
    item: T,
    t_ns: u64,
    preroll: Duration,
    time_of: impl Fn(&T) -> u64,
    mut expired: impl FnMut(T),
) {
    let horizon = t_ns.saturating_sub(preroll.as_nanos() as u64);
    while ring.front().is_some_and(|old| time_of(old) < horizon) {
        if let Some(old) = ring.pop_front() {
            expired(old);
        }
    }
    ring.push_back(item);
}

fn segment_id(robot: &str, unix_ns: u64, index: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = gantry_config::wire::civil_from_days(days as i64);
    format!("{robot}-{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{index:04}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn clock_offset() -> i128 {
    i128::from(unix_ns()) - i128::from(monotonic_ns())
}

/// Start-up: recover unfinished files, adopt finished ones the catalog missed,
/// mark vanished ones, delete leftovers of evictions.
fn reconcile(data_dir: &Path, dir: &Path, catalog: &Catalog, enc: Encoding) -> anyhow::Result<StartupReport> {
    let mut report = StartupReport::default();
    let mut names: Vec<String> =
        fs::read_dir(dir)?.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    for name in &names {
        if name.ends_with(".mcap.recovering") {
            // An interrupted recovery; its source is still there.
            fs::remove_file(dir.join(name))?;
        }
    }
    for name in &names {
        let Some(id) = name.strip_suffix(segment::FINAL) else { continue };
        match catalog.get(id)? {
            Some(row) if row.state == SegmentState::Evicted => {
                fs::remove_file(dir.join(name))?;
                report.orphans_deleted.push(id.to_string());
            }
            Some(_) => {}
            None => {
                let path = dir.join(name);
                let (messages, bounds) = segment::summarize(&path)
                    .with_context(|| format!("reading {} (finished but not catalogued)", path.display()))?;
                let (bytes, sha256) = segment::hash_file(&path)?;
                let row = SegmentRow {
                    id: id.to_string(),
                    file: name.clone(),
                    state: SegmentState::Finalized,
                    start_unix_ns: bounds.0,
                    end_unix_ns: bounds.1,
                    bytes,
                    sha256,
                    messages,
                    synced: false,
                    created_unix_ns: bounds.0,
                };
                catalog.insert(&row)?;
                report.adopted.push(row);
            }
        }
    }
    for name in &names {
        let Some(id) = name.strip_suffix(segment::PARTIAL) else { continue };
        if dir.join(format!("{id}{}", segment::FINAL)).exists() {
            // Recovered (or finished) before the crash; only the source was left.
            fs::remove_file(dir.join(name))?;
            continue;
        }
        match segment::recover(dir, id, enc, unix_ns())? {
            Recovered::Kept(row) => {
                tracing::warn!(segment = %id, messages = row.messages, "recovered an unfinished segment");
                catalog.insert(&row)?;
                catalog.bump(catalog::RECOVERED, 1)?;
                report.recovered.push(row);
            }
            Recovered::Quarantined(row, reason) => {
                tracing::error!(segment = %id, %reason, "unfinished segment unreadable; quarantined");
                catalog.insert(&row)?;
                catalog.bump(catalog::QUARANTINED, 1)?;
                report.quarantined.push((row, reason));
            }
        }
    }
    for row in catalog.all()? {
        if row.state == SegmentState::Evicted {
            continue;
        }
        if !row.path(data_dir).exists() {
            tracing::error!(segment = %row.id, file = %row.file, "catalogued segment missing on disk");
            catalog.set_state(&row.id, SegmentState::Evicted)?;
            report.missing.push(row.id);
        }
    }
    Ok(report)
}

/// Commands to the recorder thread from the rest of the daemon.
pub enum Command {
    Health(Box<messages::HealthMsg>),
    /// A task started or ended: an episode's edge.
    Task(TaskEvent),
    /// Close the open segment now (tests, uploads).
    Roll(Sender<Option<SegmentRow>>),
}

/// The running recorder thread.
pub struct RecorderThread {
    handle: Option<JoinHandle<Option<SegmentRow>>>,
    tx: Sender<Command>,
    stop: Arc<AtomicBool>,
    stats: Arc<RecorderStats>,
}

impl RecorderThread {
    pub fn spawn(mut recorder: Recorder, taps: Arc<Taps>) -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = recorder.stats();
        taps.thumbs.set_every_n(recorder.settings().thumb_every_n(recorder.image_level()));
        let handle = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("gantry-recorder".into())
                .spawn(move || {
                    run(&mut recorder, &taps, &rx, &stop);
                    recorder.drain(&taps);
                    recorder.close()
                })
                .context("starting the recorder thread")?
        };
        Ok(Self { handle: Some(handle), tx, stop, stats })
    }

    pub fn stats(&self) -> Arc<RecorderStats> {
        self.stats.clone()
    }

    pub fn sender(&self) -> Sender<Command> {
        self.tx.clone()
    }

    /// Drains what is queued, closes the open segment and returns it.
    pub fn stop(mut self) -> Option<SegmentRow> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Option<SegmentRow> {
        self.stop.store(true, Relaxed);
        let _ = self.tx.send(Command::Roll(std::sync::mpsc::channel().0));
        self.handle.take().and_then(|h| h.join().ok()).flatten()
    }
}

impl Drop for RecorderThread {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn run(recorder: &mut Recorder, taps: &Taps, rx: &Receiver<Command>, stop: &AtomicBool) {
    let mut last_maintain = Instant::now();
    while !stop.load(Relaxed) {
        recorder.drain(taps);
        // The queues hold seconds of records; draining every 20 ms keeps them
        // nearly empty and the wait doubles as the command inbox.
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Command::Health(h)) => recorder.record_health(&h),
            Ok(Command::Task(event)) => {
                recorder.drain(taps);
                recorder.record_task(&event);
            }
            Ok(Command::Roll(reply)) => {
                if stop.load(Relaxed) {
                    break;
                }
                recorder.drain(taps);
                let _ = reply.send(recorder.roll());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_maintain.elapsed() >= Duration::from_secs(1) {
            last_maintain = Instant::now();
            recorder.maintain();
        }
    }
}
