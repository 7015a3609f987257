//! Fuzz targets for the three parsers that read bytes from outside: the
//! firmware frame decoder (serial line), the log batch decoder (MQTT
//! payloads, at the cloud) and the configuration parser (files people edit).
//!
//! They are bolero targets: `cargo test` runs each on stable with random
//! inputs for a short while (CI), and `cargo bolero test` runs the same target
//! under libFuzzer for as long as you like (README, "Fuzzing"). Every target
//! asserts what must hold for any input, not only that nothing panics.

use bolero::check;
use gantry_config::records::ControlMsg;
use gantry_config::wire::{self, BatchKind};
use gantry_config::{load_str, CloudConfig, Configuration, EdgeConfig};
use gantry_edge::record::batch::Batcher;
use gantry_edge::record::{CH_CONTROL, CH_IMAGES};
use gantry_firmware_bridge::protocol::{
    encode, Decoder, EStopState, Heartbeat, JointState, Joints, Message, MotorCommand, Telemetry, MAX_WIRE_FRAME,
};
use std::time::Duration;

/// A message of every kind the firmware speaks, built from fuzzer numbers.
fn message(kind: u8, n: u32, x: f32) -> Message {
    let joints = |v: f32| -> Joints { (0..6).map(|i| v + i as f32).collect() };
    match kind % 6 {
        0 => Message::JointState(JointState {
            seq: n,
            time_us: n as u64 * 1000,
            positions_rad: joints(x),
            velocities_rad_s: joints(-x),
            encoder_ok: 0x3f,
        }),
        1 => Message::Telemetry(Telemetry { motor_temp_c: joints(x), gripper_pressure_kpa: x, supply_v: 24.0 }),
        2 => Message::EStop(EStopState { pressed: n & 1 == 1, latched: n & 2 == 2 }),
        3 => Message::Heartbeat(Heartbeat { seq: n, uptime_ms: n.wrapping_mul(7) }),
        4 => Message::MotorCommand(MotorCommand {
            seq: n,
            tick_us: u64::from(n) << 20,
            targets_rad: joints(x),
            gripper: x,
        }),
        _ => Message::EStopReset,
    }
}

/// Garbage of any kind on the line, then whole frames: the decoder never
/// panics, resynchronises at the first frame's delimiter, returns every frame
/// whole and in order however the bytes are split into reads, and counts
/// what it delivered.
#[test]
fn firmware_frame_decoder() {
    check!().with_type::<(Vec<u8>, Vec<(u8, u32, f32)>, Vec<u8>)>().for_each(|(garbage, specs, splits)| {
        let sent: Vec<Message> = specs.iter().take(16).map(|&(k, n, x)| message(k, n, x)).collect();
        let mut line = garbage.clone();
        let mut frame = [0u8; MAX_WIRE_FRAME];
        for m in &sent {
            let n = encode(m, &mut frame).expect("every message kind fits a frame");
            line.extend_from_slice(&frame[..n]);
        }
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        let mut rest = &line[..];
        for &s in splits.iter().chain(std::iter::once(&u8::MAX)) {
            let (now, later) = rest.split_at((s as usize).min(rest.len()));
            decoder.push(now, |m| got.push(m));
            rest = later;
        }
        decoder.push(rest, |m| got.push(m));
        // NaN never equals itself; compare the frames as the firmware sees them.
        let bits = |ms: &[Message]| format!("{ms:?}");
        assert!(got.len() >= sent.len(), "lost frames: sent {}, got {}", sent.len(), got.len());
        assert_eq!(
            bits(&got[got.len() - sent.len()..]),
            bits(&sent),
            "the frames after the garbage, whole and in order"
        );
        assert_eq!(decoder.stats().frames_ok, got.len() as u64, "every delivered frame is counted");
    });
}

