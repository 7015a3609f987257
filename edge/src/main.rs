//! `gantry-edge`: the robot daemon.

use std::process::ExitCode;

use clap::Parser;
use gantry_config::cli::{self, Command};
use gantry_config::EdgeConfig;

#[derive(Debug, Parser)]
#[command(
    name = "gantry-edge",
    version,
    about = "Gantry robot daemon: sensors, policy, safety governor, firmware link, recorder and uplink"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::CheckConfig { file } => cli::check_config::<EdgeConfig>(&file),
        Command::PrintDefaultConfig => cli::print_default_config::<EdgeConfig>(),
    }
}

fn run(args: &cli::RunArgs) -> ExitCode {
    cli::init_tracing();
    let config: EdgeConfig = match args.load() {
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
    match runtime.block_on(gantry_edge::run(config, duration)) {
        Ok(reason) => {
            tracing::info!(?reason, "gantry-edge stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gantry-edge failed");
            ExitCode::FAILURE
        }
    }
}
