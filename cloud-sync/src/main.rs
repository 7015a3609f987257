//! `gantry-sync`:  log ingestion, storage, upload windows and model rollout:the cloud sync service.

use std::process::ExitCode;

use clap::Parser;
use gantry_config::cli::{self, Command};
use gantry_config::CloudConfig;

#[derive(Debug, Parser)]
#[command(name = "gantry-sync", version, about = "Gantry cloud sync")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    cli::main::<CloudConfig, _, _>("gantry-sync", Cli::parse().command, gantry_sync::run)
}
