//! The embedded broker's access control and ingestion's defences: wrong
//! credentials are refused, a robot cannot publish or subscribe under another
//! robot's prefix, an observer may watch every robot but publish nothing, malformed, truncated, wrong-version, mismatched and huge
//! payloads are rejected and counted while ingestion carries on, and a batch
//! sent twice is stored once. The front holds strangers to a deadline, a size
//! and a number before they are let in; a forged batch under a robot's future
//! seq is a conflict, and the robot's real one is kept.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use gantry_config::wire::{self, BatchKind};
use gantry_edge::record::batch::Batcher;
use gantry_edge::record::CH_CONTROL;
use gantry_sync::Service;
use gantry_tests::{cloud_config, wait_for};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, QoS};

use gantry_tests::log_batch as batch;

async fn connect(
    addr: std::net::SocketAddr,
    id: &str,
    user: &str,
    pass: &str,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_credentials(user, pass);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, 16);
    loop {
        match events.poll().await? {
            Event::Incoming(Incoming::ConnAck(_)) => return Ok((client, events)),
            _ => continue,
        }
    }
}

/// Drives `events` until a PUBACK or SUBACK arrives (or the connection ends).
async fn until_ack(events: &mut EventLoop) -> Result<(), ConnectionError> {
    loop {
        match events.poll().await? {
            Event::Incoming(Incoming::PubAck(_) | Incoming::SubAck(_)) => return Ok(()),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_stay_in_their_lane_and_bad_payloads_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("robots.toml");
    std::fs::write(&creds, "[robots]\nrobot-1 = \"pw1\"\nrobot-2 = \"pw2\"\n[observers]\nops = \"pw-ops\"\n").unwrap();
    let mut config = cloud_config(&tmp.path().join("cloud"), "127.0.0.1:0");
    config.broker.credentials_path = creds.display().to_string();
    config.ingest.max_payload_kb = 64;
    let cloud = Service::start(&config).await.unwrap();
    let addr = cloud.mqtt_addr.unwrap();
    let (ingest, front, catalog) = (cloud.ingest.clone(), cloud.front.clone().unwrap(), cloud.catalog.clone());

    // Credentials.
    assert!(connect(addr, "robot-1", "robot-1", "wrong").await.is_err(), "wrong password refused");
    assert!(connect(addr, "robot-2", "robot-1", "pw1").await.is_err(), "client id must be the username");
    assert!(connect(addr, "robot-9", "robot-9", "pw1").await.is_err(), "unknown robot refused");
    assert!(connect(addr, "ops", "ops", "pw1").await.is_err(), "observer with a robot's password refused");
    assert_eq!(front.refused.load(Relaxed), 4);

    let (r1, mut e1) = connect(addr, "robot-1", "robot-1", "pw1").await.unwrap();
    let (r2, mut e2) = connect(addr, "robot-2", "robot-2", "pw2").await.unwrap();
    r2.subscribe("gantry/robot-2/#", QoS::AtLeastOnce).await.unwrap();
    until_ack(&mut e2).await.unwrap();
    let (ops, mut e_ops) = connect(addr, "ops", "ops", "pw-ops").await.unwrap();
    ops.subscribe("gantry/+/status", QoS::AtLeastOnce).await.unwrap();
    until_ack(&mut e_ops).await.unwrap();

    // robot-1 publishes under robot-2's prefix: acknowledged to it, delivered to nobody.
    r1.publish(wire::topic("robot-2", wire::LOGS), QoS::AtLeastOnce, false, batch("robot-2", 1)).await.unwrap();
    until_ack(&mut e1).await.unwrap();
    assert_eq!(front.denied_publishes.load(Relaxed), 1);
    // robot-2's subscription sees robot-2's own message first: the spoof never arrived.
    r2.publish(wire::topic("robot-2", wire::STATUS), QoS::AtLeastOnce, false, "{\"state\":\"online\"}").await.unwrap();
    let first = loop {
        if let Event::Incoming(Incoming::Publish(p)) = e2.poll().await.unwrap() {
            break p;
        }
    };
    assert_eq!(first.topic, "gantry/robot-2/status", "robot-2 received {first:?}");
    // The observer sees every robot's status.
    let seen = loop {
        if let Event::Incoming(Incoming::Publish(p)) = e_ops.poll().await.unwrap() {
            break p;
        }
    };
    assert_eq!(seen.topic, "gantry/robot-2/status", "the observer received {seen:?}");
    // ... and may publish nothing: dropped, acknowledged, counted.
    ops.publish(wire::topic("robot-1", wire::LOGS), QoS::AtLeastOnce, false, batch("robot-1", 99)).await.unwrap();
    until_ack(&mut e_ops).await.unwrap();
    assert_eq!(front.denied_publishes.load(Relaxed), 2);

    // Malformed payloads on robot-1's own topic, then a good batch, sent twice.
    let good = batch("robot-1", 7);
    let mut wrong_version = good.clone();
    wrong_version[4] = 9;
    let bad: Vec<Vec<u8>> = vec![
        (0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(),
        good[..good.len() / 2].to_vec(),
        wrong_version,
        batch("robot-2", 8),
        vec![0u8; 100 * 1024],
    ];
    for payload in bad {
        r1.publish(wire::topic("robot-1", wire::LOGS), QoS::AtLeastOnce, false, payload).await.unwrap();
        until_ack(&mut e1).await.unwrap();
    }
    for _ in 0..2 {
        r1.publish(wire::topic("robot-1", wire::LOGS), QoS::AtLeastOnce, false, good.clone()).await.unwrap();
        until_ack(&mut e1).await.unwrap();
    }
    wait_for("the good batch and its duplicate", Duration::from_secs(20), || ingest.duplicates.load(Relaxed) == 1)
        .await;
    assert_eq!(catalog.robot_seqs("robot-1").unwrap(), [7], "stored once; the observer's batch never arrived");
    // Its messages are not real control messages: stored all the same, and flagged.
    let stored = catalog.segments_since(0, 10).unwrap();
    assert_eq!(stored[0].flags, ["malformed_messages"]);
    assert!(catalog.robot_seqs("robot-2").unwrap().is_empty(), "nothing stored for robot-2");
    assert_eq!(ingest.rejected_malformed.load(Relaxed), 3, "random, truncated, wrong version");
    assert_eq!(ingest.rejected_mismatch.load(Relaxed), 1, "robot-2's header on robot-1's topic");
    assert_eq!(ingest.rejected_oversize.load(Relaxed), 1, "100 kB over a 64 kB limit");
    assert_eq!(ingest.stored.load(Relaxed), 1);

    // A subscription outside its prefix ends the connection.
    r1.subscribe("gantry/robot-2/#", QoS::AtLeastOnce).await.unwrap();
    assert!(until_ack(&mut e1).await.is_err(), "disconnected");
    assert_eq!(front.denied_subscribes.load(Relaxed), 1);
    let metrics = reqwest::get(format!("http://{}/metrics", cloud.http_addr)).await.unwrap().text().await.unwrap();
    for line in [
        "gantry_sync_broker_denied_total{packet=\"subscribe\"} 1",
        "gantry_sync_broker_denied_total{packet=\"publish\"} 2",
        "gantry_sync_broker_refused_total{reason=\"credentials\"} 4",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    cloud.stop().await;
}

/// This process's resident memory, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Opens a connection and sends `bytes` of a would-be CONNECT, then nothing.
async fn stall(addr: std::net::SocketAddr, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Reads until the front closes the connection; `true` on EOF (or a reset).
async fn closed(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_oversized_connects_cost_nothing_and_a_forged_seq_is_a_conflict() {
    const STALLED: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = cloud_config(&tmp.path().join("cloud"), "127.0.0.1:0");
    config.broker.max_pending_connects = 320;
    let cloud = Service::start(&config).await.unwrap();
    let addr = cloud.mqtt_addr.unwrap();
    let (ingest, front, catalog) = (cloud.ingest.clone(), cloud.front.clone().unwrap(), cloud.catalog.clone());

    // The genuine robot is served first: its batch is stored.
    let (r1, mut e1) = connect(addr, "robot-1", "robot-1", "any").await.unwrap();
    r1.publish(wire::topic("robot-1", wire::LOGS), QoS::AtLeastOnce, false, batch("robot-1", 1)).await.unwrap();
    until_ack(&mut e1).await.unwrap();
    wait_for("the robot's batch stored", Duration::from_secs(20), || ingest.stored.load(Relaxed) == 1).await;
    let before = rss_bytes();

    // 300 connections each declaring a 1.1 MB CONNECT and sending 4 bytes of
    // it: refused on the declared length, before any allocation.
    let huge = [0x10, 0xe0, 0x91, 0x43, 0x00];
    let mut oversized = Vec::new();
    for _ in 0..STALLED {
        oversized.push(stall(addr, &huge[..4]).await);
    }
    for s in &mut oversized {
        assert!(closed(s).await);
    }
    assert_eq!(front.oversize_connects.load(Relaxed), STALLED as u64);

    // 300 connections sending 4 bytes of a small CONNECT, then nothing: held
    // until the deadline, 20 more fit under the cap, 10 beyond it are closed
    // at once.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(stall(addr, &[0x10, 0x20, 0x00, 0x04]).await);
    }
    wait_for("300 connections waiting for their CONNECT", Duration::from_secs(20), || {
        front.pending.load(Relaxed) == STALLED as u64
    })
    .await;
    // Meanwhile the robot's own connection carries on.
    r1.publish(wire::topic("robot-1", wire::LOGS), QoS::AtLeastOnce, false, batch("robot-1", 2)).await.unwrap();
    until_ack(&mut e1).await.unwrap();
    wait_for("its next batch stored", Duration::from_secs(20), || ingest.stored.load(Relaxed) == 2).await;
    let mut beyond = Vec::new();
    for _ in 0..30 {
        beyond.push(stall(addr, &[0x10, 0x20, 0x00, 0x04]).await);
    }
    for s in &mut beyond[20..] {
        assert!(closed(s).await, "over the cap: closed at once");
    }
    assert_eq!(front.over_capacity.load(Relaxed), 10);
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("resident memory grew {:.1} MB with 630 stalled connections open", grown as f64 / 1e6);
    assert!(grown < 32 << 20, "{} MB more resident memory for 630 stalled connections", grown >> 20);
    for s in stalled.iter_mut().chain(&mut beyond[..20]) {
        assert!(closed(s).await, "closed at the CONNECT deadline");
    }
    assert_eq!(front.connect_timeouts.load(Relaxed), STALLED as u64 + 20);
    assert_eq!(front.pending.load(Relaxed), 0);

    // A forged batch under a future seq, then the robot's real one with that
    // seq: a conflict, counted, with both hashes; the real body is kept aside.
    let forged = {
        let mut b = Batcher::new(BatchKind::Logs, 64_000, Duration::from_secs(5));
        b.add(CH_CONTROL, 1_700_000_000_000_000_000, br#"{"forged":true}"#).unwrap();
        b.cut().unwrap().unwrap().encode("robot-1", "seg-1", 3)
    };
    let real = batch("robot-1", 3);
    let sha = |payload: &[u8]| wire::decode_header(payload).unwrap().0.body_sha256;
    assert_ne!(sha(&forged), sha(&real));
    for payload in [forged.clone(), real.clone()] {
        r1.publish(wire::topic("robot-1", wire::LOGS), QoS::AtLeastOnce, false, payload).await.unwrap();
        until_ack(&mut e1).await.unwrap();
    }
    wait_for("the conflict", Duration::from_secs(20), || ingest.conflicts.load(Relaxed) == 1).await;
    assert_eq!(ingest.duplicates.load(Relaxed), 0, "a conflict is not a duplicate");
    let conflicts = catalog.conflicts(10).unwrap();
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!((c.robot_id.as_str(), c.seq), ("robot-1", 3));
    assert_eq!((c.stored_sha256.clone(), c.sha256.clone()), (sha(&forged), sha(&real)));
    let kept = cloud.store.get(&c.object_key.as_str().into()).await.unwrap().bytes().await.unwrap();
    assert_eq!(&kept[..], wire::decode(&real).unwrap().1, "the real body, kept aside");
    // The real batch sent again is the same conflict, not a new one stored.
    r1.publish(wire::topic("robot-1", wire::LOGS), QoS::AtLeastOnce, false, real).await.unwrap();
    until_ack(&mut e1).await.unwrap();
    wait_for("the conflict again", Duration::from_secs(20), || ingest.conflicts.load(Relaxed) == 2).await;
    assert_eq!(catalog.conflicts(10).unwrap().len(), 1);
    assert_eq!(catalog.robot_seqs("robot-1").unwrap(), [1, 2, 3]);

    // All of it on /metrics and the conflicts API.
    let base = format!("http://{}", cloud.http_addr);
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    for line in [
        "gantry_sync_broker_refused_total{reason=\"oversize_connect\"} 300".to_string(),
        "gantry_sync_broker_refused_total{reason=\"over_capacity\"} 10".to_string(),
        format!("gantry_sync_broker_refused_total{{reason=\"connect_timeout\"}} {}", STALLED + 20),
        "gantry_sync_broker_pending_connects 0".to_string(),
        "gantry_sync_seq_conflicts_total 2".to_string(),
        "gantry_sync_ingest_commit_lag_seconds_count 3".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let api: serde_json::Value = reqwest::get(format!("{base}/api/conflicts")).await.unwrap().json().await.unwrap();
    assert_eq!(api["conflicts"][0]["stored_sha256"], sha(&forged));
    cloud.stop().await;
}
