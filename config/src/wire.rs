//! What robot and cloud exchange over MQTT (contract: MQTT topics), shared by
//! both daemons: topic names and the versioned log batch envelope
//! (`docs/PROTOCOL.md`, "Log batches").
//!
//! ```text
//! "GNTB" | version u8 (1) | header length u32 LE | header (JSON) | body (an MCAP file, zstd chunks)
//! ```
//!
//! The header names the batch — robot, sequence number (per robot, never reused),
//! the segment being recorded when it was cut, kind — and carries the body's
//! length and SHA-256, so a receiver can deduplicate and verify before it touches
//! the body.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 4] = b"GNTB";
pub const VERSION: u8 = 1;
/// A header longer than this is malformed.
const MAX_HEADER: usize = 4096;

/// `gantry/{robot}/{leaf}`.
pub fn topic(robot: &str, leaf: &str) -> String {
    format!("gantry/{robot}/{leaf}")
}

/// Topic leaves (contract).
pub const STATUS: &str = "status";
pub const HEALTH: &str = "health";
pub const INCIDENTS: &str = "incidents";
pub const LOGS: &str = "logs";
pub const MODEL: &str = "model";
pub const UPLOAD_WINDOW: &str = "upload-window";

pub const DAY_NS: u64 = 86_400_000_000_000;
pub const WEEK_NS: u64 = 7 * DAY_NS;

/// What `gantry/{robot}/upload-window` carries (retained; `docs/PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadWindow {
    /// The next (or current) weekly slot.
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// The same slot every day, for catch-up: seconds after 00:00 UTC, and length.
    pub daily_start_s: u64,
    pub daily_length_s: u64,
    /// Bandwidth the robot may use in its slot, kB/s.
    pub rate_kbps: u64,
    /// An operator opened the window until then (0: not).
    pub now_until_unix_ns: u64,
}

impl UploadWindow {
    /// Whether a robot may upload at `now`; `behind`: it has segments recorded
    /// before its last weekly slot still unsynced.
    pub fn open(&self, now: u64, behind: bool) -> bool {
        if now < self.now_until_unix_ns {
            return true;
        }
        // The weekly slot, this week's or (for a stale message) a later one.
        if now >= self.start_unix_ns && (now - self.start_unix_ns) % WEEK_NS < self.end_unix_ns - self.start_unix_ns {
            return true;
        }
        let into_day = (now % DAY_NS) / 1_000_000_000;
        let daily = (into_day + 86_400 - self.daily_start_s) % 86_400 < self.daily_length_s;
        behind && daily
    }

    /// The start of the weekly slot before `now` (`now` itself inside a slot).
    pub fn last_weekly_start(&self, now: u64) -> u64 {
        if now >= self.start_unix_ns {
            self.start_unix_ns + (now - self.start_unix_ns) / WEEK_NS * WEEK_NS
        } else {
            self.start_unix_ns.saturating_sub(WEEK_NS)
        }
    }
}

// Bulk uploads over HTTP (`docs/PROTOCOL.md`, "Bulk uploads").

/// Header carrying a chunk's SHA-256 (lower-case hex).
pub const CHUNK_SHA256: &str = "x-gantry-chunk-sha256";

/// Where a segment's upload stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Bytes received and durable; the next chunk starts here.
    pub offset: u64,
    /// Verified and stored: nothing more to send.
    pub complete: bool,
}

/// `POST …/complete` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub bytes: u64,
    pub sha256: String,
    /// The segment's first message (UTC), for its date partition.
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub messages: u64,
}

// Model rollout (`docs/PROTOCOL.md`, "Model distribution").

/// What `gantry/{robot}/model` carries (retained): the model this robot should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelAssignment {
    pub version: String,
    /// `production` or `candidate`.
    pub status: String,
    /// Of the package archive.
    pub sha256: String,
    pub bytes: u64,
    /// Path under cloud sync's HTTP address (`uplink.http_url`).
    pub path: String,
}

/// The robot's account of its model, inside its `status` messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelReport {
    /// The model running now.
    pub version: String,
    /// `running`, `probation`, `refused` (an assignment failed its checks) or
    /// `rolled_back` (a new model misbehaved and the previous one is back).
    pub state: String,
    /// The assignment this is about, when it is not the running model.
    pub assigned: Option<String>,
    pub reason: Option<String>,
}

/// Splits `gantry/{robot}/{leaf}`.
pub fn parse_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("gantry/")?;
    let (robot, leaf) = rest.split_once('/')?;
    (valid_robot_id(robot) && !leaf.contains('/')).then_some((robot, leaf))
}

