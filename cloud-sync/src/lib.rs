//! Gantry cloud sync: the service robots sync with.
//!
//! Robots' log batches enter over MQTT (embedded broker behind an authorising
//! front, or an external broker); they are stored exactly once in an object
//! store with a catalog, and served over HTTP.

pub mod alerts;
pub mod assign;
pub mod broker;
pub mod dashboard;
pub mod fleet;
pub mod front;
pub mod http;
pub mod ingest;
pub mod lake;
pub mod models;
pub mod ops;
pub mod pg;
pub mod quality;
pub mod replicas;
pub mod rollout;
pub mod schedule;
pub mod sql;
pub mod store;
pub mod tasks;
pub mod uploads;
pub mod webhook;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gantry_config::cli::{Preflight, Shutdown, StopReason};
use gantry_config::cloud::BrokerMode;
use gantry_config::CloudConfig;
use rumqttc::MqttOptions;
use tokio::sync::watch;

use crate::front::{FrontStats, RobotCredentials};
use crate::ingest::{Ingest, IngestStats};
use crate::store::{CloudCatalog, SqliteCatalog};

/// MQTT options for one of the service's own clients, by client id.
use crate::replicas::ClientOptions;

/// Wall-clock time, nanoseconds since the Unix epoch.
pub(crate) fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The running service.
pub struct Service {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub http_addr: SocketAddr,
    /// Where robots connect (the front of the embedded broker), if embedded.
    pub mqtt_addr: Option<SocketAddr>,
    pub catalog: Arc<dyn CloudCatalog>,
    /// Where batches, recordings and models are kept.
    pub store: Arc<dyn object_store::ObjectStore>,
    pub ingest: Arc<IngestStats>,
    pub front: Option<Arc<FrontStats>>,
    pub uploads: Arc<uploads::Uploads>,
    pub assignments: Arc<assign::Assignments>,
    pub registry: Arc<models::Registry>,
    pub lake: Arc<lake::LakeState>,
    pub task_service: Arc<tasks::Tasks>,
    pub journal: Arc<ops::Journal>,
    pub fleet: Arc<fleet::Fleet>,
    pub alert_webhooks: Arc<webhook::Counts>,
}

