//! Ingestion keeps up with a burst: robots that were offline come back and
//! publish their backlogs at once, through Mosquitto, which hands the cloud as
//! many unacknowledged messages as it likes (`max_inflight_messages 0`). Every
//! batch is stored exactly once and ingestion never stalls (it once did: it
//! waited for room in the MQTT client's request queue from the task that
//! empties that queue).

use gantry_config::records::ControlMsg;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use gantry_config::cloud::BrokerMode;
use gantry_config::wire::{self, BatchKind};
use gantry_edge::record::batch::Batcher;
use gantry_edge::record::CH_CONTROL;
use gantry_sync::Service;
use gantry_tests::{cloud_config, free_port, wait_for, Mosquitto};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

const ROBOTS: usize = 4;
const PER_ROBOT: u64 = 250;

fn batch(robot: &str, seq: u64) -> Vec<u8> {
    let mut b = Batcher::new(BatchKind::Logs, 64_000, Duration::from_secs(5));
    for i in 0..20u64 {
        b.add(
            CH_CONTROL,
            1_700_000_000_000_000_000 + seq * 1000 + i,
            &prost::Message::encode_to_vec(&ControlMsg { seq: 1, goal_rad: vec![0.1, 0.2], ..Default::default() }),
        )
        .unwrap();
    }
    b.cut().unwrap().unwrap().encode(robot, "seg-1", seq)
}

/// Publishes `PER_ROBOT` batches as `robot`, 64 in flight; returns the PUBACKs.
async fn backlog(port: u16, robot: String) -> u64 {
    let mut o = MqttOptions::new(&robot, "127.0.0.1", port);
    o.set_inflight(64);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, 64);
    let publisher = {
        let robot = robot.clone();
        tokio::spawn(async move {
            for seq in 1..=PER_ROBOT {
                client
                    .publish(wire::topic(&robot, wire::LOGS), QoS::AtLeastOnce, false, batch(&robot, seq))
                    .await
                    .unwrap();
            }
            client
        })
    };
    let mut acks = 0;
    while acks < PER_ROBOT {
        if let Event::Incoming(Incoming::PubAck(_)) = events.poll().await.expect("robot connection") {
            acks += 1;
        }
    }
    let _client = publisher.await.unwrap();
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_through_mosquitto_is_stored_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _mosquitto = Mosquitto::start_persistent(port, &tmp.path().join("mosquitto")).unwrap();
    let mut config = cloud_config(&tmp.path().join("cloud"), "127.0.0.1:0");
    config.broker.mode = BrokerMode::External;
    config.broker.url = format!("mqtt://127.0.0.1:{port}");
    let cloud = Service::start(&config).await.unwrap();
    let ingest = cloud.ingest.clone();
    wait_for("ingestion subscribed", Duration::from_secs(20), || ingest.subscribed.load(Relaxed)).await;

    let robots: Vec<_> = (0..ROBOTS).map(|i| tokio::spawn(backlog(port, format!("robot-{i}")))).collect();
    for r in robots {
        assert_eq!(r.await.unwrap(), PER_ROBOT, "every batch acknowledged by the broker");
    }
    let total = ROBOTS as u64 * PER_ROBOT;
    wait_for("every batch stored", Duration::from_secs(60), || ingest.stored.load(Relaxed) >= total).await;
    for i in 0..ROBOTS {
        let seqs = cloud.catalog.robot_seqs(&format!("robot-{i}")).unwrap();
        assert_eq!(seqs, (1..=PER_ROBOT).collect::<Vec<_>>(), "robot-{i}: each batch once");
    }
    assert_eq!(ingest.stored.load(Relaxed), total);
    assert_eq!(ingest.rejected(), 0);
    cloud.stop().await;
}
