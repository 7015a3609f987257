//! The fault suite, crashes: the robot's daemon and the cloud sync service are
//! killed with SIGKILL at random moments while the robot records and sends,
//! and restarted. Afterwards nothing the cloud acknowledged is lost (every
//! batch the robot made is stored, or still queued on the robot until it is),
//! nothing is stored twice (batches, and the control ticks inside them), and
//! every segment the robot finalized is intact on its disk.
//!
//! Each process runs in a child: this test binary re-executed with one of the
//! `child_*` tests selected and its settings in the environment. The seed of
//! the kill times is printed; `GANTRY_CRASH_SEED` replays a run.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Duration;

use gantry_edge::daemon::Daemon;
use gantry_edge::pipeline::Options;
use gantry_edge::record::catalog::{Catalog, SegmentState, BATCH_SEQ};
use gantry_sync::store::{CloudCatalog, SqliteCatalog};
use gantry_sync::Service;
use gantry_tests::{cloud_config, free_port, robot_config, wait_for};

const ROBOT: &str = "robot-crash";
const ROBOT_ENV: &str = "GANTRY_CRASH_ROBOT";
const CLOUD_ENV: &str = "GANTRY_CRASH_CLOUD";

/// The two scenarios each run several daemons with real-time threads on
/// what may be 2 cores; they take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `DIR PORT` from a child's environment. A child dies with its parent, so a
/// failed or killed test run leaves no daemon behind.
fn child_args(var: &str) -> Option<(String, u16)> {
    let v = std::env::var(var).ok()?;
    let (dir, port) = v.rsplit_once(' ')?;
    gantry_tests::child::die_with_parent();
    Some((dir.to_string(), port.parse().ok()?))
}

/// The robot's child: the daemon on the simulator, sending to the broker on PORT.
#[test]
fn child_robot() {
    let Some((dir, port)) = child_args(ROBOT_ENV) else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut config = robot_config(ROBOT, Path::new(&dir), &format!("mqtt://127.0.0.1:{port}"));
        // Chunks reach the disk every second, so a run killed after one is
        // recovered (not quarantined) at the next start.
        config.recorder.flush_s = 1;
        let _daemon = Daemon::start(&config, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
        println!("ready");
        std::future::pending::<()>().await;
    });
}

/// The cloud's child: cloud sync with its embedded broker on PORT.
#[test]
fn child_cloud() {
    let Some((dir, port)) = child_args(CLOUD_ENV) else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let service = Service::start(&cloud_config(Path::new(&dir), &format!("127.0.0.1:{port}"))).await.unwrap();
        let stats = service.ingest.clone();
        wait_for("ingestion subscribed", Duration::from_secs(30), || stats.subscribed.load(Relaxed)).await;
        println!("ready");
        std::future::pending::<()>().await;
    });
}

/// Starts `child` with `VAR="DIR PORT"` and waits for its `ready`.
fn spawn(child: &str, var: &str, dir: &Path, port: u16) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--nocapture", "--test-threads", "1"])
        .env(var, format!("{} {port}", dir.display()))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    gantry_tests::child::wait_ready(&mut c, child);
    c
}

fn sigkill(mut c: Child) {
    c.kill().unwrap();
    c.wait().unwrap();
}

/// Kill moments, reproducible from the printed seed.
struct Moments(u64);

impl Moments {
    fn new() -> Self {
        let seed = std::env::var("GANTRY_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        println!("GANTRY_CRASH_SEED={seed}");
        Self(seed)
    }

    /// A moment between `lo` and `hi`.
    fn next(&mut self, lo: Duration, hi: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo).mul_f64((self.0 % 10_000) as f64 / 10_000.0)
    }
}

/// The robot's batch counter and the sequence numbers still in its outbox.
fn robot_outbox(dir: &Path) -> (u64, BTreeSet<u64>) {
    let c = Catalog::open(&dir.join("catalog.sqlite")).unwrap();
    let pending = c.outbox_next(&Default::default(), 1_000_000).unwrap().into_iter().map(|(s, _, _)| s).collect();
    (c.counter(BATCH_SEQ).unwrap(), pending)
}

/// What the cloud stored for the robot: batch sequence numbers, and the
/// log time of every control tick inside the stored batches.
async fn cloud_holdings(dir: &Path) -> (Vec<u64>, Vec<u64>) {
    let catalog = SqliteCatalog::open(&dir.join("catalog.sqlite")).unwrap();
    let config = cloud_config(dir, "127.0.0.1:0");
    let (store, _) = gantry_sync::store::open_object_store(&config.storage.object_store_url, dir).unwrap();
    let mut ticks = Vec::new();
    for row in catalog.segments_since(0, 1_000_000).unwrap().into_iter().filter(|r| r.robot_id == ROBOT) {
        let body = gantry_sync::store::read_body(&*store, &row).await.expect("every catalogued batch has its body");
        assert_eq!(gantry_config::wire::sha256_hex(&body), row.sha256, "{} intact", row.object_key);
        let parsed = gantry_sync::quality::parse(&body).unwrap();
        ticks.extend(parsed.control.iter().map(|c| c.unix_ns));
    }
    (catalog.robot_seqs(ROBOT).unwrap(), ticks)
}

