//! `gantry-sync`: the cloud sync service.

use std::process::ExitCode;

use clap::Parser;
use gantry_config::cli::{self, Command};
use gantry_config::CloudConfig;

#[derive(Debug, Parser)]
#[command(
    name = "gantry-sync",
    version,
    about = "Gantry cloud sync: log ingestion, storage, upload windows and model rollout"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::CheckConfig { file } => cli::check_config::<CloudConfig>(&file),
        Command::PrintDefaultConfig => cli::print_default_config::<CloudConfig>(),
    }
}

fn run(args: &cli::RunArgs) -> ExitCode {
    cli::init_tracing();
    let config: CloudConfig = match args.load() {
        Ok(c) => c,
        Err(e) => return cli::report_config_error(&e),
    };
    let duration = match args.duration() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(cli::EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gantry_sync::run(config, duration)) {
        Ok(reason) => {
            tracing::info!(?reason, "gantry-sync stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gantry-sync failed");
            ExitCode::FAILURE
        }
    }
}
