//! `gantry-fleet`: one cloud sync (embedded broker) and N simulated robots on
//! this machine (contract: `gantry-fleet [--robots N] [--duration SECS]
//! [--data-dir DIR] [--tasks-per-minute N] [--cloud-http ADDR] [--cloud-mqtt ADDR]`).
//!
//! Prints, once ready, one line per URL (the cloud page, then each robot's
//! status page), then a progress line every 5 s.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::Parser;
use gantry_config::cli::Shutdown;
use gantry_config::EdgeConfig;
use gantry_tests::{Fleet, FleetOptions};

#[derive(Debug, Parser)]
#[command(name = "gantry-fleet", version, about = "A simulated fleet: cloud sync and N robots on one machine")]
struct Args {
    /// Simulated robots.
    #[arg(long, default_value_t = 3)]
    robots: u32,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
    /// Where the cloud and each robot keep their data.
    #[arg(long, default_value = "./gantry-data/fleet")]
    data_dir: PathBuf,
    /// The fleet's model-signing public key (hex, or a file holding it), so the
    /// robots accept models published with `gantry-sync model publish`.
    #[arg(long, default_value = "")]
    fleet_public_key: String,
    /// Full-size robots (1080p camera): fewer fit on one machine.
    #[arg(long)]
    full_size: bool,
    /// Cloud sync's HTTP listener (fleet page and API); port 0: a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    cloud_http: String,
    /// Cloud sync's MQTT listener, the robots' broker; port 0: a free port.
    /// The robots' status pages always take free ports; all URLs are printed.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    cloud_mqtt: String,
    /// Submit this many tasks a minute through the task API: picks, places,
    /// inspections and moves, 10 % urgent, 30 % high, the rest normal.
    #[arg(long, value_name = "N", default_value_t = 0.0)]
    tasks_per_minute: f64,
}

/// The workload's cycle of (kind, priority): every tenth urgent, three high.
const WORKLOAD: [(&str, &str); 10] = [
    ("pick", "normal"),
    ("place", "high"),
    ("inspect", "normal"),
    ("pick", "urgent"),
    ("move", "normal"),
    ("place", "normal"),
    ("pick", "high"),
    ("inspect", "normal"),
    ("place", "high"),
    ("move", "normal"),
];

const STOP_TIMEOUT: Duration = Duration::from_secs(4);

/// Task ids of this run start with the second it started, so a rerun on the
/// same data directory submits new tasks rather than repeating old ids.
fn start_unix_s() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn main() -> anyhow::Result<()> {
    gantry_config::cli::init_tracing();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(fleet(args));
    // A blocking task still stuck after the bounded stop must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn fleet(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::install()?;
    let fleet = Fleet::start(&FleetOptions {
        robots: args.robots,
        data_dir: args.data_dir.clone(),
        fleet_public_key: args.fleet_public_key.clone(),
        light: !args.full_size,
        probation_s: EdgeConfig::default().models.probation_s,
        cloud_http: args.cloud_http.clone(),
        cloud_mqtt: args.cloud_mqtt.clone(),
    })
    .await?;
    let (service, robots) = (&fleet.service, &fleet.robots);
    println!("cloud: http://{}/", service.http_addr);
    if let Some(mqtt) = service.mqtt_addr {
        println!("broker: mqtt://{mqtt}");
    }
    for (i, r) in robots.iter().enumerate() {
        println!("robot-{i}: http://{}/", r.status_addr);
    }
    println!(
        "models: gantry-sync model … --config with [service] data_dir = {:?}",
        args.data_dir.join("cloud").display().to_string()
    );
    let start = Instant::now();
    let feed = async {
        if !(args.tasks_per_minute.is_finite() && args.tasks_per_minute > 0.0) {
            return std::future::pending::<()>().await;
        }
        let mut tick = tokio::time::interval(Duration::from_secs_f64(60.0 / args.tasks_per_minute));
        for n in 0u64.. {
            tick.tick().await;
            let (kind, priority) = WORKLOAD[n as usize % WORKLOAD.len()];
            let body =
                serde_json::json!({"id": format!("fleet-{}-{n}", start_unix_s()), "kind": kind, "priority": priority});
            if let Err(e) = service.task_service.submit(&body, 0).await {
                eprintln!("task {n} not submitted: {}", e.1);
            }
        }
    };
    let progress = async {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let online = robots.iter().filter(|r| r.view().sync.connected.load(Relaxed)).count();
            let tasks = &service.task_service.stats;
            let open = service.task_service.catalog().open_tasks().unwrap_or_default();
            let queued = open.iter().filter(|t| t.state == gantry_sync::tasks::TaskState::Queued).count();
            let backlog: u64 = robots.iter().map(|r| r.view().sync.backlog.load(Relaxed)).sum();
            println!(
                "t={:.0}s robots connected {online}/{} · tasks done {} failed {} queued {queued} running {} · batches stored {} ({:.1} MB) · duplicates {} · rejected {} · robot backlog {backlog}",
                start.elapsed().as_secs_f64(),
                robots.len(),
                tasks.completed.load(Relaxed),
                tasks.failed.load(Relaxed),
                open.len() - queued,
                service.ingest.stored.load(Relaxed),
                service.ingest.stored_bytes.load(Relaxed) as f64 / 1e6,
                service.ingest.duplicates.load(Relaxed),
                service.ingest.rejected(),
            );
        }
    };
    tokio::select! {
        _ = shutdown.wait(args.duration.map(Duration::from_secs_f64)) => {}
        _ = progress => {}
        _ = feed => {}
    }
    // Bounded, as the robot's own stop is: what was committed is on disk either way.
    if tokio::time::timeout(STOP_TIMEOUT, fleet.stop()).await.is_err() {
        eprintln!("the fleet did not stop within {} s; exiting anyway", STOP_TIMEOUT.as_secs());
    }
    Ok(())
}