/// Every batch the robot made is stored or still queued on the robot, none
/// is stored twice, no control tick is stored twice, and the robot's
/// finalized and recovered segments are intact.
async fn assert_nothing_lost_or_doubled(robot_dir: &Path, cloud_dir: &Path) {
    let (last, pending) = robot_outbox(robot_dir);
    let (seqs, ticks) = cloud_holdings(cloud_dir).await;
    let stored: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(seqs.len(), stored.len(), "no batch stored twice");
    let accounted: BTreeSet<u64> = stored.union(&pending).copied().collect();
    assert_eq!(accounted, (1..=last).collect::<BTreeSet<u64>>(), "every batch made is stored or queued");
    assert!(pending.len() <= 3, "only the last moments' batches wait: {pending:?}");
    let unique_ticks: BTreeSet<u64> = ticks.iter().copied().collect();
    assert_eq!(ticks.len(), unique_ticks.len(), "no control tick stored twice");
    assert!(ticks.len() > 100, "the robot sent its control log: {} ticks", ticks.len());

    let catalog = Catalog::open(&robot_dir.join("catalog.sqlite")).unwrap();
    let kept: Vec<_> = catalog
        .all()
        .unwrap()
        .into_iter()
        .filter(|s| matches!(s.state, SegmentState::Finalized | SegmentState::Recovered))
        .collect();
    assert!(!kept.is_empty());
    for s in &kept {
        let (_, sha) = gantry_config::wire::hash_file(&s.path(robot_dir)).unwrap();
        assert_eq!(sha, s.sha256, "segment {} intact", s.id);
    }
    println!(
        "{} batches stored, {} queued, {} control ticks, {} segments",
        stored.len(),
        pending.len(),
        ticks.len(),
        kept.len()
    );
}

/// Whether the open segment holds a chunk on disk (more than its header).
fn chunk_flushed(robot_dir: &Path) -> bool {
    std::fs::read_dir(robot_dir.join("segments")).is_ok_and(|d| {
        d.flatten().any(|e| {
            e.file_name().to_string_lossy().ends_with(".partial") && e.metadata().is_ok_and(|m| m.len() > 8192)
        })
    })
}

/// Waits until the robot's outbox is empty and the cloud holds all it made.
async fn drained(robot_dir: &Path, cloud: &gantry_sync::Service) {
    wait_for("the outbox drained into the cloud", Duration::from_secs(60), || {
        let (last, pending) = robot_outbox(robot_dir);
        let seqs = cloud.catalog.robot_seqs(ROBOT).unwrap();
        pending.is_empty() && (1..=last).all(|s| seqs.binary_search(&s).is_ok())
    })
    .await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn the_robot_killed_at_random_moments_loses_and_doubles_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(robot_killed());
}

#[test]
fn cloud_sync_killed_at_random_moments_loses_and_doubles_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(cloud_killed());
}

async fn robot_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let (robot_dir, cloud_dir) = (tmp.path().join("robot"), tmp.path().join("cloud"));
    let port = free_port();
    let cloud = Service::start(&cloud_config(&cloud_dir, &format!("127.0.0.1:{port}"))).await.unwrap();
    let mut moments = Moments::new();
    for i in 0..20 {
        let robot = spawn("child_robot", ROBOT_ENV, &robot_dir, port);
        // Early kills land in start-up and recovery, later ones in recording
        // and sending (batches are cut every second).
        tokio::time::sleep(moments.next(Duration::from_millis(50), Duration::from_millis(2500))).await;
        sigkill(robot);
        let (last, pending) = robot_outbox(&robot_dir);
        let seqs = cloud.catalog.robot_seqs(ROBOT).unwrap();
        let missing: Vec<u64> = (1..=last).filter(|s| seqs.binary_search(s).is_err() && !pending.contains(s)).collect();
        assert!(missing.is_empty(), "kill {i}: batches neither stored nor queued: {missing:?}");
    }
    // A last run sends what is left and records a chunk or more, killed too;
    // one more start recovers what it left.
    let robot = spawn("child_robot", ROBOT_ENV, &robot_dir, port);
    drained(&robot_dir, &cloud).await;
    wait_for("a chunk on disk", Duration::from_secs(30), || chunk_flushed(&robot_dir)).await;
    sigkill(robot);
    sigkill(spawn("child_robot", ROBOT_ENV, &robot_dir, port));
    cloud.stop().await;
    assert_nothing_lost_or_doubled(&robot_dir, &cloud_dir).await;
}

async fn cloud_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let (robot_dir, cloud_dir) = (tmp.path().join("robot"), tmp.path().join("cloud"));
    let port = free_port();
    let config = robot_config(ROBOT, &robot_dir, &format!("mqtt://127.0.0.1:{port}"));
    let mut moments = Moments::new();
    let mut cloud = spawn("child_cloud", CLOUD_ENV, &cloud_dir, port);
    let robot = Daemon::start(&config, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    let view = robot.view();
    for _ in 0..6 {
        tokio::time::sleep(moments.next(Duration::from_millis(200), Duration::from_millis(3000))).await;
        sigkill(cloud);
        wait_for("the robot notices", Duration::from_secs(30), || !view.sync.connected.load(Relaxed)).await;
        cloud = spawn("child_cloud", CLOUD_ENV, &cloud_dir, port);
    }
    wait_for("the robot reconnected", Duration::from_secs(30), || view.sync.connected.load(Relaxed)).await;
    wait_for("the outbox drained", Duration::from_secs(60), || robot_outbox(&robot_dir).1.is_empty()).await;
    robot.stop().await;
    sigkill(cloud);
    assert_nothing_lost_or_doubled(&robot_dir, &cloud_dir).await;
}