/// A valid log batch with a run of its bytes overwritten and possibly cut
/// short, as a broken link or a bad actor would deliver it: decoding never
/// panics, and whatever decodes is exactly what the robot sent (the header's
/// SHA-256 covers the body). The quality parser reads the damaged body
/// itself (bulk segments reach it without a batch envelope) without
/// panicking and never reports more messages than were written.
#[test]
fn log_batch_decoder() {
    let batch = valid_batch();
    let (_, body) = wire::decode(&batch).unwrap();
    let body = body.to_vec();
    check!().with_type::<(u32, Vec<u8>, Option<u32>)>().for_each(|(at, bytes, cut)| {
        let mut payload = batch.clone();
        let at = *at as usize % payload.len();
        for (i, b) in bytes.iter().enumerate() {
            if let Some(p) = payload.get_mut(at + i) {
                *p = *b;
            }
        }
        if let Some(c) = cut {
            payload.truncate(*c as usize % (payload.len() + 1));
        }
        // The header has no checksum of its own (TCP/TLS carry it; ingestion
        // checks its robot against the authenticated topic): only the body's
        // integrity is the decoder's to guarantee.
        if let Ok((_, decoded)) = wire::decode(&payload) {
            assert_eq!(decoded, &body[..], "a batch that decodes is the one sent");
        }
        let mut damaged = body.clone();
        let at = at % damaged.len();
        for (i, b) in bytes.iter().enumerate() {
            if let Some(p) = damaged.get_mut(at + i) {
                *p = *b;
            }
        }
        if let Ok(parsed) = gantry_sync::quality::parse(&damaged) {
            assert!(parsed.control.len() <= TICKS, "{} control messages from {TICKS}", parsed.control.len());
            assert!(parsed.images.len() <= 1);
            let _ = gantry_sync::quality::batch_flags(&parsed, &(&gantry_config::cloud::Quality::default()).into());
        }
    });
}

/// Arbitrary bytes as a whole payload: refused with an error, never a panic.
#[test]
fn log_batch_decoder_raw_bytes() {
    check!().for_each(|payload| {
        if let Ok((_, body)) = wire::decode(payload) {
            let _ = gantry_sync::quality::parse(body);
        }
        let _ = gantry_sync::quality::parse(payload);
    });
}

const TICKS: usize = 30;

/// 30 control ticks and one camera image, as the robot's recorder cuts them.
fn valid_batch() -> Vec<u8> {
    let mut b = Batcher::new(BatchKind::Logs, 10_000_000, Duration::from_secs(3600));
    let t0 = 1_794_787_200_000_000_000u64;
    for i in 0..TICKS as u64 {
        let c = ControlMsg {
            boot_id: "boot-1".into(),
            task_id: None,
            unix_ns: t0 + i * 10_000_000,
            mono_ns: i,
            seq: i as u32,
            mode: "running".into(),
            approved: true,
            rejected_by: vec![],
            from_baseline: false,
            frame_seq: i / 3,
            goal_rad: vec![0.1; 6],
            goal_gripper: 0.5,
            command_rad: vec![0.1; 6],
            command_gripper: 0.5,
        };
        b.add(CH_CONTROL, c.unix_ns, &prost::Message::encode_to_vec(&c)).unwrap();
    }
    let rgb: Vec<u8> = (0..32 * 16 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 80).encode(&rgb, 32, 16, jpeg_encoder::ColorType::Rgb).unwrap();
    let img = gantry_config::records::foxglove::CompressedImage {
        timestamp: Some(gantry_config::records::foxglove::Timestamp::from_unix_ns(t0 + 1)),
        frame_id: "camera".into(),
        data: jpeg,
        format: "jpeg".into(),
    };
    b.add(CH_IMAGES, t0 + 400_000_000, &prost::Message::encode_to_vec(&img)).unwrap();
    b.cut().unwrap().unwrap().encode("robot-fuzz", "robot-fuzz-seg", 1)
}

/// The default configuration with some lines' values replaced by fuzzer
/// text: either it loads, and then it is valid and survives a round trip
/// through TOML, or every problem line names the file, as operators read them.
fn config_target<T: Configuration + PartialEq + std::fmt::Debug>(name: &str) {
    let lines: Vec<&str> = T::DEFAULT_TOML.lines().collect();
    check!().with_type::<Vec<(u16, String)>>().for_each(|edits| {
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        for (at, value) in edits.iter().take(8) {
            let line = &mut edited[*at as usize % lines.len()];
            match line.split_once(" = ") {
                Some((key, _)) => *line = format!("{key} = {value}"),
                None => *line = value.clone(),
            }
        }
        let text = edited.join("\n");
        let none = |_: &str| -> Option<String> { None };
        match load_str::<T>(&text, name, &none) {
            Ok(config) => {
                let again = toml::to_string(&config).expect("a loaded config serialises");
                let back = load_str::<T>(&again, name, &none).expect("a serialised valid config loads");
                assert_eq!(back, config, "round trip");
            }
            Err(e) => {
                let lines = e.lines();
                assert!(!lines.is_empty());
                for l in lines {
                    assert!(l.starts_with(&format!("{name}: ")), "problem line names the file: {l}");
                }
            }
        }
    });
}

#[test]
fn edge_config_parser() {
    config_target::<EdgeConfig>("edge.toml");
}

#[test]
fn cloud_config_parser() {
    config_target::<CloudConfig>("cloud.toml");
}
