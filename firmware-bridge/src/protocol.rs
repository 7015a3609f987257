//! The wire protocol between host and firmware, `no_std` so the firmware builds
//! the same code.
//!
//! A frame on the wire is `0x00 ‖ COBS(version ‖ postcard(Message) ‖ CRC-32(version ‖ payload)) ‖ 0x00`.
//! Zero bytes delimit frames; because every frame also starts with one, garbage or
//! a truncated frame before it is cut off and the frame itself still decodes. A frame with a bad CRC, an unknown version or a payload that
//! does not decode is counted and dropped; see `docs/PROTOCOL.md` for the reader policy.

use crc::{Crc, CRC_32_ISO_HDLC};
use heapless::Vec;
use serde::{Deserialize, Serialize};

/// The protocol version this code writes and reads.
/// 2: `MotorCommand` carries the control tick's time, and commands (not
/// heartbeats) feed the firmware's watchdog.
/// 3: `Hold`, the host's "stay where you are" when it has no position to command.
pub const PROTOCOL_VERSION: u8 = 3;
/// Most joints a frame carries.
pub const MAX_JOINTS: usize = 8;
/// Largest unencoded frame: version, payload and CRC.
pub const MAX_RAW_FRAME: usize = 160;
/// Largest frame on the wire, COBS overhead and both delimiters included.
pub const MAX_WIRE_FRAME: usize = MAX_RAW_FRAME + MAX_RAW_FRAME / 254 + 3;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Per-joint values, at most [`MAX_JOINTS`].
pub type Joints = Vec<f32, MAX_JOINTS>;

/// Joint positions and velocities as the encoders see them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointState {
    pub seq: u32,
    /// Firmware clock, microseconds since its boot.
    pub time_us: u64,
    pub positions_rad: Joints,
    pub velocities_rad_s: Joints,
    /// Bit `i` set: joint `i`'s encoder reads correctly.
    pub encoder_ok: u8,
}

/// A set-point for every joint and the gripper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MotorCommand {
    pub seq: u32,
    /// When the control tick that decided it ran, microseconds on the host's
    /// monotonic clock. Strictly increasing: the firmware drops a command that
    /// is older than the last it took, or that arrives later than its command
    /// timeout after the tick.
    pub tick_us: u64,
    pub targets_rad: Joints,
    /// 0.0 open … 1.0 closed.
    pub gripper: f32,
}

/// Slow-changing measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    pub motor_temp_c: Joints,
    pub gripper_pressure_kpa: f32,
    pub supply_v: f32,
}

/// The e-stop circuit: the button, and the latch that only an explicit reset clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EStopState {
    pub pressed: bool,
    pub latched: bool,
}

/// "Stay where you are": the host has no position it could command (no joint
/// state yet). Feeds the command watchdog like a [`MotorCommand`] and under the
/// same freshness rules; the firmware brings the arm to a controlled stop and
/// holds it until the next motor command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub seq: u32,
    /// As [`MotorCommand::tick_us`].
    pub tick_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seq: u32,
    pub uptime_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultCode {
    EncoderError,
    OverCurrent,
    OverTemperature,
    UnderVoltage,
    /// No fresh motor command within the command timeout; the firmware brings
    /// the arm to a controlled stop and holds it.
    CommandTimeout,
    JointLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub code: FaultCode,
    /// The joint concerned, or 255 for none.
    pub joint: u8,
}

/// Everything either side sends. New variants go at the end so older readers
/// reject them as malformed rather than misreading them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    // Firmware → host.
    JointState(JointState),
    Telemetry(Telemetry),
    EStop(EStopState),
    Heartbeat(Heartbeat),
    Fault(Fault),
    // Host → firmware.
    MotorCommand(MotorCommand),
    /// Clears the e-stop latch if the button is released.
    EStopReset,
    Hold(Hold),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The message does not fit [`MAX_RAW_FRAME`].
    TooLarge,
}

