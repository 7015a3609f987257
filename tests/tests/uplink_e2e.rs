//! Robot → broker → cloud, through an outage: the robot keeps recording while
//! the broker is down, then catches up. Every batch it produced is stored
//! exactly once (sequence sets compared), and the incidents of the outage
//! arrive before its bulk logs. Once with the embedded broker, once with
//! Mosquitto as an external broker. Then a network failover: the primary
//! route is cut mid-stream, the robot streams over its backup route, and
//! returns to the primary once it is back.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use gantry_config::cloud::BrokerMode;
use gantry_edge::daemon::Daemon;
use gantry_edge::pipeline::Options;
use gantry_sync::Service;
use gantry_tests::faults::StatusPage;
use gantry_tests::{cloud_config, edge_counters, free_port, robot_config, wait_for, Mosquitto, Partition};

const ROBOT: &str = "robot-e2e";

enum Broker {
    Embedded,
    Mosquitto(Option<Mosquitto>),
}

async fn start_cloud(broker: &Broker, dir: &Path, port: u16) -> Service {
    let mut config = cloud_config(dir, &format!("127.0.0.1:{port}"));
    if matches!(broker, Broker::Mosquitto(_)) {
        config.broker.mode = BrokerMode::External;
        config.broker.url = format!("mqtt://127.0.0.1:{port}");
    }
    let service = Service::start(&config).await.unwrap();
    let stats = service.ingest.clone();
    wait_for("ingestion subscribed", Duration::from_secs(20), || stats.subscribed.load(Relaxed)).await;
    service
}

