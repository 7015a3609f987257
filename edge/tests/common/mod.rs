//! Helpers shared by the recorder and status page tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use gantry_edge::record::segment::Encoding;
use gantry_edge::record::taps::ControlRecord;
use gantry_edge::record::Settings;

/// Recorder settings for tests: small segments and chunks.
pub fn settings(dir: &Path, segment_max_bytes: u64, quota_bytes: u64) -> Settings {
    Settings {
        robot_id: "robot-t".into(),
        data_dir: dir.to_path_buf(),
        segment_max_bytes,
        segment_max_age: Duration::from_secs(3600),
        quota_bytes,
        encoding: Encoding { zstd_level: 3, chunk_bytes: 32 * 1024 },
        image_every_n: 1,
        jpeg_quality: 70,
        preroll: Duration::ZERO,
        flush_every: Duration::from_secs(3600),
        episode: Duration::from_secs(10),
        joints: 6,
        model_version: "test-1".into(),
        sample_hz: 0.0,
        config_toml: String::new(),
        rig: gantry_edge::record::messages::Rig {
            dh: gantry_config::edge::Arm::default().dh,
            position_min_rad: vec![-2.9; 6],
            position_max_rad: vec![2.9; 6],
            velocity_max_rad_s: vec![2.0; 6],
            ..Default::default()
        },
        batch_max_bytes: 64_000,
        batch_period: Duration::from_secs(5),
        outbox_max_bytes: 100_000_000,
    }
}

/// A control tick at `t_s` seconds, with a joint state and some motion.
pub fn tick(i: u64) -> ControlRecord {
    let t = i as f32 * 0.01;
    let mut r = ControlRecord {
        t_ns: 1_000_000_000 + i * 10_000_000,
        seq: i as u32,
        joints: 6,
        approved: true,
        frame_seq: i / 3,
        joint_state_ns: 1_000_000_000 + i * 10_000_000 - 2_000_000,
        ..ControlRecord::default()
    };
    for j in 0..6 {
        r.goal_rad[j] = (t + j as f32).sin();
        r.command_rad[j] = (t + j as f32).sin() * 0.9;
        r.positions_rad[j] = (t + j as f32).sin() * 0.8;
        r.velocities_rad_s[j] = (t + j as f32).cos() * 0.1;
    }
    r
}

/// Incompressible bytes standing in for a JPEG, so sizes grow predictably.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A plain HTTP/1.1 GET; returns the status code, the content type and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the status page");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (status, content_type, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}
