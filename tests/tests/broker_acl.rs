//! The embedded broker's access control and ingestion's defences: wrong
//! credentials are refused, a robot cannot publish or subscribe under another
//! robot's prefix, an observer may watch every robot but publish nothing, malformed, truncated, wrong-version, mismatched and huge
//! payloads are rejected and counted while ingestion carries on, and a batch
//! sent twice is stored once.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use gantry_config::wire::{self, BatchKind};
use gantry_edge::record::batch::Batcher;
use gantry_edge::record::CH_CONTROL;
use gantry_sync::Service;
use gantry_tests::{cloud_config, wait_for};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, QoS};

/// A valid log batch of `robot` with sequence number `seq`.
fn batch(robot: &str, seq: u64) -> Vec<u8> {
    let mut b = Batcher::new(BatchKind::Logs, 64_000, Duration::from_secs(5));
    for i in 0..10u64 {
        // Not a protobuf `gantry.Control` (a JSON object): stored, and flagged.
        b.add(CH_CONTROL, 1_700_000_000_000_000_000 + i, br#"{"seq":1}"#).unwrap();
    }
    b.cut().unwrap().unwrap().encode(robot, "seg-1", seq)
}

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
    cloud.stop().await;
}