async fn outage(mut broker: Broker) {
    let tmp = tempfile::tempdir().unwrap();
    let (cloud_dir, robot_dir) = (tmp.path().join("cloud"), tmp.path().join("robot"));
    let port = free_port();
    let mosquitto_conf = tmp.path().join("mosquitto");
    if let Broker::Mosquitto(m) = &mut broker {
        *m = Some(Mosquitto::start_persistent(port, &mosquitto_conf).unwrap());
    }
    let mut cloud = Some(start_cloud(&broker, &cloud_dir, port).await);
    let catalog = cloud.as_ref().unwrap().catalog.clone();

    let mut config = robot_config(ROBOT, &robot_dir, &format!("mqtt://127.0.0.1:{port}"));
    // A person walks in while the broker is down (scene time).
    config.synthetic.person_event = true;
    config.synthetic.person_enter_s = 9.0;
    config.synthetic.person_leave_s = 11.0;
    let robot = Daemon::start(&config, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    let view = robot.view();

    wait_for("batches stored before the outage", Duration::from_secs(30), || {
        catalog.robot_seqs(ROBOT).unwrap().len() >= 3
    })
    .await;
    // The outage.
    match &mut broker {
        Broker::Embedded => cloud.take().unwrap().stop().await,
        Broker::Mosquitto(m) => m.take().unwrap().stop_gracefully(),
    }
    let stored_before: BTreeSet<u64> = catalog.robot_seqs(ROBOT).unwrap().into_iter().collect();
    wait_for("the robot notices", Duration::from_secs(30), || !view.sync.connected.load(Relaxed)).await;
    // Keep recording through the person's visit and a little after (the
    // synthetic scene's time is its frame count at 30 fps).
    wait_for("the person's visit, recorded offline", Duration::from_secs(60), || {
        view.rgb.captured.load(Relaxed) >= (12.5 * 30.0) as u64
    })
    .await;
    let (produced_in_outage, _) = edge_counters(&robot_dir);
    assert!(view.sync.backlog.load(Relaxed) > 5, "batches wait in the outbox");

    // Restored: the embedded broker comes back with a restarted service; with
    // Mosquitto, the same service reconnects by itself.
    match &mut broker {
        Broker::Embedded => cloud = Some(start_cloud(&broker, &cloud_dir, port).await),
        Broker::Mosquitto(m) => *m = Some(Mosquitto::start_persistent(port, &mosquitto_conf).unwrap()),
    }
    wait_for("the outbox drains", Duration::from_secs(60), || {
        let (_, pending) = edge_counters(&robot_dir);
        pending.iter().all(|s| *s > produced_in_outage)
    })
    .await;
    wait_for("the cloud has every batch of the outage", Duration::from_secs(30), || {
        let seqs = catalog.robot_seqs(ROBOT).unwrap();
        (1..=produced_in_outage).all(|s| seqs.binary_search(&s).is_ok())
    })
    .await;
    robot.stop().await;
    let (last, pending) = edge_counters(&robot_dir);

    let stored = catalog.robot_seqs(ROBOT).unwrap();
    let stored_set: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(stored.len(), stored_set.len(), "no batch stored twice");
    let all: BTreeSet<u64> = (1..=last).collect();
    let accounted: BTreeSet<u64> = stored_set.union(&pending).copied().collect();
    assert_eq!(accounted, all, "every batch produced is stored or still queued on the robot");
    // A batch may be both stored and still queued: its acknowledgement was in
    // flight at shutdown. It goes again at the next start and is dropped as a
    // duplicate (tests/tests/broker_acl.rs shows the deduplication).

    // Incidents of the outage before its bulk logs.
    let rows: Vec<_> = catalog
        .segments_since(0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.robot_id == ROBOT && !stored_before.contains(&r.seq) && r.seq <= produced_in_outage)
        .collect();
    let incidents: Vec<u64> = rows.iter().filter(|r| r.kind == "incidents").map(|r| r.cursor).collect();
    let logs: Vec<u64> = rows.iter().filter(|r| r.kind == "logs").map(|r| r.cursor).collect();
    assert!(!incidents.is_empty() && !logs.is_empty(), "the outage produced incidents and logs: {rows:?}");
    assert!(
        incidents.iter().max() < logs.iter().min(),
        "incidents first: incident cursors {incidents:?}, log cursors {logs:?}"
    );
    println!(
        "{} batches, {} during the outage ({} incident batches), {} left queued at shutdown",
        stored.len(),
        rows.len(),
        incidents.len(),
        pending.len()
    );
    cloud.unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_with_the_embedded_broker_loses_and_duplicates_nothing() {
    outage(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_with_mosquitto_loses_and_duplicates_nothing() {
    outage(Broker::Mosquitto(None)).await;
}

/// The primary route (through a cuttable TCP proxy) fails mid-stream: the
/// robot goes on over its backup route, the page says so, and it returns to
/// the primary once that is back. Every batch is stored once, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_to_the_backup_route_and_back_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (cloud_dir, robot_dir) = (tmp.path().join("cloud"), tmp.path().join("robot"));
    let port = free_port();
    let cloud = start_cloud(&Broker::Embedded, &cloud_dir, port).await;
    let catalog = cloud.catalog.clone();
    let primary = Partition::start(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
    let backup_url = format!("mqtt://127.0.0.1:{port}");
    let mut config = robot_config(ROBOT, &robot_dir, &format!("mqtt://{}", primary.addr));
    config.uplink.broker_urls = vec![backup_url.clone()];
    config.uplink.failback_probe_s = 1;
    let robot = Daemon::start(&config, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    let page = StatusPage::new(robot.status_addr);
    let stored = || catalog.robot_seqs(ROBOT).unwrap().len();

    wait_for("batches stored over the primary", Duration::from_secs(30), || stored() >= 3).await;
    let s = page.status().await;
    assert_eq!((s["sync"]["route"].as_u64(), s["sync"]["failovers"].as_u64()), (Some(0), Some(0)), "{s:#}");
    let through_primary = primary.connections.load(Relaxed);
    assert!(through_primary >= 1, "the robot connected through the primary route");

    primary.cut.store(true, Relaxed);
    let before_cut = stored();
    let s = page.until("the backup route in use", |s| s["sync"]["route"] == 1 && s["sync"]["connected"] == true).await;
    assert_eq!(s["sync"]["broker"], backup_url.as_str(), "{s:#}");
    assert!(s["sync"]["failovers"].as_u64() >= Some(1), "{s:#}");
    let html = reqwest::get(format!("http://{}/", robot.status_addr)).await.unwrap().text().await.unwrap();
    assert!(html.contains("backup 1"), "the page names the route in use");
    wait_for("batches stored over the backup route", Duration::from_secs(30), || stored() >= before_cut + 3).await;

    primary.cut.store(false, Relaxed);
    let connections_at_restore = primary.connections.load(Relaxed);
    page.until("back on the primary route", |s| s["sync"]["route"] == 0 && s["sync"]["connected"] == true).await;
    let after_return = stored();
    wait_for("batches stored over the primary again", Duration::from_secs(30), || stored() >= after_return + 3).await;
    assert!(primary.connections.load(Relaxed) > connections_at_restore, "the session runs through the primary again");
    // The cut made one failover; trying the primary while it was cut made none.
    assert_eq!(page.status().await["sync"]["failovers"], 1);

    robot.stop().await;
    let (last, pending) = edge_counters(&robot_dir);
    let seqs = catalog.robot_seqs(ROBOT).unwrap();
    let set: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(seqs.len(), set.len(), "no batch stored twice");
    let accounted: BTreeSet<u64> = set.union(&pending).copied().collect();
    assert_eq!(accounted, (1..=last).collect::<BTreeSet<u64>>(), "every batch stored or still queued on the robot");
    assert_eq!(cloud.ingest.conflicts.load(Relaxed), 0);
    println!(
        "{} batches stored ({} before the cut, {} when the primary returned), {} duplicates answered, {} queued at stop",
        seqs.len(),
        before_cut,
        after_return,
        cloud.ingest.duplicates.load(Relaxed),
        pending.len()
    );
    cloud.stop().await;
}
