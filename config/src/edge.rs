//! Configuration of the edge daemon (`gantry-edge`).

use serde::{Deserialize, Serialize};

use crate::problem::{check_broker_url, check_http_url, check_id, check_public_key, check_socket_addr, Checker};

/// Joint count of the default arm (a 6-axis arm).
pub const DEFAULT_JOINTS: usize = 6;
/// Largest joint count the firmware protocol carries.
pub const MAX_JOINTS: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    pub robot: Robot,
    pub camera: Camera,
    pub depth: Depth,
    pub synthetic: Synthetic,
    pub firmware: Firmware,
    pub policy: Policy,
    pub control: Control,
    pub realtime: Realtime,
    pub governor: Governor,
    pub arm: Arm,
    pub recorder: Recorder,
    pub health: Health,
    pub status_http: StatusHttp,
    pub uplink: Uplink,
    pub models: Models,
    pub tasks: Tasks,
}

/// Tasks the cloud assigns (`docs/PROTOCOL.md`, "Tasks").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tasks {
    /// The task kinds this robot does; the cloud assigns it no others.
    pub kinds: Vec<String>,
    /// Seconds of unobstructed work a task takes when its params name no
    /// `work_s`; held ticks (a person, a limit, a pause) do not count.
    pub work_s: f64,
    /// A task held this long without one approved command fails (`blocked`).
    pub max_hold_s: f64,
}

impl Default for Tasks {
    fn default() -> Self {
        Self { kinds: ["pick", "place", "inspect", "move"].map(String::from).to_vec(), work_s: 8.0, max_hold_s: 60.0 }
    }
}

/// Model updates from the fleet's registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Models {
    /// The fleet's ed25519 public key (64 hex digits, or a file holding them);
    /// every package must be signed by it. Empty: model updates are refused.
    pub fleet_public_key: String,
    /// After a swap, the new model is watched this long…
    pub probation_s: u64,
    /// …and rolled back if more of its frames than this miss the inference deadline…
    pub max_deadline_miss_rate: f64,
    /// …or the governor rejects more of its commands than this for what they
    /// propose (joint, workspace-box and safety-model checks; not a person in
    /// the workspace, the e-stop or a stale link).
    pub max_reject_rate: f64,
    /// Inferences run on a new model before the swap, off the real-time threads.
    pub warmup_runs: u32,
}

