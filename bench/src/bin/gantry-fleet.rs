//! `gantry-fleet`: one cloud sync (embedded broker) and N simulated robots on
//! this machine (contract: `gantry-fleet [--robots N] [--duration SECS] [--data-dir DIR]`).
//!
//! Prints, once ready, one line per URL (the cloud page, then each robot's
//! status page), then a progress line every 5 s.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::Parser;
use gantry_config::cli::Shutdown;
use gantry_config::{CloudConfig, EdgeConfig};
use gantry_edge::daemon::Daemon;
use gantry_edge::pipeline::Options;
use gantry_sync::Service;

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
}

fn main() -> anyhow::Result<()> {
    gantry_config::cli::init_tracing();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(fleet(args))
}

async fn fleet(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::install()?;
    let mut cloud = CloudConfig::default();
    cloud.service.data_dir = args.data_dir.join("cloud").display().to_string();
    cloud.broker.listen = "127.0.0.1:0".into();
    cloud.http.listen = "127.0.0.1:0".into();
    let service = Service::start(&cloud).await?;
    let mqtt = service.mqtt_addr.expect("embedded broker");
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/baseline");
    let mut robots = Vec::new();
    for i in 0..args.robots {
        let mut c = EdgeConfig::default();
        c.robot.id = format!("robot-{i}");
        c.robot.data_dir = args.data_dir.join(&c.robot.id).display().to_string();
        c.status_http.listen = "127.0.0.1:0".into();
        c.uplink.broker_url = format!("mqtt://{mqtt}");
        c.policy.model_dir = models.display().to_string();
        c.policy.baseline_model_dir = c.policy.model_dir.clone();
        // Many robots in one process: locking all memory is for one robot per machine.
        c.realtime.lock_memory = false;
        robots.push(Daemon::start(&c, gantry_hal::Pacing::RealTime, Options::default()).await?);
    }
    println!("cloud: http://{}/", service.http_addr);
    for (i, r) in robots.iter().enumerate() {
        println!("robot-{i}: http://{}/", r.status_addr);
    }
    let start = Instant::now();
    let progress = async {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let online = robots.iter().filter(|r| r.view().sync.connected.load(Relaxed)).count();
            let backlog: u64 = robots.iter().map(|r| r.view().sync.backlog.load(Relaxed)).sum();
            println!(
                "t={:.0}s robots connected {online}/{} · batches stored {} ({:.1} MB) · duplicates {} · rejected {} · robot backlog {backlog}",
                start.elapsed().as_secs_f64(),
                robots.len(),
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
    }
    for r in robots {
        r.stop().await;
    }
    service.stop().await;
    Ok(())
}
