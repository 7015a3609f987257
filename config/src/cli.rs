//! The command line both daemons share (`run`, `check-config`,
//! `print-default-config`) and their shutdown signal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::load::{load, process_env, Configuration};
use crate::Problem;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run until SIGINT/SIGTERM, or until --duration has passed.
    Run(RunArgs),
    /// Validate a configuration file: exit 0 if valid, else exit 2 with one line per problem.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Print the full default configuration as commented TOML.
    PrintDefaultConfig,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Configuration file; the built-in defaults when left out.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stop cleanly after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
}

impl RunArgs {
    /// `--duration` as a [`Duration`], rejecting negative or non-finite values.
    pub fn duration(&self) -> Result<Option<Duration>, String> {
        match self.duration {
            None => Ok(None),
            Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
            Some(s) => Err(format!("--duration: {s} is not a number of seconds (expected a value ≥ 0)")),
        }
    }

    /// Loads the configuration named by `--config`, or the defaults.
    pub fn load<T: Configuration>(&self) -> Result<T, crate::LoadError> {
        load(self.config.as_deref(), &process_env)
    }
}

/// Exit status of a configuration the daemon cannot use.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// What `check-config` adds to a configuration's own rules: the files it names,
/// opened and parsed as `run` would, without touching hardware.
#[derive(Debug, Default)]
pub struct Preflight {
    /// `run` would refuse to start (exit 2).
    pub problems: Vec<Problem>,
    /// `run` would start degraded, e.g. on the baseline policy: printed, exit 0.
    pub warnings: Vec<Problem>,
}

/// `check-config FILE`: the configuration's rules, then `preflight`.
pub fn check_config<T: Configuration>(file: &Path, preflight: fn(&T) -> Preflight) -> ExitCode {
    let config = match load::<T>(Some(file), &process_env) {
        Ok(c) => c,
        Err(e) => return report_config_error(&e),
    };
    let found = preflight(&config);
    let mut stderr = std::io::stderr().lock();
    for p in &found.problems {
        let _ = writeln!(stderr, "{}: {p}", file.display());
    }
    for p in &found.warnings {
        let _ = writeln!(stderr, "{}: warning: {p}", file.display());
    }
    if found.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_BAD_CONFIG)
    }
}

/// `print-default-config`.
pub fn print_default_config<T: Configuration>() -> ExitCode {
    print!("{}", T::DEFAULT_TOML);
    ExitCode::SUCCESS
}

/// Why `run` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Interrupt,
    Terminate,
    DurationElapsed,
}

/// SIGINT/SIGTERM handlers, installed before the daemon starts work so a signal
/// that arrives during start-up still means a clean stop.
pub struct Shutdown {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers; needs a running tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    /// Resolves on SIGINT, SIGTERM or when `duration` has passed, whichever comes first.
    pub async fn wait(mut self, duration: Option<Duration>) -> StopReason {
        let elapsed = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => StopReason::Interrupt,
            _ = self.term.recv() => StopReason::Terminate,
            _ = elapsed => StopReason::DurationElapsed,
        }
    }
}

/// Logs go to stderr through `tracing`; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    // The embedded broker's own logging calls every ordinary disconnect an
    // error; its front (`gantry-sync`'s) logs what matters.
    init_tracing_at("info,rumqttd=off");
}

/// Logging at `default` unless `RUST_LOG` says otherwise.
pub fn init_tracing_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Prints a configuration error's lines to stderr and returns exit status 2.
pub fn report_config_error(e: &crate::LoadError) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    for line in e.lines() {
        let _ = writeln!(stderr, "{line}");
    }
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// A daemon's whole `main`: dispatches the shared subcommands; `run` loads the
/// configuration, starts a tokio runtime and drives `daemon` to completion;
/// `check-config` runs `preflight` after the configuration's own rules.
pub fn main<T, F, Fut>(name: &str, command: Command, preflight: fn(&T) -> Preflight, daemon: F) -> ExitCode
where
    T: Configuration,
    F: FnOnce(T, Option<Duration>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<StopReason>>,
{
    let args = match command {
        Command::Run(args) => args,
        Command::CheckConfig { file } => return check_config::<T>(&file, preflight),
        Command::PrintDefaultConfig => return print_default_config::<T>(),
    };
    init_tracing();
    let config: T = match args.load() {
        Ok(c) => c,
        Err(e) => return report_config_error(&e),
    };
    let duration = match args.duration() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(daemon(config, duration));
    // Dropping a runtime waits for its blocking tasks; one stuck after the
    // daemon's bounded stop must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match outcome {
        Ok(reason) => {
            tracing::info!(?reason, "{name} stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            ExitCode::FAILURE
        }
    }
}