impl Default for Models {
    fn default() -> Self {
        Self {
            fleet_public_key: String::new(),
            probation_s: 60,
            max_deadline_miss_rate: 0.05,
            max_reject_rate: 0.25,
            warmup_runs: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Robot {
    pub id: String,
    pub data_dir: String,
    /// The factory site or cell the robot stands in, for the fleet page's
    /// filter; empty: none.
    pub site: String,
}

impl Default for Robot {
    fn default() -> Self {
        Self { id: "robot-0".into(), data_dir: "./gantry-data/robot-0".into(), site: String::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraSource {
    Synthetic,
    V4l,
    Realsense,
    /// A recording's model inputs (`camera.replay_path`), on the recorded clock.
    Replay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DepthSource {
    Synthetic,
    Realsense,
    None,
    /// A recording's depth model inputs (`camera.replay_path`).
    Replay,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Camera {
    pub source: CameraSource,
    pub device: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub pool_frames: usize,
    /// The recorded segment (`.mcap`) the `replay` sources play.
    pub replay_path: String,
}

impl Default for Camera {
    fn default() -> Self {
        Self {
            source: CameraSource::Synthetic,
            device: "/dev/video0".into(),
            width: 1920,
            height: 1080,
            fps: 30,
            pool_frames: 4,
            replay_path: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Depth {
    pub source: DepthSource,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub pool_frames: usize,
    /// Physical distance in millimetres of one depth unit from the device.
    pub unit_mm: f64,
    /// librealsense2 (or any library exporting its C API), loaded at run time.
    pub realsense_library: String,
}

impl Default for Depth {
    fn default() -> Self {
        Self {
            source: DepthSource::Synthetic,
            width: 848,
            height: 480,
            fps: 30,
            pool_frames: 4,
            unit_mm: 1.0,
            realsense_library: "librealsense2.so.2".into(),
        }
    }
}

/// The deterministic synthetic scene: a table seen from above, a moving part, and
/// optionally a person who enters the workspace and leaves again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Synthetic {
    pub seed: u64,
    pub table_distance_mm: u16,
    pub person_event: bool,
    pub person_enter_s: f64,
    pub person_leave_s: f64,
    /// Where the person stands (metres, robot base frame, x and y)…
    pub person_position_m: [f64; 2],
    /// …and how high the top of the body the camera sees is.
    pub person_height_m: f64,
    /// The depth camera gets no reading from the person (dark clothing, or
    /// nearer than its minimum range): the pixels read 0.
    pub person_reads_invalid: bool,
    pub depth_noise_mm: u16,
}

impl Default for Synthetic {
    fn default() -> Self {
        Self {
            seed: 42,
            table_distance_mm: 2500,
            person_event: false,
            person_enter_s: 20.0,
            person_leave_s: 25.0,
            person_position_m: [0.0, 0.3],
            person_height_m: 1.1,
            person_reads_invalid: false,
            depth_noise_mm: 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirmwareLink {
    /// The firmware simulator, in-process, over a real pseudo-terminal.
    Simulated,
    /// A real motor controller on a serial port.
    Serial,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Firmware {
    pub link: FirmwareLink,
    pub port: String,
    pub baud: u32,
    pub joints: usize,
    pub heartbeat_period_ms: u64,
    pub link_timeout_ms: u64,
    /// The firmware's command watchdog: no fresh motor command for this long
    /// and it brings the arm to a controlled stop (the simulator takes it from
    /// here; a real controller must be set to the same value).
    pub command_timeout_ms: u64,
}

impl Default for Firmware {
    fn default() -> Self {
        Self {
            link: FirmwareLink::Simulated,
            port: "/dev/ttyACM0".into(),
            baud: 1_000_000,
            joints: DEFAULT_JOINTS,
            heartbeat_period_ms: 10,
            link_timeout_ms: 50,
            command_timeout_ms: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Tract,
    Ort,
    /// Each backend that loads here (tract, ONNX Runtime on its first provider
    /// that starts) timed on the model at load; the faster runs it.
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionProvider {
    Tensorrt,
    Cuda,
    Cpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preprocess {
    Cpu,
    Cuda,
}

/// A model directory that names the baseline policy built into `gantry-edge`
/// (no files needed, whatever the working directory).
pub const BUILTIN_BASELINE: &str = "builtin:baseline";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    pub backend: Backend,
    pub model_dir: String,
    /// The on-robot baseline policy (always run with `tract`), used as fallback.
    pub baseline_model_dir: String,
    pub ort_library_path: String,
    pub providers: Vec<ExecutionProvider>,
    pub tensorrt_fp16: bool,
    pub tensorrt_cache_dir: String,
    pub preprocess: Preprocess,
    pub threads: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            backend: Backend::Tract,
            model_dir: BUILTIN_BASELINE.into(),
            baseline_model_dir: BUILTIN_BASELINE.into(),
            ort_library_path: String::new(),
            providers: vec![ExecutionProvider::Tensorrt, ExecutionProvider::Cuda, ExecutionProvider::Cpu],
            tensorrt_fp16: true,
            tensorrt_cache_dir: "./gantry-data/trt-cache".into(),
            preprocess: Preprocess::Cpu,
            threads: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Control {
    pub rate_hz: u32,
    /// Frame capture to command written, per inference.
    pub inference_deadline_ms: u64,
    /// A policy output may steer at most this many control ticks before it is stale.
    pub max_action_age_periods: u32,
    pub max_consecutive_misses: u32,
    pub recover_after_s: f64,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            rate_hz: 100,
            inference_deadline_ms: 100,
            max_action_age_periods: 20,
            max_consecutive_misses: 3,
            recover_after_s: 5.0,
        }
    }
}

impl Control {
    pub fn period_ms(&self) -> f64 {
        1000.0 / f64::from(self.rate_hz.max(1))
    }
}

/// Real-time placement of the three hot threads. Cores left out are not pinned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Realtime {
    pub lock_memory: bool,
    pub capture_core: Option<usize>,
    pub inference_core: Option<usize>,
    pub control_core: Option<usize>,
    pub capture_priority: u8,
    pub inference_priority: u8,
    pub control_priority: u8,
    /// The firmware link's reader: the joint state comes through it, so it
    /// must not starve behind busy threads for `firmware.link_timeout_ms`.
    pub link_priority: u8,
    /// The control thread counts as stalled after this long without a tick.
    pub control_stall_ms: u64,
    /// Capture, inference and the firmware link's reader count as stalled
    /// after this long without going round their loop.
    pub stall_ms: u64,
    /// A thread stalled (or dead) this long makes the daemon exit non-zero, so
    /// the service manager restarts it.
    pub stall_exit_s: f64,
}

impl Default for Realtime {
    fn default() -> Self {
        Self {
            lock_memory: true,
            capture_core: None,
            inference_core: None,
            control_core: None,
            capture_priority: 60,
            inference_priority: 50,
            control_priority: 80,
            link_priority: 70,
            control_stall_ms: 50,
            stall_ms: 2000,
            stall_exit_s: 10.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Governor {
    /// Where the depth camera is in the robot's base frame (metres)…
    pub camera_position_m: [f64; 3],
    /// …and how it is turned: fixed-axis roll, pitch, yaw (radians) taking the
    /// camera's frame (x right, y down, z along the optical axis) to the base frame.
    pub camera_rpy_rad: [f64; 3],
    /// The monitored zone, a box in the robot's base frame (metres).
    pub zone_min_m: [f64; 3],
    pub zone_max_m: [f64; 3],
    /// Points inside the zone (not the arm), as a share of the zone's footprint
    /// in the depth image, that make an intrusion.
    pub zone_min_fraction: f64,
    /// Pixels without a depth reading over the zone, as a share of its
    /// footprint, past which the camera counts as blind and the arm stops.
    pub zone_invalid_max_fraction: f64,
    /// After a stop for the zone, motion resumes once it stayed clear this long.
    pub resume_after_ms: u64,
    /// Speed and separation monitoring (docs/SAFETY.md): a person's speed
    /// towards the arm…
    pub human_speed_m_s: f64,
    /// …the depth camera's latency (exposure to frame on the host)…
    pub sensor_latency_ms: u64,
    /// …how far a hand reaches ahead of the body the camera sees…
    pub intrusion_distance_m: f64,
    /// …and the position uncertainty of camera and arm together.
    pub position_uncertainty_m: f64,
    /// Boxes no part of the arm may enter: `[min_x, min_y, min_z, max_x, max_y, max_z]`, metres.
    pub keep_out_m: Vec<[f64; 6]>,
    pub depth_max_age_ms: u64,
    /// Older (or absent) temperature and pressure readings stop the arm.
    pub telemetry_max_age_ms: u64,
    pub joint_min_rad: Vec<f64>,
    pub joint_max_rad: Vec<f64>,
    pub position_margin_rad: f64,
    pub max_velocity_rad_s: Vec<f64>,
    pub max_accel_rad_s2: Vec<f64>,
    /// Lowest the tool may go, metres above the arm base (the table plane).
    pub table_height_m: f64,
    pub tool_box_min_m: [f64; 3],
    pub tool_box_max_m: [f64; 3],
    pub max_motor_temp_c: f64,
    pub gripper_pressure_min_kpa: f64,
    pub gripper_pressure_max_kpa: f64,
    pub command_max_age_ms: u64,
    /// Optional ONNX safety model that must approve each action; empty for none.
    pub safety_model: String,
}

impl Default for Governor {
    fn default() -> Self {
        let j = DEFAULT_JOINTS;
        Self {
            camera_position_m: [0.0, 0.0, 2.5],
            camera_rpy_rad: [std::f64::consts::PI, 0.0, 0.0],
            zone_min_m: [-1.5, -1.5, 0.2],
            zone_max_m: [1.5, 1.5, 2.6],
            zone_min_fraction: 0.001,
            zone_invalid_max_fraction: 0.02,
            resume_after_ms: 1000,
            human_speed_m_s: 1.6,
            sensor_latency_ms: 50,
            intrusion_distance_m: 0.1,
            position_uncertainty_m: 0.1,
            keep_out_m: Vec::new(),
            depth_max_age_ms: 100,
            telemetry_max_age_ms: 500,
            joint_min_rad: vec![-2.9; j],
            joint_max_rad: vec![2.9; j],
            position_margin_rad: 0.05,
            max_velocity_rad_s: vec![1.5; j],
            max_accel_rad_s2: vec![8.0; j],
            table_height_m: 0.02,
            tool_box_min_m: [-0.9, -0.9, 0.0],
            tool_box_max_m: [0.9, 0.9, 1.2],
            max_motor_temp_c: 80.0,
            gripper_pressure_min_kpa: 0.0,
            gripper_pressure_max_kpa: 600.0,
            command_max_age_ms: 50,
            safety_model: String::new(),
        }
    }
}

/// The arm's kinematic model: standard Denavit–Hartenberg rows `[a_m, alpha_rad, d_m, theta_offset_rad]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Arm {
    pub dh: Vec<[f64; 4]>,
    /// The tool's tip in the last joint's frame (metres); zeros: the flange.
    pub tool_offset_m: [f64; 3],
    /// The links' radius (metres), for keep-out boxes and the camera's self-filter.
    pub link_radius_m: f64,
    /// Points this much beyond a link's radius still count as the arm in the
    /// depth image (the pose the camera saw is a few milliseconds old).
    pub self_filter_margin_m: f64,
}

impl Default for Arm {
    fn default() -> Self {
        let half_pi = std::f64::consts::FRAC_PI_2;
        // A UR5-like 6-axis arm.
        Self {
            dh: vec![
                [0.0, half_pi, 0.1625, 0.0],
                [-0.425, 0.0, 0.0, 0.0],
                [-0.3922, 0.0, 0.0, 0.0],
                [0.0, half_pi, 0.1333, 0.0],
                [0.0, -half_pi, 0.0997, 0.0],
                [0.0, 0.0, 0.0996, 0.0],
            ],
            tool_offset_m: [0.0, 0.0, 0.0],
            link_radius_m: 0.06,
            self_filter_margin_m: 0.05,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Recorder {
    pub segment_max_mb: u64,
    pub segment_max_s: u64,
    pub quota_gb: f64,
    pub zstd_level: i32,
    /// Record one camera image every N frames (0 records none).
    pub image_every_n: u32,
    pub image_width: u32,
    pub jpeg_quality: u8,
    /// Seconds of full-rate images kept in memory and written around an incident.
    pub incident_preroll_s: f64,
    /// Training samples (the policy's own inputs, its action and the governed
    /// command) recorded per second while a task runs (0: none); every frame's
    /// around an incident.
    pub sample_hz: f64,
    /// The open chunk is written out at least this often: what a crash can lose.
    pub flush_s: u64,
    /// Episodes are the cloud's tasks; a robot without them may cut its work
    /// into episodes of this many seconds instead (0: none).
    pub episode_s: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            segment_max_mb: 64,
            segment_max_s: 600,
            quota_gb: 40.0,
            zstd_level: 3,
            image_every_n: 30,
            image_width: 480,
            jpeg_quality: 70,
            incident_preroll_s: 2.0,
            sample_hz: 1.0,
            flush_s: 5,
            episode_s: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Health {
    pub period_s: u64,
}

impl Default for Health {
    fn default() -> Self {
        Self { period_s: 30 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusHttp {
    pub listen: String,
    /// File holding the operator token that `POST /api/estop/reset` (and
    /// `gantry-edge estop-reset`) must present; empty or absent: no reset over HTTP.
    pub operator_token_file: String,
}

impl Default for StatusHttp {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".into(), operator_token_file: String::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Uplink {
    /// The primary route to the cloud's broker.
    pub broker_url: String,
    /// Further routes to the same broker (another network, e.g. a 4G modem),
    /// tried in order when the one in use fails.
    pub broker_urls: Vec<String>,
    /// On another route, how often the primary is tried again (seconds).
    pub failback_probe_s: u64,
    /// File with `username` and `password` (or client certificate paths); empty for none.
    pub credentials_path: String,
    pub batch_max_kb: u64,
    /// Actions, frames and episodes leave in batches cut at least this often.
    pub batch_period_s: u64,
    pub catchup_rate_kbps: u64,
    /// Batches waiting for the broker; beyond this the oldest bulk logs are dropped
    /// (counted; incidents and health are kept, and everything stays in the segments).
    pub outbox_max_mb: u64,
    /// Cloud sync's HTTP address: bulk uploads of segments, model downloads.
    pub http_url: String,
    /// Bulk uploads never use more than this (kB/s), whatever the window allows.
    pub upload_rate_kbps: u64,
    pub upload_chunk_kb: u64,
}

impl Default for Uplink {
    fn default() -> Self {
        Self {
            broker_url: "mqtt://127.0.0.1:1883".into(),
            broker_urls: Vec::new(),
            failback_probe_s: 30,
            credentials_path: String::new(),
            batch_max_kb: 64,
            batch_period_s: 5,
            catchup_rate_kbps: 2048,
            outbox_max_mb: 1024,
            http_url: "http://127.0.0.1:8090".into(),
            upload_rate_kbps: 12_500,
            upload_chunk_kb: 1024,
        }
    }
}

impl EdgeConfig {
    /// Checks ranges and cross-field rules; `disk_size_bytes` is the size of the
    /// file system holding the data directory, when known.
    pub fn check(&self, c: &mut Checker, disk_size_bytes: Option<u64>) {
        check_id(c, "robot.id", &self.robot.id);
        if !self.robot.site.is_empty() {
            check_id(c, "robot.site", &self.robot.site);
        }
        c.non_empty("robot.data_dir", &self.robot.data_dir, "a directory path");
        // Files `run` reads and refuses to start without.
        c.file("governor.safety_model", &self.governor.safety_model, "an ONNX safety model file, or \"\" for none");
        c.file("uplink.credentials_path", &self.uplink.credentials_path, "the robot's MQTT credentials file, or \"\"");
        c.file(
            "status_http.operator_token_file",
            &self.status_http.operator_token_file,
            "a file holding the operators' token, or \"\" for no e-stop reset over HTTP",
        );
        check_public_key(c, "models.fleet_public_key", &self.models.fleet_public_key);
        for kind in &self.tasks.kinds {
            c.rule(
                crate::task::valid_kind(kind),
                "tasks.kinds",
                format!("{kind:?} is not a task kind"),
                "1-32 of [a-z0-9_-], e.g. \"pick\"",
            );
        }
        c.range_f64("tasks.work_s", self.tasks.work_s, 0.1..=3_600.0);
        c.range_f64("tasks.max_hold_s", self.tasks.max_hold_s, 1.0..=86_400.0);

        let cam = &self.camera;
        c.range("camera.width", cam.width, 16..=7680);
        c.range("camera.height", cam.height, 16..=4320);
        c.range("camera.fps", cam.fps, 1..=240);
        c.range("camera.pool_frames", cam.pool_frames, 2..=64);
        if cam.source == CameraSource::V4l {
            c.non_empty("camera.device", &cam.device, "a V4L2 device path such as /dev/video0");
        }
        if cam.source == CameraSource::Replay || self.depth.source == DepthSource::Replay {
            c.non_empty("camera.replay_path", &cam.replay_path, "a recorded segment (.mcap) to replay");
        }

        let depth = &self.depth;
        c.range("depth.width", depth.width, 16..=4096);
        c.range("depth.height", depth.height, 16..=4096);
        c.range("depth.fps", depth.fps, 1..=240);
        c.range("depth.pool_frames", depth.pool_frames, 2..=64);
        c.range_f64("depth.unit_mm", depth.unit_mm, 0.01..=100.0);
        if depth.source == DepthSource::Realsense || cam.source == CameraSource::Realsense {
            c.non_empty(
                "depth.realsense_library",
                &depth.realsense_library,
                "a library path such as librealsense2.so.2",
            );
        }

        let s = &self.synthetic;
        c.range("synthetic.table_distance_mm", s.table_distance_mm, 200..=10_000);
        c.range_f64("synthetic.person_enter_s", s.person_enter_s, 0.0..=1e6);
        c.range_f64("synthetic.person_leave_s", s.person_leave_s, 0.0..=1e6);
        c.rule(
            s.person_leave_s > s.person_enter_s,
            "synthetic.person_leave_s",
            format!("{} is not after synthetic.person_enter_s = {}", s.person_leave_s, s.person_enter_s),
            "a time after person_enter_s",
        );
        for (i, x) in s.person_position_m.iter().enumerate() {
            c.range_f64(&format!("synthetic.person_position_m[{i}]"), *x, -10.0..=10.0);
        }
        c.range_f64("synthetic.person_height_m", s.person_height_m, 0.1..=3.0);

        let fw = &self.firmware;
        c.range("firmware.joints", fw.joints, 1..=MAX_JOINTS);
        c.range("firmware.baud", fw.baud, 9600..=12_000_000);
        c.range("firmware.heartbeat_period_ms", fw.heartbeat_period_ms, 1..=1000);
        c.range("firmware.link_timeout_ms", fw.link_timeout_ms, 2..=10_000);
        c.rule(
            fw.link_timeout_ms >= 2 * fw.heartbeat_period_ms,
            "firmware.link_timeout_ms",
            format!("{} ms is less than two heartbeat periods ({} ms)", fw.link_timeout_ms, 2 * fw.heartbeat_period_ms),
            "at least 2 × firmware.heartbeat_period_ms",
        );
        c.range("firmware.command_timeout_ms", fw.command_timeout_ms, 2..=10_000);
        if fw.link == FirmwareLink::Serial {
            c.non_empty("firmware.port", &fw.port, "a serial device path such as /dev/ttyACM0");
        }

        let p = &self.policy;
        c.non_empty("policy.model_dir", &p.model_dir, "a model package directory");
        c.non_empty("policy.baseline_model_dir", &p.baseline_model_dir, "a model package directory");
        c.range("policy.threads", p.threads, 1..=64);
        if matches!(p.backend, Backend::Ort | Backend::Auto) {
            c.rule(
                !p.providers.is_empty(),
                "policy.providers",
                "is empty",
                "a list from \"tensorrt\", \"cuda\", \"cpu\"",
            );
        }
        for (i, a) in p.providers.iter().enumerate() {
            c.rule(
                !p.providers[..i].contains(a),
                &format!("policy.providers[{i}]"),
                format!("{a:?} is listed twice"),
                "each provider at most once",
            );
        }

        let ctl = &self.control;
        c.range("control.rate_hz", ctl.rate_hz, 1..=2000);
        c.range("control.inference_deadline_ms", ctl.inference_deadline_ms, 1..=10_000);
        c.range("control.max_action_age_periods", ctl.max_action_age_periods, 1..=10_000);
        c.range("control.max_consecutive_misses", ctl.max_consecutive_misses, 1..=1000);
        c.range_f64("control.recover_after_s", ctl.recover_after_s, 0.0..=3600.0);
        c.rule(
            ctl.rate_hz >= cam.fps,
            "control.rate_hz",
            format!("{} Hz is below the camera rate ({} fps)", ctl.rate_hz, cam.fps),
            "a control rate of at least camera.fps",
        );
        let action_life_ms = ctl.period_ms() * f64::from(ctl.max_action_age_periods);
        c.rule(
            (ctl.inference_deadline_ms as f64) < action_life_ms,
            "control.inference_deadline_ms",
            format!(
                "{} ms is not below the control period × max_action_age_periods ({action_life_ms:.1} ms)",
                ctl.inference_deadline_ms
            ),
            "a deadline shorter than the time a policy output may steer",
        );

        c.rule(
            fw.command_timeout_ms as f64 >= 2.0 * ctl.period_ms(),
            "firmware.command_timeout_ms",
            format!("{} ms is less than two control periods ({:.1} ms)", fw.command_timeout_ms, 2.0 * ctl.period_ms()),
            "at least 2 × the control period (1000 / control.rate_hz ms)",
        );

        let rt = &self.realtime;
        for (key, prio) in [
            ("realtime.capture_priority", rt.capture_priority),
            ("realtime.inference_priority", rt.inference_priority),
            ("realtime.control_priority", rt.control_priority),
            ("realtime.link_priority", rt.link_priority),
        ] {
            c.range(key, prio, 1..=99);
        }
        c.range("realtime.control_stall_ms", rt.control_stall_ms, 1..=60_000);
        c.rule(
            rt.control_stall_ms as f64 >= 2.0 * self.control.period_ms(),
            "realtime.control_stall_ms",
            format!("{} ms is less than two control periods", rt.control_stall_ms),
            "at least 2 × the control period (1000 / control.rate_hz ms)",
        );
        c.range("realtime.stall_ms", rt.stall_ms, 10..=600_000);
        c.range_f64("realtime.stall_exit_s", rt.stall_exit_s, 0.1..=3600.0);
        for (key, core) in [
            ("realtime.capture_core", rt.capture_core),
            ("realtime.inference_core", rt.inference_core),
            ("realtime.control_core", rt.control_core),
        ] {
            if let Some(core) = core {
                c.range(key, core, 0..=1023);
            }
        }

        self.check_governor(c);

        let r = &self.recorder;
        c.range("recorder.segment_max_mb", r.segment_max_mb, 1..=4096);
        c.range("recorder.segment_max_s", r.segment_max_s, 1..=86_400);
        c.range_f64("recorder.quota_gb", r.quota_gb, 0.01..=100_000.0);
        c.range("recorder.zstd_level", r.zstd_level, 1..=19);
        c.range("recorder.image_width", r.image_width, 16..=7680);
        c.range("recorder.jpeg_quality", r.jpeg_quality, 1..=100);
        c.range_f64("recorder.incident_preroll_s", r.incident_preroll_s, 0.0..=30.0);
        c.range_f64("recorder.sample_hz", r.sample_hz, 0.0..=240.0);
        c.range("recorder.flush_s", r.flush_s, 1..=600);
        c.range("recorder.episode_s", r.episode_s, 0..=86_400);
        let quota_bytes = r.quota_gb * 1e9;
        let segment_bytes = r.segment_max_mb as f64 * 1e6;
        c.rule(
            quota_bytes >= 4.0 * segment_bytes,
            "recorder.quota_gb",
            format!("{} GB holds fewer than 4 segments of {} MB", r.quota_gb, r.segment_max_mb),
            "a quota of at least 4 × recorder.segment_max_mb",
        );
        if let Some(disk) = disk_size_bytes {
            c.rule(
                quota_bytes < disk as f64,
                "recorder.quota_gb",
                format!(
                    "{} GB is not below the size of the disk holding robot.data_dir ({:.1} GB)",
                    r.quota_gb,
                    disk as f64 / 1e9
                ),
                "a quota smaller than the disk",
            );
        }

        c.range("health.period_s", self.health.period_s, 1..=3600);
        check_socket_addr(c, "status_http.listen", &self.status_http.listen);
        check_broker_url(c, "uplink.broker_url", &self.uplink.broker_url);
        for (i, url) in self.uplink.broker_urls.iter().enumerate() {
            check_broker_url(c, &format!("uplink.broker_urls[{i}]"), url);
        }
        c.range("uplink.failback_probe_s", self.uplink.failback_probe_s, 1..=86_400);
        c.range("uplink.batch_max_kb", self.uplink.batch_max_kb, 1..=1024);
        c.range("uplink.catchup_rate_kbps", self.uplink.catchup_rate_kbps, 1..=1_000_000);
        c.range("uplink.batch_period_s", self.uplink.batch_period_s, 1..=3600);
        c.range("uplink.outbox_max_mb", self.uplink.outbox_max_mb, 1..=1_000_000);
        check_http_url(c, "uplink.http_url", &self.uplink.http_url, false);
        c.range("uplink.upload_rate_kbps", self.uplink.upload_rate_kbps, 1..=10_000_000);
        c.range("uplink.upload_chunk_kb", self.uplink.upload_chunk_kb, 4..=16_384);
        let m = &self.models;
        c.range("models.probation_s", m.probation_s, 1..=86_400);
        c.range_f64("models.max_deadline_miss_rate", m.max_deadline_miss_rate, 0.0..=1.0);
        c.range_f64("models.max_reject_rate", m.max_reject_rate, 0.0..=1.0);
        c.range("models.warmup_runs", m.warmup_runs, 1..=1000);
    }

    fn check_governor(&self, c: &mut Checker) {
        let g = &self.governor;
        let joints = self.firmware.joints;
        for (key, v) in [
            ("governor.joint_min_rad", &g.joint_min_rad),
            ("governor.joint_max_rad", &g.joint_max_rad),
            ("governor.max_velocity_rad_s", &g.max_velocity_rad_s),
            ("governor.max_accel_rad_s2", &g.max_accel_rad_s2),
        ] {
            c.rule(
                v.len() == joints,
                key,
                format!("has {} entries for {joints} joints", v.len()),
                "one entry per joint (firmware.joints)",
            );
            for (i, x) in v.iter().enumerate() {
                c.range_f64(&format!("{key}[{i}]"), *x, -100.0..=100.0);
            }
        }
        for (i, (lo, hi)) in g.joint_min_rad.iter().zip(&g.joint_max_rad).enumerate() {
            c.rule(
                hi - lo > 2.0 * g.position_margin_rad,
                &format!("governor.joint_max_rad[{i}]"),
                format!("{hi} leaves no room above joint_min_rad[{i}] = {lo} with the margin"),
                "joint_max_rad > joint_min_rad + 2 × position_margin_rad",
            );
        }
        for (key, v) in
            [("governor.max_velocity_rad_s", &g.max_velocity_rad_s), ("governor.max_accel_rad_s2", &g.max_accel_rad_s2)]
        {
            for (i, x) in v.iter().enumerate() {
                c.rule(*x > 0.0, &format!("{key}[{i}]"), format!("{x} is not positive"), "a positive limit");
            }
        }
        c.range_f64("governor.position_margin_rad", g.position_margin_rad, 0.0..=1.0);
        for axis in 0..3 {
            c.range_f64(&format!("governor.camera_position_m[{axis}]"), g.camera_position_m[axis], -100.0..=100.0);
            c.range_f64(&format!("governor.camera_rpy_rad[{axis}]"), g.camera_rpy_rad[axis], -7.0..=7.0);
            c.rule(
                g.zone_min_m[axis] < g.zone_max_m[axis],
                &format!("governor.zone_max_m[{axis}]"),
                format!("{} is not above zone_min_m[{axis}] = {}", g.zone_max_m[axis], g.zone_min_m[axis]),
                "zone_max_m > zone_min_m on every axis",
            );
            c.rule(
                g.tool_box_min_m[axis] < g.tool_box_max_m[axis],
                &format!("governor.tool_box_max_m[{axis}]"),
                format!("{} is not above tool_box_min_m[{axis}] = {}", g.tool_box_max_m[axis], g.tool_box_min_m[axis]),
                "tool_box_max_m > tool_box_min_m on every axis",
            );
        }
        for (i, b) in g.keep_out_m.iter().enumerate() {
            c.rule(
                (0..3).all(|a| b[a] < b[a + 3]),
                &format!("governor.keep_out_m[{i}]"),
                format!("{b:?} has a minimum not below its maximum"),
                "[min_x, min_y, min_z, max_x, max_y, max_z] with each min < max",
            );
        }
        c.range("governor.keep_out_m", g.keep_out_m.len(), 0..=8);
        c.range_f64("governor.zone_min_fraction", g.zone_min_fraction, 1e-6..=1.0);
        c.range_f64("governor.zone_invalid_max_fraction", g.zone_invalid_max_fraction, 0.0..=1.0);
        c.range("governor.resume_after_ms", g.resume_after_ms, 0..=600_000);
        c.range_f64("governor.human_speed_m_s", g.human_speed_m_s, 0.1..=10.0);
        c.range("governor.sensor_latency_ms", g.sensor_latency_ms, 0..=10_000);
        c.range_f64("governor.intrusion_distance_m", g.intrusion_distance_m, 0.0..=5.0);
        c.range_f64("governor.position_uncertainty_m", g.position_uncertainty_m, 0.0..=5.0);
        for (i, x) in self.arm.tool_offset_m.iter().enumerate() {
            c.range_f64(&format!("arm.tool_offset_m[{i}]"), *x, -2.0..=2.0);
        }
        c.range_f64("arm.link_radius_m", self.arm.link_radius_m, 0.0..=1.0);
        c.range_f64("arm.self_filter_margin_m", self.arm.self_filter_margin_m, 0.0..=1.0);
        c.range("governor.depth_max_age_ms", g.depth_max_age_ms, 1..=10_000);
        c.range("governor.telemetry_max_age_ms", g.telemetry_max_age_ms, 10..=60_000);
        c.range("governor.command_max_age_ms", g.command_max_age_ms, 1..=10_000);
        c.range_f64("governor.max_motor_temp_c", g.max_motor_temp_c, 20.0..=200.0);
        c.rule(
            g.gripper_pressure_min_kpa < g.gripper_pressure_max_kpa,
            "governor.gripper_pressure_max_kpa",
            format!(
                "{} is not above gripper_pressure_min_kpa = {}",
                g.gripper_pressure_max_kpa, g.gripper_pressure_min_kpa
            ),
            "gripper_pressure_max_kpa > gripper_pressure_min_kpa",
        );
        c.rule(
            self.arm.dh.len() == joints,
            "arm.dh",
            format!("has {} rows for {joints} joints", self.arm.dh.len()),
            "one [a_m, alpha_rad, d_m, theta_offset_rad] row per joint (firmware.joints)",
        );
    }
}
