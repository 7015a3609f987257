//! `gantry-sync`: the cloud sync service (log ingestion, storage, upload
//! windows, model rollout), and the model registry's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gantry_config::cli::{self, Command};
use gantry_config::CloudConfig;

#[derive(Debug, Parser)]
#[command(name = "gantry-sync", version, about = "Gantry cloud sync")]
struct Cli {
    #[command(subcommand)]
    command: SyncCommand,
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    #[command(flatten)]
    Daemon(Command),
    /// The model registry and its rollout.
    #[command(subcommand)]
    Model(ModelCommand),
    /// The data lake export.
    #[command(subcommand)]
    Lake(LakeCommand),
}

#[derive(Debug, Subcommand)]
enum LakeCommand {
    /// Export the stored batches as Parquet tables (TABLE/date=…/robot=…/*.parquet) into DIR;
    /// again into the same DIR, only what is new.
    Export {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Create a fleet signing key: writes the secret to FILE (mode 0600) and
    /// prints the public key for `models.fleet_public_key`.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a model package directory (manifest.toml, model.onnx) and publish it as a candidate.
    Publish {
        #[arg(long, value_name = "DIR")]
        package: PathBuf,
        /// The fleet's signing key (from `keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// A JSON file of evaluation metrics to keep with the model.
        #[arg(long, value_name = "FILE")]
        metrics: Option<PathBuf>,
        #[arg(long, default_value = "")]
        notes: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// List the published models and the rollout.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make VERSION production for every robot not on a candidate.
    Promote {
        version: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run VERSION on a share of the fleet or on named robots (A/B).
    Candidate {
        version: String,
        /// Percentage of the fleet, 0–100.
        #[arg(long, conflicts_with = "robots")]
        percent: Option<f64>,
        /// Robot ids, comma-separated.
        #[arg(long, value_delimiter = ',')]
        robots: Vec<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// End the candidate test: its robots go back to production.
    EndCandidate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Production goes back to the previous production model.
    Rollback {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        SyncCommand::Daemon(command) => {
            cli::main::<CloudConfig, _, _>("gantry-sync", command, gantry_sync::preflight, gantry_sync::run)
        }
        SyncCommand::Model(command) => match model(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gantry-sync model: {e:#}");
                ExitCode::FAILURE
            }
        },
        SyncCommand::Lake(LakeCommand::Export { out, config }) => match lake_export(&out, config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gantry-sync lake export: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load(config: Option<PathBuf>) -> anyhow::Result<CloudConfig> {
    let args = cli::RunArgs { config, duration: None };
    args.load::<CloudConfig>().map_err(|e| anyhow::anyhow!("{e}"))
}

fn lake_export(out: &std::path::Path, config: Option<PathBuf>) -> anyhow::Result<()> {
    use gantry_sync::store::{CloudCatalog, SqliteCatalog};
    let c = load(config)?;
    let data_dir = std::path::Path::new(&c.service.data_dir);
    let catalog: Box<dyn CloudCatalog> = if c.catalog.url.is_empty() {
        Box::new(SqliteCatalog::open(&data_dir.join("catalog.sqlite"))?)
    } else {
        Box::new(gantry_sync::pg::PgCatalog::open(&c.catalog)?)
    };
    let (store, _) = gantry_sync::store::open_object_store(&c.storage.object_store_url, data_dir)?;
    std::fs::create_dir_all(out)?;
    let dest = object_store::local::LocalFileSystem::new_with_prefix(out)?;
    // Kept with the export: a second export into the same directory only adds.
    let state = gantry_sync::lake::LakeState::open(Some(&out.join("_gantry_lake.sqlite")))?;
    let exporter = gantry_sync::lake::Exporter {
        catalog: &*catalog,
        source: &*store,
        dest: &dest,
        root: object_store::path::Path::default(),
        state: &state,
        limits: (&c.quality).into(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let files = runtime.block_on(exporter.run())?;
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    // A one-off export is complete: every day's partitions are merged.
    let compacted = runtime.block_on(exporter.compact("9999-12-31"))?;
    println!("{} files, {rows} rows in {}; {} partitions compacted", files.len(), out.display(), compacted.len());
    Ok(())
}

fn model(command: ModelCommand) -> anyhow::Result<()> {
    use gantry_config::package;
    use gantry_sync::models::Registry;
    // The registry the service reads: the shared catalog's, among replicas.
    let registry = |c: &CloudConfig| -> anyhow::Result<Registry> {
        let data_dir = std::path::Path::new(&c.service.data_dir);
        let (store, prefix) = gantry_sync::store::open_object_store(&c.storage.object_store_url, data_dir)?;
        let shared = match c.catalog.url.as_str() {
            "" => None,
            _ => Some(std::sync::Arc::new(gantry_sync::pg::PgCatalog::open(&c.catalog)?)),
        };
        Ok(Registry::new(gantry_sync::ops::open_db(data_dir, shared)?, store, prefix))
    };
    // Who, for the incident log: the operator at this command line.
    let who = format!("{} (command line)", std::env::var("USER").unwrap_or_else(|_| "unknown user".into()));
    match command {
        ModelCommand::Keygen { out } => {
            let key = package::generate_signing_key()?;
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&out)?;
            writeln!(f, "{}", package::hex(&key.to_bytes()))?;
            println!("{}", package::hex(key.verifying_key().as_bytes()));
        }
        ModelCommand::Publish { package: dir, key, metrics, notes, config } => {
            let c = load(config)?;
            let key = package::load_signing_key(&key)?;
            let fleet = match c.models.fleet_public_key.as_str() {
                "" => None,
                k => Some(package::parse_public_key(k)?),
            };
            let metrics = match metrics {
                Some(p) => serde_json::from_slice(&std::fs::read(&p)?)?,
                None => serde_json::Value::Null,
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let row = runtime.block_on(registry(&c)?.publish(&dir, &key, fleet.as_ref(), metrics, &notes, &who))?;
            println!("published {} ({} bytes, sha256 {}) as a candidate", row.version, row.bytes, row.sha256);
        }
        ModelCommand::List { config } => {
            let r = registry(&load(config)?)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"plan": r.plan()?, "models": r.models()?}))?
            );
        }
        ModelCommand::Promote { version, config } => {
            registry(&load(config)?)?.promote(&version, &who, "")?;
            println!("{version} is production");
        }
        ModelCommand::Candidate { version, percent, robots, config } => {
            anyhow::ensure!(percent.is_some() || !robots.is_empty(), "give --percent or --robots");
            registry(&load(config)?)?.set_candidate(&version, percent.unwrap_or(0.0), &robots, &who)?;
            println!("{version} is the candidate");
        }
        ModelCommand::EndCandidate { config } => {
            registry(&load(config)?)?.clear_candidate(&who, "")?;
            println!("no candidate");
        }
        ModelCommand::Rollback { config } => {
            let back = registry(&load(config)?)?.rollback(&who)?;
            println!("production is {back} again");
        }
    }
    Ok(())
}