/// An external broker's client options: `broker.url` is `mqtt://` or
/// `mqtts://[USER:PASSWORD@]HOST[:PORT]`; over TLS the broker must present a
/// certificate signed by `broker.ca_path`, and cloud sync presents
/// `broker.client_cert_path` where one is set.
pub fn client_options(client_id: &str, b: &gantry_config::cloud::Broker) -> anyhow::Result<MqttOptions> {
    let url = &b.url;
    let parsed = url::Url::parse(url).with_context(|| format!("broker.url: {url:?} is not a URL"))?;
    let tls = match parsed.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => anyhow::bail!("broker.url: {other}:// in {url} is neither mqtt:// nor mqtts://"),
    };
    let host = parsed.host_str().context("broker.url: no host")?;
    let mut o = MqttOptions::new(client_id, host, parsed.port().unwrap_or(if tls { 8883 } else { 1883 }));
    if !parsed.username().is_empty() {
        o.set_credentials(parsed.username(), parsed.password().unwrap_or(""));
    }
    if tls {
        anyhow::ensure!(!b.ca_path.is_empty(), "broker.ca_path: {url} is mqtts:// but no CA file is set");
        let read = |key: &str, path: &str| std::fs::read(path).with_context(|| format!("{key}: reading {path}"));
        let ca = read("broker.ca_path", &b.ca_path)?;
        let client_auth = match (b.client_cert_path.as_str(), b.client_key_path.as_str()) {
            ("", "") => None,
            ("", _) | (_, "") => anyhow::bail!("broker.client_cert_path and broker.client_key_path go together"),
            (cert, key) => Some((read("broker.client_cert_path", cert)?, read("broker.client_key_path", key)?)),
        };
        o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

impl Service {
    pub async fn start(config: &CloudConfig) -> anyhow::Result<Self> {
        let data_dir = Path::new(&config.service.data_dir);
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("service.data_dir: cannot create {}", data_dir.display()))?;
        let http = tokio::net::TcpListener::bind(&config.http.listen)
            .await
            .with_context(|| format!("http.listen: cannot listen on {}", config.http.listen))?;
        let http_addr = http.local_addr()?;
        let shared = match config.catalog.url.as_str() {
            "" => None,
            _ => Some(Arc::new(pg::PgCatalog::open(&config.catalog)?)),
        };
        // The catalog's database: what the same statements run on (the fleet trend).
        let (catalog, task_catalog, catalog_db): (Arc<dyn CloudCatalog>, Arc<dyn tasks::TaskCatalog>, sql::Db) =
            match &shared {
                Some(pg) => (pg.clone(), pg.clone(), sql::Db::Postgres(pg.clone())),
                None => {
                    let sqlite = Arc::new(SqliteCatalog::open(&data_dir.join("catalog.sqlite"))?);
                    let db = sqlite.db();
                    (sqlite.clone(), sqlite, db)
                }
            };
        let task_service = Arc::new(tasks::Tasks::new(task_catalog, (&config.tasks).into(), unix_now_ns()));

        let (store, prefix) = store::open_object_store(&config.storage.object_store_url, data_dir)?;
        // Robots' passwords also guard their HTTP uploads, whichever broker runs.
        let creds = RobotCredentials::load(&config.broker.credentials_path)?;
        let uploads = Arc::new(uploads::Uploads::new(
            data_dir,
            store.clone(),
            prefix.clone(),
            catalog.clone(),
            (&config.quality).into(),
        )?);
        let max_payload = (config.ingest.max_payload_kb * 1024) as usize;
        let stats = Arc::new(IngestStats::default());
        let assignments = Arc::new(assign::Assignments::default());
        let ingest = Arc::new(Ingest {
            catalog: catalog.clone(),
            store: store.clone(),
            prefix: prefix.clone(),
            max_payload,
            quality: (&config.quality).into(),
            stats: stats.clone(),
            assignments: Some(assignments.clone()),
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let instance = config.broker.client_id.clone();
        let (mqtt_addr, front, options, share) = match config.broker.mode {
            BrokerMode::Embedded => {
                let creds = creds.clone();
                let listener = tokio::net::TcpListener::bind(&config.broker.listen)
                    .await
                    .with_context(|| format!("broker.listen: cannot listen on {}", config.broker.listen))?;
                let addr = listener.local_addr()?;
                let embedded = broker::start(max_payload)?;
                let front_stats = Arc::new(FrontStats::default());
                let internal = embedded.internal;
                let secret = embedded.service_secret.clone();
                let options = move |id: &str| {
                    let mut o = MqttOptions::new(id, internal.ip().to_string(), internal.port());
                    o.set_credentials(broker::SERVICE_USER, secret.clone());
                    Ok(o)
                };
                // Robots are let in only once ingestion is subscribed: the broker
                // acknowledges a batch nobody subscribes to, and the robot would
                // then drop it from its outbox.
                let ready = {
                    let (ingest, mut stopped, front_stats) = (ingest.clone(), stopped.clone(), front_stats.clone());
                    let (secret, internal) = (embedded.front_secret.clone(), embedded.internal);
                    let limits = front::Limits {
                        max_packet: max_payload + 64 * 1024,
                        connect_timeout: Duration::from_millis(config.broker.connect_timeout_ms),
                        max_pending: config.broker.max_pending_connects as usize,
                    };
                    async move {
                        loop {
                            let notified = ingest.stats.ready.notified();
                            if ingest.stats.subscribed.load(std::sync::atomic::Ordering::Relaxed) {
                                break;
                            }
                            tokio::select! {
                                _ = notified => {}
                                _ = stopped.wait_for(|s| *s) => return,
                            }
                        }
                        front::serve(listener, internal, secret, creds, limits, front_stats, stopped).await;
                    }
                };
                tasks.push(tokio::spawn(ready));
                (Some(addr), Some(front_stats), Arc::new(options) as Arc<ClientOptions>, None)
            }
            BrokerMode::External => {
                let broker = config.broker.clone();
                let options = move |id: &str| client_options(id, &broker);
                (None, None, Arc::new(options) as Arc<ClientOptions>, Some(config.broker.shared_group.clone()))
            }
        };
        tasks.push(tokio::spawn(ingest::run(
            ingest.clone(),
            options(&instance)?,
            share.clone(),
            true,
            stopped.clone(),
        )));
        // One instance leads by itself; replicas choose by their beats.
        let leader = Arc::new(std::sync::atomic::AtomicBool::new(true));
        if let (Some(pg), BrokerMode::External) = (&shared, config.broker.mode) {
            leader.store(false, std::sync::atomic::Ordering::Relaxed);
            tasks.push(tokio::spawn(replicas::run(
                pg.clone(),
                instance.clone(),
                leader.clone(),
                ingest.clone(),
                options.clone(),
                share,
                stopped.clone(),
            )));
        }
        let lake = Arc::new(match &shared {
            Some(pg) => lake::LakeState::on_postgres(pg.clone())?,
            None => lake::LakeState::open(Some(&data_dir.join("lake.sqlite")))?,
        });
        {
            let (catalog, store, lake, mut stopped) = (catalog.clone(), store.clone(), lake.clone(), stopped.clone());
            let leader = leader.clone();
            let root = lake::lake_root(&prefix);
            let limits: quality::Limits = (&config.quality).into();
            let period = Duration::from_secs(config.lake.export_period_s);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                    if !leader.load(std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    let exporter = lake::Exporter {
                        catalog: &*catalog,
                        source: &*store,
                        dest: &*store,
                        root: root.clone(),
                        state: &lake,
                        limits,
                    };
                    match exporter.run().await {
                        Ok(files) if !files.is_empty() => tracing::info!(files = files.len(), "lake export"),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "lake export failed; retrying next period")
                        }
                    }
                    // Today's partitions still grow; earlier days are done.
                    let today = lake::rows::date_of(unix_now_ns());
                    match exporter.compact(&today).await {
                        Ok(files) if !files.is_empty() => tracing::info!(files = files.len(), "lake compaction"),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "lake compaction failed; retrying next period")
                        }
                    }
                }
            }));
        }
        let operators = ops::open_db(data_dir, shared.clone())?;
        let registry = Arc::new(models::Registry::new(operators.clone(), store.clone(), prefix.clone()));
        let journal = Arc::new(ops::Journal::new(operators));
        let _ = task_service.journal.set(journal.clone());
        let fleet = Arc::new(fleet::Fleet::new(
            catalog_db,
            catalog.clone(),
            task_service.clone(),
            registry.clone(),
            config.fleet.clone(),
            config.ingest.offline_after_s * 1_000_000_000,
        )?);
        tasks.push(tokio::spawn(alerts::run(
            fleet.clone(),
            journal.clone(),
            config.clone(),
            leader.clone(),
            stopped.clone(),
        )));
        let alert_webhooks = Arc::new(webhook::Counts::default());
        if !config.alerts.webhook_url.is_empty() {
            tasks.push(tokio::spawn(webhook::deliver(
                journal.clone(),
                alert_webhooks.clone(),
                "alerts",
                config.alerts.webhook_url.clone(),
                // The incident log is shared among replicas: the leader delivers its events.
                leader.clone(),
                stopped.clone(),
            )));
        }
        tasks.push(tokio::spawn(assign::run(
            assignments.clone(),
            catalog.clone(),
            registry.clone(),
            journal.clone(),
            config.uploads.clone(),
            options(&format!("{instance}-assign"))?,
            leader.clone(),
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(tasks::run(
            task_service.clone(),
            options(&format!("{instance}-tasks"))?,
            stopped.clone(),
        )));
        if !config.factory.webhook_url.is_empty() {
            tasks.push(tokio::spawn(webhook::deliver(
                task_service.clone(),
                task_service.stats.webhooks.clone(),
                "factory",
                config.factory.webhook_url.clone(),
                // Task events are shared among replicas: the leader delivers them.
                leader.clone(),
                stopped.clone(),
            )));
        }
        let state = Arc::new(http::AppState {
            fleet: fleet.clone(),
            journal: journal.clone(),
            alert_webhooks: alert_webhooks.clone(),
            tasks: task_service.clone(),
            catalog: catalog.clone(),
            store: store.clone(),
            ingest: stats.clone(),
            front: front.clone(),
            uploads: uploads.clone(),
            assignments: assignments.clone(),
            registry: registry.clone(),
            lake: lake.clone(),
            lake_root: lake::lake_root(&prefix),
            upload_now_ns: u64::from(config.uploads.window_hours) * 3_600_000_000_000,
            creds,
            started: std::time::Instant::now(),
            leader: leader.clone(),
        });
        {
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(http, http::router(state)).with_graceful_shutdown(shutdown).await {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            }));
        }
        tracing::info!(http = %format!("http://{http_addr}/"), mqtt = ?mqtt_addr, broker = ?config.broker.mode, "gantry-sync running");
        Ok(Self {
            stop,
            tasks,
            http_addr,
            mqtt_addr,
            catalog,
            store,
            ingest: stats,
            front,
            uploads,
            assignments,
            registry,
            lake,
            task_service,
            journal,
            fleet,
            alert_webhooks,
        })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// `check-config`'s look at the files the configuration names: the broker's
/// credentials must parse as `run` reads them.
pub fn preflight(config: &CloudConfig) -> Preflight {
    let mut found = Preflight::default();
    if let Err(e) = front::RobotCredentials::load(&config.broker.credentials_path) {
        found.problems.push(gantry_config::Problem::new(
            "broker.credentials_path",
            format!("{e:#}"),
            "a TOML file with a [robots] table (and optionally [observers]) of id = \"password\" or \"sha256:HEX\"",
        ));
    }
    found
}

/// Runs the service until SIGINT/SIGTERM or `duration`.
pub async fn run(config: CloudConfig, duration: Option<Duration>) -> anyhow::Result<StopReason> {
    let shutdown = Shutdown::install()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %config.service.data_dir,
        broker = ?config.broker.mode,
        "gantry-sync starting"
    );
    let service = Service::start(&config).await?;
    let reason = shutdown.wait(duration).await;
    tracing::info!(?reason, "gantry-sync shutting down");
    service.stop().await;
    Ok(reason)
}
