//! `gantry-fw-sim`: the firmware simulator on a pseudo-terminal, for running the
//! edge daemon against it with `firmware.link = "serial"`.

use std::time::Duration;

use clap::Parser;
use gantry_firmware_bridge::sim::{SimHandle, SimParams};
use serialport::SerialPort;

#[derive(Debug, Parser)]
#[command(name = "gantry-fw-sim", version, about = "Simulated motor-controller firmware on a pseudo-terminal")]
struct Args {
    /// Number of joints.
    #[arg(long, default_value_t = 6)]
    joints: usize,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    duration: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (master, slave) = serialport::TTYPort::pair()?;
    let path = slave.name().unwrap_or_default();
    let sim = SimHandle::spawn(Box::new(master), SimParams { joints: args.joints, ..SimParams::default() })?;
    // The port path goes to stdout for scripts; keep the slave end open so the pty survives.
    println!("{path}");
    match args.duration {
        Some(s) => std::thread::sleep(Duration::from_secs_f64(s)),
        None => loop {
            std::thread::park();
        },
    }
    drop(slave);
    sim.stop()?;
    Ok(())
}