/// Robot ids are topic levels and file names: letters, digits, `-`, `_`, `.`.
pub fn valid_robot_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Which stream a batch belongs to; also its upload priority (incidents first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchKind {
    Incidents = 0,
    Health = 1,
    Logs = 2,
}

impl BatchKind {
    pub fn topic_leaf(self) -> &'static str {
        match self {
            BatchKind::Incidents => INCIDENTS,
            BatchKind::Health => HEALTH,
            BatchKind::Logs => LOGS,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.topic_leaf()
    }

    pub fn from_leaf(leaf: &str) -> Option<Self> {
        match leaf {
            INCIDENTS => Some(BatchKind::Incidents),
            HEALTH => Some(BatchKind::Health),
            LOGS => Some(BatchKind::Logs),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchHeader {
    pub robot_id: String,
    pub seq: u64,
    pub kind: BatchKind,
    /// The MCAP segment being recorded when the batch was cut.
    pub segment_id: String,
    pub messages: u64,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub body_len: u64,
    /// Lower-case hex SHA-256 of the body.
    pub body_sha256: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("too short for a batch ({0} bytes)")]
    Truncated(usize),
    #[error("not a Gantry log batch (bad magic)")]
    Magic,
    #[error("unsupported batch version {0} (this build reads version {VERSION})")]
    Version(u8),
    #[error("header length {0} out of range")]
    HeaderLength(usize),
    #[error("malformed header: {0}")]
    Header(String),
    #[error("body is {got} bytes, header says {want}")]
    BodyLength { got: usize, want: u64 },
    #[error("body checksum mismatch")]
    Checksum,
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Size and lower-case hex SHA-256 of a file, read in 1 MiB pieces.
pub fn hash_file(path: &std::path::Path) -> std::io::Result<(u64, String)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// Encodes a batch around `body`, filling in the body's length and checksum.
pub fn encode(mut header: BatchHeader, body: &[u8]) -> Vec<u8> {
    header.body_len = body.len() as u64;
    header.body_sha256 = sha256_hex(body);
    let h = serde_json::to_vec(&header).expect("a header always serialises");
    let mut out = Vec::with_capacity(9 + h.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(body);
    out
}

/// Reads only the header (cheap: for deduplication before verification).
pub fn decode_header(payload: &[u8]) -> Result<(BatchHeader, &[u8]), BatchError> {
    if payload.len() < 9 {
        return Err(BatchError::Truncated(payload.len()));
    }
    if &payload[..4] != MAGIC {
        return Err(BatchError::Magic);
    }
    if payload[4] != VERSION {
        return Err(BatchError::Version(payload[4]));
    }
    let len = u32::from_le_bytes([payload[5], payload[6], payload[7], payload[8]]) as usize;
    if len == 0 || len > MAX_HEADER || 9 + len > payload.len() {
        return Err(BatchError::HeaderLength(len));
    }
    let header: BatchHeader =
        serde_json::from_slice(&payload[9..9 + len]).map_err(|e| BatchError::Header(e.to_string()))?;
    Ok((header, &payload[9 + len..]))
}

/// Decodes and verifies a batch.
pub fn decode(payload: &[u8]) -> Result<(BatchHeader, &[u8]), BatchError> {
    let (header, body) = decode_header(payload)?;
    if body.len() as u64 != header.body_len {
        return Err(BatchError::BodyLength { got: body.len(), want: header.body_len });
    }
    if sha256_hex(body) != header.body_sha256 {
        return Err(BatchError::Checksum);
    }
    if !valid_robot_id(&header.robot_id) {
        return Err(BatchError::Header(format!("invalid robot id {:?}", header.robot_id)));
    }
    Ok((header, body))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BatchHeader {
        BatchHeader {
            robot_id: "robot-1".into(),
            seq: 42,
            kind: BatchKind::Logs,
            segment_id: "robot-1-20261124T000000Z-0001".into(),
            messages: 3,
            start_unix_ns: 1,
            end_unix_ns: 2,
            body_len: 0,
            body_sha256: String::new(),
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_named() {
        let payload = encode(header(), b"body bytes");
        let (h, body) = decode(&payload).unwrap();
        assert_eq!((h.seq, body), (42, &b"body bytes"[..]));
        assert_eq!(decode(&payload[..5]), Err(BatchError::Truncated(5)));
        assert_eq!(decode(b"XXXX\x01\x00\x00\x00\x00"), Err(BatchError::Magic));
        let mut v2 = payload.clone();
        v2[4] = 2;
        assert_eq!(decode(&v2), Err(BatchError::Version(2)));
        assert!(matches!(decode(&payload[..payload.len() - 1]), Err(BatchError::BodyLength { .. })));
        let mut flipped = payload.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&flipped), Err(BatchError::Checksum));
        let mut bad_len = payload.clone();
        bad_len[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bad_len), Err(BatchError::HeaderLength(_))));
    }

    #[test]
    fn topics() {
        assert_eq!(parse_topic("gantry/robot-1/logs"), Some(("robot-1", "logs")));
        assert_eq!(parse_topic("gantry/robot-1/logs/x"), None);
        assert_eq!(parse_topic("gantry/../logs"), None);
        assert_eq!(parse_topic("other/robot-1/logs"), None);
    }
}
