//! `gantry-edge`:  sensors, policy, safety governor, firmware link, recorder and uplink:the robot daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gantry_config::cli::{self, Command, RunArgs};
use gantry_config::EdgeConfig;

#[derive(Debug, Parser)]
#[command(name = "gantry-edge", version, about = "Gantry robot daemon")]
struct Cli {
    #[command(subcommand)]
    command: EdgeCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EdgeCommand {
    #[command(flatten)]
    Common(Command),
    /// Ask the running daemon to reset a latched e-stop (the button must be
    /// released; the operator token is read from status_http.operator_token_file).
    EstopReset {
        /// The running daemon's configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a recorded segment through a policy and the safety governor
    /// offline: the recorded frames' model inputs through the policy, the
    /// recorded ticks through the control loop; prints what came out against
    /// what the robot did.
    Replay {
        /// A recorded segment (`DATA_DIR/segments/*.mcap`, or one fetched from
        /// `GET /api/recordings/{id}`).
        #[arg(long)]
        recording: PathBuf,
        /// The policy package to run (the recorded model's reproduces the
        /// recording bit for bit).
        #[arg(long)]
        model: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        EdgeCommand::Replay { recording, model, json } => match gantry_edge::replay::replay(&recording, &model) {
            Ok(report) if json => {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("replay failed: {e:#}");
                ExitCode::FAILURE
            }
        },
        EdgeCommand::Common(command) => {
            cli::main::<EdgeConfig, _, _>("gantry-edge", command, gantry_edge::preflight, gantry_edge::run)
        }
        EdgeCommand::EstopReset { config } => {
            let config: EdgeConfig = match (RunArgs { config: Some(config), duration: None }).load() {
                Ok(c) => c,
                Err(e) => return cli::report_config_error(&e),
            };
            match gantry_edge::estop_reset(&config) {
                Ok(answer) => {
                    println!("{answer}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("e-stop reset refused: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
