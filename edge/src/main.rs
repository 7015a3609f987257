//! `gantry-edge`:  sensors, policy, safety governor, firmware link, recorder and uplink:the robot daemon.

use std::process::ExitCode;

use clap::Parser;
use gantry_config::cli::{self, Command};
use gantry_config::EdgeConfig;

#[derive(Debug, Parser)]
#[command(name = "gantry-edge", version, about = "Gantry robot daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    cli::main::<EdgeConfig, _, _>("gantry-edge", Cli::parse().command, gantry_edge::run)
}