/// Encodes `msg` into `out` as one wire frame, delimiter included; returns its length.
pub fn encode(msg: &Message, out: &mut [u8; MAX_WIRE_FRAME]) -> Result<usize, EncodeError> {
    frame(msg, PROTOCOL_VERSION, out)
}

/// What the decoder has seen, for the link's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub frames_ok: u64,
    pub bad_crc: u64,
    pub unknown_version: u64,
    /// COBS or postcard could not decode it, or it was too short.
    pub malformed: u64,
    /// Longer than [`MAX_WIRE_FRAME`]; skipped up to the next delimiter.
    pub oversize: u64,
}

impl DecodeStats {
    pub fn rejected(&self) -> u64 {
        self.bad_crc + self.unknown_version + self.malformed + self.oversize
    }
}

/// A streaming decoder: feed it bytes as they arrive, get whole messages back.
/// Fixed-size buffer, no allocation.
pub struct Decoder {
    buf: [u8; MAX_WIRE_FRAME],
    len: usize,
    /// Inside an oversize frame: drop bytes up to the next delimiter.
    skipping: bool,
    stats: DecodeStats,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_WIRE_FRAME],
            len: 0,
            skipping: false,
            stats: DecodeStats { frames_ok: 0, bad_crc: 0, unknown_version: 0, malformed: 0, oversize: 0 },
        }
    }

    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Feeds `bytes`, calling `on_message` for every valid frame completed.
    pub fn push(&mut self, bytes: &[u8], mut on_message: impl FnMut(Message)) {
        for &b in bytes {
            if b == 0 {
                if self.skipping {
                    self.skipping = false;
                } else if self.len > 0 {
                    if let Some(msg) = self.finish_frame() {
                        on_message(msg);
                    }
                }
                self.len = 0;
            } else if self.skipping {
                continue;
            } else if self.len == self.buf.len() {
                self.stats.oversize += 1;
                self.skipping = true;
                self.len = 0;
            } else {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn finish_frame(&mut self) -> Option<Message> {
        if !cobs_well_formed(&self.buf[..self.len]) {
            self.stats.malformed += 1;
            return None;
        }
        let Ok(n) = cobs::decode_in_place(&mut self.buf[..self.len]) else {
            self.stats.malformed += 1;
            return None;
        };
        let raw = &self.buf[..n];
        if raw.len() < 1 + 1 + 4 {
            self.stats.malformed += 1;
            return None;
        }
        let (body, crc) = raw.split_at(raw.len() - 4);
        if CRC32.checksum(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            self.stats.bad_crc += 1;
            return None;
        }
        if body[0] != PROTOCOL_VERSION {
            self.stats.unknown_version += 1;
            return None;
        }
        match postcard::from_bytes::<Message>(&body[1..]) {
            Ok(msg) => {
                self.stats.frames_ok += 1;
                Some(msg)
            }
            Err(_) => {
                self.stats.malformed += 1;
                None
            }
        }
    }
}

/// Every COBS code byte must be followed by the data bytes it announces. The
/// `cobs` crate tolerates a short last group, which would let a frame truncated
/// by garbage decode as if whole.
fn cobs_well_formed(encoded: &[u8]) -> bool {
    let mut i = 0;
    while i < encoded.len() {
        let code = encoded[i] as usize;
        if code == 0 || i + code > encoded.len() {
            return false;
        }
        i += code;
    }
    true
}

/// Encodes a frame with an arbitrary version byte, for tests of the reader policy.
#[doc(hidden)]
pub fn encode_with_version(msg: &Message, version: u8, out: &mut [u8; MAX_WIRE_FRAME]) -> Result<usize, EncodeError> {
    frame(msg, version, out)
}

fn frame(msg: &Message, version: u8, out: &mut [u8; MAX_WIRE_FRAME]) -> Result<usize, EncodeError> {
    let mut raw = [0u8; MAX_RAW_FRAME];
    raw[0] = version;
    let payload_len = postcard::to_slice(msg, &mut raw[1..MAX_RAW_FRAME - 4]).map_err(|_| EncodeError::TooLarge)?.len();
    let body = 1 + payload_len;
    let crc = CRC32.checksum(&raw[..body]);
    raw[body..body + 4].copy_from_slice(&crc.to_le_bytes());
    out[0] = 0;
    let n = cobs::encode(&raw[..body + 4], &mut out[1..MAX_WIRE_FRAME - 1]);
    out[1 + n] = 0;
    Ok(n + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> (heapless::Vec<Message, 8>, DecodeStats) {
        let mut d = Decoder::new();
        let mut out = heapless::Vec::new();
        d.push(bytes, |m| out.push(m).unwrap());
        (out, d.stats())
    }

    fn joint_state() -> Message {
        Message::JointState(JointState {
            seq: 7,
            time_us: 123_456_789,
            positions_rad: Joints::from_slice(&[0.1, -0.2, 0.3, 1.5, -2.5, 3.0, 0.0, 0.5]).unwrap(),
            velocities_rad_s: Joints::from_slice(&[1.0; 8]).unwrap(),
            encoder_ok: 0xff,
        })
    }

    #[test]
    fn every_message_round_trips() {
        let messages = [
            joint_state(),
            Message::Telemetry(Telemetry {
                motor_temp_c: Joints::from_slice(&[30.0, 31.5]).unwrap(),
                gripper_pressure_kpa: 250.0,
                supply_v: 47.9,
            }),
            Message::EStop(EStopState { pressed: true, latched: true }),
            Message::Heartbeat(Heartbeat { seq: u32::MAX, uptime_ms: 5 }),
            Message::Fault(Fault { code: FaultCode::OverTemperature, joint: 3 }),
            Message::MotorCommand(MotorCommand {
                seq: 1,
                tick_us: 12_345_678,
                targets_rad: Joints::from_slice(&[0.5; 6]).unwrap(),
                gripper: 1.0,
            }),
            Message::EStopReset,
        ];
        let mut frame = [0u8; MAX_WIRE_FRAME];
        for m in &messages {
            let n = encode(m, &mut frame).unwrap();
            assert_eq!(frame[0], 0);
            assert_eq!(frame[n - 1], 0);
            assert!(!frame[1..n - 1].contains(&0), "COBS leaves no zero inside a frame");
            let (got, stats) = decode_all(&frame[..n]);
            assert_eq!(got.as_slice(), core::slice::from_ref(m));
            assert_eq!(stats.frames_ok, 1);
            assert_eq!(stats.rejected(), 0);
        }
    }

    #[test]
    fn corrupted_byte_is_a_bad_crc() {
        let mut frame = [0u8; MAX_WIRE_FRAME];
        let n = encode(&joint_state(), &mut frame).unwrap();
        // Flip a payload bit but keep it non-zero so the framing survives.
        frame[n / 2] ^= if frame[n / 2] == 1 { 3 } else { 1 };
        let (got, stats) = decode_all(&frame[..n]);
        assert!(got.is_empty());
        assert_eq!(stats.frames_ok, 0);
        assert_eq!(stats.bad_crc + stats.malformed, 1);
    }

    #[test]
    fn unknown_version_is_counted_and_dropped() {
        let mut frame = [0u8; MAX_WIRE_FRAME];
        let n = encode_with_version(&joint_state(), PROTOCOL_VERSION + 1, &mut frame).unwrap();
        let (got, stats) = decode_all(&frame[..n]);
        assert!(got.is_empty());
        assert_eq!(stats.unknown_version, 1);
        assert_eq!(stats.rejected(), 1);
    }

    #[test]
    fn oversize_run_is_skipped_and_the_next_frame_decodes() {
        let mut bytes = [1u8; MAX_WIRE_FRAME * 3];
        let mut frame = [0u8; MAX_WIRE_FRAME];
        let n = encode(&joint_state(), &mut frame).unwrap();
        let tail = bytes.len() - n;
        bytes[tail..].copy_from_slice(&frame[..n]);
        let (got, stats) = decode_all(&bytes);
        assert_eq!(got.len(), 1);
        assert_eq!(stats.oversize, 1);
    }
}
